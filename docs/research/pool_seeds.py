"""Pool the evaluate stage's per-item scores of several training seeds on one test set.

How to run (from the repository root, with the project's virtualenv active)::

    python docs/research/pool_seeds.py SEED0/items.jsonl SEED1/items.jsonl ... \
        [--model trained] [--baseline warm_start] [--metric iou] [--task temporal_grounding]

Each file is one run's ``reports/eval/items.jsonl`` (same test items, another seed of the
training). Per seed it prints each model's mean and the paired difference with its 95%
bootstrap interval (the same function as the evaluate stage). It then pools them. Each item's
difference is averaged over the seeds, and the items are resampled, which gives an interval for
the mean effect across seeds on this test set, with the items as the sampled unit.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from videorft.evaluation.bootstrap import paired_difference_interval

SAMPLES, CONFIDENCE, SEED = 2000, 0.95, 0


def per_item(path: Path, metric: str, task: str | None) -> dict[str, dict[str, float]]:
    """``{model: {item id: value}}`` from one items.jsonl (the items of ``task`` if given)."""
    table: dict[str, dict[str, float]] = defaultdict(dict)
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if (task is None or row["task"] == task) and metric in row:
            table[row["model"]][row["id"]] = float(row[metric] or 0.0)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("items", nargs="+", type=Path)
    parser.add_argument("--model", default="trained")
    parser.add_argument("--baseline", default="warm_start")
    parser.add_argument("--metric", default="iou")
    parser.add_argument("--task", default=None, help="only this task's items (default: all "
                        "items that have the metric)")
    args = parser.parse_args()
    runs = [per_item(path, args.metric, args.task) for path in args.items]
    ids = sorted(runs[0][args.model])
    diffs = []
    for path, run in zip(args.items, runs, strict=True):
        a = np.array([run[args.model][i] for i in ids])
        b = np.array([run[args.baseline][i] for i in ids])
        blind = np.array([run[f"{args.model}-blind"][i] for i in ids])
        delta = paired_difference_interval(a, b, samples=SAMPLES, confidence=CONFIDENCE,
                                           seed=SEED)
        print(f"{path}: {args.baseline} {100 * b.mean():.1f}, {args.model} {100 * a.mean():.1f} "
              f"(blind {100 * blind.mean():.1f}), delta {100 * delta.value:+.1f} "
              f"[{100 * delta.low:+.1f}, {100 * delta.high:+.1f}]")
        diffs.append(a - b)
    mean_diff = np.mean(diffs, axis=0)
    pooled = paired_difference_interval(mean_diff, np.zeros_like(mean_diff), samples=SAMPLES,
                                        confidence=CONFIDENCE, seed=SEED)
    print(f"pooled over {len(runs)} seeds, {len(ids)} items: delta {100 * pooled.value:+.1f} "
          f"[{100 * pooled.low:+.1f}, {100 * pooled.high:+.1f}]")


if __name__ == "__main__":
    main()
