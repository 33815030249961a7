"""Which way each predicted track goes: per-axis direction accuracy of tracking predictions.

How to run (from a project's root)::

    python docs/research/track_axes.py reports/eval/predictions/warm_start.jsonl \
        reports/eval/predictions/trained.jsonl

On centre-out tracks (``tracking_paths: centre``) an answer is right when it picks the right
corner, i.e. the right horizontal and the right vertical direction; the IoU mixes that choice
with the boxes' precision. For each file (in the ``videorft score`` format) this prints the
share of tracking items whose predicted box centre moves, first box to last, the way the true
one does along x, along y and along both, and how many answers do not parse as eight boxes
(the tracking reward's parser; counted wrong).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from videorft.video_tasks.common import last_block
from videorft.video_tasks.tracking import parse_boxes


def moves(boxes: Sequence[Sequence[float]], axis: int) -> float:
    """How far the box centre moves along ``axis`` (0: x, 1: y), first box to last."""
    first, last = boxes[0], boxes[-1]
    return (last[axis] + last[axis + 2]) / 2 - (first[axis] + first[axis + 2]) / 2


def answer_boxes(completion: str) -> list[tuple[float, float, float, float]] | None:
    """The eight boxes of the completion's last ``<answer>`` block, parsed as the tracking
    reward parses them; None when they do not parse (the reward's format part is 0)."""
    return parse_boxes(last_block(completion, "<answer>", "</answer>"))


def right_directions(completions: Sequence[str],
                     solutions: Sequence[Sequence[Sequence[float]]]) -> dict[str, int]:
    """How many answers move the right way along x, along y and along both, and how many do
    not parse (``invalid``, counted wrong on every axis)."""
    counts = {"x": 0, "y": 0, "both": 0, "invalid": 0}
    for completion, solution in zip(completions, solutions, strict=True):
        boxes = answer_boxes(completion)
        if boxes is None:
            counts["invalid"] += 1
            continue
        x = moves(boxes, 0) * moves(solution, 0) > 0
        y = moves(boxes, 1) * moves(solution, 1) > 0
        counts["x"], counts["y"], counts["both"] = (counts["x"] + x, counts["y"] + y,
                                                    counts["both"] + (x and y))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", nargs="+", type=Path)
    args = parser.parse_args()
    for path in args.predictions:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        rows = [row for row in rows if row.get("task") == "tracking"]
        if not rows:
            raise SystemExit(f"{path}: no tracking predictions")
        right = right_directions([row["completion"] for row in rows],
                                 [row["solution"] for row in rows])
        n = len(rows)
        print(f"{path}: {n} items, x {right['x'] / n:.2f}, y {right['y'] / n:.2f}, "
              f"both {right['both'] / n:.2f}, invalid {right['invalid']}")


if __name__ == "__main__":
    main()
