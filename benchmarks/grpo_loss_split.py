"""Benchmark: GRPO's loss pass with a completion pass per length (groups of unlike answer
lengths apart) against one completion pass as wide as the widest.

A GRPO loss micro-batch holds two prompt groups, and TRL right-pads every completion to the
longest of the generation batch: beside a tracking group (answers of ~200 tokens) a temporal
grounding group (~16) is computed at ~200 tokens. ``shared_prompt_logps`` runs groups of unlike
lengths as separate completion passes, each trimmed to its own longest; ``min_fill=0`` gives
the single pass of before.

Builds a small project with the three GRPO tasks of the four-task miniature (synthetic
temporal grounding, grounded QA and tracking at 160x120, 4 s at 4 fps, frames at 2 fps; the
128-wide, 4-layer model), takes one train video per task with G copies of its reference answer
as completions (the answers a trained model gives), and times the loss pass (forward and
backward) of every ordered pair of tasks, both ways, best of ``--repeats``. The log-probs of the
two ways must agree to float rounding, else the script exits 1 without a speedup line.

Run: .venv/bin/python benchmarks/grpo_loss_split.py [--generations 8] [--repeats 5]
Prints each pair's times and ``split_vs_one_pass_speedup``: the summed time of one pass over
the nine pairs (the pairs of a run that draws the three tasks equally often) / the split's.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from trl.trainer.utils import add_fused_lm_head
from warm_start_split import build_project  # this folder is on sys.path when run as a script

from videorft.trainer.shared_prompt import shared_prompt_logps

TASKS = ("temporal_grounding", "grounded_qa", "tracking")


def task_groups(root: Path, params, model_dir: Path, generations: int) -> tuple[object, dict]:
    """(model with TRL's fused head, task -> one prompt group: ids, completion, video)."""
    from videorft.model.inputs import process_videos
    from videorft.model.loading import load_model_and_processor
    from videorft.trainer.data import (
        frame_store_loader,
        load_split,
        reference_answer,
        to_trainer_rows,
    )
    from videorft.video.store import FrameStore

    model, processor = load_model_and_processor(model_dir, dtype="float32")
    add_fused_lm_head(model, temperature=0.7, outputs=("log_probs", "entropy"))
    model.train()
    load = frame_store_loader(FrameStore(root / params.paths.frames))
    rows = to_trainer_rows(load_split(root / params.paths.dataset, "train"))
    groups = {}
    for task in TASKS:
        row = next(r for r in rows if r["task"] == task)
        text = processor.apply_chat_template(row["prompt"], add_generation_prompt=True,
                                             tokenize=False)
        inputs = process_videos(processor, [text], [load(row)])
        answer = reference_answer(task, json.loads(row["solution"]), thinking=row["thinking"])
        completion = processor.tokenizer(answer)["input_ids"] + [processor.tokenizer.eos_token_id]
        groups[task] = {"prompt": inputs["input_ids"][0], "completion": completion,
                        "pixels": inputs["pixel_values_videos"],
                        "grid": inputs["video_grid_thw"][0],
                        "time": float(inputs["second_per_grid_ts"][0])}
    return model, {task: {**group, "copies": generations} for task, group in groups.items()}


def pair_batch(groups: dict, pair: tuple[str, str], pad_id: int) -> dict:
    """Two groups as the loss pass gets them: prompts left-padded, completions right-padded."""
    members = [groups[task] for task in pair for _ in range(groups[task]["copies"])]
    prompt_len = max(m["prompt"].numel() for m in members)
    width = max(len(m["completion"]) for m in members)
    ids, mask = [], []
    for m in members:
        left = prompt_len - m["prompt"].numel()
        right = width - len(m["completion"])
        ids.append(torch.cat([torch.full((left,), pad_id), m["prompt"],
                              torch.tensor(m["completion"]), torch.full((right,), pad_id)]))
        mask.append(torch.cat([torch.zeros(left), torch.ones(m["prompt"].numel()),
                               torch.ones(len(m["completion"])), torch.zeros(right)]).long())
    copies = groups[pair[0]]["copies"]
    return {
        "input_ids": torch.stack(ids), "attention_mask": torch.stack(mask), "keep": width,
        "pixels": [m["pixels"] for m in members],
        "grid": torch.stack([m["grid"] for m in members]),
        "time": torch.tensor([m["time"] for m in members]),
        "groups": torch.tensor([0] * copies + [1] * (len(members) - copies)),
    }


def loss_pass(model, batch: dict, min_fill: float | None) -> tuple[float, torch.Tensor]:
    """(seconds, log-probs) of one forward and backward; ``min_fill`` None: the default split."""
    model.zero_grad(set_to_none=True)
    extra = {} if min_fill is None else {"min_fill": min_fill}
    started = time.perf_counter()
    logps, entropy = shared_prompt_logps(
        model, batch["input_ids"], batch["attention_mask"], batch["keep"],
        group_ids=batch["groups"], pixel_values_videos=batch["pixels"],
        video_grid_thw=batch["grid"], second_per_grid_ts=batch["time"],
        video_token_id=model.config.video_token_id, compute_entropy=True, **extra)
    mask = batch["attention_mask"][:, -batch["keep"]:]
    ((logps * mask).sum() + 0.01 * (entropy * mask).sum()).backward()
    return time.perf_counter() - started, logps.detach()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=8, help="completions per prompt (G)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per pair and way")
    parser.add_argument("--hidden", type=int, default=128, help="language-model width")
    parser.add_argument("--layers", type=int, default=4, help="language-model layers")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="grpo-split-bench-") as tmp:
        root = Path(tmp)
        model_dir, params = build_project(root, 4, args.hidden, args.layers)
        model, groups = task_groups(root, params, model_dir, args.generations)
    pad_id = model.config.text_config.pad_token_id or 0
    print(f"threads: {torch.get_num_threads()}, G: {args.generations}, model: {args.hidden} "
          f"wide, {args.layers} layers; completions: "
          + ", ".join(f"{t} {len(g['completion'])}" for t, g in groups.items()))
    totals = {"one pass": 0.0, "split": 0.0}
    for pair in itertools.product(TASKS, repeat=2):
        batch = pair_batch(groups, pair, pad_id)
        loss_pass(model, batch, None)  # warm-up
        best = {"one pass": float("inf"), "split": float("inf")}
        outputs = {}
        for _ in range(args.repeats):
            for way, min_fill in (("one pass", 0.0), ("split", None)):
                seconds, outputs[way] = loss_pass(model, batch, min_fill)
                best[way] = min(best[way], seconds)
        real = batch["attention_mask"][:, -batch["keep"]:].bool()
        gap = (outputs["one pass"] - outputs["split"])[real].abs().max().item()
        if gap > 1e-4:
            print(f"{' + '.join(pair)}: log-probs differ by {gap:.2e}", file=sys.stderr)
            return 1
        for way in totals:
            totals[way] += best[way]
        print(f"{' + '.join(pair):<40} one pass {best['one pass']:.3f} s, split "
              f"{best['split']:.3f} s ({best['one pass'] / best['split']:.2f}x)")
    print(f"split_vs_one_pass_speedup: {totals['one pass'] / totals['split']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
