"""Grounded QA: answer a multiple-choice question and name the video spans the answer rests on.

Record: like multiple choice (:mod:`videorft.video_tasks.mcq`), with the evidence in the
solution: ``{"answer": "C", "glue": [[s, e], ...]}``. The answer is followed by a
``<glue>[(s1, e1), ...]</glue>`` block, which the format reward's tag layout requires. Rewards:
format + glue IoU + accuracy (max 3). Metrics: ``accuracy`` and ``miou`` (glue IoU).

Decisions beyond the reference (tested in tests/test_rewards.py):

* **Glue** accepts ``[(s, e), ...]`` and ``[[s, e], ...]``; numbers must be finite and
  ``0 <= s <= e``. An empty list ``[]`` fails the format check and scores glue IoU 0 (the
  reference gives format 1 for ``[]``, rewarding an answer that grounds nothing). The reference's
  cap of 3 spans is not in the paper's rules and is not applied: over-long span lists already
  lose IoU.
* **Reversed spans**: as for a reversed temporal-grounding interval
  (:mod:`videorft.video_tasks.temporal_grounding`), a pair with ``s > e`` makes the whole glue
  list invalid (format 0, glue IoU 0), as in the reference.
* **Glue IoU** is total intersection over total union of the merged predicted and true spans.

A truth glue must be a *non-empty* list for the scorer: an empty one would make every glue IoU
0 and quietly pull mIoU down.
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any

from videorft.video_tasks.base import Fail, RecordChecker, truth_span
from videorft.video_tasks.common import (
    NUMBER,
    NUMBER_RE,
    as_text,
    decode_json,
    finite_pair,
    format_seconds,
    last_block,
    numbers,
    spans_iou,
)
from videorft.video_tasks.mcq import OptionQuestionTask, option_accuracy

__all__ = ["TASK", "GroundedQA", "glue_iou", "parse_glue"]

_PAIR = rf"(?:\(\s*{NUMBER}\s*,\s*{NUMBER}\s*\)|\[\s*{NUMBER}\s*,\s*{NUMBER}\s*\])"
_PAIRS_RE = re.compile(rf"\s*\[\s*(?:{_PAIR}(?:\s*,\s*{_PAIR})*+\s*,?\s*)?\]\s*")

_ANSWER = (
    "Then, provide your answer within the <answer> </answer> tags, output the corresponding "
    "letter of the option. At the same time, in the <glue> </glue> tags, present the precise "
    "time period in seconds of the video clips on which you base your answer to this question "
    "in the format of [(s1, e1), (s2, e2), ...]. For example: "
    "<answer>A</answer><glue>[(5.2, 10.4)]</glue>."
)


def parse_glue(text: str | None) -> list[tuple[float, float]] | None:
    """A non-empty list of ``(s, e)`` / ``[s, e]`` spans with ``0 <= s <= e``, else None."""
    if text is None or _PAIRS_RE.fullmatch(text) is None:
        return None
    found = NUMBER_RE.findall(text)
    if not found:
        return None
    values = numbers(text, len(found))
    if values is None:
        return None
    spans = [(values[i], values[i + 1]) for i in range(0, len(values), 2)]
    if any(not 0.0 <= s <= e for s, e in spans):
        return None
    return spans


def glue_iou(completion: str, solution: Any) -> float:
    """Total intersection over total union of the merged predicted and true evidence spans."""
    pred = parse_glue(last_block(as_text(completion), "<glue>", "</glue>"))
    solution = decode_json(solution)
    raw = solution.get("glue") if isinstance(solution, dict) else solution
    if pred is None or not isinstance(raw, list | tuple) or not raw:
        return 0.0
    true = [finite_pair(span) for span in raw]
    if any(span is None or span[0] > span[1] for span in true):
        return 0.0
    return spans_iou(pred, true)  # type: ignore[arg-type]  # None excluded just above


class GroundedQA(OptionQuestionTask):
    """Which option answers the question, and when the video shows it."""

    name = "grounded_qa"
    rewards = ("format", "iou", "accuracy")
    content_rewards = MappingProxyType({"iou": glue_iou, "accuracy": option_accuracy})
    metrics = ("accuracy", "miou")
    glue = True
    answer_sentence = _ANSWER

    def validate(self, record: dict[str, Any], check: RecordChecker) -> None:
        super().validate(record, check)
        glue = record["solution"].get("glue")
        check.require(isinstance(glue, list) and glue, "solution.glue must list [s, e] spans")
        for i, span in enumerate(glue):
            check.span(span, f"solution.glue[{i}]")

    def normalise_solution(self, raw: Any, fail: Fail) -> dict[str, Any]:
        value = decode_json(raw)
        letter = self.truth_letter(value, raw, fail)
        glue = value.get("glue")
        if not isinstance(glue, list | tuple) or not glue:
            fail(
                f"grounded_qa solution.glue must be a non-empty list of [s, e] spans, got {glue!r}"
            )
        return {
            "answer": letter,
            "glue": [truth_span(span, f"solution.glue[{i}]", fail) for i, span in enumerate(glue)],
        }

    def format_ok(self, text: str) -> bool:
        return parse_glue(last_block(text, "<glue>", "</glue>")) is not None

    def answer(self, solution: Any) -> str:
        glue = ", ".join(
            f"({format_seconds(s)}, {format_seconds(e)})" for s, e in solution["glue"]
        )
        return f"<answer>{self.reference_letter(solution)}</answer><glue>[{glue}]</glue>"


TASK = GroundedQA()
