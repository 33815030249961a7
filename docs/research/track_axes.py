"""Which way each predicted track goes: per-axis direction accuracy of tracking predictions.

How to run (from a project's root)::

    python docs/research/track_axes.py reports/eval/predictions/warm_start.jsonl \
        reports/eval/predictions/trained.jsonl

On centre-out tracks (``tracking_paths: centre``) an answer is right when it picks the right
corner, i.e. the right horizontal and the right vertical direction; the IoU mixes that choice
with the boxes' precision. For each file (in the ``videorft score`` format) this prints the
share of tracking items whose predicted box centre moves, first box to last, the way the true
one does along x, along y and along both, and how many answers do not parse as eight boxes
(counted wrong).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

_BOXES = re.compile(r"\[\s*\[.*\]\s*\]", re.DOTALL)


def moves(boxes: list[list[float]], axis: int) -> float:
    """How far the box centre moves along ``axis`` (0: x, 1: y), first box to last."""
    first, last = boxes[0], boxes[-1]
    return (last[axis] + last[axis + 2]) / 2 - (first[axis] + first[axis + 2]) / 2


def parse_boxes(completion: str) -> list[list[float]] | None:
    """The answer's eight ``[x0, y0, x1, y1]`` boxes, or None when it has no such list."""
    match = _BOXES.search(completion)
    try:
        boxes = json.loads(match.group(0)) if match else None
    except json.JSONDecodeError:
        return None
    ok = isinstance(boxes, list) and len(boxes) == 8 and all(
        isinstance(b, list) and len(b) == 4 for b in boxes)
    return boxes if ok else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", nargs="+", type=Path)
    args = parser.parse_args()
    for path in args.predictions:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        rows = [row for row in rows if row.get("task") == "tracking"]
        if not rows:
            raise SystemExit(f"{path}: no tracking predictions")
        right_x = right_y = right_both = invalid = 0
        for row in rows:
            boxes = parse_boxes(row["completion"])
            if boxes is None:
                invalid += 1
                continue
            x = moves(boxes, 0) * moves(row["solution"], 0) > 0
            y = moves(boxes, 1) * moves(row["solution"], 1) > 0
            right_x, right_y, right_both = right_x + x, right_y + y, right_both + (x and y)
        n = len(rows)
        print(f"{path}: {n} items, x {right_x / n:.2f}, y {right_y / n:.2f}, "
              f"both {right_both / n:.2f}, invalid {invalid}")


if __name__ == "__main__":
    main()
