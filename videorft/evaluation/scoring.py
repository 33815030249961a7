"""Score a predictions file with the training rewards and aggregate the paper's metrics.

A predictions file is JSONL, one object per model answer::

    {"id": "charades/v1#0", "task": "temporal_grounding", "completion": "<think>..</think>
     <answer>2.5 to 7.0</answer>", "solution": [3.0, 8.0], "source": "charades"}

Every per-item value comes from :func:`videorft.rewards.score`, the one implementation of each
reward rule, so a model is evaluated by exactly the rules it was trained on; this module only
validates the truth, and turns per-item components into the paper's table metrics
(:data:`METRICS`). What is task-specific (a solution's shape, a task's metrics and their
per-item values) comes from the task's module in :mod:`videorft.video_tasks`, through the
task registry.

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
* **Format share**: beside the table metrics every task carries ``format``, the share of its
  answers in the task's format (the format reward's mean: parsable, tags in place). It is not
  a table metric; it tells a low score from a broken answer format, which matters most for
  the blind control (a model that stops answering in format without the video reads as
  relying on it).
* **Tracking**: ``ao`` is the mean over items of the per-item mean box IoU (the reward's ``iou``),
  and ``sr@k`` the share of *items* whose mean box IoU is at least k. GOT-10k's own SR counts
  frames; the reward keeps only the per-item mean, and that is what the trainer optimises.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

import videorft.video_tasks as video_tasks
from videorft.errors import DataValidationError
from videorft.io import atomic_open, atomic_write_text
from videorft.rewards import COMPONENTS
from videorft.rewards import score as reward_score

__all__ = [
    "COUNT",
    "EXTRA_KEYS",
    "FORMAT",
    "METRICS",
    "aggregate",
    "item_values",
    "parse_prediction",
    "read_predictions",
    "score_file",
    "score_item",
    "score_predictions",
]

#: The table metrics of each task, in table order (``format`` and ``count`` follow them in
#: :func:`aggregate`): a live view of each registered task's ``metrics``.
METRICS = video_tasks.table("metrics")

#: The keys :func:`aggregate` adds after a task's metrics: the share of answers in the task's
#: format and the item count. Neither is a table metric.
FORMAT, COUNT = "format", "count"
EXTRA_KEYS = (FORMAT, COUNT)

REQUIRED_KEYS = ("id", "task", "completion", "solution")


# --------------------------------------------------------------------------------------------
# Reading and validating predictions
# --------------------------------------------------------------------------------------------


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
    try:
        task = video_tasks.get(obj["task"])
    except video_tasks.UnknownTaskError as exc:
        fail(str(exc))
    if not isinstance(obj["completion"], str):
        fail(f"completion must be a string, got {type(obj['completion']).__name__}")
    return {**obj, "solution": task.normalise_solution(obj["solution"], fail)}


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
    is what lets the bootstrap (:mod:`videorft.evaluation.bootstrap`) resample items. The task
    defines them (:meth:`videorft.video_tasks.base.VideoTask.item_values`).
    """
    return video_tasks.get(task).item_values(rows)


def _task_metrics(task: str, rows: list[dict[str, Any]]) -> dict[str, float]:
    values: dict[str, float] = {
        metric: _mean(per_item) for metric, per_item in item_values(task, rows).items()
    }
    values[FORMAT] = _mean([float(row["format"]) for row in rows])
    values[COUNT] = len(rows)
    return values


def aggregate(items: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """``{task: {metric: value, ..., "format": share, "count": n}}`` from :func:`score_item`
    outputs.

    Tasks in the registry's (canonical) order, metrics in METRICS order; tasks without items
    are left out.
    """
    by_task: dict[str, list[dict[str, Any]]] = {task: [] for task in video_tasks.names()}
    for item in items:
        task = video_tasks.get(item["task"]).name  # an unknown task raises, naming the known
        by_task[task].append(item)
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
