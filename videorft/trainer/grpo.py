"""Run GRPO from params.yaml: resumable, with per-step metrics, ending in a plain model folder.

``train_grpo`` is what stage ``train`` calls in-process; ``python -m videorft.trainer.grpo
--root R --init-model M`` is the same run as a script, which is what ``accelerate launch`` starts
once per process when ``train.num_processes > 1`` (only the main process writes the final
model, the summary and the metrics).

This module is the run itself; its parts live beside it, one concern a module, and their public
names stay importable from here:

- :mod:`videorft.trainer.config`: ``train.*`` onto TRL's ``GRPOConfig`` and peft's
  ``LoraConfig``; the check that the split fills one generation batch.
- :mod:`videorft.trainer.reward_tap`: the reward functions wrapped so each task's mean total
  reward is logged.
- :mod:`videorft.trainer.checkpoints`: which ``checkpoint-N`` folders are whole, dropping the
  others, and checkpoint bytes that depend on the inputs alone.
- :mod:`videorft.trainer.weights`: freezing the vision tower, and loading saved weights back
  on resume (transformers issue #43701).
- :mod:`videorft.trainer.metrics`: the DVCLive history, cut back on resume, and the reward curve.

Decisions taken here:

* **Resume.** Training resumes from the latest complete checkpoint at or below the step
  target; newer folders (cut off while saving, or from a longer run) are deleted first, by the
  main process before the others scan. A run already at its target when it resumes (a lowered
  ``max_steps``, or a kill after the last checkpoint) is finished from that checkpoint without
  training: the Trainer would run one step past a target it resumes at (under DeepSpeed, which
  cannot finish from a checkpoint without a step, the run is trained again instead).
* **Done is done.** When the final model's summary says the run completed, with the same step
  target, and the latest checkpoint is that step, a re-run returns the summary without loading
  anything.
* **LoRA.** ``train.lora.enabled`` passes a peft ``LoraConfig`` to the trainer (TRL wraps the
  model; with ``beta > 0`` the reference log-probs come from the same model with the adapters
  disabled, so no second model is loaded). Checkpoints hold the adapters only; the final model
  is merged (``merge_and_unload``) into a plain checkpoint, because every later stage (and any
  user) loads ``paths.trained`` with ``from_pretrained`` and nothing peft-specific. Merging
  under DeepSpeed ZeRO-3 would need the sharded weights gathered first and is refused up front.
* **What is saved where.** The final model folder holds the model, processor and
  ``training_summary.json`` (what was trained: the same bytes for the same inputs); the run's
  facts (time taken, resume point) go to ``run.json`` beside the metrics.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from videorft.errors import ConfigError, DataValidationError
from videorft.io import atomic_write_json, read_json, replace_dir
from videorft.params import PARAMS_FILE, Params, load_params
from videorft.trainer.checkpoints import (
    TRAINER_STATE,
    WEIGHT_FILES,
    StableCheckpoints,
    checkpoint_step,
    checkpoint_weight_files,
    is_complete_checkpoint,
    last_complete_checkpoint,
    remove_checkpoints_after,
)
from videorft.trainer.config import check_enough_prompts, grpo_config, lora_config
from videorft.trainer.metrics import (
    REWARD_CURVE,
    MetricsCallback,
    plot_reward_curve,
    read_history,
    truncate_history,
)
from videorft.trainer.reward_tap import (
    TASK_REWARD_METRIC,
    TASK_REWARD_PREFIX,
    TappedReward,
    TaskRewardTap,
)
from videorft.trainer.weights import (
    freeze_vision,
    load_saved_weights,
    resumable_trainer,
    vision_tower,
)

__all__ = [
    "REWARD_CURVE",
    "RUN_FILE",
    "SUMMARY_FILE",
    "TASK_REWARD_METRIC",
    "TASK_REWARD_PREFIX",
    "MetricsCallback",
    "StableCheckpoints",
    "TappedReward",
    "TaskRewardTap",
    "check_enough_prompts",
    "checkpoint_weight_files",
    "dataset_thinking",
    "finished_summary",
    "freeze_vision",
    "grpo_config",
    "is_complete_checkpoint",
    "last_complete_checkpoint",
    "load_saved_weights",
    "lora_config",
    "main",
    "plot_reward_curve",
    "read_history",
    "read_summary",
    "remove_checkpoints_after",
    "train_grpo",
    "truncate_history",
    "vision_tower",
]

log = logging.getLogger(__name__)

SUMMARY_FILE = "training_summary.json"
#: Facts of this particular run (time taken, where it resumed): beside the metrics, never in
#: the model folder, whose bytes must depend on the inputs alone (DVC hashes it, publish
#: versions it).
RUN_FILE = "run.json"


def dataset_thinking(rows: Sequence[dict[str, Any]], where: str) -> bool:
    """The rows' shared ``thinking`` flag (the reward format depends on it)."""
    values = {bool(row["thinking"]) for row in rows}
    if not values:
        raise DataValidationError("no training rows (run build_dataset first)", file=where)
    if len(values) > 1:
        raise DataValidationError("rows mix thinking and non-thinking prompts; rebuild the "
                                  "dataset with one build_dataset.thinking", file=where)
    return values.pop()


