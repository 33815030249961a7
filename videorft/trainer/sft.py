"""The supervised warm start: a few SFT steps on the training answers before GRPO.

Why: a random (tiny) model never writes ``<answer>...</answer>``, so every GRPO reward would be
0 and every advantage 0: nothing to learn from. A short SFT on :func:`reference_answer` (the
exact format the rewards parse, filled with the ground truth) teaches the format first. The
paper's recipe starts GRPO from the instruct model and has no such stage (``warm_start.enabled``
is off in its preset).

Training example = chat-templated prompt (with the generation prompt) + reference answer +
``<|im_end|>`` (so the model learns to stop). The loss covers only the answer tokens and the
end-of-turn token; prompt, video and padding tokens are labelled -100. Rows stay small in the
dataset; :class:`WarmStartCollator` loads each batch's frames from the frame store and runs
them through :func:`videorft.model.inputs.process_videos` (left padding, as in generation).

The optimiser is the HF ``Trainer``'s AdamW with the ``warm_start`` params (steps, learning
rate, batch, accumulation, schedule and warm-up, seed). ``warm_start.curriculum`` runs phases on
some tasks' rows first (say temporal grounding alone, whose warm start learns the spans every
time, before grounded QA joins), each a ``Trainer`` of its own on the same model. The stage is
short, so it keeps no checkpoints: a killed warm start simply restarts. The final model is
written to a temp folder beside ``out_dir`` and renamed over it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers.trainer_callback import ProgressCallback

from videorft.errors import ConfigError
from videorft.io import replace_dir
from videorft.model.inputs import process_videos, row_messages
from videorft.params import Params
from videorft.rewards import COMPONENTS, score
from videorft.trainer.data import (
    frame_store_loader,
    load_split,
    reference_answer,
    select_sources,
)
from videorft.trainer.micro_batches import IGNORE_INDEX, LengthSplitTrainer
from videorft.video.store import FrameStore

END_OF_TURN = "<|im_end|>"
SUMMARY_FILE = "warm_start.json"
#: Train rows whose greedy answers are scored before and after the warm start.
EVAL_ROWS = 32
#: New tokens allowed beyond the longest reference answer (a model may pad or ramble a bit).
GENERATION_MARGIN = 8
#: Processed rows the warm start keeps in memory (its collator's cache); rows past it are
#: processed at every visit.
COLLATE_CACHE_BYTES = 4 * 2**30
#: The progress bar prints the loss every this many steps. Every step is still logged (the
#: summary's ``loss_history`` keeps each one), but a printed line travels through DVC into the
#: run's log and Prefect's API: one a step cost the default run seconds of CPU on 2 cores.
PRINT_LOSS_EVERY = 10
#: Characters kept of the example answer reported per task.
EXAMPLE_CHARS = 300


def target_text(row: dict[str, Any], end_of_turn: str = END_OF_TURN) -> str:
    """What the model should write for a row: its reference answer, then the end of turn."""
    return reference_answer(row["task"], row["solution"], thinking=bool(row["thinking"])) + (
        end_of_turn
    )


def _end_of_turn(tokenizer: Any) -> str:
    """``<|im_end|>`` when the tokenizer has it (every Qwen chat model), else its eos token."""
    token_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
        return END_OF_TURN
    if tokenizer.eos_token is None:
        raise ValueError("the tokenizer has neither <|im_end|> nor an eos token to end answers")
    return tokenizer.eos_token


class RowDataset(torch.utils.data.Dataset):
    """Dataset rows as they are (no pixels): :class:`WarmStartCollator` loads the videos."""

    def __init__(self, rows: Sequence[dict[str, Any]]):
        self.rows = list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.rows[index]


class WarmStartCollator:
    """Rows -> model inputs with ``labels``: -100 on prompt, video and padding, token ids on
    the answer and its end-of-turn token.

    Prompt and answer go through the processor as one text, so every row's answer is its last
    tokens. The answer is tokenised on its own as well and must equal those last tokens (it
    does: the chat template ends the prompt with a newline, a pre-token boundary); anything
    else raises instead of training on misaligned labels.

    Each row is processed alone and kept (up to ``cache_bytes``): a warm start visits every row
    many times, and the processor (video patches, tokens) is about a third of a CPU step. A
    batch is its rows left-padded and concatenated, exactly what the processor makes of the
    batch at once (tested).
    """

    def __init__(self, processor: Any, store: FrameStore, *,
                 cache_bytes: int = COLLATE_CACHE_BYTES):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.end_of_turn = _end_of_turn(self.tokenizer)
        self.load_video = frame_store_loader(store)
        self.cache_bytes = cache_bytes
        self._cache: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
        self._cached_bytes = 0

    def prompt_text(self, row: dict[str, Any]) -> str:
        return self.processor.apply_chat_template(
            row_messages(row), tokenize=False, add_generation_prompt=True
        )

    def process(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """The rows through the processor at once (left-padded), with their labels."""
        targets = [target_text(row, self.end_of_turn) for row in rows]
        texts = [self.prompt_text(row) + target for row, target in zip(rows, targets, strict=True)]
        videos = [self.load_video(row) for row in rows]
        names = [f"row {row.get('id')!r}" for row in rows]
        inputs = process_videos(self.processor, texts, videos, names=names)
        input_ids = inputs["input_ids"]
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        for index, target in enumerate(targets):
            answer = self.tokenizer(target, add_special_tokens=False)["input_ids"]
            tail = input_ids[index, -len(answer):]
            if tail.tolist() != answer:
                raise RuntimeError(
                    f"row {rows[index].get('id')!r}: the answer tokenises differently inside "
                    "the full text than on its own; cannot place the labels"
                )
            labels[index, -len(answer):] = tail
        batch = dict(inputs)
        batch["labels"] = labels
        return batch

    def _processed(self, row: dict[str, Any]) -> dict[str, torch.Tensor]:
        key = (str(row.get("id")), str(row.get("frames_key")))
        item = self._cache.get(key)
        if item is None:
            item = self.process([row])
            size = sum(v.numel() * v.element_size() for v in item.values()
                       if isinstance(v, torch.Tensor))
            if self._cached_bytes + size <= self.cache_bytes:
                self._cache[key] = item
                self._cached_bytes += size
        return item

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        items = [self._processed(row) for row in rows]
        length = max(item["input_ids"].shape[1] for item in items)
        pads = {"input_ids": self.tokenizer.pad_token_id, "labels": IGNORE_INDEX}
        batch: dict[str, torch.Tensor] = {}
        for name, first in items[0].items():
            values = [item[name] for item in items]
            if first.dim() == 2 and first.shape == items[0]["input_ids"].shape:
                # Per token (ids, mask, labels, ...): left-pad every row to the longest.
                batch[name] = torch.cat([torch.nn.functional.pad(
                    v, (length - v.shape[1], 0), value=pads.get(name, 0)) for v in values])
            else:  # per video (patches, grids, seconds per grid): one after the other
                batch[name] = torch.cat(values)
        return batch


def spread_rows(rows: Sequence[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` rows taking the tasks in turn (each task's rows in file order), so a
    small sample still covers every task."""
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_task[row["task"]].append(row)
    picked: list[dict[str, Any]] = []
    queues = [list(reversed(task_rows)) for task_rows in by_task.values()]
    while len(picked) < limit and any(queues):
        for queue in queues:
            if queue and len(picked) < limit:
                picked.append(queue.pop())
    return picked


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def score_answers(rows: Sequence[dict[str, Any]], answers: Sequence[str]) -> dict[str, Any]:
    """Mean reward components over ``rows`` (each component over the rows it applies to), the
    mean total reward, and the same per task."""
    per_task: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    overall: dict[str, list[float]] = defaultdict(list)
    for row, answer in zip(rows, answers, strict=True):
        components = score(answer, row["task"], row["solution"], thinking=bool(row["thinking"]))
        components["reward"] = sum(components.values())
        for name, value in components.items():
            per_task[row["task"]][name].append(value)
            overall[name].append(value)
    summary: dict[str, Any] = {
        name: _mean(overall[name]) for name in (*COMPONENTS, "reward") if overall[name]
    }
    summary["rows"] = len(rows)
    summary["per_task"] = {
        task: {"rows": len(values["reward"]), **{k: _mean(v) for k, v in values.items()}}
        for task, values in sorted(per_task.items())
    }
    return summary


