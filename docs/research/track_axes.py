"""Which way each predicted track goes: per-axis direction accuracy of tracking predictions.

How to run (from a project's root)::

    python docs/research/track_axes.py reports/eval/predictions/warm_start.jsonl \
        reports/eval/predictions/trained.jsonl

On centre-out tracks (``tracking_paths: centre``) an answer is right when it picks the right
corner, i.e. the right horizontal and the right vertical direction; the IoU mixes that choice
with the boxes' precision. For each file (in the ``videorft score`` format) this prints the
share of tracking items whose predicted box centre moves, first box to last, the way the true
one does along x, along y and along both, and how many answers do not parse as eight boxes
(the tracking reward's parser; counted wrong). A second line counts the answers that go right
(+x) and down (+y) against the truth's counts: where they differ, the model leans one way,
and a change in the right share that only moves that lean is a prior, not seeing.

``--annotations data/raw/<source>/annotations.jsonl`` also counts the answers right on x, on y
and on both per number of distractor shapes in the video (the synthetic generator's
``meta.distractors``).
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


def leans(completions: Sequence[str],
          solutions: Sequence[Sequence[Sequence[float]]]) -> dict[str, tuple[int, int]]:
    """Per axis, how many parsed answers move the positive way (right, down) and how many of
    their true tracks do: ``{"x": (predicted, true), "y": (predicted, true)}``."""
    counts = {"x": [0, 0], "y": [0, 0]}
    for completion, solution in zip(completions, solutions, strict=True):
        boxes = answer_boxes(completion)
        if boxes is None:
            continue
        for axis, name in enumerate(("x", "y")):
            counts[name][0] += moves(boxes, axis) > 0
            counts[name][1] += moves(solution, axis) > 0
    return {name: (predicted, true) for name, (predicted, true) in counts.items()}


def distractor_counts(annotations: Path) -> dict[str, int]:
    """``{"<source>/<id>": number of distractors}`` from a synthetic source's annotations; the
    source is the annotations' folder name, as in the dataset's item ids."""
    source = annotations.parent.name
    rows = (json.loads(line) for line in annotations.read_text(encoding="utf-8").splitlines())
    return {f"{source}/{row['id']}": len(row["meta"]["distractors"]) for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", nargs="+", type=Path)
    parser.add_argument("--annotations", type=Path,
                        help="a synthetic source's annotations.jsonl: split by distractors")
    args = parser.parse_args()
    if args.annotations and not args.annotations.is_file():
        raise SystemExit(f"{args.annotations}: no such file")
    distractors = distractor_counts(args.annotations) if args.annotations else None
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
        lean = leans([row["completion"] for row in rows], [row["solution"] for row in rows])
        print(f"  answers going right {lean['x'][0]} (truth {lean['x'][1]}), "
              f"down {lean['y'][0]} (truth {lean['y'][1]}), of those that parse")
        if distractors is None:
            continue
        unknown = [row["id"] for row in rows if row["id"] not in distractors]
        if unknown:
            raise SystemExit(f"{args.annotations}: no annotation for {len(unknown)} of {path}'s "
                             f"items (first: {unknown[0]}); give that source's annotations.jsonl")
        for count in sorted({distractors[row["id"]] for row in rows}):
            group = [row for row in rows if distractors[row["id"]] == count]
            split = right_directions([row["completion"] for row in group],
                                     [row["solution"] for row in group])
            noun = "distractor" if count == 1 else "distractors"
            print(f"  {count} {noun}: {len(group)} items, x {split['x']}, y {split['y']}, "
                  f"both {split['both']}")


if __name__ == "__main__":
    main()
