"""Tracking: follow an object given its first box, as eight boxes at the sampled frames.

Record: ``inputs {"object"}``; ``solution`` eight normalised ``[x0, y0, x1, y1]`` boxes, one
per sampled frame (a video record sets ``nframes`` = 8, a frame-list record lists 8 frames).
The prompt gives the first true box. Rewards: format + mean box IoU (max 2). Metrics: ``ao``
(average overlap: mean over items of the per-item mean box IoU) and SR@0.5/0.75 (share of
items whose mean box IoU is at least k; GOT-10k's own SR counts frames, but the reward keeps
only the per-item mean, and that is what the trainer optimises).

Decisions beyond the reference (tested in tests/test_rewards.py):

* **Tracking** answers must be exactly 8 boxes of 4 finite numbers in square brackets (ints,
  floats, signs, exponents; no ``eval``). A predicted box with ``x1 <= x0`` or ``y1 <= y0`` gets
  IoU 0 for its pair; boxes are not clipped to [0, 1].
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any

from videorft.video_tasks.base import Fail, RecordChecker, VideoTask, truth_box
from videorft.video_tasks.common import (
    NUMBER,
    as_text,
    box_iou,
    clamp,
    decode_json,
    finite,
    format_box,
    last_block,
    numbers,
)

__all__ = ["BOXES", "TASK", "Tracking", "parse_boxes", "tracking_iou"]

#: Boxes in a tracking solution and in an answer: one per sampled frame.
BOXES = 8

_BOX = rf"\[\s*{NUMBER}\s*,\s*{NUMBER}\s*,\s*{NUMBER}\s*,\s*{NUMBER}\s*\]"
_BOXES_RE = re.compile(rf"\s*\[\s*{_BOX}(?:\s*,\s*{_BOX})*+\s*,?\s*\]\s*")

_QUESTION = (
    'Track the "{object}" in the video based on its initial coordinates "{start}". The output '
    "should be a list containing eight sublists. Each sublist includes four normalized "
    "coordinates [x0, y0, x1, y1] representing the bounding box of the object at specific time "
    "intervals."
)
_ANSWER = (
    "Provide your answer within the <answer> </answer> tags as a list of eight sublists, where "
    "each sublist contains the normalized coordinates [x0, y0, x1, y1]. For example: "
    "<answer>[[0.1, 0.5, 0.3, 0.55], [0.72, 0.25, 0.84, 0.43], ...]</answer>."
)


def parse_boxes(text: str | None) -> list[tuple[float, float, float, float]] | None:
    """Exactly eight ``[x0, y0, x1, y1]`` boxes of finite numbers, else None."""
    if text is None or _BOXES_RE.fullmatch(text) is None:
        return None
    values = numbers(text, 4 * BOXES)
    if values is None:
        return None
    return [
        (values[i], values[i + 1], values[i + 2], values[i + 3]) for i in range(0, len(values), 4)
    ]


def _true_boxes(solution: Any) -> list[tuple[float, ...]] | None:
    solution = decode_json(solution)
    if isinstance(solution, dict):  # the reference's {"answer": boxes} form
        solution = solution.get("answer")
    if not isinstance(solution, list | tuple):
        return None
    boxes = []
    for box in solution:
        if not isinstance(box, list | tuple) or len(box) != 4:
            return None
        values = tuple(finite(v) for v in box)
        if any(v is None for v in values):
            return None
        boxes.append(values)
    return boxes


def tracking_iou(completion: str, solution: Any) -> float:
    """Mean box IoU over the eight (predicted, true) pairs; 0 unless exactly 8 boxes parse."""
    pred = parse_boxes(last_block(as_text(completion), "<answer>", "</answer>"))
    true = _true_boxes(solution)
    if pred is None or true is None or len(true) != len(pred):
        return 0.0
    return clamp(sum(box_iou(p, t) for p, t in zip(pred, true, strict=True)) / len(pred))


class Tracking(VideoTask):
    """Where is the object at each of the eight sampled frames."""

    name = "tracking"
    rewards = ("format", "iou")
    content_rewards = MappingProxyType({"iou": tracking_iou})
    metrics = ("ao", "sr@0.5", "sr@0.75")
    nframes = BOXES
    answer_sentence = _ANSWER

    def validate(self, record: dict[str, Any], check: RecordChecker) -> None:
        check.text(record["inputs"], "object")
        solution = record["solution"]
        check.require(
            isinstance(solution, list) and len(solution) == BOXES,
            f"tracking solution must hold exactly {BOXES} boxes, got "
            f"{len(solution) if isinstance(solution, list) else type(solution).__name__}",
        )
        for i, box in enumerate(solution):
            check.box(box, f"solution box {i}")
        frames = record.get("frames")
        if frames is not None:
            check.require(
                len(frames) == BOXES,
                f"tracking needs {BOXES} frames, one per box; got {len(frames)}",
            )
        else:
            check.require(
                record.get("nframes") == BOXES, f"tracking on a video must set nframes={BOXES}"
            )

    def normalise_solution(self, raw: Any, fail: Fail) -> list[list[float]]:
        value = decode_json(raw)
        if isinstance(value, dict):  # the reference's {"answer": boxes} form
            value = value.get("answer")
        if not isinstance(value, list | tuple) or len(value) != BOXES:
            got = len(value) if isinstance(value, list | tuple) else type(value).__name__
            fail(f"tracking solution must hold exactly {BOXES} boxes, got {got}")
        return [truth_box(box, f"solution box {i}", fail) for i, box in enumerate(value)]

    def format_ok(self, text: str) -> bool:
        return parse_boxes(last_block(text, "<answer>", "</answer>")) is not None

    def question(self, record: dict[str, Any]) -> str:
        return _QUESTION.format(
            object=record["inputs"]["object"], start=format_box(record["solution"][0])
        )

    def answer(self, solution: Any) -> str:
        return "<answer>[" + ", ".join(format_box(b) for b in solution) + "]</answer>"


TASK = Tracking()
