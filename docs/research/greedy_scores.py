"""Score a model's greedy answers on some rows of a project's dataset split.

How to run (from a project's root, with the project's virtualenv active)::

    python docs/research/greedy_scores.py models/warm_start models/trained \
        [--split train] [--task tracking] [--source synthetic] [--rows 32] [--max-new-tokens 224] \
        [--frozen]

For each model folder it answers the first ``--rows`` rows of ``data/dataset/<split>.jsonl``
(those of ``--task`` from ``--source``) greedily, as the evaluate stage does, and prints the
mean reward components. The evaluate stage only reads the test or val split; this tells whether
a model lost something on GRPO's own training videos too (r109 in rft-miniature.md).

``--frozen`` also answers each row with every frame replaced by the video's first: a control
that keeps everything a single frame shows (the scene, a ``quadrant_tint``, distractors, the
object at the prompt's first box) and takes only the motion out. The evaluate stage's blind
control blanks every frame, which on scenes the model always saw tinted breaks the answers'
format, so it can only say "no answer without the video" (r161-r187). A gain that comes from
following the motion shows with the frames and not frozen; ``iou_parsed`` (the mean IoU of
the answers that parse) says whether the parsed frozen answers beat a guess. (A per-pixel
median over the frames is no such control here: a large, slow shape leaves a faint trail
along its path in it.)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from split_rows import add_row_arguments, split_rows

from videorft.model.generate import generate_answers
from videorft.model.loading import load_model_and_processor
from videorft.trainer.sft import score_answers
from videorft.video.store import FrameStore


class FrozenFrames:
    """A read-only view of a frame store in which every frame of a video is that video's first
    frame; everything else (metadata, keys) is the store's own."""

    def __init__(self, store: FrameStore):
        self.store = store

    def load(self, key: str) -> np.ndarray:
        frames = np.asarray(self.store.load(key))
        return np.broadcast_to(frames[:1], frames.shape).copy()

    def __getattr__(self, name: str) -> Any:
        if name == "store":  # not set yet (copy / unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.store, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="model folders")
    add_row_arguments(parser, rows=32)
    parser.add_argument("--max-new-tokens", type=int, default=224)
    parser.add_argument("--frozen", action="store_true",
                        help="also answer with every frame the video's first")
    args = parser.parse_args()

    rows = split_rows(args)
    store = FrameStore(args.project / "data/frames")
    views = [("", store)] + ([(" frozen", FrozenFrames(store))] if args.frozen else [])
    for folder in args.models:
        model, processor = load_model_and_processor(folder, dtype="float32")
        for label, frames in views:
            answers = generate_answers(model, processor, rows, frames,
                                       max_new_tokens=args.max_new_tokens, batch_size=len(rows))
            summary = score_answers(rows, answers)["per_task"][args.task]
            if "iou" in summary and summary["format"]:
                summary["iou_parsed"] = summary["iou"] / summary["format"]
            print(f"{folder} {args.split}{label}", summary)


if __name__ == "__main__":
    main()
