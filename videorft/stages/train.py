"""Stage `train`: GRPO with VideoChat-R1's rule-based rewards, resumable.

Checkpoints (``paths.checkpoints``, persisted by DVC) carry a run fingerprint: a re-run of the
same run resumes from the latest checkpoint; a changed recipe, start model or training set
starts afresh (see :mod:`videorft.trainer.run_state`). With ``train.num_processes > 1`` the
training itself runs under ``accelerate launch`` (DeepSpeed per ``train.accelerate_config``).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from videorft.errors import StageError
from videorft.model.base import resolve_model
from videorft.params import Params, to_plain
from videorft.trainer.run_state import prepare_run_dirs, run_fingerprint

log = logging.getLogger(__name__)


def metrics_dir(params: Params) -> str:
    return f"{params.paths.reports}/train"


def launch_command(params: Params, root: Path, init_model: str) -> list[str]:
    """``accelerate launch`` for a multi-process run of :mod:`videorft.trainer.grpo`."""
    cfg = params.train
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if cfg.accelerate_config:
        config = root / cfg.accelerate_config
        if not config.is_file():
            raise StageError(f"{config}: train.accelerate_config names no file")
        command += ["--config_file", str(config)]
    else:
        # Data parallel; without it accelerate starts one process on a machine without GPUs.
        command += ["--multi_gpu"]
    command += ["--num_processes", str(cfg.num_processes), "-m", "videorft.trainer.grpo",
                "--root", str(root), "--init-model", init_model]
    return command


def run(params: Params, root: Path) -> dict[str, Any]:
    init_model = resolve_model(Path(params.paths.warm_start), root)
    checkpoints = root / params.paths.checkpoints
    metrics = root / metrics_dir(params)
    fingerprint = run_fingerprint(
        to_plain(params.train.model_dump()), params.model.model_dump(),
        init_model=init_model, train_data=root / params.paths.dataset / "train.jsonl",
    )
    decision, changed = prepare_run_dirs(fingerprint, checkpoints, metrics)
    if decision == "restart":
        log.warning("train: the recipe changed (%s); old checkpoints removed, starting afresh",
                    ", ".join(changed))
    out_dir = root / params.paths.trained
    if params.train.num_processes > 1:
        if not _has_accelerate():
            raise StageError("train.num_processes > 1 needs accelerate (pip install accelerate)")
        command = launch_command(params, root, init_model)
        log.info("train: %s", " ".join(command))
        result = subprocess.run(command, cwd=root, check=False)
        if result.returncode:
            raise StageError(f"train: accelerate launch exited with {result.returncode}")
        from videorft.trainer.grpo import read_summary

        summary = read_summary(out_dir, metrics)
    else:
        from videorft.trainer.grpo import train_grpo

        summary = train_grpo(params, root, init_model=init_model, checkpoints_dir=checkpoints,
                             out_dir=out_dir, metrics_dir=metrics)
    from videorft.trainer.metrics import REWARD_CURVE

    return {"checkpoints": decision, **({"changed": changed} if changed else {}),
            **{k: v for k, v in summary.items() if not isinstance(v, dict | list)},
            "reward_curve": (Path(metrics_dir(params)) / REWARD_CURVE).as_posix()}


def _has_accelerate() -> bool:
    import importlib.util

    return importlib.util.find_spec("accelerate") is not None
