"""Run GRPO from params.yaml: resumable, with per-step metrics, ending in a plain model folder.

``train_grpo`` is what stage ``train`` calls in-process; ``python -m videorft.trainer.grpo
--root R --init-model M`` is the same run as a script, which is what ``accelerate launch`` starts
once per process when ``train.num_processes > 1`` (only the main process writes the final
model, the summary and the metrics).

Decisions:

* **Config.** :func:`grpo_config` maps every ``train.*`` knob onto TRL's ``GRPOConfig`` (the
  field names are TRL's). ``warmup_ratio`` becomes ``warmup_steps`` (transformers 5 reads a float
  in [0, 1) there as a ratio of the total steps and has no ``warmup_ratio`` any more);
  ``remove_unused_columns=False`` because the rewards read ``task``/``solution`` and the video
  loader ``frames_key``/``sample_fps``; ``report_to="none"`` because metrics go through
  :class:`MetricsCallback`.
* **Resume.** Checkpoints are the Trainer's own ``checkpoint-N`` folders (weights, optimizer,
  scheduler, RNG states, ``trainer_state.json``). ``transformers``' ``get_last_checkpoint``
  takes the highest number even when that folder was cut off mid-save, so
  :func:`last_complete_checkpoint` only accepts a folder whose ``trainer_state.json`` (the
  Trainer writes it last) parses and names step N, next to model weights; newer incomplete
  folders are deleted before training. The model weights are loaded back with
  :func:`load_saved_weights`: transformers 5.24's own resume loads a Qwen2.5-VL checkpoint
  without undoing ``save_pretrained``'s key renaming, i.e. loads nothing (issue #43701).
  Whether the folder belongs to *this* run (same recipe) is the stage's business
  (:mod:`videorft.trainer.run_state`), not this module's.
* **Done is done.** When the final model's summary says the run completed, with the same step
  target, and the latest checkpoint is that step, a re-run returns the summary without loading
  anything.
* **LoRA.** ``train.lora.enabled`` passes a peft ``LoraConfig`` to the trainer (TRL wraps the
  model; with ``beta > 0`` the reference log-probs come from the same model with the adapters
  disabled, so no second model is loaded). Checkpoints hold the adapters only; the final model
  is merged (``merge_and_unload``) into a plain checkpoint, because every later stage (and any
  user) loads ``paths.trained`` with ``from_pretrained`` and nothing peft-specific. Merging
  under DeepSpeed ZeRO-3 would need the sharded weights gathered first and is refused up front.
* **Metrics.** TRL 1.16 logs, per logging step: ``reward``, ``reward_std``,
  ``rewards/<func>/mean|std``, ``frac_reward_zero_std``, ``kl`` (beta > 0), ``entropy``,
  ``clip_ratio/*``, ``completions/*_length``, ``num_tokens``; the Trainer adds ``loss``,
  ``grad_norm``, ``learning_rate``, ``epoch``. We add ``rewards_per_task/<task>/mean``: the
  reward functions are wrapped (:class:`TaskRewardTap`) so that, once all three have scored a
  batch, each sample's total is reported through TRL's ``log_metric`` hook, which averages over
  samples and processes; a step without a sample of some task has no row for that task.
  DVCLive writes the history (``metrics.json``, ``plots/metrics/**/*.tsv``) from a Trainer
  callback; on resume the history is first cut back to the checkpoint's step, so the steps a
  killed run logged after its last checkpoint are not kept twice. ``reward_curve.png`` is
  drawn from that history at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from videorft.errors import ConfigError, DataValidationError
from videorft.io import atomic_open, atomic_write_json, atomic_write_text, read_json, replace_dir
from videorft.params import PARAMS_FILE, LoraParams, Params, load_params

log = logging.getLogger(__name__)

SUMMARY_FILE = "training_summary.json"
#: Facts of this particular run (time taken, where it resumed): beside the metrics, never in
#: the model folder, whose bytes must depend on the inputs alone (DVC hashes it, publish
#: versions it).
RUN_FILE = "run.json"
REWARD_CURVE = "reward_curve.png"
#: Metric name of a task's mean total reward (sum of its weighted components).
TASK_REWARD_METRIC = "rewards_per_task/{task}/mean"
TASK_REWARD_PREFIX = "rewards_per_task/"

_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
_TRAINER_STATE = "trainer_state.json"  # the Trainer writes it last into a checkpoint
_WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors",
    "pytorch_model.bin", "pytorch_model.bin.index.json", "adapter_model.bin",
)


# --------------------------------------------------------------------------------- config


def grpo_config(params: Params, output_dir: Path) -> Any:
    """TRL ``GRPOConfig`` for ``params.train``, writing checkpoints to ``output_dir``.

    Must be built before the model is loaded: with DeepSpeed ZeRO-3 the arguments register the
    config that makes ``from_pretrained`` shard the weights as they load. The ``train`` fields
    that are no GRPOConfig field act elsewhere: ``freeze_vision``, ``lora`` and
    ``reward_weights`` in :func:`train_grpo`, ``num_processes``/``accelerate_config`` at launch
    (stage ``train``), ``shared_prompt`` and ``compile_generation`` on the trainer.
    """
    import torch
    from trl import GRPOConfig

    t = params.train
    return GRPOConfig(
        output_dir=str(output_dir),
        # GRPO
        num_generations=t.num_generations,
        beta=t.beta,
        epsilon=t.epsilon,
        loss_type=t.loss_type,
        scale_rewards=t.scale_rewards,
        temperature=t.temperature,
        top_p=t.top_p,
        max_completion_length=t.max_completion_length,
        cache_implementation=None if t.cache_implementation == "dynamic" else
        t.cache_implementation,
        num_iterations=t.num_iterations,
        # optimisation
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_ratio if t.warmup_ratio > 0 else 0,  # float < 1: ratio
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        # transformers 5's names for gradient_checkpointing(_kwargs), which mirror them
        activation_checkpointing=t.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        bf16=t.mixed_precision == "bf16",
        fp16=t.mixed_precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        seed=t.seed,
        # checkpoints and logs
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        save_only_model=False,  # optimizer, scheduler and RNG states too: exact resume
        logging_strategy="steps",
        logging_steps=t.logging_steps,
        report_to="none",
        log_completions=False,
        disable_tqdm=False,
        remove_unused_columns=False,
    )


def lora_config(lora: LoraParams) -> Any:
    """peft ``LoraConfig`` for the language model's projections named in ``lora``."""
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=list(lora.target_modules), task_type="CAUSAL_LM")


