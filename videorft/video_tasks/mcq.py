"""Multiple choice: answer a question about the video with an option letter.

Record: ``inputs {"question", "options": [text, ...]}`` (2 to 7 options, lettered A-G in the
prompt); ``solution {"answer": "B"}``. Rewards: format + accuracy (max 2). Metric:
``accuracy``. Grounded QA (:mod:`videorft.video_tasks.grounded_qa`) is the same question with
evidence spans added, so the option-question parts live here in :class:`OptionQuestionTask`,
which both tasks build on.

Decisions beyond the reference (tested in tests/test_rewards.py):

* **Option letter**: after stripping answer prefixes ("The answer is", "Answer:", "Option", ...),
  an answer that is a single letter A-G in either case, optionally in brackets or punctuation
  (``c``, ``(c)``, ``C.``), is that letter; otherwise the first option token wins: an uppercase
  standalone letter A-G (``\\bC\\b``) or a bracketed letter of either case (``(c)``). Lowercase
  letters are not read from running text because ``a`` is an English article. Text like
  ``A dog`` therefore reads as option A (the standalone-token rule; the prompt asks for the letter
  alone, and the reference, which takes the first uppercase A-G anywhere, reads it the same way).

The true answer is read with :func:`videorft.video_tasks.common.option_letter`, whose
``unwrap`` parameter keeps each caller's rule (records exact, scoring one bracket pair, rewards
any brackets). Only the scorer accepts a bare letter (``"B"`` rather than ``{"answer": "B"}``)
as a multiple-choice solution, as it always has: predictions files from other tools write it so.
"""

from __future__ import annotations

import json
import re
from types import MappingProxyType
from typing import Any

from videorft.video_tasks.base import Fail, RecordChecker, VideoTask
from videorft.video_tasks.common import (
    OPTION_LETTERS,
    as_text,
    decode_json,
    format_options,
    last_block,
    option_letter,
)

__all__ = [
    "TASK",
    "MultipleChoice",
    "OptionQuestionTask",
    "answer_letter",
    "option_accuracy",
]

_QUESTION = (
    'Answer the question: "{question}" according to the content of the video. Select the '
    "answer from :{options}."
)
_ANSWER = (
    "Then, provide your answer within the <answer> </answer> tags, output the corresponding "
    "letter of the option."
)

# Answer prefixes stripped before reading the letter (case-insensitive, repeatedly).
_PREFIX_RE = re.compile(
    r"(?:the\s+(?:best\s+|correct\s+|right\s+|final\s+)?(?:answer|option|choice)(?:\s+is)?"
    r"|(?:best|correct|final)\s+(?:answer|option|choice)"
    r"|answer|option|choice)\b\s*[:：]?\s*",
    re.IGNORECASE,
)
_LONE_LETTER_RE = re.compile(r"[\W_]*+([A-Ga-g])[\W_]*+")
_LETTER_TOKEN_RE = re.compile(r"\(([A-Ga-g])\)|\b([A-G])\b")


def answer_letter(answer: str) -> str | None:
    """The option letter a model's answer names (rule in the module docstring), or None."""
    text = answer.strip()
    for _ in range(8):  # "Answer: The answer is C" strips twice; bounded, never loops forever
        text = text.lstrip("*\"' \t\n")  # not "(": "(c)" is a bracketed letter
        prefix = _PREFIX_RE.match(text)
        if prefix is None or not prefix.group(0):
            break
        text = text[prefix.end() :]
    lone = _LONE_LETTER_RE.fullmatch(text)
    if lone is not None:
        return lone.group(1).upper()
    token = _LETTER_TOKEN_RE.search(text)
    if token is None:
        return None
    return (token.group(1) or token.group(2)).upper()


def _true_letter(solution: Any) -> str | None:
    solution = decode_json(solution)
    if isinstance(solution, dict):
        solution = solution.get("answer")
    return option_letter(solution, unwrap="all")


def option_accuracy(completion: str, solution: Any) -> float:
    """1.0 when the option letter in the last answer block is the true one ("C" or "(C)")."""
    block = last_block(as_text(completion), "<answer>", "</answer>")
    true = _true_letter(solution)
    if block is None or true is None:
        return 0.0
    return 1.0 if answer_letter(block) == true else 0.0


class OptionQuestionTask(VideoTask):
    """A question with lettered options (multiple choice, grounded QA): the shared parts."""

    def validate(self, record: dict[str, Any], check: RecordChecker) -> None:
        inputs, solution = record["inputs"], record["solution"]
        options = inputs.get("options")
        check.require(
            isinstance(options, list)
            and 2 <= len(options) <= len(OPTION_LETTERS)
            and all(isinstance(o, str) and o.strip() for o in options),
            f"inputs.options must be 2 to {len(OPTION_LETTERS)} non-empty strings, got {options!r}",
        )
        check.text(inputs, "question")
        check.require(isinstance(solution, dict), "solution must be an object with 'answer'")
        answer = solution.get("answer")
        valid = OPTION_LETTERS[: len(options)]
        letter = option_letter(answer, unwrap="none")
        check.require(
            letter is not None and letter in valid,
            f"solution.answer must be one of {', '.join(valid)}, got {answer!r}",
        )

    def truth_letter(self, value: Any, raw: Any, fail: Fail) -> str:
        """The scorer's reading of a decoded solution's answer letter (``raw`` for messages)."""
        if not isinstance(value, dict):
            fail(f"{self.name} solution must be an object with 'answer', got {raw!r}")
        letter = option_letter(value.get("answer"), unwrap="pair")
        if letter is None:
            fail(
                f"solution answer must be one option letter {', '.join(OPTION_LETTERS)} "
                f"(or in brackets), got {value.get('answer')!r}"
            )
        return letter

    def question(self, record: dict[str, Any]) -> str:
        inputs = record["inputs"]
        return _QUESTION.format(
            question=inputs["question"], options=format_options(inputs["options"])
        )

    def reference_letter(self, solution: Any) -> str:
        """The true letter a reference answer writes: the rewards' reading of the truth, so
        the answer scores full accuracy. A truth that names no letter (never in a validated
        row) is written as given, less brackets, as it always was: the warm start does not
        fail on it, and the accuracy reward scores it as the truth reads."""
        answer = solution["answer"] if isinstance(solution, dict) else solution
        return option_letter(answer, unwrap="all") or str(answer).strip().strip("()")


class MultipleChoice(OptionQuestionTask):
    """Which option answers the question: one letter."""

    name = "mcq"
    rewards = ("format", "accuracy")
    content_rewards = MappingProxyType({"accuracy": option_accuracy})
    metrics = ("accuracy",)
    answer_sentence = _ANSWER

    def normalise_solution(self, raw: Any, fail: Fail) -> dict[str, str]:
        value = decode_json(raw)
        if isinstance(value, str):  # a bare "B" / "(B)": only the scorer takes it
            value = {"answer": value}
        return {"answer": self.truth_letter(value, raw, fail)}

    def load_solution(self, solution: Any) -> Any:
        # A row's solution may be a bare letter, which is no JSON: decode objects only.
        if isinstance(solution, str) and solution.startswith("{"):
            return json.loads(solution)
        return solution

    def answer(self, solution: Any) -> str:
        return f"<answer>{self.reference_letter(solution)}</answer>"


TASK = MultipleChoice()
