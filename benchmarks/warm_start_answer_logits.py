"""Benchmark: warm-start steps that project only the answer window onto the vocabulary, against
projecting every position.

Builds a small project of the short-answer tasks (synthetic temporal grounding, grounded QA and
multiple choice at 160x120, 4 s at 4 fps, frames at 2 fps; the default preset's scenes and tiny
model), then runs the same ``LengthSplitTrainer`` steps twice from the same seed with the
collator's row cache filled: once with ``answer_logits_only`` off (HF's loss over logits at
every position, as before) and once on. A row is ~200 tokens of prompt and video and 7-22 of
answer, and the loss reads only the answer's logits. The two must train the same (every step's
loss within 1e-4 relative), else the script exits 1 without a speedup line.

Run: .venv/bin/python benchmarks/warm_start_answer_logits.py [--rows 32] [--steps 60]
     [--batch 16] [--hidden 64 --layers 2] [--tasks temporal_grounding grounded_qa mcq]
Prints steps/s of each and ``answer_window_vs_every_position_speedup`` (every-position time /
answer-window time).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from warm_start_split import build_project, compare_runs  # this folder is on sys.path
from warm_start_step import run_steps

from videorft.trainer.micro_batches import LengthSplitTrainer


class EveryPositionTrainer(LengthSplitTrainer):
    """The baseline: logits at every position, as HF's causal-LM loss computes them."""

    answer_logits_only = False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32, help="training videos per task")
    parser.add_argument("--steps", type=int, default=60, help="optimiser steps per run")
    parser.add_argument("--batch", type=int, default=16, help="rows per step")
    parser.add_argument("--hidden", type=int, default=64, help="language-model width")
    parser.add_argument("--layers", type=int, default=2, help="language-model layers")
    parser.add_argument("--tasks", nargs="+",
                        default=["temporal_grounding", "grounded_qa", "mcq"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ws-logits-bench-") as tmp:
        root = Path(tmp)
        model_dir, params = build_project(root, args.rows, args.hidden, args.layers,
                                          tuple(args.tasks))
        every, every_losses = run_steps(model_dir, params, root, steps=args.steps,
                                        batch=args.batch, cache=True,
                                        trainer_class=EveryPositionTrainer)
        window, window_losses = run_steps(model_dir, params, root, steps=args.steps,
                                          batch=args.batch, cache=True,
                                          trainer_class=LengthSplitTrainer)
    print(f"threads: {torch.get_num_threads()}, tasks: {' '.join(args.tasks)}, rows per task: "
          f"{args.rows}, batch: {args.batch}, steps: {args.steps}, model: {args.hidden} wide, "
          f"{args.layers} layers")
    return compare_runs(args.steps, ("every position", every, every_losses),
                        ("answer window", window, window_losses),
                        "answer_window_vs_every_position_speedup")


if __name__ == "__main__":
    sys.exit(main())
