"""Which training run a checkpoint folder belongs to, so a re-run resumes only the same run.

DVC keeps the checkpoint folder between runs (``persist: true``) so a killed training resumes.
But DVC also reruns the stage when a training param changes, and resuming *that* run from the
old run's optimizer state would silently mix two experiments. So the folder carries a
fingerprint of everything that defines the run (the numeric recipe, the model it started from,
the training data); a re-run with the same fingerprint resumes, a different one starts afresh
and says why.

Knobs that only change *how long* or *how* a run executes (steps, checkpoint cadence, logging,
process count, gradient checkpointing, shared-prompt passes) are left out, so raising
``max_steps`` continues a finished run instead of restarting it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from videorft.io import atomic_write_json, read_json, sha256_file

FINGERPRINT_FILE = "run_fingerprint.json"

#: TrainParams fields that do not change what is being optimised.
EXECUTION_ONLY: frozenset[str] = frozenset({
    "max_steps", "num_train_epochs", "save_steps", "save_total_limit", "logging_steps",
    "num_processes", "accelerate_config", "gradient_checkpointing", "shared_prompt",
    "cache_implementation", "compile_generation",
})


def run_fingerprint(
    train: dict[str, Any], model: dict[str, Any], *, init_model: str, train_data: Path
) -> dict[str, Any]:
    """What defines a GRPO run: recipe, starting model and data (a JSON-able dict)."""
    from videorft.model.base import folder_fingerprint

    init = Path(init_model)
    return {
        "train": {k: v for k, v in sorted(train.items()) if k not in EXECUTION_ONLY},
        "model": {k: model[k] for k in ("dtype", "attn_implementation") if k in model},
        "init_model": folder_fingerprint(init) if init.is_dir() else init_model,
        "train_data": sha256_file(train_data),
    }


def _digest(fingerprint: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()


def _changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


def prepare_run_dirs(
    fingerprint: dict[str, Any], checkpoints_dir: Path, *also_clear: Path
) -> tuple[str, list[str]]:
    """Keep ``checkpoints_dir`` if it belongs to this run, else empty it (and ``also_clear``).

    Returns ``(decision, changed)``: ``"resume"`` (same run, or nothing saved yet) or
    ``"restart"`` with the fingerprint keys that changed.
    """
    checkpoints_dir = Path(checkpoints_dir)
    marker = checkpoints_dir / FINGERPRINT_FILE
    record = {"digest": _digest(fingerprint), "fingerprint": fingerprint}
    decision, changed = "resume", []
    if marker.is_file():
        old = read_json(marker)
        if old.get("digest") != record["digest"]:
            decision = "restart"
            changed = _changed_keys(old.get("fingerprint", {}), fingerprint) or ["(unknown)"]
    elif checkpoints_dir.is_dir() and any(checkpoints_dir.glob("checkpoint-*")):
        decision, changed = "restart", ["(checkpoints without a fingerprint)"]
    if decision == "restart":
        for folder in (checkpoints_dir, *also_clear):
            if Path(folder).exists():
                shutil.rmtree(folder)
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, record)
    return decision, changed
