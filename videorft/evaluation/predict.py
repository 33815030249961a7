"""Greedy predictions of one model on evaluation rows, written so a crash or re-run resumes.

The output is a JSONL file in exactly the format ``videorft score`` reads (one line per row:
``id``, ``task``, ``source``, ``completion``, ``solution``), so any predictions file can be
rescored by hand. Beside it, ``<file>.fingerprint.json`` records what the lines were made
from: the model (a fingerprint of its folder), the generation settings, and a digest per row
of what the model saw and is judged against (id, task, source, prompt, frames, solution).

Resume rules (DVC keeps the predictions folder between runs, ``persist: true``):

* Same model and generation settings: every existing line whose row is still asked for, with
  an unchanged row digest, is kept; only the other rows are generated. A torn last line (a
  crash mid-write) or any other unreadable line is dropped and regenerated. So capping more
  or fewer items per source does not regenerate what is already there.
* A different model or generation setting: the file starts afresh (mixing two models'
  answers in one file would be silently wrong).
* Nothing missing: the model is not even loaded, so retraining ``trained`` never makes the
  evaluation re-run the base model.

Lines are appended batch by batch and fsynced, so a crash loses at most one batch. When done,
the file is rewritten (atomically) in row order if resuming left it in another order, so the
same predictions always give the same bytes.

Per-row digests rather than one digest of all rows: the fingerprint's ``rows`` maps id to
digest, which answers both "is this line still valid" and "what changed".

**Blind passes** (``blind=True``, :mod:`videorft.evaluation.blind`) answer the same rows with
blank frames into their own file (``<model>-blind.jsonl``). Their fingerprint carries
``"frames": "blank"``, so blind answers can never be taken for real ones or the reverse; a
real pass's fingerprint has no ``frames`` key at all, exactly as before blind passes existed,
so persisted predictions stay valid.

**One load per model.** :class:`LazyModel` loads a model on first need and keeps it, so the
real and the blind pass of one model share one load (and neither loads it when its file is
complete).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from videorft.evaluation.blind import BLANK, BlankFrames
from videorft.io import atomic_open, atomic_write_json, dumps_canonical

if TYPE_CHECKING:
    from videorft.video.store import FrameStore

log = logging.getLogger(__name__)

#: Bump when the prediction format or the generation procedure changes meaning.
FORMAT_VERSION = 1
FINGERPRINT_SUFFIX = ".fingerprint.json"
LINE_KEYS = ("id", "task", "source", "completion", "solution")


def fingerprint_path(out_path: Path) -> Path:
    """The sidecar recording what ``out_path``'s lines were generated from."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + FINGERPRINT_SUFFIX)


def row_digest(row: dict[str, Any]) -> str:
    """What a prediction line depends on in its row: a change means the line is stale."""
    keys = ("id", "task", "source", "prompt", "frames_key", "solution")
    payload = dumps_canonical({key: row.get(key) for key in keys})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def model_fingerprint(model: str) -> str:
    """The model's identity: its folder's fingerprint, or the name itself for a hub id."""
    from videorft.model.base import folder_fingerprint

    path = Path(model).expanduser()
    return folder_fingerprint(path) if path.is_dir() else str(model)


def prediction_fingerprint(
    model: str,
    rows: list[dict[str, Any]],
    *,
    max_new_tokens: int,
    dtype: str,
    attn_implementation: str | None,
    blind: bool = False,
) -> dict[str, Any]:
    """What makes existing predictions reusable (a JSON-able dict).

    ``batch_size`` is deliberately left out: generation is greedy with left padding and an
    attention mask, so batching does not change what a row's answer is meant to be. A blind
    pass adds ``"frames": "blank"`` (module docstring).
    """
    fingerprint: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "model": model_fingerprint(model),
        "generation": {
            "decoding": "greedy",
            "max_new_tokens": int(max_new_tokens),
            "dtype": dtype,
            "attn_implementation": attn_implementation,
        },
        "rows": {row["id"]: row_digest(row) for row in rows},
    }
    if blind:
        fingerprint["frames"] = BLANK
    return fingerprint


def prediction_line(row: dict[str, Any], completion: str) -> dict[str, Any]:
    """One line of the predictions file (the format ``videorft score`` reads)."""
    return {
        "id": row["id"],
        "task": row["task"],
        "source": row.get("source"),
        "completion": completion,
        "solution": row["solution"],
    }


def _encode(line: dict[str, Any]) -> str:
    return dumps_canonical(line) + "\n"


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


#: The fingerprint keys that must all match for any existing line to be kept.
SETTINGS = ("version", "model", "generation", "frames")


