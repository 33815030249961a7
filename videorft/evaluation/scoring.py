"""Score a predictions file with the training rewards and aggregate the paper's metrics.

A predictions file is JSONL, one object per model answer::

    {"id": "charades/v1#0", "task": "temporal_grounding", "completion": "<think>..</think>
     <answer>2.5 to 7.0</answer>", "solution": [3.0, 8.0], "source": "charades"}

Every per-item value comes from :func:`videorft.rewards.score`, the one implementation of each
reward rule, so a model is evaluated by exactly the rules it was trained on; this module only
validates the truth, and turns per-item components into the paper's table metrics
(:data:`METRICS`).

Decisions (tested in tests/test_score.py):

* **Truth is validated, model output never is.** A malformed prediction *line* (bad JSON, no id,
  unknown task, an impossible solution) is an error naming the file and line: scoring against a
  broken truth would quietly skew the metrics. A completion that does not parse scores 0.
* **Solutions** may arrive JSON-encoded as strings (the trainer's dataset stores them so) and
  are normalised to the record shapes of :mod:`videorft.records`: temporal grounding
  ``[start, end]`` with ``0 <= start <= end``; tracking exactly 8 boxes ``[x0, y0, x1, y1]`` of
  finite numbers with ``x0 <= x1`` and ``y0 <= y1`` (``{"answer": boxes}`` is accepted too);
  grounded QA ``{"answer": "C", "glue": [[s, e], ...]}`` where the answer may be ``"(C)"`` and
  ``glue`` must be a *non-empty* list of ``0 <= s <= e`` pairs (an empty truth glue would make
  every glue IoU 0 and quietly pull mIoU down); multiple choice ``{"answer": "B"}`` or a bare
  ``"B"`` / ``"(B)"``. Letters are normalised to one uppercase letter A-G. Other keys of the
  prediction object (``source``, ``model``, ...) are kept; other keys inside a solution are not.
* **Metrics** are fractions in [0, 1], kept exact (no rounding; the CLI table rounds for display).
  ``r@k`` / ``sr@k`` count an item when ``iou >= k - 1e-9``: IoUs computed from decimal seconds
  carry round-off (``6.999999999999999 / 10``), and a hand-computed 0.7 must count at R@0.7.
* **Tracking**: ``ao`` is the mean over items of the per-item mean box IoU (the reward's ``iou``),
  and ``sr@k`` the share of *items* whose mean box IoU is at least k. GOT-10k's own SR counts
  frames; the reward keeps only the per-item mean, and that is what the trainer optimises.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn

from videorft.errors import DataValidationError
from videorft.io import atomic_open, atomic_write_text
from videorft.records import OPTION_LETTERS, TASKS, TRACKING_BOXES
from videorft.rewards import COMPONENTS, TASK_REWARDS
from videorft.rewards import score as reward_score

__all__ = [
    "METRICS",
    "aggregate",
    "item_values",
    "parse_prediction",
    "read_predictions",
    "score_file",
    "score_item",
    "score_predictions",
]

#: The table metrics of each task, in table order (``count`` follows them in :func:`aggregate`).
METRICS: dict[str, tuple[str, ...]] = {
    "temporal_grounding": ("miou", "r@0.3", "r@0.5", "r@0.7"),
    "tracking": ("ao", "sr@0.5", "sr@0.75"),
    "grounded_qa": ("accuracy", "miou"),
    "mcq": ("accuracy",),
}

REQUIRED_KEYS = ("id", "task", "completion", "solution")
_TOLERANCE = 1e-9  # see the module docstring: threshold metrics forgive float round-off


# --------------------------------------------------------------------------------------------
# Reading and validating predictions
# --------------------------------------------------------------------------------------------


def _finite(value: Any) -> float | None:
    """A finite real number as float (bools and 10**400 are not), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _decode(value: Any) -> Any:
    """The trainer stores nested solutions as JSON strings: decode those, keep anything else."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            return value
    return value


def _letter(value: Any) -> str | None:
    """``"C"``, ``"(C)"`` or ``" c "`` as ``"C"``; None unless it names one option A-G."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    text = text.upper()
    return text if len(text) == 1 and text in OPTION_LETTERS else None