def _step_logs(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in log_history if "reward" in e and "train_runtime" not in e]


def _last_values(entries: list[dict[str, Any]], prefix: str, suffix: str) -> dict[str, float]:
    """``{name: latest value}`` of the keys ``prefix<name>suffix`` (latest step that has it)."""
    out: dict[str, float] = {}
    for entry in entries:
        for key, value in entry.items():
            if key.startswith(prefix) and key.endswith(suffix) and value is not None:
                out[key[len(prefix):len(key) - len(suffix)]] = value
    return dict(sorted(out.items()))


def _summary(state: Any, params: Params) -> dict[str, Any]:
    """What the run trained: the same for the same inputs, however it was run."""
    steps = _step_logs(state.log_history)
    return {
        "global_step": state.global_step,
        "max_steps": state.max_steps,
        "completed": state.global_step >= state.max_steps,
        "logged_steps": len(steps),
        "reward_first": steps[0]["reward"] if steps else None,
        "reward_last": steps[-1]["reward"] if steps else None,
        "rewards": _last_values(steps, "rewards/", "/mean"),
        "task_rewards": _last_values(steps, TASK_REWARD_PREFIX, "/mean"),
        "target": {"max_steps": params.train.max_steps,
                   "num_train_epochs": params.train.num_train_epochs},
    }


def _run_facts(resumed_from: Path | None, resumed_step: int | None, runtime_s: float,
               final_logs: dict[str, Any]) -> dict[str, Any]:
    """How this run went (times, resume point): differs between runs of the same inputs."""
    return {
        "resumed_from": resumed_from.name if resumed_from else None,
        "resumed_from_step": resumed_step,
        "runtime_s": round(runtime_s, 3),
        "train_runtime_s": final_logs.get("train_runtime"),
    }


def _recorded_facts(metrics_dir: Path) -> dict[str, Any]:
    """The last run's facts (``run.json``), or none if it was not recorded."""
    facts = Path(metrics_dir) / RUN_FILE
    return read_json(facts) if facts.is_file() else {}


def read_summary(out_dir: Path, metrics_dir: Path) -> dict[str, Any]:
    """The finished run's summary with its run facts (those of the last run, if recorded)."""
    return {**read_json(Path(out_dir) / SUMMARY_FILE), **_recorded_facts(metrics_dir)}


def finished_summary(params: Params, checkpoints_dir: Path, out_dir: Path) -> dict[str, Any] | None:
    """The saved summary if this run already finished: final model + summary present, same
    step target, and the latest complete checkpoint is the summary's final step."""
    path = Path(out_dir) / SUMMARY_FILE
    if not path.is_file() or not any((Path(out_dir) / n).is_file() for n in WEIGHT_FILES):
        return None
    try:
        summary = read_json(path)
    except (OSError, ValueError):
        return None
    target = {"max_steps": params.train.max_steps,
              "num_train_epochs": params.train.num_train_epochs}
    last = last_complete_checkpoint(checkpoints_dir)
    if (not summary.get("completed") or summary.get("target") != target or last is None
            or checkpoint_step(last) != summary.get("global_step")):
        return None
    return summary


def _save_final(trainer: Any, out_dir: Path, summary: dict[str, Any]) -> None:
    """Model (merged if LoRA) + processor + generation config + summary into a folder beside
    ``out_dir``, then moved into place in one rename."""
    from accelerate.utils import is_peft_model

    out_dir = Path(out_dir)
    partial = out_dir.parent / f".{out_dir.name}.partial"
    accelerator = trainer.accelerator
    main = accelerator.is_main_process
    if main:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    model = accelerator.unwrap_model(trainer.model)
    if is_peft_model(model):
        if main:
            merged = model.merge_and_unload()
            merged.save_pretrained(partial)
            trainer.processing_class.save_pretrained(partial)
    else:
        trainer.save_model(str(partial))  # every process: gathers sharded weights; main writes
    if main:
        (partial / "training_args.bin").unlink(missing_ok=True)
        atomic_write_json(partial / SUMMARY_FILE, summary)
        replace_dir(partial, out_dir)
    accelerator.wait_for_everyone()


