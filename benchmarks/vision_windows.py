"""Benchmark: warm-start steps with the vision windows batched against transformers' loop.

Builds a small project of the default preset's tasks (synthetic temporal grounding, grounded QA
and multiple choice at 160x120, 4 s at 4 fps, frames at 2 fps) and the default tiny model, then
runs the same ``LengthSplitTrainer`` steps twice from the same seed with the collator's row
cache filled: once with transformers' ``Qwen2_5_VLVisionAttention`` (one attention call per
window and per frame) and once as ``load_model_and_processor`` loads models, with
``WindowBatchedVisionAttention`` (one call per window length). Batching must not change a bit:
every step's loss must be equal, else the script exits 1 without a speedup line.

Run: .venv/bin/python benchmarks/vision_windows.py [--rows 32] [--steps 100] [--batch 16]
     [--hidden 64 --layers 2] [--repeats 1]
Prints steps/s of each and ``batched_vs_looped_speedup`` (looped time / batched time; with
``--repeats``, pairs of runs in alternating order and the median of their ratios).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from warm_start_split import Way, compare_ways, parse_args  # this folder is on sys.path

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
    args = parse_args(__doc__, default_steps=100)
    return compare_ways(args, TASKS, Way("per-window loop", LengthSplitTrainer, per_window_loop),
                        Way("windows batched", LengthSplitTrainer),
                        "batched_vs_looped_speedup", rel_tol=0.0)


if __name__ == "__main__":
    sys.exit(main())
