"""Benchmark: GRPO steps with each micro-batch's first loss pass standing in for TRL's
old-policy pass, against running that pass.

With ``num_iterations`` > 1, TRL runs a no-grad pass of the policy over every generation batch
to get the old policy's log-probs. In TRL's default layout (``steps_per_generation`` equal to
``gradient_accumulation_steps``) each micro-batch's first loss pass comes before any update on
it and computes those same numbers, so ``VideoGRPOTrainer`` keeps them instead
(``_first_loss_pass_is_old_policy``).

Builds the project of ``benchmarks/grpo_rows.py`` (the default preset's three tasks, the default
tiny model, a short warm start) and runs the train stage's own GRPO twice from the same seed:
with TRL's old-policy pass, then as the trainer runs now. The two must save equal weights
(which GRPO must have changed), else the script exits 1 without a speedup line; ``--repeats``
runs the pair several times in alternating order, as there.

Run: .venv/bin/python benchmarks/grpo_old_pass.py [--rows 32] [--steps 40] [--warm-steps 300]
[--repeats 1]
Prints steps/s of each and ``first_pass_vs_old_pass_speedup`` (old-pass time / new time; with
repeats, the median of the pairs' ratios).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from grpo_rows import compare_grpo, parse_args  # this folder is on sys.path when run as a script

from videorft.trainer.video_grpo import VideoGRPOTrainer


@contextlib.contextmanager
def old_policy_pass() -> Iterator[None]:
    """The trainer as before: TRL's old-policy pass over every generation batch."""
    original = VideoGRPOTrainer._first_loss_pass_is_old_policy
    VideoGRPOTrainer._first_loss_pass_is_old_policy = lambda self: False
    try:
        yield
    finally:
        VideoGRPOTrainer._first_loss_pass_is_old_policy = original


def main() -> int:
    args = parse_args(__doc__)
    return compare_grpo(args, ("old-policy pass", old_policy_pass), "first pass",
                        "first_pass_vs_old_pass_speedup")


if __name__ == "__main__":
    sys.exit(main())
