"""Low-level parsing and formatting shared by several tasks: one implementation of each.

Numbers, JSON-encoded solutions, the last tag block of a completion, option letters, the
two-decimal formatting of seconds and boxes, and span / box IoU used to be written once per
module that needed them (records, rewards, scoring, the warm start's reference answers); a
fix in one copy did not reach the others. Everything here is a pure function of its arguments
and knows no task by name: the task modules combine these pieces into their rules.

Nothing here raises on model output (text that does not parse gives None or 0), because the
rewards must never fail on what a model writes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any, Literal

__all__ = [
    "NUMBER",
    "NUMBER_RE",
    "OPTION_LETTERS",
    "as_text",
    "box_iou",
    "clamp",
    "decode_json",
    "finite",
    "finite_pair",
    "format_box",
    "format_options",
    "format_seconds",
    "is_number",
    "last_block",
    "merge_spans",
    "numbers",
    "option_letter",
    "span_iou",
    "spans_iou",
]

#: Option letters, in order: a question has 2 to 7 options (A-G), as in the reference.
OPTION_LETTERS = "ABCDEFG"

# --------------------------------------------------------------------------------------------
# Numbers and solutions
# --------------------------------------------------------------------------------------------


def is_number(value: Any) -> bool:
    """A finite int or float as JSON gives it (bools are not numbers): the records' rule."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def finite(value: Any) -> float | None:
    """A finite real number as float (bools and 10**400 are not), else None.

    The rewards and the scorer read solutions that may hold anything; this never raises.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def finite_pair(value: Any) -> tuple[float, float] | None:
    """``[a, b]`` (list or tuple) of two finite numbers as floats, else None."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    start, end = finite(value[0]), finite(value[1])
    return None if start is None or end is None else (start, end)


def decode_json(value: Any) -> Any:
    """Datasets store nested solutions as JSON strings (the trainer's rows do): decode a string
    (or bytes) that is JSON, keep anything else, including a string that is not JSON."""
    if isinstance(value, str | bytes):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            return value
    return value


# A plain decimal number as Python writes it: sign, digits, fraction, exponent (ASCII only).
# Possessive quantifiers: long digit runs cannot make the patterns built on it backtrack.
NUMBER = r"[+-]?+(?:[0-9]++(?:\.[0-9]*+)?+|\.[0-9]++)(?:[eE][+-]?+[0-9]++)?+"
NUMBER_RE = re.compile(NUMBER)


def numbers(text: str, count: int) -> list[float] | None:
    """The ``count`` numbers of an already-validated list text, or None if one is not finite
    (``1e400``) or the count differs. The list's shape is each task's own pattern."""
    values = [float(m) for m in NUMBER_RE.findall(text)]
    if len(values) != count or not all(math.isfinite(v) for v in values):
        return None
    return values


# --------------------------------------------------------------------------------------------
# Completions
# --------------------------------------------------------------------------------------------


def as_text(completion: Any) -> str:
    """A completion as text; anything that is not a string reads as empty (reward 0)."""
    return completion if isinstance(completion, str) else ""