def vision_tower(model: Any) -> tuple[str, Any]:
    """``(name, module)`` of the model's vision encoder: the outermost submodule whose config
    is the model's ``vision_config`` (``model.visual`` in transformers 5.24's Qwen2.5-VL)."""
    config = getattr(getattr(model, "config", None), "vision_config", None)
    if config is None:
        raise ValueError(f"{type(model).__name__} has no config.vision_config: no vision tower "
                         "to freeze (train.freeze_vision needs a vision-language model)")
    for name, module in model.named_modules():
        if module is not model and isinstance(getattr(module, "config", None), type(config)):
            return name, module
    raise ValueError(f"{type(model).__name__}: no submodule carries the vision config "
                     f"({type(config).__name__}); cannot find the vision tower to freeze")


def freeze_vision(model: Any) -> int:
    """Stop gradients to the vision tower; returns how many parameters were frozen."""
    name, tower = vision_tower(model)
    count = 0
    for param in tower.parameters():
        param.requires_grad_(False)
        count += param.numel()
    log.info("freeze_vision: %s frozen (%d parameters)", name, count)
    return count


# -------------------------------------------------------------------------- rewards


class TaskRewardTap:
    """Per-task mean total reward, reported through TRL's ``log_metric`` reward kwarg.

    TRL calls the reward functions one after another on the same ``completions`` list; each
    wrapped function hands its outputs here, and once all of them have scored the batch every
    sample's total (the sum of the components that judge its task, as TRL sums them) is logged
    under :data:`TASK_REWARD_METRIC`. One ``log_metric`` call per sample makes TRL's value a
    sample-weighted mean over the generation batch on all processes (batches within one logging
    step are then averaged, as TRL does for its own reward metrics).
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self._batch: Sequence[Any] | None = None
        self._outputs: dict[int, Sequence[float | None]] = {}

    @classmethod
    def wrap(cls, funcs: Sequence[Callable[..., Any]]) -> list[TappedReward]:
        tap = cls(len(funcs))
        return [TappedReward(func, index, tap) for index, func in enumerate(funcs)]

    def record(self, index: int, completions: Sequence[Any], tasks: Sequence[str] | None,
               rewards: Sequence[float | None], log_metric: Callable[[str, float], None] | None
               ) -> None:
        if self._batch is not completions:  # a new batch (or an earlier one that raised)
            self._batch, self._outputs = completions, {}
        self._outputs[index] = rewards
        if len(self._outputs) < self.count:
            return
        outputs = list(self._outputs.values())
        self._batch, self._outputs = None, {}
        if tasks is None or log_metric is None:
            return
        for i, task in enumerate(tasks):
            values = [out[i] for out in outputs if out[i] is not None and not math.isnan(out[i])]
            if values:
                log_metric(TASK_REWARD_METRIC.format(task=task), float(sum(values)))


class TappedReward:
    """A reward function that also reports its outputs to a :class:`TaskRewardTap`; keeps the
    wrapped function's ``__name__`` (TRL's metric name)."""

    def __init__(self, func: Callable[..., Any], index: int, tap: TaskRewardTap) -> None:
        self.func, self.index, self.tap = func, index, tap
        self.__name__ = getattr(func, "__name__", type(func).__name__)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                 **kwargs: Any) -> list[float | None]:
        rewards = self.func(prompts, completions, **kwargs)
        self.tap.record(self.index, completions, kwargs.get("task"), rewards,
                        kwargs.get("log_metric"))
        return rewards

    def __repr__(self) -> str:
        return f"TappedReward({self.func!r})"


def dataset_thinking(rows: Sequence[dict[str, Any]], where: str) -> bool:
    """The rows' shared ``thinking`` flag (the reward format depends on it)."""
    values = {bool(row["thinking"]) for row in rows}
    if not values:
        raise DataValidationError("no training rows (run build_dataset first)", file=where)
    if len(values) > 1:
        raise DataValidationError("rows mix thinking and non-thinking prompts; rebuild the "
                                  "dataset with one build_dataset.thinking", file=where)
    return values.pop()


