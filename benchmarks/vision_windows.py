"""Benchmark: warm-start steps with the vision windows batched against transformers' loop.

Builds a small project of the default preset's tasks (synthetic temporal grounding, grounded QA
and multiple choice at 160x120, 4 s at 4 fps, frames at 2 fps) and the default tiny model, then
runs the same ``LengthSplitTrainer`` steps twice from the same seed with the collator's row
cache filled: once with transformers' ``Qwen2_5_VLVisionAttention`` (one attention call per
window and per frame) and once as ``load_model_and_processor`` loads models, with
``WindowBatchedVisionAttention`` (one call per window length). Batching must not change a bit:
every step's loss must be equal, else the script exits 1 without a speedup line.

Run: .venv/bin/python benchmarks/vision_windows.py [--rows 32] [--steps 100] [--batch 16]
Prints steps/s of each and ``batched_vs_looped_speedup`` (looped time / batched time).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from warm_start_split import build_project, compare_runs  # this folder is on sys.path
from warm_start_step import run_steps

from videorft.model import vision_attention
from videorft.trainer.micro_batches import LengthSplitTrainer

TASKS = ("temporal_grounding", "grounded_qa", "mcq")


@contextlib.contextmanager
def per_window_loop() -> Iterator[None]:
    """Models load with transformers' own vision attention while inside."""
    batch = vision_attention.batch_vision_windows
    vision_attention.batch_vision_windows = lambda model: 0
    try:
        yield
    finally:
        vision_attention.batch_vision_windows = batch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32, help="training videos per task")
    parser.add_argument("--steps", type=int, default=100, help="optimiser steps per run")
    parser.add_argument("--batch", type=int, default=16, help="rows per step")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vision-windows-bench-") as tmp:
        root = Path(tmp)
        model_dir, params = build_project(root, args.rows, hidden=64, layers=2, tasks=TASKS)
        with per_window_loop():
            looped, looped_losses = run_steps(model_dir, params, root, steps=args.steps,
                                              batch=args.batch, cache=True,
                                              trainer_class=LengthSplitTrainer)
        batched, batched_losses = run_steps(model_dir, params, root, steps=args.steps,
                                            batch=args.batch, cache=True,
                                            trainer_class=LengthSplitTrainer)
    print(f"threads: {torch.get_num_threads()}, rows per task: {args.rows}, batch: "
          f"{args.batch}, steps: {args.steps}, the default tiny model")
    if batched_losses != looped_losses:
        print("the losses differ: batching the windows changed the arithmetic", file=sys.stderr)
        return 1
    return compare_runs(args.steps, ("per-window loop", looped, looped_losses),
                        ("windows batched", batched, batched_losses),
                        "batched_vs_looped_speedup")


if __name__ == "__main__":
    sys.exit(main())