def train_grpo(params: Params, root: Path, *, init_model: str | Path, checkpoints_dir: Path,
               out_dir: Path, metrics_dir: Path) -> dict[str, Any]:
    """GRPO on the train split, starting from ``init_model``; resumes the latest complete
    checkpoint in ``checkpoints_dir``. Writes the final model and ``training_summary.json`` to
    ``out_dir``, the metrics and ``run.json`` (run times, resume point) to ``metrics_dir``;
    returns the summary with the run facts."""
    root, checkpoints_dir = Path(root), Path(checkpoints_dir)
    out_dir, metrics_dir = Path(out_dir), Path(metrics_dir)
    done = finished_summary(params, checkpoints_dir, out_dir)
    if done is not None:
        log.info("train: %s already holds the finished run (step %s); nothing to do",
                 out_dir, done["global_step"])
        if not (metrics_dir / REWARD_CURVE).exists() and _is_main_process():
            plot_reward_curve(metrics_dir)
        return {**done, **_recorded_facts(metrics_dir)}

    from videorft.model.loading import load_model_and_processor
    from videorft.rewards import make_reward_funcs
    from videorft.trainer.data import (
        frame_store_loader,
        load_split,
        select_sources,
        to_hf_dataset,
    )
    from videorft.trainer.video_grpo import VideoGRPOTrainer
    from videorft.video.store import FrameStore

    started = time.monotonic()
    dataset_dir = root / params.paths.dataset
    rows = select_sources(load_split(dataset_dir, "train"), params.train.sources,
                          key="train.sources", file=str(dataset_dir / "train.jsonl"))
    thinking = dataset_thinking(rows, str(dataset_dir / "train.jsonl"))
    reward_funcs = TaskRewardTap.wrap(make_reward_funcs(thinking, params.train.reward_weights))
    loader = frame_store_loader(FrameStore(root / params.paths.frames))

    args = grpo_config(params, checkpoints_dir)
    check_enough_prompts(len(rows), args, str(dataset_dir / "train.jsonl"))
    lora = params.train.lora
    plugin = getattr(args, "deepspeed_plugin", None)
    if lora.enabled and plugin is not None and plugin.zero_stage == 3:
        raise ConfigError("train.lora with DeepSpeed ZeRO-3: merging the adapters into the final "
                          "model is not supported; use a ZeRO-2 accelerate config")
    model, processor = load_model_and_processor(
        init_model, dtype=params.model.dtype, attn_implementation=params.model.attn_implementation
    )
    if params.train.freeze_vision:
        freeze_vision(model)

    with args.main_process_first(local=False, desc="checkpoint scan"):  # main cleans up first
        target = params.train.max_steps if params.train.max_steps > 0 else None
        resume = last_complete_checkpoint(checkpoints_dir, at_most=target)
        if resume is not None and checkpoint_step(resume) == target and args.deepspeed:
            resume = None  # DeepSpeed cannot finish from a checkpoint without a step: redo
        if args.process_index == 0:
            for folder in remove_checkpoints_after(checkpoints_dir, resume):
                log.warning("removed checkpoint %s (incomplete, or past train.max_steps %s)",
                            folder, params.train.max_steps)
    resumed_step = checkpoint_step(resume) if resume is not None else None  # (may be rotated)
    if resume is not None:
        log.info("train: resuming from %s", resume)

    callback = MetricsCallback(metrics_dir)
    trainer = resumable_trainer(VideoGRPOTrainer)(
        model=model, args=args, processing_class=processor, reward_funcs=reward_funcs,
        train_dataset=to_hf_dataset(rows), video_loader=loader,
        shared_prompt=params.train.shared_prompt,
        compile_generation=params.train.compile_generation,
        peft_config=lora_config(lora) if lora.enabled else None,
        callbacks=[callback, StableCheckpoints()],
    )
    if resume is not None and resumed_step == target:
        # Already at the target (max_steps lowered, or killed after its last checkpoint): the
        # Trainer would still run one step past a target it resumes at, so finish from the
        # checkpoint instead.
        from transformers import TrainerState

        trainer._load_from_checkpoint(str(resume))
        trainer.state = TrainerState.load_from_json(str(resume / TRAINER_STATE))
        trainer.state.max_steps = target
        if trainer.accelerator.is_main_process:
            truncate_history(metrics_dir, target)
    else:
        trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    summary = _summary(trainer.state, params)
    facts = _run_facts(resume, resumed_step, time.monotonic() - started, callback.final_logs)
    _save_final(trainer, out_dir, summary)
    if trainer.accelerator.is_main_process:
        atomic_write_json(metrics_dir / RUN_FILE, facts)
    return {**summary, **facts}


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


# ------------------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> None:
    """``python -m videorft.trainer.grpo --root R --init-model M`` (reads R/params.yaml)."""
    parser = argparse.ArgumentParser(
        prog="python -m videorft.trainer.grpo",
        description="GRPO on the project's train split (resumes the latest checkpoint).")
    parser.add_argument("--root", default=".", help="project root holding params.yaml")
    parser.add_argument("--init-model", required=True,
                        help="model folder (or hub id) to start from")
    parser.add_argument("--checkpoints-dir", help="default: ROOT/paths.checkpoints")
    parser.add_argument("--out-dir", help="final model; default: ROOT/paths.trained")
    parser.add_argument("--metrics-dir", help="default: ROOT/paths.reports/train")
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    root = Path(ns.root).resolve()
    params = load_params(root / PARAMS_FILE)
    summary = train_grpo(
        params, root, init_model=ns.init_model,
        checkpoints_dir=Path(ns.checkpoints_dir or root / params.paths.checkpoints),
        out_dir=Path(ns.out_dir or root / params.paths.trained),
        metrics_dir=Path(ns.metrics_dir or root / params.paths.reports / "train"),
    )
    if _is_main_process():
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