def _evaluate(model: Any, processor: Any, rows: Sequence[dict[str, Any]], store: FrameStore,
              *, max_new_tokens: int, batch_size: int, examples: bool) -> dict[str, Any]:
    """Score greedy answers on ``rows``; with ``examples``, one answer per task (truncated)."""
    from videorft.model.generate import generate_answers

    start = time.perf_counter()
    answers = generate_answers(model, processor, rows, store, max_new_tokens=max_new_tokens,
                               batch_size=batch_size)
    summary = score_answers(rows, answers)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    if examples:
        summary["examples"] = {}
        for row, answer in zip(rows, answers, strict=True):
            summary["examples"].setdefault(row["task"], answer[:EXAMPLE_CHARS])
    return summary


class SparseLossPrinter(ProgressCallback):
    """HF's progress bar, printing the logged loss every ``every`` steps and at the last."""

    def __init__(self, every: int) -> None:
        super().__init__()
        self.every = every

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if state.global_step % self.every == 0 or state.global_step >= state.max_steps:
            super().on_log(args, state, control, logs=logs, **kwargs)


def _losses(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    return [{"step": int(entry["step"]), "loss": float(entry["loss"])}
            for entry in log_history if "loss" in entry and "step" in entry]


def _training_args(params: Params, output_dir: Path, *, dtype: Any, max_steps: int) -> Any:
    from transformers import TrainingArguments

    ws = params.warm_start
    cuda = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(output_dir),
        max_steps=max_steps,
        learning_rate=ws.learning_rate,
        per_device_train_batch_size=ws.per_device_train_batch_size,
        gradient_accumulation_steps=ws.gradient_accumulation_steps,
        seed=ws.seed,
        data_seed=ws.seed,
        lr_scheduler_type=ws.lr_scheduler_type,
        warmup_steps=math.ceil(ws.warmup_ratio * max_steps),
        weight_decay=ws.weight_decay,
        max_grad_norm=1.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=not cuda,
        bf16=cuda and dtype == torch.bfloat16,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=cuda,
    )


