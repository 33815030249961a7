"""VideoChat-R1's rule-based rewards: pure functions of (completion, solution).

This module is the one implementation of every reward rule: the GRPO trainer (through
:func:`make_reward_funcs`) and the evaluation scorer (through :func:`score`) both call it, so a
trained model is judged by exactly the rules it was trained on.

Each component is a float in [0, 1] and the components of a task are summed (reference totals:
temporal grounding and tracking = format + IoU, max 2; grounded QA = format + glue IoU + accuracy,
max 3; multiple choice = format + accuracy). Nothing here raises on model output: text that does
not parse scores 0, and non-finite arithmetic (``1e400``, 5,000-digit numbers) scores 0.

Decisions beyond the reference (tested in tests/test_rewards.py):

* **Which block.** Every content parser (temporal IoU, tracking, glue, option letter, and the
  extra parse checks of the format reward) reads the *last* ``<answer>`` (or ``<glue>``) block,
  found with ``re.findall(r"<answer>(.*?)</answer>", DOTALL)`` semantics. The reference reads the
  first block in some places and the last in others; one rule makes format and IoU agree.
* **Nested / duplicated tags** pass the format check whenever the reference's regex fullmatches
  (``<answer><answer>1 to 2</answer></answer>`` does): the rule is the paper's, and a duplicated
  block gains nothing, since content is read from the last block only.
* **Reversed predicted interval** (``5 to 3``): temporal IoU 0. This is the reference's own value,
  not a change: computed as is, the intersection ``min(e, e') - max(s, s')`` is at most
  ``e - s < 0``, so the reference also gives 0 (for any valid truth). Swapping would reward an
  answer that ignores the requested "start to end" order. Glue lists follow the same rule: a pair
  with ``s > e`` makes the whole glue list invalid (format 0, glue IoU 0), as in the reference.
* **Timing numbers** follow the reference's ``(\\d+\\.?\\d*) (to|and) (\\d+\\.?\\d*)``
  (case-insensitive, as in its code), so a negative time is read without its sign (``-3 to 5``
  reads as 3 to 5). It runs as an equivalent possessive pattern so that long digit runs cannot
  backtrack for minutes.
* **Glue** accepts ``[(s, e), ...]`` and ``[[s, e], ...]``; numbers must be finite and
  ``0 <= s <= e``. An empty list ``[]`` fails the format check and scores glue IoU 0 (the
  reference gives format 1 for ``[]``, rewarding an answer that grounds nothing). The reference's
  cap of 3 spans is not in the paper's rules and is not applied: over-long span lists already
  lose IoU.
* **Option letter**: after stripping answer prefixes ("The answer is", "Answer:", "Option", ...),
  an answer that is a single letter A-G in either case, optionally in brackets or punctuation
  (``c``, ``(c)``, ``C.``), is that letter; otherwise the first option token wins: an uppercase
  standalone letter A-G (``\\bC\\b``) or a bracketed letter of either case (``(c)``). Lowercase
  letters are not read from running text because ``a`` is an English article. Text like
  ``A dog`` therefore reads as option A (the standalone-token rule; the prompt asks for the letter
  alone, and the reference, which takes the first uppercase A-G anywhere, reads it the same way).
* **Tracking** answers must be exactly 8 boxes of 4 finite numbers in square brackets (ints,
  floats, signs, exponents; no ``eval``). A predicted box with ``x1 <= x0`` or ``y1 <= y0`` gets
  IoU 0 for its pair; boxes are not clipped to [0, 1].
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from videorft.records import OPTION_LETTERS, TASKS, TRACKING_BOXES

__all__ = [
    "COMPONENTS",
    "TASK_REWARDS",
    "RewardComponent",
    "format_reward",
    "glue_iou",
    "make_reward_funcs",
    "option_accuracy",
    "score",
    "temporal_iou",
    "tracking_iou",
]

COMPONENTS = ("format", "iou", "accuracy")

#: Which reward components judge which task (their sum is the task's total reward).
TASK_REWARDS: dict[str, tuple[str, ...]] = {
    "temporal_grounding": ("format", "iou"),
    "tracking": ("format", "iou"),
    "grounded_qa": ("format", "iou", "accuracy"),
    "mcq": ("format", "accuracy"),
}

# --------------------------------------------------------------------------------------------
# Tag structure
# --------------------------------------------------------------------------------------------

_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
_ANSWER_OPEN, _ANSWER_CLOSE = "<answer>", "</answer>"
_GLUE_OPEN, _GLUE_CLOSE = "<glue>", "</glue>"
_THINK_TO_ANSWER = re.compile(r"</think>\s*<answer>")
_ANSWER_TO_GLUE = re.compile(r"</answer>\s*<glue>")


def _last_block(text: str, open_tag: str, close_tag: str) -> str | None:
    """Content of the last ``open(.*?)close`` match, as ``re.findall`` (DOTALL) would find it.

    A linear scan instead of the regex: the lazy regex is quadratic on many unclosed tags.
    """
    last, pos = None, 0
    while True:
        start = text.find(open_tag, pos)
        if start < 0:
            return last
        end = text.find(close_tag, start + len(open_tag))
        if end < 0:
            return last
        last = text[start + len(open_tag) : end]
        pos = end + len(close_tag)


def _has_tag_structure(text: str, *, thinking: bool, glue: bool) -> bool:
    """Whether ``[<think>.*?</think>\\s*]<answer>.*?</answer>[\\s*<glue>.*?</glue>]`` fullmatches.

    Same answer as ``re.fullmatch`` with DOTALL (tests check this on random inputs), but linear:
    the fullmatch must start with the first opening tag and end with the last closing tag, and
    in between the separators must occur in order without overlapping; taking each separator's
    earliest occurrence is optimal. The plain regex backtracks cubically on repeated blocks.
    """
    opener = _THINK_OPEN if thinking else _ANSWER_OPEN
    closer = _GLUE_CLOSE if glue else _ANSWER_CLOSE
    if not (text.startswith(opener) and text.endswith(closer)):
        return False
    end = len(text) - len(closer)
    pos = len(opener)
    if pos > end:
        return False
    separators = ([_THINK_TO_ANSWER] if thinking else []) + ([_ANSWER_TO_GLUE] if glue else [])
    for separator in separators:
        found = separator.search(text, pos, end)
        if found is None:
            return False
        pos = found.end()
    return True


# --------------------------------------------------------------------------------------------
# Number and list parsing (no eval)
# --------------------------------------------------------------------------------------------

# A plain decimal number as Python writes it: sign, digits, fraction, exponent (ASCII only).
_NUM = r"[+-]?+(?:[0-9]++(?:\.[0-9]*+)?+|\.[0-9]++)(?:[eE][+-]?+[0-9]++)?+"
_NUM_RE = re.compile(_NUM)
_BOX = rf"\[\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*\]"
_BOXES_RE = re.compile(rf"\s*\[\s*{_BOX}(?:\s*,\s*{_BOX})*+\s*,?\s*\]\s*")
_PAIR = rf"(?:\(\s*{_NUM}\s*,\s*{_NUM}\s*\)|\[\s*{_NUM}\s*,\s*{_NUM}\s*\])"
_PAIRS_RE = re.compile(rf"\s*\[\s*(?:{_PAIR}(?:\s*,\s*{_PAIR})*+\s*,?\s*)?\]\s*")

# The reference's timing pattern ``(\d+\.?\d*) (to|and) (\d+\.?\d*)`` with re.IGNORECASE. The
# first number must be followed by a space, so it is always the whole digit run: the lookbehind
# and possessive quantifiers give the same findall matches without the cubic backtracking.
_SPAN_RE = re.compile(r"(?<!\d)(\d++(?:\.\d*+)?+) (to|and) (\d++(?:\.\d*+)?+)", re.IGNORECASE)


def _numbers(text: str, count: int) -> list[float] | None:
    """The ``count`` numbers of an already-validated list text, or None if one is not finite."""
    values = [float(m) for m in _NUM_RE.findall(text)]
    if len(values) != count or not all(math.isfinite(v) for v in values):
        return None
    return values


def _parse_boxes(text: str | None) -> list[tuple[float, float, float, float]] | None:
    """Exactly eight ``[x0, y0, x1, y1]`` boxes of finite numbers, else None."""
    if text is None or _BOXES_RE.fullmatch(text) is None:
        return None
    values = _numbers(text, 4 * TRACKING_BOXES)
    if values is None:
        return None
    return [
        (values[i], values[i + 1], values[i + 2], values[i + 3]) for i in range(0, len(values), 4)
    ]


def _parse_glue(text: str | None) -> list[tuple[float, float]] | None:
    """A non-empty list of ``(s, e)`` / ``[s, e]`` spans with ``0 <= s <= e``, else None."""
    if text is None or _PAIRS_RE.fullmatch(text) is None:
        return None
    found = _NUM_RE.findall(text)
    if not found:
        return None
    values = _numbers(text, len(found))
    if values is None:
        return None
    spans = [(values[i], values[i + 1]) for i in range(0, len(values), 2)]
    if any(not 0.0 <= s <= e for s, e in spans):
        return None
    return spans


# --------------------------------------------------------------------------------------------
# Solutions (validated records, but possibly JSON-encoded strings; never trusted blindly)
# --------------------------------------------------------------------------------------------


def _decode(solution: Any) -> Any:
    """Datasets often store nested solutions as JSON strings: accept both forms."""
    if isinstance(solution, str | bytes):
        try:
            return json.loads(solution)
        except (ValueError, RecursionError):
            return solution
    return solution


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _pair(value: Any) -> tuple[float, float] | None:
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    start, end = _finite(value[0]), _finite(value[1])
    return None if start is None or end is None else (start, end)


def _true_boxes(solution: Any) -> list[tuple[float, ...]] | None:
    solution = _decode(solution)
    if isinstance(solution, dict):  # the reference's {"answer": boxes} form
        solution = solution.get("answer")
    if not isinstance(solution, list | tuple):
        return None
    boxes = []
    for box in solution:
        if not isinstance(box, list | tuple) or len(box) != 4:
            return None
        values = tuple(_finite(v) for v in box)
        if any(v is None for v in values):
            return None
        boxes.append(values)
    return boxes


def _true_letter(solution: Any) -> str | None:
    solution = _decode(solution)
    if isinstance(solution, dict):
        solution = solution.get("answer")
    if not isinstance(solution, str):
        return None
    letter = solution.strip().strip("()").strip().upper()
    return letter if len(letter) == 1 and letter in OPTION_LETTERS else None


def _clamp(value: float) -> float:
    """Round-off can leave an IoU a hair outside [0, 1]; inf/inf gives NaN. Both map into range."""
    if not math.isfinite(value):
        return 0.0
    return min(1.0, max(0.0, value))


def _text(completion: Any) -> str:
    return completion if isinstance(completion, str) else ""


# --------------------------------------------------------------------------------------------
# The reward components
# --------------------------------------------------------------------------------------------


def format_reward(completion: str, task: str, *, thinking: bool) -> float:
    """1.0 when the completion has exactly the requested tag layout (and parsable content).

    The layout is the reference's fullmatch on the stripped text; grounded QA also needs a glue
    block that parses, tracking an answer of exactly eight 4-number boxes.
    """
    if task not in TASK_REWARDS:
        raise ValueError(f"unknown task {task!r} (expected one of {', '.join(TASKS)})")
    text = _text(completion).strip()
    glue = task == "grounded_qa"
    if not _has_tag_structure(text, thinking=thinking, glue=glue):
        return 0.0
    if glue and _parse_glue(_last_block(text, _GLUE_OPEN, _GLUE_CLOSE)) is None:
        return 0.0
    if task == "tracking" and _parse_boxes(_last_block(text, _ANSWER_OPEN, _ANSWER_CLOSE)) is None:
        return 0.0
    return 1.0


def _span_iou(pred: tuple[float, float], true: tuple[float, float]) -> float:
    (s, e), (ts, te) = pred, true
    if s > e:  # reversed prediction: the reference's own formula gives 0 (see module doc)
        return 0.0
    union = max(e, te) - min(s, ts)
    if not union > 0:
        return 0.0
    return _clamp(max(0.0, min(e, te) - max(s, ts)) / union)


def temporal_iou(completion: str, solution: Any) -> float:
    """IoU of the last "<s> to <e>" in the last answer block with the true ``[start, end]``."""
    block = _last_block(_text(completion), _ANSWER_OPEN, _ANSWER_CLOSE)
    true = _pair(_decode(solution))
    if block is None or true is None:
        return 0.0
    matches = _SPAN_RE.findall(block)
    if not matches:
        return 0.0
    start, _, end = matches[-1]
    try:
        pred = float(start), float(end)
    except ValueError:  # a Unicode digit float() refuses; never expected, never fatal
        return 0.0
    if not all(math.isfinite(v) for v in pred):
        return 0.0
    return _span_iou(pred, true)


def _box_iou(pred: Sequence[float], true: Sequence[float]) -> float:
    px0, py0, px1, py1 = pred
    tx0, ty0, tx1, ty1 = true
    if px1 <= px0 or py1 <= py0:  # degenerate or inverted prediction
        return 0.0
    inter = max(0.0, min(px1, tx1) - max(px0, tx0)) * max(0.0, min(py1, ty1) - max(py0, ty0))
    true_area = max(0.0, tx1 - tx0) * max(0.0, ty1 - ty0)
    union = (px1 - px0) * (py1 - py0) + true_area - inter
    if not union > 0:
        return 0.0
    return _clamp(inter / union)


def tracking_iou(completion: str, solution: Any) -> float:
    """Mean box IoU over the eight (predicted, true) pairs; 0 unless exactly 8 boxes parse."""
    pred = _parse_boxes(_last_block(_text(completion), _ANSWER_OPEN, _ANSWER_CLOSE))
    true = _true_boxes(solution)
    if pred is None or true is None or len(true) != len(pred):
        return 0.0
    return _clamp(sum(_box_iou(p, t) for p, t in zip(pred, true, strict=True)) / len(pred))


def _merge(spans: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted disjoint intervals covering the same time; touching intervals merge too."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _spans_iou(pred: Sequence[tuple[float, float]], true: Sequence[tuple[float, float]]) -> float:
    a, b = _merge(pred), _merge(true)
    inter, i, j = 0.0, 0, 0
    while i < len(a) and j < len(b):
        inter += max(0.0, min(a[i][1], b[j][1]) - max(a[i][0], b[j][0]))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    union = sum(e - s for s, e in a) + sum(e - s for s, e in b) - inter
    if not union > 0:
        return 0.0
    return _clamp(inter / union)


def glue_iou(completion: str, solution: Any) -> float:
    """Total intersection over total union of the merged predicted and true evidence spans."""
    pred = _parse_glue(_last_block(_text(completion), _GLUE_OPEN, _GLUE_CLOSE))
    solution = _decode(solution)
    raw = solution.get("glue") if isinstance(solution, dict) else solution
    if pred is None or not isinstance(raw, list | tuple) or not raw:
        return 0.0
    true = [_pair(span) for span in raw]
    if any(span is None or span[0] > span[1] for span in true):
        return 0.0
    return _spans_iou(pred, true)  # type: ignore[arg-type]  # None excluded just above


# Answer prefixes stripped before reading the letter (case-insensitive, repeatedly).
_PREFIX_RE = re.compile(
    r"(?:the\s+(?:best\s+|correct\s+|right\s+|final\s+)?(?:answer|option|choice)(?:\s+is)?"
    r"|(?:best|correct|final)\s+(?:answer|option|choice)"
    r"|answer|option|choice)\b\s*[:：]?\s*",
    re.IGNORECASE,
)
_LONE_LETTER_RE = re.compile(r"[\W_]*+([A-Ga-g])[\W_]*+")
_LETTER_TOKEN_RE = re.compile(r"\(([A-Ga-g])\)|\b([A-G])\b")


def _answer_letter(answer: str) -> str | None:
    """The option letter an answer names (rule in the module docstring), or None."""
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


def option_accuracy(completion: str, solution: Any) -> float:
    """1.0 when the option letter in the last answer block is the true one ("C" or "(C)")."""
    block = _last_block(_text(completion), _ANSWER_OPEN, _ANSWER_CLOSE)
    true = _true_letter(solution)
    if block is None or true is None:
        return 0.0
    return 1.0 if _answer_letter(block) == true else 0.0


# --------------------------------------------------------------------------------------------
# Per-task scoring and the TRL adapters
# --------------------------------------------------------------------------------------------

_IOU_BY_TASK: dict[str, Callable[[str, Any], float]] = {
    "temporal_grounding": temporal_iou,
    "tracking": tracking_iou,
    "grounded_qa": glue_iou,
}


def _component(name: str, completion: str, task: str, solution: Any, thinking: bool) -> float:
    if name == "format":
        return format_reward(completion, task, thinking=thinking)
    if name == "iou":
        return _IOU_BY_TASK[task](completion, solution)
    return option_accuracy(completion, solution)


def score(completion: str, task: str, solution: Any, *, thinking: bool) -> dict[str, float]:
    """The reward components that apply to ``task``; their sum is the task's total reward."""
    if task not in TASK_REWARDS:
        raise ValueError(f"unknown task {task!r} (expected one of {', '.join(TASKS)})")
    return {
        name: _component(name, completion, task, solution, thinking) for name in TASK_REWARDS[task]
    }