# ----------------------------------------------------------------------- checkpoints


def _checkpoint_step(path: Path) -> int | None:
    match = _CHECKPOINT_RE.match(path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def is_complete_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a whole Trainer checkpoint (``trainer_state.json``, written last,
    parses and names the folder's step, and model weights are there)."""
    step = _checkpoint_step(path)
    if step is None:
        return False
    try:
        state = json.loads((path / _TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(state, dict) or state.get("global_step") != step:
        return False
    return any((path / name).is_file() for name in _WEIGHT_FILES)


def last_complete_checkpoint(checkpoints_dir: Path, at_most: int | None = None) -> Path | None:
    """The highest-numbered complete ``checkpoint-N`` folder (with ``N <= at_most`` when
    given: a run asked for fewer steps than a longer run saved), or None."""
    if not Path(checkpoints_dir).is_dir():
        return None
    folders = [p for p in Path(checkpoints_dir).iterdir() if _checkpoint_step(p) is not None
               and (at_most is None or _checkpoint_step(p) <= at_most)]
    for folder in sorted(folders, key=_checkpoint_step, reverse=True):
        if is_complete_checkpoint(folder):
            return folder
        log.warning("%s: incomplete checkpoint (cut off while saving?), skipped", folder)
    return None


def remove_checkpoints_after(checkpoints_dir: Path, keep: Path | None) -> list[Path]:
    """Delete checkpoint folders newer than ``keep``: cut off while saving, or saved by a longer
    run than ``train.max_steps`` now asks for (resuming one would train past the target)."""
    newest = _checkpoint_step(keep) if keep is not None else -1
    removed = []
    if Path(checkpoints_dir).is_dir():
        for folder in Path(checkpoints_dir).iterdir():
            step = _checkpoint_step(folder)
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


def load_saved_weights(model: Any, folder: Path) -> None:
    """Load a checkpoint that ``save_pretrained`` wrote into ``model``, undoing the key
    conversion it applied on saving (for Qwen2.5-VL in transformers 5.24 it writes
    ``visual.*``/``model.layers.*`` for the live ``model.visual.*``/
    ``model.language_model.layers.*``).

    The Trainer's own resume (``Trainer._load_from_checkpoint``) loads the file with a plain,
    non-strict ``load_state_dict``: with those keys *nothing* loads, the model silently
    restarts from its initial weights while optimizer and step resume (transformers issue
    #43701, open). The saved name of every live tensor is what ``revert_weight_conversion`` (the
    function ``save_pretrained`` uses) maps it to; the load is checked to cover every weight.
    """
    from safetensors.torch import load_file
    from transformers.core_model_loading import revert_weight_conversion

    files = checkpoint_weight_files(folder)
    if not files:
        raise FileNotFoundError(f"{folder}: no model.safetensors(.index.json) to resume from")
    live = model.state_dict(keep_vars=True)
    saved_name = {id(t): k for k, t in revert_weight_conversion(model, dict(live)).items()}
    to_live: dict[str, str] = {}
    for key, tensor in live.items():
        if id(tensor) in saved_name:
            to_live.setdefault(saved_name[id(tensor)], key)
    state: dict[str, Any] = {}
    for file in files:
        for key, tensor in load_file(str(file), device="cpu").items():
            state[to_live.get(key, key)] = tensor
    result = model.load_state_dict(state, strict=False)
    loaded = {id(live[k]) for k in state if k in live}
    missing = [k for k in result.missing_keys if id(live[k]) not in loaded]  # tied: loaded
    if missing or result.unexpected_keys:
        raise RuntimeError(f"{folder}: checkpoint does not match the model (missing "
                           f"{missing[:5]}, unexpected {result.unexpected_keys[:5]})")


def _resumable_trainer(base: type) -> type:
    """``base`` (VideoGRPOTrainer) with :func:`load_saved_weights` as its full-model resume."""

    class ResumableVideoGRPOTrainer(base):
        def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
            from accelerate.utils import is_peft_model

            model = self.model if model is None else model
            if (is_peft_model(model) or self.is_fsdp_enabled or self.is_deepspeed_enabled
                    or not checkpoint_weight_files(Path(resume_from_checkpoint))):
                return super()._load_from_checkpoint(resume_from_checkpoint, model)
            log.info("loading model weights from %s", resume_from_checkpoint)
            load_saved_weights(model, Path(resume_from_checkpoint))
            return None

    return ResumableVideoGRPOTrainer


# --------------------------------------------------------------------------- metrics


def _metrics_root(metrics_dir: Path) -> Path:
    return Path(metrics_dir) / "plots" / "metrics"


def read_history(metrics_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every metric's ``(step, value)`` rows from DVCLive's TSV files, by metric name."""
    root = _metrics_root(metrics_dir)
    history: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(root.rglob("*.tsv")) if root.is_dir() else []:
        lines = path.read_text(encoding="utf-8").splitlines()
        if not lines:
            continue
        header = lines[0].split("\t")
        if "step" not in header or len(header) < 2:
            continue
        rows = []
        for line in lines[1:]:
            fields = line.split("\t")
            if len(fields) != len(header):
                continue
            try:
                rows.append((int(fields[header.index("step")]), float(fields[-1])))
            except ValueError:
                continue
        history[path.relative_to(root).with_suffix("").as_posix()] = rows
    return history


def truncate_history(metrics_dir: Path, step: int) -> dict[str, Any]:
    """Cut every TSV back to rows with ``step <= step`` (a resumed run logs the rest again;
    torn rows of a killed writer go too); returns each remaining metric's last value."""
    root = _metrics_root(metrics_dir)
    last: dict[str, Any] = {}
    for path in sorted(root.rglob("*.tsv")) if root.is_dir() else []:
        lines = path.read_text(encoding="utf-8").splitlines()
        header = lines[0].split("\t") if lines else []
        kept = []
        if "step" in header:
            for line in lines[1:]:
                fields = line.split("\t")
                try:
                    if len(fields) == len(header) and int(fields[header.index("step")]) <= step:
                        kept.append(line)
                except ValueError:
                    continue
        if not kept:
            path.unlink()
            continue
        if len(kept) != len(lines) - 1:
            atomic_write_text(path, os.linesep.join([lines[0], *kept]) + os.linesep)
        value = kept[-1].split("\t")[-1]
        try:
            last[path.relative_to(root).with_suffix("").as_posix()] = float(value)
        except ValueError:
            last[path.relative_to(root).with_suffix("").as_posix()] = value
    return last


def _nested(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"a/b": 1}`` -> ``{"a": {"b": 1}}`` (DVCLive's metrics.json layout)."""
    out: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split("/")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def plot_reward_curve(metrics_dir: Path, path: Path | None = None) -> Path | None:
    """Total reward (mean +- std) and each task's mean reward vs step, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    history = read_history(metrics_dir)
    total = history.get("reward")
    if not total:
        return None
    path = Path(path or Path(metrics_dir) / REWARD_CURVE)
    fig = Figure(figsize=(7.5, 4.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    steps = [s for s, _ in total]
    values = [v for _, v in total]
    ax.plot(steps, values, color="black", linewidth=2, marker="o", markersize=3, label="total")
    std = dict(history.get("reward_std", []))
    if std:
        ax.fill_between(steps, [v - std.get(s, 0.0) for s, v in total],
                        [v + std.get(s, 0.0) for s, v in total], color="black", alpha=0.12,
                        linewidth=0, label="total ± std")
    tasks = sorted(n for n in history if n.startswith(TASK_REWARD_PREFIX))
    for name in tasks:
        rows = history[name]
        ax.plot([s for s, _ in rows], [v for _, v in rows], linewidth=1.2, marker=".",
                label=name[len(TASK_REWARD_PREFIX):].rsplit("/", 1)[0])
    ax.set_xlabel("step")
    ax.set_ylabel("reward (sum of components)")
    ax.set_title("GRPO reward per step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png")
    return path


def _open_live(metrics_dir: Path) -> Any:
    """DVCLive writer for ``metrics_dir``, appending (resume) and never creating experiments.

    DVCLive asks git for the current commit when it finds a DVC repo; in a repo with no commit
    yet that raises scmrepo's SCMError (not a DvcException, so DVCLive does not catch it).
    Nothing here needs the commit (no experiment is saved), so then open it without the repo.
    """
    from unittest import mock

    import dvclive.live
    from dvclive import Live
    from scmrepo.exceptions import SCMError

    kwargs = {"dir": str(metrics_dir), "resume": True, "save_dvc_exp": False, "dvcyaml": None}
    try:
        return Live(**kwargs)
    except SCMError as exc:
        log.info("DVCLive without git integration (%s)", exc)
        with mock.patch.object(dvclive.live, "get_dvc_repo", return_value=None):
            return Live(**kwargs)


class MetricsCallback(TrainerCallback):
    """Per-step Trainer/TRL logs into DVCLive (main process only), history kept continuous.

    ``Live(resume=True)`` appends to the existing TSVs; before opening it, the history is cut
    back to the step training restarts from, and metrics.json is rebuilt from what remains
    (a file torn by a kill would otherwise break DVCLive's resume). No git/DVC repo is needed
    (``save_dvc_exp=False``, ``dvcyaml=None``).
    """

    def __init__(self, metrics_dir: Path) -> None:
        self.metrics_dir = Path(metrics_dir)
        self.live: Any = None
        self.final_logs: dict[str, Any] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return

        self.metrics_dir.mkdir(parents=True, exist_ok=True)
        last = truncate_history(self.metrics_dir, state.global_step)
        (self.metrics_dir / "metrics.json").unlink(missing_ok=True)
        self.live = _open_live(self.metrics_dir)
        self.live.summary = _nested(last)
        self.live.step = state.global_step
        if last:
            self.live.make_summary()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.live is None or not logs:
            return
        if "train_runtime" in logs:  # the end-of-training totals, not a step
            self.final_logs = dict(logs)
            return
        self.live.step = state.global_step
        for name, value in logs.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            self.live.log_metric(name, value)
        self.live.make_summary()

    def on_train_end(self, args, state, control, **kwargs):
        if self.live is None:
            return
        self.live.make_summary()
        plot_reward_curve(self.metrics_dir)


def _is_timing(key: str) -> bool:
    return "runtime" in key or "per_second" in key or key == "step_time"


class StableCheckpoints(TrainerCallback):
    """Checkpoints whose bytes depend on the inputs alone (the folder is a DVC output, and the
    same inputs must give the same hashes): no times in the trainer state they save (callbacks
    get their own copy of the logs, so DVCLive and ``run.json`` still have them), and no
    ``training_args.bin`` (a pickle holding this machine's absolute paths; resuming does not
    read it)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.log_history:
            entry = state.log_history[-1]
            for key in [k for k in entry if _is_timing(k)]:
                del entry[key]

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            (folder / "training_args.bin").unlink(missing_ok=True)


# ----------------------------------------------------------------------------- run


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
    if not path.is_file() or not any((Path(out_dir) / n).is_file() for n in _WEIGHT_FILES):
        return None
    try:
        summary = read_json(path)
    except (OSError, ValueError):
        return None
    target = {"max_steps": params.train.max_steps,
              "num_train_epochs": params.train.num_train_epochs}
    last = last_complete_checkpoint(checkpoints_dir)
    if (not summary.get("completed") or summary.get("target") != target or last is None
            or _checkpoint_step(last) != summary.get("global_step")):
        return None
    return summary


def check_enough_prompts(n_rows: int, args: Any, source: str) -> None:
    """Fail loudly when the split cannot fill one generation batch.

    TRL's sampler drops an incomplete batch, so a too-small split "trains" zero steps and
    reports success; that must be an error naming the numbers to change instead.
    """
    needed = args.generation_batch_size // args.num_generations
    if n_rows < needed:
        raise ConfigError(
            f"{source}: {n_rows} training prompt(s), but one generation batch needs {needed} "
            f"(per_device_train_batch_size {args.per_device_train_batch_size} x processes "
            f"{args.world_size} x steps_per_generation {args.steps_per_generation} / "
            f"num_generations {args.num_generations}); lower the batch size or add data")


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
        if resume is not None and _checkpoint_step(resume) == target and args.deepspeed:
            resume = None  # DeepSpeed cannot finish from a checkpoint without a step: redo
        if args.process_index == 0:
            for folder in remove_checkpoints_after(checkpoints_dir, resume):
                log.warning("removed checkpoint %s (incomplete, or past train.max_steps %s)",
                            folder, params.train.max_steps)
    resumed_step = _checkpoint_step(resume) if resume is not None else None  # (may be rotated)
    if resume is not None:
        log.info("train: resuming from %s", resume)

    callback = MetricsCallback(metrics_dir)
    trainer = _resumable_trainer(VideoGRPOTrainer)(
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
        trainer.state = TrainerState.load_from_json(str(resume / _TRAINER_STATE))
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