def curriculum_phases(
    params: Params, rows: Sequence[dict[str, Any]], *, file: str
) -> list[tuple[list[str] | None, int, list[dict[str, Any]]]]:
    """(tasks, max_steps, rows) of each warm-start phase in order: ``warm_start.curriculum``'s,
    then the main phase on every row (tasks None). A phase whose tasks have no row is a
    ConfigError naming ``file`` (one line from the CLI, as ``select_sources``'): it would train
    on nothing."""
    phases: list[tuple[list[str] | None, int, list[dict[str, Any]]]] = []
    for index, phase in enumerate(params.warm_start.curriculum):
        phase_rows = [row for row in rows if row["task"] in phase.tasks]
        if not phase_rows:
            raise ConfigError(f"{file}: warm_start.curriculum.{index} trains on "
                              f"{', '.join(phase.tasks)}, which has no training row")
        phases.append((list(phase.tasks), phase.max_steps, phase_rows))
    phases.append((None, params.warm_start.max_steps, list(rows)))
    return phases


def warm_start(
    params: Params,
    root: Path,
    *,
    base_model: str | Path,
    out_dir: Path,
    eval_rows: int = EVAL_ROWS,
) -> dict[str, Any]:
    """SFT ``base_model`` on the train split's reference answers; install it at ``out_dir``.

    Returns a JSON-able summary (also written to ``out_dir / warm_start.json``): steps, the
    training loss per step (first and last too), and the mean reward components of greedy
    answers on up to ``eval_rows`` train rows before and after training, overall and per task.
    """
    from transformers import set_seed

    from videorft.model.loading import load_model_and_processor, resolve_dtype

    root, out_dir, ws = Path(root), Path(out_dir), params.warm_start
    _check_replaceable(out_dir)  # before minutes of training, not after
    train_file = root / params.paths.dataset / "train.jsonl"
    rows = select_sources(load_split(root / params.paths.dataset, "train"), ws.sources,
                          key="warm_start.sources", file=str(train_file))
    if not rows:  # a ConfigError: one line from the CLI, not a traceback
        raise ConfigError(f"{train_file}: no training row to warm-start on (every video held "
                          "out?); add training videos or set warm_start.enabled: false")
    phases = curriculum_phases(params, rows, file=str(train_file))  # before minutes of work
    store = FrameStore(root / params.paths.frames)
    dtype = resolve_dtype(params.model.dtype)
    set_seed(ws.seed)
    model, processor = load_model_and_processor(
        base_model, dtype=params.model.dtype, attn_implementation=params.model.attn_implementation
    )
    collator = WarmStartCollator(processor, store)
    if torch.cuda.is_available():
        model.to("cuda")

    probe = spread_rows(rows, eval_rows) if eval_rows > 0 else []
    longest = max((len(processor.tokenizer(target_text(r, collator.end_of_turn),
                                           add_special_tokens=False)["input_ids"])
                   for r in probe), default=1)
    max_new_tokens = longest + GENERATION_MARGIN
    eval_batch = max(ws.per_device_train_batch_size, 8)
    # No examples before: a random model's answers are noise (and invalid unicode).
    before = (_evaluate(model, processor, probe, store, max_new_tokens=max_new_tokens,
                        batch_size=eval_batch, examples=False) if probe else None)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = out_dir.parent / f".{out_dir.name}.trainer"
    shutil.rmtree(scratch, ignore_errors=True)  # a killed earlier attempt: start afresh
    model.train()
    losses: list[dict[str, float]] = []
    phase_summaries: list[dict[str, Any]] = []
    start = time.perf_counter()
    for tasks, max_steps, phase_rows in phases:
        set_seed(ws.seed)
        trainer = LengthSplitTrainer(  # a multi-task batch does not compute its padding
            model=model,
            loss_average=ws.loss_average,
            args=_training_args(params, scratch, dtype=dtype, max_steps=max_steps),
            train_dataset=RowDataset(phase_rows),
            data_collator=collator,  # one collator: its row cache serves every phase
        )
        if trainer.pop_callback(ProgressCallback) is not None:  # None: no bar (disable_tqdm)
            trainer.add_callback(SparseLossPrinter(PRINT_LOSS_EVERY))
        try:
            result = trainer.train()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        offset = losses[-1]["step"] if losses else 0
        losses += [{"step": entry["step"] + offset, "loss": entry["loss"]}
                   for entry in _losses(trainer.state.log_history)]
        model = trainer.model
        phase_summaries.append({
            "tasks": tasks, "steps": int(trainer.state.global_step), "rows": len(phase_rows),
            "epochs": round(float(trainer.state.epoch or 0.0), 2),
            "train_loss": float(result.training_loss)})
    train_seconds = time.perf_counter() - start
    if not losses or not all(math.isfinite(entry["loss"]) for entry in losses):
        raise RuntimeError(f"warm start: bad training losses {losses}")

    after = (_evaluate(model, processor, probe, store, max_new_tokens=max_new_tokens,
                       batch_size=eval_batch, examples=True) if probe else None)
    main = phase_summaries[-1]
    summary: dict[str, Any] = {
        "steps": sum(phase["steps"] for phase in phase_summaries),
        "train_rows": len(rows),
        "epochs": main["epochs"],
        "loss_first": losses[0]["loss"],
        "loss_last": losses[-1]["loss"],
        "train_loss": main["train_loss"],
        "train_seconds": round(train_seconds, 2),
        "max_new_tokens": max_new_tokens,
        "before": before,
        "after": after,
        "loss_history": losses,
    }
    if len(phase_summaries) > 1:
        summary["phases"] = phase_summaries
    # The model folder's copy leaves out the times: DVC hashes that folder, and the same inputs
    # must give the same bytes. The caller still gets them.
    _install(model, processor, _without_times(summary), out_dir)
    return summary


