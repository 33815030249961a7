"""The Trainer's ``checkpoint-N`` folders: which are whole, which to drop, and keeping their
bytes free of times and paths.

Checkpoints are the Trainer's own folders (weights, optimizer, scheduler, RNG states,
``trainer_state.json``). ``transformers``' ``get_last_checkpoint`` takes the highest number even
when that folder was cut off mid-save, so :func:`last_complete_checkpoint` only accepts a folder
whose ``trainer_state.json`` (the Trainer writes it last) parses and names step N, next to model
weights; the run deletes newer incomplete folders before training
(:func:`remove_checkpoints_after`). Whether the folder belongs to *this* run (same recipe) is the
stage's business (:mod:`videorft.trainer.run_state`), not this module's.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

from transformers import TrainerCallback

from videorft.io import read_json
from videorft.trainer.metrics import is_timing

log = logging.getLogger(__name__)

_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"  # the Trainer writes it last into a checkpoint
#: A model folder (checkpoint or final) holds one of these: full weights or LoRA adapters.
WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors",
    "pytorch_model.bin", "pytorch_model.bin.index.json", "adapter_model.bin",
)


def checkpoint_step(path: Path) -> int | None:
    """N of an existing ``checkpoint-N`` folder; None for anything else."""
    match = _CHECKPOINT_RE.match(path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def is_complete_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a whole Trainer checkpoint (``trainer_state.json``, written last,
    parses and names the folder's step, and model weights are there)."""
    step = checkpoint_step(path)
    if step is None:
        return False
    try:
        state = json.loads((path / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(state, dict) or state.get("global_step") != step:
        return False
    return any((path / name).is_file() for name in WEIGHT_FILES)


def last_complete_checkpoint(checkpoints_dir: Path, at_most: int | None = None) -> Path | None:
    """The highest-numbered complete ``checkpoint-N`` folder (with ``N <= at_most`` when
    given: a run asked for fewer steps than a longer run saved), or None."""
    if not Path(checkpoints_dir).is_dir():
        return None
    folders = [p for p in Path(checkpoints_dir).iterdir() if checkpoint_step(p) is not None
               and (at_most is None or checkpoint_step(p) <= at_most)]
    for folder in sorted(folders, key=checkpoint_step, reverse=True):
        if is_complete_checkpoint(folder):
            return folder
        log.warning("%s: incomplete checkpoint (cut off while saving?), skipped", folder)
    return None


def remove_checkpoints_after(checkpoints_dir: Path, keep: Path | None) -> list[Path]:
    """Delete checkpoint folders newer than ``keep``: cut off while saving, or saved by a longer
    run than ``train.max_steps`` now asks for (resuming one would train past the target)."""
    newest = checkpoint_step(keep) if keep is not None else -1
    removed = []
    if Path(checkpoints_dir).is_dir():
        for folder in Path(checkpoints_dir).iterdir():
            step = checkpoint_step(folder)
            if step is not None and step > newest:
                shutil.rmtree(folder)
                removed.append(folder)
    return removed


def checkpoint_weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a full-model checkpoint (single file or sharded)."""
    folder = Path(folder)
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(read_json(index)["weight_map"].values()))
        return [folder / shard for shard in shards]
    return []


class StableCheckpoints(TrainerCallback):
    """Checkpoints whose bytes depend on the inputs alone (the folder is a DVC output, and the
    same inputs must give the same hashes): no times in the trainer state they save (callbacks
    get their own copy of the logs, so ``run.json`` and the console still have them), and no
    ``training_args.bin`` (a pickle holding this machine's absolute paths; resuming does not
    read it)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.log_history:
            entry = state.log_history[-1]
            for key in [k for k in entry if is_timing(k)]:
                del entry[key]

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            (folder / "training_args.bin").unlink(missing_ok=True)
