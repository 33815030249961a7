"""Tracking with the motion taken out: every frame replaced by the video's first frame.

How to run (from a project's root, with the project's virtualenv active)::

    python docs/research/frozen_video.py models/warm_start models/trained \
        [--split val] [--task tracking] [--source synthetic_track] [--rows 64]

The evaluate stage's blind control blanks every frame (all zeros). On scenes the model always
saw with a constant cue in them (``quadrant_tint``), blank frames break the answers' format,
so that control only says "no answer without the video" (r161-r187 in rft-miniature.md).
This one keeps everything a single frame shows: each video's frames all become its first
frame (the scene, the tint, distractors, the object where the prompt's first box puts it),
so only the motion is gone. Each model answers the rows greedily twice, with the real frames
and frozen, and the script prints for both the mean IoU, the share of answers that parse and
the mean IoU of those that do (an answer that does not parse scores 0). A gain that comes
from following the motion shows with the frames and not frozen. (A per-pixel median over the
frames is no such control here: a large, slow shape leaves a faint trail along its path.)
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
        if name == "store":
            raise AttributeError(name)
        return getattr(self.store, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="model folders")
    add_row_arguments(parser, rows=64)
    parser.add_argument("--max-new-tokens", type=int, default=224)
    args = parser.parse_args()

    rows = split_rows(args)
    store = FrameStore(args.project / "data/frames")
    for folder in args.models:
        model, processor = load_model_and_processor(folder, dtype="float32")
        for name, frames in (("video", store), ("frozen", FrozenFrames(store))):
            answers = generate_answers(model, processor, rows, frames,
                                       max_new_tokens=args.max_new_tokens, batch_size=len(rows))
            summary = score_answers(rows, answers)["per_task"][args.task]
            parsed = summary["format"]
            print(f"{folder} {args.split} {name}: IoU {summary['iou']:.3f}, parse "
                  f"{parsed:.3f}, IoU of the parsed {summary['iou'] / parsed if parsed else 0:.3f}")


if __name__ == "__main__":
    main()