def last_block(text: str, open_tag: str, close_tag: str) -> str | None:
    """Content of the last ``open(.*?)close`` match, as ``re.findall`` (DOTALL) would find it.

    Every content reward reads the *last* block (see :mod:`videorft.rewards`). A linear scan
    instead of the regex: the lazy regex is quadratic on many unclosed tags.
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


# --------------------------------------------------------------------------------------------
# Option letters (of a *solution*; a completion's letter is read by the mcq module's rule)
# --------------------------------------------------------------------------------------------


def option_letter(value: Any, *, unwrap: Literal["none", "pair", "all"]) -> str | None:
    """The option letter A-G a solution's answer names, or None; ``unwrap`` says how lenient.

    The callers have always disagreed on what a true answer may look like, and each keeps its
    rule, now spelled out here as a parameter instead of three diverging copies:

    * ``"none"`` - record validation (:mod:`videorft.records`): the answer must already be one
      uppercase letter, ``"C"``. A record is the canonical form, so it is held to it exactly.
    * ``"pair"`` - scoring (:mod:`videorft.evaluation.scoring`): surrounding spaces, one
      matched pair of brackets and either case are accepted (``" (c) "`` is ``"C"``), since
      predictions files come from other tools; ``"(C"`` is refused as malformed truth.
    * ``"all"`` - the rewards and the warm start's reference answer: spaces, then any brackets
      at either end, then spaces are stripped and the case folded (``"((c"`` is ``"C"``); they
      never fail on a truth, they read what they can.
    """
    if not isinstance(value, str):
        return None
    if unwrap == "none":
        return value if len(value) == 1 and value in OPTION_LETTERS else None
    text = value.strip()
    if unwrap == "pair":
        if text.startswith("(") and text.endswith(")"):
            text = text[1:-1].strip()
    else:
        text = text.strip("()").strip()
    text = text.upper()
    return text if len(text) == 1 and text in OPTION_LETTERS else None


# --------------------------------------------------------------------------------------------
# Formatting (prompts and reference answers write numbers the way the rewards read them)
# --------------------------------------------------------------------------------------------


def format_seconds(value: float) -> str:
    """Seconds with two decimals, as the prompts ask for them (``12.54``)."""
    return f"{float(value):.2f}"


def format_box(box: Sequence[float]) -> str:
    """``[x0, y0, x1, y1]`` with two decimals: the tracking prompt's first box and answers."""
    return "[" + ", ".join(f"{float(v):.2f}" for v in box) + "]"


def format_options(options: Sequence[str]) -> str:
    """Lettered options, one per line: ``(A) text``."""
    return "\n".join(f"({OPTION_LETTERS[i]}) {text}" for i, text in enumerate(options))


# --------------------------------------------------------------------------------------------
# IoU of spans and boxes
# --------------------------------------------------------------------------------------------


def clamp(value: float) -> float:
    """Round-off can leave an IoU a hair outside [0, 1]; inf/inf gives NaN. Both map into range."""
    if not math.isfinite(value):
        return 0.0
    return min(1.0, max(0.0, value))


def span_iou(pred: tuple[float, float], true: tuple[float, float]) -> float:
    """IoU of two time spans; a reversed prediction (``s > e``) gives 0, as the reference's
    own formula does (see :mod:`videorft.video_tasks.temporal_grounding`)."""
    (s, e), (ts, te) = pred, true
    if s > e:
        return 0.0
    union = max(e, te) - min(s, ts)
    if not union > 0:
        return 0.0
    return clamp(max(0.0, min(e, te) - max(s, ts)) / union)


def merge_spans(spans: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted disjoint intervals covering the same time; touching intervals merge too."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def spans_iou(pred: Sequence[tuple[float, float]], true: Sequence[tuple[float, float]]) -> float:
    """Total intersection over total union of two span lists, each merged first (overlapping
    predicted spans must not count the same second twice)."""
    a, b = merge_spans(pred), merge_spans(true)
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
    return clamp(inter / union)


def box_iou(pred: Sequence[float], true: Sequence[float]) -> float:
    """IoU of two ``[x0, y0, x1, y1]`` boxes; a degenerate or inverted prediction gives 0."""
    px0, py0, px1, py1 = pred
    tx0, ty0, tx1, ty1 = true
    if px1 <= px0 or py1 <= py0:
        return 0.0
    inter = max(0.0, min(px1, tx1) - max(px0, tx0)) * max(0.0, min(py1, ty1) - max(py0, ty0))
    true_area = max(0.0, tx1 - tx0) * max(0.0, ty1 - ty0)
    union = (px1 - px0) * (py1 - py0) + true_area - inter
    if not union > 0:
        return 0.0
    return clamp(inter / union)
