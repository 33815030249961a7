"""Temporal grounding: find when a described event happens ("person opens a door").

Record: ``inputs {"query"}``; ``solution [start, end]`` in seconds. Rewards: format + IoU of
the answered span with the true one (max 2). Metrics: ``miou`` and R@0.3/0.5/0.7.

Decisions beyond the reference (tested in tests/test_rewards.py):

* **Reversed predicted interval** (``5 to 3``): temporal IoU 0. This is the reference's own value,
  not a change: computed as is, the intersection ``min(e, e') - max(s, s')`` is at most
  ``e - s < 0``, so the reference also gives 0 (for any valid truth). Swapping would reward an
  answer that ignores the requested "start to end" order.
* **Timing numbers** follow the reference's ``(\\d+\\.?\\d*) (to|and) (\\d+\\.?\\d*)``
  (case-insensitive, as in its code), so a negative time is read without its sign (``-3 to 5``
  reads as 3 to 5). It runs as an equivalent possessive pattern so that long digit runs cannot
  backtrack for minutes.
"""

from __future__ import annotations

import math
import re
from types import MappingProxyType
from typing import Any

from videorft.video_tasks.base import Fail, RecordChecker, VideoTask, truth_span
from videorft.video_tasks.common import (
    as_text,
    decode_json,
    finite_pair,
    format_seconds,
    last_block,
    span_iou,
)

__all__ = ["SPAN_RE", "TASK", "TemporalGrounding", "temporal_iou"]

# The reference's timing pattern ``(\d+\.?\d*) (to|and) (\d+\.?\d*)`` with re.IGNORECASE. The
# first number must be followed by a space, so it is always the whole digit run: the lookbehind
# and possessive quantifiers give the same findall matches without the cubic backtracking.
SPAN_RE = re.compile(r"(?<!\d)(\d++(?:\.\d*+)?+) (to|and) (\d++(?:\.\d*+)?+)", re.IGNORECASE)

_QUESTION = (
    'To accurately pinpoint the event "{query}" in the video, determine the precise time '
    "period of the event."
)
_ANSWER = (
    "Then, provide the start and end times (in seconds, precise to two decimal places) in the "
    'format "start time to end time" within the <answer> </answer> tags. For example: '
    '"12.54 to 17.83".'
)


def temporal_iou(completion: str, solution: Any) -> float:
    """IoU of the last "<s> to <e>" in the last answer block with the true ``[start, end]``."""
    block = last_block(as_text(completion), "<answer>", "</answer>")
    true = finite_pair(decode_json(solution))
    if block is None or true is None:
        return 0.0
    matches = SPAN_RE.findall(block)
    if not matches:
        return 0.0
    start, _, end = matches[-1]
    try:
        pred = float(start), float(end)
    except ValueError:  # a Unicode digit float() refuses; never expected, never fatal
        return 0.0
    if not all(math.isfinite(v) for v in pred):
        return 0.0
    return span_iou(pred, true)


class TemporalGrounding(VideoTask):
    """When does the queried event happen: one span of seconds."""

    name = "temporal_grounding"
    rewards = ("format", "iou")
    content_rewards = MappingProxyType({"iou": temporal_iou})
    metrics = ("miou", "r@0.3", "r@0.5", "r@0.7")
    answer_sentence = _ANSWER

    def validate(self, record: dict[str, Any], check: RecordChecker) -> None:
        check.text(record["inputs"], "query")
        check.span(record["solution"], "solution")

    def normalise_solution(self, raw: Any, fail: Fail) -> list[float]:
        return truth_span(decode_json(raw), "solution", fail)

    def question(self, record: dict[str, Any]) -> str:
        return _QUESTION.format(query=record["inputs"]["query"])

    def answer(self, solution: Any) -> str:
        start, end = solution
        return f"<answer>{format_seconds(start)} to {format_seconds(end)}</answer>"


TASK = TemporalGrounding()