def _same_settings(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return all(old.get(key) == new.get(key) for key in SETTINGS)


def _reusable_completions(
    out_path: Path, old: dict[str, Any] | None, new: dict[str, Any]
) -> tuple[dict[str, str], str]:
    """Completions in ``out_path`` still valid under ``new``, by id; and why others are not."""
    if not out_path.is_file():
        return {}, "no predictions yet"
    if old is None:
        return {}, "no fingerprint beside the predictions"
    if not _same_settings(old, new):
        changed = [k for k in SETTINGS if old.get(k) != new.get(k)]
        return {}, f"{', '.join(changed)} changed"
    old_rows, new_rows = old.get("rows") or {}, new["rows"]
    kept: dict[str, str] = {}
    dropped = 0
    with out_path.open(encoding="utf-8", errors="replace") as handle:
        for text in handle:
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except ValueError:  # a torn last line from a crash, or damage: regenerate it
                dropped += 1
                continue
            ident = line.get("id") if isinstance(line, dict) else None
            if (
                not isinstance(ident, str)
                or ident in kept
                or not isinstance(line.get("completion"), str)
                or old_rows.get(ident) is None
                or old_rows.get(ident) != new_rows.get(ident)
            ):
                dropped += 1
                continue
            kept[ident] = line["completion"]
    why = f"{dropped} unreadable or stale line(s) dropped" if dropped else "resuming"
    return kept, why


class LazyModel:
    """A model (and its processor) loaded on first :meth:`get` and kept until :meth:`close`,
    so that several prediction passes of one model (real and blind) share one load, and a
    model whose passes are all complete is never loaded. Use it as a context manager."""

    def __init__(self, model: str, *, dtype: str, attn_implementation: str | None):
        self.model = str(model)
        self.dtype = dtype
        self.attn_implementation = attn_implementation
        self._loaded: tuple[Any, Any] | None = None

    def get(self) -> tuple[Any, Any]:
        """``(model, processor)``, loading them (onto the GPU when there is one) the first time."""
        if self._loaded is None:
            from videorft.model import loading

            loaded, processor = loading.load_model_and_processor(
                self.model, dtype=self.dtype, attn_implementation=self.attn_implementation
            )
            import torch

            if torch.cuda.is_available():
                loaded.to("cuda")
            self._loaded = (loaded, processor)
        return self._loaded

    def close(self) -> None:
        """Free the model's memory before the next model loads (one GPU holds one at a time)."""
        if self._loaded is None:
            return
        self._loaded = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover - torch is a dependency
            pass

    def __enter__(self) -> LazyModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def predict(
    model: str,
    rows: list[dict[str, Any]],
    store: FrameStore,
    out_path: Path,
    *,
    max_new_tokens: int,
    batch_size: int,
    dtype: str,
    attn_implementation: str | None,
    blind: bool = False,
    loaded: LazyModel | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Greedy predictions of ``model`` for ``rows`` (in row order), resuming ``out_path``.

    ``model`` is a folder or hub id for :func:`load_model_and_processor`; it is loaded only if
    some row has no valid prediction yet (module docstring). ``blind``: answer with blank
    frames (:class:`~videorft.evaluation.blind.BlankFrames`) instead of the stored ones.
    ``loaded``: a :class:`LazyModel` of ``model`` to take the model from (and leave loaded for
    the caller's next pass); without it the model is loaded here and released on return.
    """
    from tqdm import tqdm

    out_path = Path(out_path)
    if loaded is not None and (loaded.model, loaded.dtype, loaded.attn_implementation) != (
        str(model), dtype, attn_implementation
    ):
        raise ValueError(f"predict {model}: the loaded model is {loaded.model} "
                         f"({loaded.dtype}, {loaded.attn_implementation}), not this one")
    ids = [row["id"] for row in rows]
    if len(set(ids)) != len(ids):
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"rows repeat id(s) {', '.join(repeated[:5])}: each must be unique")
    sidecar = fingerprint_path(out_path)
    fingerprint = prediction_fingerprint(
        model, rows, max_new_tokens=max_new_tokens, dtype=dtype,
        attn_implementation=attn_implementation, blind=blind,
    )
    done, why = _reusable_completions(out_path, _read_sidecar(sidecar), fingerprint)
    todo = [row for row in rows if row["id"] not in done]
    log.info("predict %s%s -> %s: %d of %d rows already predicted (%s)", model,
             " (blank frames)" if blind else "", out_path, len(rows) - len(todo), len(rows), why)

    # The file first (kept lines only, in row order), then the sidecar: a crash between the two
    # leaves an old sidecar that does not match, which means "start afresh", never a mix.
    kept_text = "".join(_encode(prediction_line(r, done[r["id"]])) for r in rows if r["id"] in done)
    current = out_path.read_text(encoding="utf-8", errors="replace") if out_path.is_file() else None
    if current != kept_text:
        with atomic_open(out_path, "w") as handle:
            handle.write(kept_text)
    if _read_sidecar(sidecar) != fingerprint:
        atomic_write_json(sidecar, fingerprint)

    if todo:
        from videorft.model import generate

        frames = BlankFrames(store) if blind else store
        owned = loaded is None
        if loaded is None:
            loaded = LazyModel(model, dtype=dtype, attn_implementation=attn_implementation)
        try:
            network, processor = loaded.get()
            with (
                out_path.open("a", encoding="utf-8") as handle,
                tqdm(total=len(rows), initial=len(rows) - len(todo), unit="item",
                     desc=f"predict {out_path.stem}", disable=not progress) as bar,
            ):
                for start in range(0, len(todo), batch_size):
                    batch = todo[start : start + batch_size]
                    answers = generate.generate_answers(
                        network, processor, batch, frames,
                        max_new_tokens=max_new_tokens, batch_size=batch_size,
                    )
                    if len(answers) != len(batch):
                        raise RuntimeError(
                            f"generate_answers returned {len(answers)} answers for "
                            f"{len(batch)} rows"
                        )
                    lines = [prediction_line(r, a) for r, a in zip(batch, answers, strict=True)]
                    handle.write("".join(_encode(line) for line in lines))
                    handle.flush()
                    os.fsync(handle.fileno())
                    done.update(zip((r["id"] for r in batch), answers, strict=True))
                    bar.update(len(batch))
        finally:
            if owned:
                loaded.close()

    predictions = [prediction_line(row, done[row["id"]]) for row in rows]
    final_text = "".join(_encode(line) for line in predictions)
    if out_path.read_text(encoding="utf-8", errors="replace") != final_text:
        with atomic_open(out_path, "w") as handle:  # resumed out of order: back to row order
            handle.write(final_text)
    return predictions