def _span(value: Any, what: str, fail: Callable[[str], NoReturn]) -> list[float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        fail(f"{what} must be [start, end] in seconds, got {value!r}")
    start, end = _finite(value[0]), _finite(value[1])
    if start is None or end is None:
        fail(f"{what} must hold two finite numbers, got {value!r}")
    if start < 0:
        fail(f"impossible span {what} {value!r}: starts before 0 s")
    if start > end:
        fail(f"impossible span {what} {value!r}: ends before it starts")
    return [start, end]


def _box(value: Any, what: str, fail: Callable[[str], NoReturn]) -> list[float]:
    if not isinstance(value, list | tuple) or len(value) != 4:
        fail(f"{what} must be [x0, y0, x1, y1], got {value!r}")
    numbers = [_finite(v) for v in value]
    if any(v is None for v in numbers):
        fail(f"{what} must hold four finite numbers, got {value!r}")
    x0, y0, x1, y1 = numbers
    if x1 < x0 or y1 < y0:  # type: ignore[operator]  # None excluded just above
        fail(f"impossible box {what} {value!r}: need x0 <= x1 and y0 <= y1")
    return numbers  # type: ignore[return-value]


def _solution(task: str, raw: Any, fail: Callable[[str], NoReturn]) -> Any:
    """The solution of ``task`` in its record shape (see the module docstring)."""
    value = _decode(raw)
    if task == "temporal_grounding":
        return _span(value, "solution", fail)
    if task == "tracking":
        if isinstance(value, dict):
            value = value.get("answer")
        if not isinstance(value, list | tuple) or len(value) != TRACKING_BOXES:
            got = len(value) if isinstance(value, list | tuple) else type(value).__name__
            fail(f"tracking solution must hold exactly {TRACKING_BOXES} boxes, got {got}")
        return [_box(box, f"solution box {i}", fail) for i, box in enumerate(value)]
    if task == "mcq" and isinstance(value, str):
        value = {"answer": value}
    if not isinstance(value, dict):
        fail(f"{task} solution must be an object with 'answer', got {raw!r}")
    letter = _letter(value.get("answer"))
    if letter is None:
        fail(
            f"solution answer must be one option letter {', '.join(OPTION_LETTERS)} "
            f"(or in brackets), got {value.get('answer')!r}"
        )
    if task == "mcq":
        return {"answer": letter}
    glue = value.get("glue")
    if not isinstance(glue, list | tuple) or not glue:
        fail(f"grounded_qa solution.glue must be a non-empty list of [s, e] spans, got {glue!r}")
    return {
        "answer": letter,
        "glue": [_span(span, f"solution.glue[{i}]", fail) for i, span in enumerate(glue)],
    }


def parse_prediction(obj: Any, *, line: int, file: str) -> dict[str, Any]:
    """Validate one prediction object and return it normalised (a new dict).

    Needs ``id`` (non-empty string), ``task`` (one of TASKS), ``completion`` (string) and
    ``solution`` in the task's shape, possibly JSON-encoded (module docstring). Extra keys are
    kept. Raises DataValidationError naming ``file``, ``line`` and the problem.
    """
    record: str | None = None

    def fail(problem: str) -> NoReturn:
        raise DataValidationError(f"line {line}: {problem}", file=file, record=record)

    if not isinstance(obj, dict):
        fail(f"expected a JSON object, got {type(obj).__name__}")
    missing = [key for key in REQUIRED_KEYS if obj.get(key) is None]
    if missing:
        fail(f"missing field(s): {', '.join(missing)}")
    if not isinstance(obj["id"], str) or not obj["id"].strip():
        fail(f"id must be a non-empty string, got {obj['id']!r}")
    record = obj["id"]
    task = obj["task"]
    if task not in TASKS:
        fail(f"unknown task {task!r} (expected one of {', '.join(TASKS)})")
    if not isinstance(obj["completion"], str):
        fail(f"completion must be a string, got {type(obj['completion']).__name__}")
    return {**obj, "solution": _solution(task, obj["solution"], fail)}


def _utf8_encodable(obj: Any) -> bool:
    """Whether ``obj`` has no lone surrogates: JSON can spell them ("\\udc80"), UTF-8 cannot."""
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """The validated predictions of a JSONL file (blank lines skipped), in file order.

    Malformed JSON, an invalid prediction or a repeated id raise DataValidationError naming the
    file and line number(s): a repeated id would count one item twice in the metrics.
    """
    path = Path(path)
    file = str(path)
    items: list[dict[str, Any]] = []
    first_line: dict[str, int] = {}
    try:
        with path.open(encoding="utf-8") as handle:
            for number, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except (ValueError, RecursionError) as exc:
                    why = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
                    raise DataValidationError(
                        f"line {number}: not valid JSON ({why})", file=file
                    ) from None
                if "\\u" in text and not _utf8_encodable(obj):
                    raise DataValidationError(
                        f"line {number}: a string holds a lone surrogate (an invalid \\u "
                        "escape), which cannot be written back as UTF-8", file=file)
                item = parse_prediction(obj, line=number, file=file)
                if item["id"] in first_line:
                    raise DataValidationError(
                        f"line {number}: duplicate id (first on line {first_line[item['id']]})",
                        file=file,
                        record=item["id"],
                    )
                first_line[item["id"]] = number
                items.append(item)
    except FileNotFoundError:
        raise DataValidationError("file not found", file=file) from None
    except UnicodeDecodeError as exc:
        raise DataValidationError(f"not UTF-8 text ({exc.reason})", file=file) from None
    return items


# --------------------------------------------------------------------------------------------
# Scoring and aggregation
# --------------------------------------------------------------------------------------------


def score_item(item: dict[str, Any], *, thinking: bool) -> dict[str, Any]:
    """``{"id", "task", "format", "iou", "accuracy"}`` of one prediction (``source`` if given).

    Components that do not judge the task are None. Values come from rewards.score only.
    """
    components = reward_score(item["completion"], item["task"], item["solution"], thinking=thinking)
    scored: dict[str, Any] = {"id": item["id"], "task": item["task"]}
    scored.update({name: components.get(name) for name in COMPONENTS})
    if "source" in item:
        scored["source"] = item["source"]
    return scored


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def item_values(task: str, rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    """``{metric: [one value per row]}`` of a task's :func:`score_item` outputs, in row order.

    Every table metric is the mean of these per-item values (``miou`` / ``ao``: the item's IoU;
    ``r@k`` / ``sr@k``: 1.0 when its IoU is at least k, else 0.0; ``accuracy``: 0.0 or 1.0), which
    is what lets the bootstrap (:mod:`videorft.evaluation.bootstrap`) resample items.
    """
    ious = [float(row["iou"]) for row in rows] if "iou" in TASK_REWARDS[task] else []
    accuracy = [float(row["accuracy"]) for row in rows] if "accuracy" in TASK_REWARDS[task] else []
    values: dict[str, list[float]] = {}
    for metric in METRICS[task]:
        if metric in ("miou", "ao"):
            values[metric] = ious
        elif metric == "accuracy":
            values[metric] = accuracy
        else:  # "r@k" / "sr@k"
            threshold = float(metric.split("@", 1)[1]) - _TOLERANCE
            values[metric] = [1.0 if v >= threshold else 0.0 for v in ious]
    return values


def _task_metrics(task: str, rows: list[dict[str, Any]]) -> dict[str, float]:
    values: dict[str, float] = {
        metric: _mean(per_item) for metric, per_item in item_values(task, rows).items()
    }
    values["count"] = len(rows)
    return values


def aggregate(items: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """``{task: {metric: value, ..., "count": n}}`` from :func:`score_item` outputs.

    Tasks in TASKS order, metrics in METRICS order; tasks without items are left out.
    """
    by_task: dict[str, list[dict[str, Any]]] = {task: [] for task in TASKS}
    for item in items:
        if item["task"] not in by_task:
            raise ValueError(f"unknown task {item['task']!r} (expected one of {', '.join(TASKS)})")
        by_task[item["task"]].append(item)
    return {task: _task_metrics(task, rows) for task, rows in by_task.items() if rows}


def score_predictions(
    items: list[dict[str, Any]], *, thinking: bool
) -> tuple[dict[str, dict[str, float]], list[dict[str, Any]]]:
    """(metrics, per-item scores) of validated predictions (from :func:`read_predictions`)."""
    per_item = [score_item(item, thinking=thinking) for item in items]
    return aggregate(per_item), per_item


def score_file(
    path: str | Path,
    *,
    thinking: bool,
    out: Path | None = None,
    per_item: Path | None = None,
) -> dict[str, dict[str, float]]:
    """Score a predictions file; write the metrics JSON to ``out`` and one JSON line per item
    (id, task, format, iou, accuracy; null where a component does not apply) to ``per_item``.

    Both writes are atomic. A file without predictions is an error, not empty metrics, and
    neither output may overwrite the predictions (or each other).
    """
    path = Path(path)
    targets = [Path(p) for p in (out, per_item) if p is not None]
    resolved = [p.resolve() for p in targets]
    if path.resolve() in resolved:
        raise DataValidationError(
            "--out / --per-item would overwrite the predictions", file=str(path)
        )
    if len(set(resolved)) != len(resolved):
        raise DataValidationError("--out and --per-item name the same file", file=str(out))
    items = read_predictions(path)
    if not items:
        raise DataValidationError("no predictions to score (the file is empty)", file=str(path))
    metrics, scored = score_predictions(items, thinking=thinking)
    # Everything is rendered before anything is written: both outputs are written, or neither.
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in scored)
    if out is not None:
        # not atomic_write_json: it sorts keys, and the table order (TASKS, METRICS) reads better
        atomic_write_text(out, json.dumps(metrics, indent=2) + "\n")
    if per_item is not None:
        with atomic_open(per_item, "w") as handle:
            handle.write(lines)
    return metrics