def _completion_text(completion: Any) -> str:
    """Plain text of a TRL completion: a string, or conversational ``[{"role", "content"}]``.

    Content may itself be a list of parts (``{"type": "text", "text": ...}``); the assistant
    messages' text is joined. Any other shape reads as empty text (reward 0), never an error.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if not isinstance(completion, list | tuple):
        return ""
    texts = []
    for message in completion:
        if not isinstance(message, dict) or message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list | tuple):
            texts.extend(
                part["text"]
                for part in content
                if isinstance(part, dict) and isinstance(part.get("text"), str)
            )
    return "".join(texts)


class RewardComponent:
    """One reward component as a TRL reward function (picklable; ``__name__`` names the metric).

    Called as ``f(prompts, completions, task=[...], solution=[...], **other_columns)``, it
    returns one value per completion: ``weight * component`` for samples whose task the
    component judges, ``None`` for the others (TRL 1.16 turns None into NaN and leaves it out
    of that sample's weighted sum and of the component's logged mean).
    """

    def __init__(self, name: str, *, thinking: bool, weights: dict[str, float]):
        if name not in COMPONENTS:
            raise ValueError(f"unknown reward component {name!r}")
        self.__name__ = self.__qualname__ = name
        self.name = name
        self.thinking = thinking
        self.weights = weights  # task -> weight (only tasks this component judges)

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float | None]:
        tasks, solutions = kwargs.get("task"), kwargs.get("solution")
        if tasks is None or solutions is None:
            raise ValueError(
                "reward functions need the dataset columns 'task' and 'solution' "
                "(do not let the trainer drop them: remove_unused_columns=False)"
            )
        if not len(tasks) == len(solutions) == len(completions):
            raise ValueError(
                f"{len(completions)} completions but {len(tasks)} tasks and "
                f"{len(solutions)} solutions"
            )
        rewards: list[float | None] = []
        for completion, task, solution in zip(completions, tasks, solutions, strict=True):
            if task not in TASK_REWARDS:
                raise ValueError(f"unknown task {task!r} (expected one of {', '.join(TASKS)})")
            if task not in self.weights:
                rewards.append(None)
                continue
            value = _component(
                self.name, _completion_text(completion), task, solution, self.thinking
            )
            rewards.append(self.weights[task] * value)
        return rewards

    def __repr__(self) -> str:
        return f"RewardComponent({self.name!r}, thinking={self.thinking}, weights={self.weights})"


def make_reward_funcs(
    thinking: bool, weights: dict[str, dict[str, float]] | None = None
) -> list[RewardComponent]:
    """The ``format``, ``iou`` and ``accuracy`` reward functions for ``GRPOTrainer``.

    ``weights[task][component]`` multiplies that component for that task (default 1.0), so the
    per-sample sum TRL forms is the reference's per-task total when no weights are given.
    """
    weights = weights or {}
    for task, per_task in weights.items():
        if task not in TASK_REWARDS:
            raise ValueError(f"reward weights name unknown task {task!r}")
        for name, weight in per_task.items():
            if name not in TASK_REWARDS[task]:
                raise ValueError(
                    f"reward weights: component {name!r} does not apply to task {task!r} "
                    f"(it has {', '.join(TASK_REWARDS[task])})"
                )
            if _finite(weight) is None or weight < 0:
                raise ValueError(
                    f"reward weight {task}.{name} must be a finite number >= 0, got {weight!r}"
                )
    return [
        RewardComponent(
            name,
            thinking=thinking,
            weights={
                task: float(weights.get(task, {}).get(name, 1.0))
                for task, names in TASK_REWARDS.items()
                if name in names
            },
        )
        for name in COMPONENTS
    ]
