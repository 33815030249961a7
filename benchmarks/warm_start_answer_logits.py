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
     [--repeats 1]
Prints steps/s of each and ``answer_window_vs_every_position_speedup`` (every-position time /
answer-window time; with ``--repeats``, the median over pairs of runs in alternating order).
"""

from __future__ import annotations

import sys

from warm_start_split import Way, compare_ways, parse_args  # this folder is on sys.path

from videorft.trainer.micro_batches import LengthSplitTrainer


class EveryPositionTrainer(LengthSplitTrainer):
    """The baseline: logits at every position, as HF's causal-LM loss computes them."""

    answer_logits_only = False


def main() -> int:
    args = parse_args(__doc__, default_steps=60,
                      default_tasks=("temporal_grounding", "grounded_qa", "mcq"))
    return compare_ways(args, tuple(args.tasks), Way("every position", EveryPositionTrainer),
                        Way("answer window", LengthSplitTrainer),
                        "answer_window_vs_every_position_speedup")


if __name__ == "__main__":
    sys.exit(main())
