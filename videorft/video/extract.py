"""The frame store: every video sampled once, Qwen-style, and kept as uint8 arrays.

Training reads frames from here instead of decoding videos in the data loader, so each
video's sampled frames exist exactly once and are the same in every epoch and on every rank.

Layout under ``store_dir``::

    items/<key>.npy     uint8 [T, H, W, 3]: the sampled frames, already resized
    items/<key>.json    the item's meta (see videorft.video.worker); names its .npy, size, sha256
    manifest.json       {"sampling": ..., "backend": ..., "items": {key: meta}} (sorted)
    quarantine.json     [{key, video, frames, reason, record_ids}] (sorted by key)

An item is done iff its .json exists, names its .npy, and the .npy has the recorded size
(and, with ``verify=True``, the recorded sha256); the source file must also still have the
size it had. Writes are .npy first, then .json, each to a temp file renamed into place, so a
killed run never leaves a half item that counts as done, and a re-run redoes only what is
missing. Nothing in the files depends on time, machine or run order, so an interrupted run
plus a re-run gives the same bytes as one clean run.

This module is the stage's entry point (:func:`extract_frames`) and the store's bookkeeping:
which items are already done, the manifest, the quarantine report, pruning. The rest lives
beside it, one concern a module:

- :mod:`videorft.video.plan`: the items and their keys (:func:`items_from_records`,
  :func:`frame_key`);
- :mod:`videorft.video.worker`: sampling and writing one item (:func:`extract_one`), in a
  child process whichever executor runs it;
- :mod:`videorft.video.local_pool` (``executor: local``, a process pool) and
  :mod:`videorft.video.dask_cluster` (``executor: dask``, see docs/dask.md): running the items,
  both with the same timeout and quarantine rules, so the store is the same bytes either way;
- :mod:`videorft.video.results`: the one loop that sorts finished items into metas and
  quarantine reasons, and those reasons' words.

The public names of those modules that callers used from here stay importable from here.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from videorft.errors import DataValidationError, StageError
from videorft.io import atomic_write_text, read_json, safe_join, sha256_file
from videorft.video.dask_cluster import run_dask
from videorft.video.local_pool import run_pool
from videorft.video.plan import (
    IMAGES_BACKEND,
    ExtractionItem,
    backend_for,
    frame_key,
    items_from_records,
)
from videorft.video.results import quarantine_entry
from videorft.video.sampling import SamplingConfig
from videorft.video.store import ITEMS_DIR, MANIFEST, QUARANTINE
from videorft.video.worker import TEST_HOOK_ENV

if TYPE_CHECKING:
    from videorft.params import ExtractFramesParams

__all__ = [
    "IMAGES_BACKEND",
    "MAX_REASONS_IN_ERROR",
    "TEST_HOOK_ENV",
    "ExtractionItem",
    "ExtractionReport",
    "extract_frames",
    "frame_key",
    "items_from_records",
]

MAX_REASONS_IN_ERROR = 5


@dataclass
class ExtractionReport:
    """What a run did to the store (``extracted``/``reused`` depend on history; ``total`` and
    the quarantine on the inputs alone)."""

    total: int
    extracted: int
    reused: int
    quarantined: int
    quarantine: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "extracted": self.extracted,
            "reused": self.reused,
            "quarantined": self.quarantined,
            "quarantine": self.quarantine,
        }


# ------------------------------------------------------------------ the store's bookkeeping


def _source_bytes(item: ExtractionItem, raw_root: Path) -> int | None:
    try:
        if item.video is not None:
            return safe_join(raw_root, item.video).stat().st_size
        return sum(safe_join(raw_root, f).stat().st_size for f in item.frames or ())
    except (OSError, DataValidationError):
        return None


def _done_meta(
    item: ExtractionItem, raw_root: Path, items_dir: Path, backend: str, verify: bool
) -> dict[str, Any] | None:
    """The item's meta if it is complete and still matches its source, else None."""
    json_path = items_dir / f"{item.key}.json"
    if not json_path.is_file():
        return None
    try:
        meta = read_json(json_path)
    except DataValidationError:
        return None
    if not isinstance(meta, dict) or meta.get("key") != item.key:
        return None
    npy = items_dir / f"{item.key}.npy"
    if (
        meta.get("file") != npy.name
        or meta.get("backend") != backend_for(item, backend)
        or not npy.is_file()
        or npy.stat().st_size != meta.get("npy_bytes")
        or _source_bytes(item, raw_root) != meta.get("source_bytes")
    ):
        return None
    if verify and sha256_file(npy) != meta.get("sha256"):
        return None
    return meta


