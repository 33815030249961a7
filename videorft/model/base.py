"""The model a run starts from, pinned: the tiny default built here, or a hub/local checkpoint.

Stage ``base_model`` writes ``paths.base_model``. For the embedded default it *is* the model (a
~1 MB tiny Qwen2.5-VL, built offline and byte-deterministically, so DVC can cache it). For a
hub id it holds only ``model_info.json``: the repo id and the exact commit the weights came
from (so the lineage of a published model names them), while the weights stay in the HF cache,
where ``snapshot_download`` keeps and resumes them. For a local folder it records the path and
a fingerprint of its files.

Later stages ask :func:`resolve_model` what to load, and :func:`resolve_init_model` whether the
warm start produced a model or passed the base on.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from videorft.errors import is_network_error
from videorft.io import atomic_write_json, read_json
from videorft.model.loading import ModelNotFoundError

INFO_FILE = "model_info.json"
TINY = "tiny"


def folder_fingerprint(path: Path) -> str:
    """A cheap identity of a model folder: names, sizes and small files' bytes.

    Hashing 15 GB of 7B weights on every status check would be slow; sizes plus the config
    files' contents change whenever a checkpoint does in practice.
    """
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path).as_posix()
        size = file.stat().st_size
        digest.update(f"{rel}\0{size}\0".encode())
        if size <= 1 << 20:
            digest.update(file.read_bytes())
    return digest.hexdigest()


def _hub_snapshot(repo_id: str, revision: str | None) -> tuple[str, str]:
    """(local snapshot folder, commit sha) of a hub model, downloading what is missing."""
    import huggingface_hub

    try:
        folder = huggingface_hub.snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.py"],
        )
    except Exception as exc:  # offline, unknown repo, gated, ...: all mean "cannot pin it"
        raise ModelNotFoundError(
            f"{repo_id}@{revision or 'main'}: cannot fetch the model from the Hugging Face Hub "
            f"({type(exc).__name__}: {exc}); use a local folder in model.name_or_path, or "
            "'tiny' for the offline default",
            transient=is_network_error(exc),
        ) from exc
    commit = Path(folder).name  # snapshots/<commit sha>
    return folder, commit


def prepare_base_model(model_params: Any, out_dir: Path) -> dict[str, Any]:
    """Build or pin the base model into ``out_dir``; returns the ``model_info.json`` content."""
    from videorft.model.tiny import build_tiny_model

    out_dir = Path(out_dir)
    name = model_params.name_or_path
    if name == TINY:
        spec = model_params.tiny.spec()
        build_tiny_model(out_dir, spec=spec, seed=model_params.tiny.seed)
        info = {
            "source": "tiny",
            "seed": model_params.tiny.seed,
            "spec": spec.as_dict(),
            "load": ".",
        }
    else:
        path = Path(name).expanduser()
        if path.is_dir() or name.startswith((".", "/", "~")):
            if not (path / "config.json").is_file():
                raise ModelNotFoundError(f"{path}: model.name_or_path names no model folder "
                                         "(config.json missing)")
            info = {"source": "local", "path": str(path.resolve()),
                    "fingerprint": folder_fingerprint(path), "load": str(path.resolve())}
        else:
            folder, commit = _hub_snapshot(name, model_params.revision)
            del folder  # machine-specific: the info must hash the same everywhere
            info = {"source": "hub", "repo_id": name, "revision": model_params.revision,
                    "commit": commit, "load": name}
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in out_dir.iterdir():  # a previous tiny build: not this model any more
            if stale.name != INFO_FILE and stale.is_file():
                stale.unlink()
    info["name_or_path"] = name
    atomic_write_json(out_dir / INFO_FILE, info)
    return info


def resolve_model(model_dir: Path, root: Path) -> str:
    """What ``load_model_and_processor`` should load for a base_model / warm_start output."""
    model_dir = Path(root) / model_dir
    info_path = model_dir / INFO_FILE
    if (model_dir / "config.json").is_file():
        return os.fspath(model_dir)
    if not info_path.is_file():
        raise ModelNotFoundError(f"{model_dir}: no model and no {INFO_FILE} (run the stage that "
                                 "writes it: base_model or warm_start)")
    info = read_json(info_path)
    if info.get("source") == "hub":
        # The pinned commit: the same weights whatever the branch points at today.
        folder, _ = _hub_snapshot(info["repo_id"], info["commit"])
        return folder
    if info.get("source") == "skipped":
        return resolve_model(Path(info["passes_on"]), root)
    return info["load"]


def write_skipped(out_dir: Path, base_dir: str) -> dict[str, Any]:
    """Mark a stage that produced no model of its own (warm start off): load ``base_dir``
    (relative to the project root, so the marker hashes the same in every checkout)."""
    info = {"source": "skipped", "passes_on": base_dir}
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)  # an earlier warm-start model: not what the next stage loads now
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / INFO_FILE, info)
    return info
