"""Whether a tracking lean is greedy decoding tipping near ties: sampled direction shares.

How to run (from a project's root, with the project's virtualenv active)::

    python docs/research/direction_shares.py models/warm_start models/trained \
        --split test --source synthetic_track --rows 128 [--generations 16] \
        [--temperature 0.7] [--seed 0] [--max-new-tokens 224]

Why: on centre-out tracks (``tracking_paths: centre``) GRPO changes how many greedy answers go
right far more than how many go the right way (r208-r226 in rft-miniature.md), and it does so
even when every step holds a video beside its mirror images, where a lean earns nothing. One
reading is that on the videos a model cannot see, its answer is a near tie between two
directions, and a small change anywhere tips every such greedy answer one way. This script
measures that: per video it samples G answers (at GRPO's temperature) and takes the share of
the parsed ones that go right (+x). It prints per model:

* ``greedy_x_right``: greedy answers going the true way along x (unparsed answers count wrong),
  and ``greedy_going_right``: greedy answers going right, against ``truth_going_right``;
* ``sampled_x_right``: the sampled share going the true way along x, averaged over videos,
  and ``sampled_going_right``: the share going right, summed over videos (a number of videos);
* ``near_ties``: videos whose sampled share going right lies in [0.25, 0.75].

With two models it also counts the videos whose greedy answer changes direction along x and
how many of those were near ties for the first model. Answers that do not parse are left out
of the shares; a video with no parsed sample counts as a near tie.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import torch
from rollouts import add_sampling_arguments, sample_group, sampling_config
from split_rows import add_row_arguments, split_rows
from track_axes import answer_boxes, moves

from videorft.model.generate import generate_answers
from videorft.model.loading import load_model_and_processor
from videorft.video.store import FrameStore

NEAR_TIE = (0.25, 0.75)


def goes_right(completion: str) -> bool | None:
    """Whether the answer's box centre moves right (+x), first box to last; None: no parse."""
    boxes = answer_boxes(completion)
    return None if boxes is None else moves(boxes, 0) > 0


def share_right(completions: list[str]) -> float | None:
    """Share of the parsed completions that go right; None when none parses."""
    parsed = [right for right in map(goes_right, completions) if right is not None]
    return sum(parsed) / len(parsed) if parsed else None


def model_directions(folder: Path, rows: list[dict[str, Any]], store: FrameStore,
                     args: argparse.Namespace) -> tuple[list[bool | None], list[float | None]]:
    """Per row: whether the greedy answer goes right, and the sampled share going right."""
    model, processor = load_model_and_processor(folder, dtype="float32")
    greedy = [goes_right(answer) for answer in generate_answers(
        model, processor, rows, store, max_new_tokens=args.max_new_tokens, batch_size=len(rows))]
    config = sampling_config(model, processor.tokenizer, args.max_new_tokens, args.temperature)
    torch.manual_seed(args.seed)
    model.eval()
    with torch.inference_mode():
        shares = [share_right(sample_group(model, processor, store, row, args.generations, config))
                  for row in rows]
    return greedy, shares


def near_tie(share: float | None) -> bool:
    return share is None or NEAR_TIE[0] <= share <= NEAR_TIE[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="model folders")
    add_row_arguments(parser, rows=128)
    add_sampling_arguments(parser, generations=16, what="samples per video")
    args = parser.parse_args()

    rows = split_rows(args)
    truth = [moves(row["solution"], 0) > 0 for row in rows]
    store = FrameStore(args.project / "data/frames")
    results = []
    for folder in args.models:
        greedy, shares = model_directions(folder, rows, store, args)
        results.append((folder, greedy, shares))
        true_shares = [s if t else 1 - s for s, t in zip(shares, truth, strict=True)
                       if s is not None]
        print(folder, args.split, {
            "rows": len(rows),
            "greedy_x_right": sum(g == t for g, t in zip(greedy, truth, strict=True)),
            "greedy_going_right": sum(g is True for g in greedy),
            "truth_going_right": sum(truth),
            "sampled_x_right": round(statistics.mean(true_shares), 3) if true_shares else None,
            "sampled_going_right": round(sum(s for s in shares if s is not None), 1),
            "near_ties": sum(map(near_tie, shares)),
        })
    if len(results) == 2:
        (first, greedy_a, shares_a), (second, greedy_b, _) = results
        flips = [i for i, (a, b) in enumerate(zip(greedy_a, greedy_b, strict=True))
                 if a is not None and b is not None and a != b]
        print(f"{first} -> {second}: {len(flips)} greedy answers change direction along x, "
              f"{sum(near_tie(shares_a[i]) for i in flips)} of them near ties for {first}")


if __name__ == "__main__":
    main()
