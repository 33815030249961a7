"""The blind control: the same model, the same prompts, the video replaced by blank frames.

A video LLM can score well above chance without looking at the video (the question, the
options or the usual position of events give the answer away). To know how much of a score the
video earns, every evaluated model also answers the same held-out items with every frame
replaced by a constant blank frame: all zeros, uint8, exactly the stored frame's shape, the same
number of frames and the same sampling fps. The processor then builds exactly the same prompt:
the same number of video tokens at the same (3-D rope) positions, the same
``video_grid_thw`` and ``second_per_grid_ts``; only the pixels carry no information. "Video
reliance" is the score with the video minus the blind score.

Zeros rather than, say, noise or the mean frame: a constant carries no information by
construction, needs no seed, and reads unambiguously in a test ("every pixel is 0").

:class:`BlankFrames` stands in for the frame store, so the blind pass runs through the very
same code as the real one (:func:`videorft.model.inputs.video_inputs`); the blind answers go to
``predictions/<model>-blind.jsonl`` in the same ``videorft score`` format.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from videorft.video.store import FrameStore

BLIND_SUFFIX = "-blind"
#: What the predictions fingerprint records for a blind pass (``"frames"``); see predict.py.
BLANK = "blank"


def blind_name(model: str) -> str:
    """The name of ``model``'s blind pass (its predictions file stem, its items.jsonl model)."""
    return model + BLIND_SUFFIX


class BlankFrames:
    """A read-only view of a frame store in which every video is blank (all-zero uint8 frames
    of the stored shape); its metadata (timestamps, ``sample_fps``, ...) is the store's own."""

    def __init__(self, store: FrameStore):
        self.store = store

    def meta(self, key: str) -> dict[str, Any]:
        return self.store.meta(key)

    def load(self, key: str) -> np.ndarray:
        """uint8 zeros shaped like the stored frames [T, H, W, 3] (the store's memory map is
        opened for its shape only; no pixel is read)."""
        frames = self.store.load(key)
        return np.zeros(frames.shape, dtype=np.uint8)

    def __getattr__(self, name: str) -> Any:
        # Anything else (keys, manifest, sampling, ...) is the real store's.
        if name == "store":  # not set yet (copy / unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.store, name)