def _without_times(summary: dict[str, Any]) -> dict[str, Any]:
    untimed = {k: v for k, v in summary.items() if k != "train_seconds"}
    for when in ("before", "after"):
        if isinstance(untimed.get(when), dict):
            untimed[when] = {k: v for k, v in untimed[when].items() if k != "seconds"}
    return untimed


def _install(model: Any, processor: Any, summary: dict[str, Any], out_dir: Path) -> None:
    """Save model (safetensors), processor and summary into a temp folder beside ``out_dir``,
    then rename it over ``out_dir``, which is replaced only if it holds a model or a marker."""
    _check_replaceable(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n",
                                        encoding="utf-8")
        # mkdtemp creates 0700 and safetensors 0600 files: a model is meant to be shared.
        os.chmod(tmp, 0o755)
        for path in tmp.rglob("*"):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_replaceable(path: Path) -> None:
    """``path`` may be replaced if it is missing or an earlier output of this stage: an empty
    folder, a model (config.json) or a 'skipped' marker (model_info.json). Anything else (a
    file, a folder of something else) raises FileExistsError instead of being deleted."""
    if not path.exists():
        return
    if path.is_dir() and (not any(path.iterdir()) or (path / "config.json").is_file()
                          or (path / "model_info.json").is_file()):
        return
    raise FileExistsError(f"{path}: exists and holds no model or warm-start marker; not "
                          "replacing it (move it away or choose another paths.warm_start)")