def _remove_temp_files(*folders: Path) -> None:
    """Temp files of writes that were killed (io.atomic_open names them .<name>.<rand>.tmp)."""
    for folder in folders:
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)


def _write_json_if_changed(path: Path, obj: Any) -> None:
    """Like io.atomic_write_json, but leaves an identical file untouched (mtime and all)."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    with contextlib.suppress(OSError):
        if path.read_text(encoding="utf-8") == text:
            return
    atomic_write_text(path, text)


def _prune(items_dir: Path, keep: set[str]) -> None:
    for path in sorted(items_dir.iterdir()):
        if path.suffix in (".npy", ".json") and path.stem not in keep:
            path.unlink(missing_ok=True)


def extract_frames(
    items: Iterable[ExtractionItem],
    raw_root: Path,
    store_dir: Path,
    params: ExtractFramesParams,
    *,
    progress: bool = True,
    verify: bool = False,
) -> ExtractionReport:
    """Bring the store in line with ``items``: extract what is missing, reuse the rest.

    Bad videos are quarantined (listed in quarantine.json with a reason), not fatal, unless
    their share exceeds ``params.max_quarantine_fraction``: then StageError, and nothing is
    pruned so a fixed re-run keeps the work done. ``verify`` re-hashes existing .npy files
    instead of trusting their recorded size (a full read of the store).
    """
    items = sorted(items, key=lambda it: it.key)
    if len({it.key for it in items}) != len(items):
        raise ValueError("extraction items must have distinct keys")
    raw_root, store_dir = Path(raw_root), Path(store_dir)
    items_dir = store_dir / ITEMS_DIR
    items_dir.mkdir(parents=True, exist_ok=True)
    _remove_temp_files(items_dir, store_dir)
    cfg = SamplingConfig.from_params(params)

    metas: dict[str, dict[str, Any]] = {}
    todo: list[ExtractionItem] = []
    for item in items:
        meta = _done_meta(item, raw_root, items_dir, params.backend, verify)
        if meta is None:
            todo.append(item)
        else:
            metas[item.key] = meta
    reused = len(metas)
    runner = run_dask if params.executor == "dask" else run_pool
    new_metas, failures = runner(todo, raw_root, items_dir, cfg, params, progress)
    metas.update(new_metas)
    _remove_temp_files(items_dir, store_dir)  # left by workers killed on timeout

    by_key = {it.key: it for it in items}
    quarantine = [quarantine_entry(by_key[key], failures[key]) for key in sorted(failures)]
    _write_json_if_changed(store_dir / QUARANTINE, quarantine)
    report = ExtractionReport(
        total=len(items),
        extracted=len(new_metas),
        reused=reused,
        quarantined=len(quarantine),
        quarantine=quarantine,
    )
    if items and len(quarantine) / len(items) > params.max_quarantine_fraction:
        reasons = "; ".join(q["reason"] for q in quarantine[:MAX_REASONS_IN_ERROR])
        more = len(quarantine) - MAX_REASONS_IN_ERROR
        raise StageError(
            f"extract_frames: {len(quarantine)} of {len(items)} videos quarantined "
            f"({len(quarantine) / len(items):.1%}), more than max_quarantine_fraction="
            f"{params.max_quarantine_fraction:g}; see {store_dir / QUARANTINE}. First reasons: "
            f"{reasons}" + (f" (and {more} more)" if more > 0 else "")
        )
    manifest = {
        "backend": params.backend,
        "sampling": cfg.as_dict(),
        "items": {key: metas[key] for key in sorted(metas)},
    }
    _write_json_if_changed(store_dir / MANIFEST, manifest)
    _prune(items_dir, set(metas))
    return report
