"""Comparison of evaluated models: deltas, the paper-style table, plots (no torch).

``metrics`` everywhere is ``{model: {source: {task: {metric: value, ..., "count": n}}}}``,
values being fractions in [0, 1] as :func:`videorft.evaluation.scoring.aggregate` returns
them. The table shows percentages with one decimal, like Table 1 of VideoChat-R1, so the
numbers read the same as the paper's. Plots use matplotlib's object API with the Agg canvas
(no pyplot, no global backend switch) and are written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from videorft.evaluation.scoring import METRICS
from videorft.io import atomic_open

COUNT = "count"
MISSING = "–"


def _metric_names(task: str, values: dict[str, Any]) -> list[str]:
    """The task's metrics in table order, then any others it has (count excluded)."""
    known = [m for m in METRICS.get(task, ()) if m in values]
    return known + [m for m in values if m not in known and m != COUNT]


def _tasks(tasks: Iterable[str]) -> list[str]:
    """Tasks in METRICS (paper) order, unknown ones after, alphabetically."""
    tasks = set(tasks)
    return [t for t in METRICS if t in tasks] + sorted(tasks - set(METRICS))


def _sources(metrics: dict[str, dict], models: Iterable[str]) -> list[str]:
    """Every source of the given models, in order of first appearance."""
    seen: dict[str, None] = {}
    for model in models:
        for source in metrics.get(model, {}):
            seen.setdefault(source, None)
    return list(seen)


def compare(metrics: dict[str, dict], baseline: str, target: str = "trained") -> dict[str, Any]:
    """``{source: {task: {metric: target - baseline}}}`` wherever both models have a value.

    Positive means the target is better (every metric is higher-is-better). Item counts are
    not compared. Raises KeyError naming a model that is not in ``metrics``.
    """
    for model in (baseline, target):
        if model not in metrics:
            raise KeyError(f"no metrics for model {model!r} (have: {', '.join(metrics)})")
    deltas: dict[str, Any] = {}
    for source, tasks in metrics[target].items():
        base_tasks = metrics[baseline].get(source, {})
        for task in _tasks(tasks):
            if task not in base_tasks:
                continue
            values, base = tasks[task], base_tasks[task]
            diff = {m: values[m] - base[m] for m in _metric_names(task, values) if m in base}
            if diff:
                deltas.setdefault(source, {})[task] = diff
    return deltas


def _percent(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    return f"{100 * value:.1f}"


def _signed_percent(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    rounded = round(100 * value, 1) + 0.0  # + 0.0 turns -0.0 into 0.0: "+0.0", not "-0.0"
    return f"{rounded:+.1f}"


def markdown_table(
    metrics: dict[str, dict], models: list[str], baseline: str, target: str = "trained"
) -> str:
    """The paper's Table 1 in Markdown: one row per benchmark (source), task and metric.

    Columns: each model (percent, one decimal), then ``Δ (trained − baseline)`` signed, when
    both are evaluated, and the item count. A value a model lacks shows as ``–``.
    """
    models = [m for m in models if m in metrics]
    deltas = (
        compare(metrics, baseline, target)
        if target in metrics and baseline in metrics and target != baseline
        else None
    )
    header = ["Benchmark", "Task", "Metric", *models]
    if deltas is not None:
        header.append(f"Δ ({target} − {baseline})")
    header.append("Items")
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join([":---"] * 3 + ["---:"] * (len(header) - 3)) + "|",
    ]
    for source in _sources(metrics, models):
        tasks = _tasks(t for m in models for t in metrics[m].get(source, {}))
        for task in tasks:
            names: list[str] = []
            for model in models:
                for name in _metric_names(task, metrics[model].get(source, {}).get(task, {})):
                    if name not in names:
                        names.append(name)
            counts = {
                metrics[m][source][task].get(COUNT)
                for m in models
                if task in metrics[m].get(source, {})
            }
            count = "/".join(str(c) for c in sorted(counts, key=str) if c is not None) or MISSING
            for name in names:
                cells = [source, task.replace("_", " "), name]
                cells += [
                    _percent(metrics[m].get(source, {}).get(task, {}).get(name)) for m in models
                ]
                if deltas is not None:
                    cells.append(_signed_percent(deltas.get(source, {}).get(task, {}).get(name)))
                cells.append(count)
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bars_table(metrics: dict[str, dict], models: list[str]) -> list[dict[str, Any]]:
    """Rows ``{"metric": "source/task/metric", "model", "value"}`` for a DVC bar plot
    (template ``bar_horizontal``: x = value, y = metric, colour = model)."""
    rows: list[dict[str, Any]] = []
    models = [m for m in models if m in metrics]
    for source in _sources(metrics, models):
        for task in _tasks(t for m in models for t in metrics[m].get(source, {})):
            for model in models:
                values = metrics[model].get(source, {}).get(task)
                if values is None:
                    continue
                rows.extend(
                    {"metric": f"{source}/{task}/{name}", "model": model, "value": values[name]}
                    for name in _metric_names(task, values)
                )
    return rows


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


def _save(figure: Any, path: str | Path) -> None:
    """PNG via a temp file renamed into place: a killed run never leaves half an image."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=100, bbox_inches="tight")


def plot_iou_distribution(per_item_by_model: dict[str, list[dict[str, Any]]],
                          path: str | Path) -> None:
    """Per task, the empirical CDF of item IoU for each model (lower-right curve = better).

    An ECDF rather than a histogram: it needs no bin choice and stays readable with a handful
    of items, and curves of several models overlay without hiding each other.
    """
    from matplotlib.figure import Figure

    by_task: dict[str, dict[str, list[float]]] = {}
    for model, items in per_item_by_model.items():
        for item in items:
            if item.get("iou") is not None:
                by_task.setdefault(item["task"], {}).setdefault(model, []).append(
                    float(item["iou"])
                )
    tasks = _tasks(by_task)
    figure = Figure(figsize=(4.5 * max(1, len(tasks)), 3.6))
    if not tasks:
        axes = figure.add_subplot(1, 1, 1)
        axes.text(0.5, 0.5, "no item has an IoU", ha="center", va="center")
        axes.set_axis_off()
    for index, task in enumerate(tasks, start=1):
        axes = figure.add_subplot(1, len(tasks), index)
        for model in per_item_by_model:
            values = sorted(by_task[task].get(model, []))
            if not values:
                continue
            xs = [0.0, *values, 1.0]
            ys = [0.0, *[(i + 1) / len(values) for i in range(len(values))], 1.0]
            axes.step(xs, ys, where="post", label=f"{model} (n={len(values)})")
        axes.set_title(task.replace("_", " "))
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1.02)
        axes.set_xlabel("IoU")
        axes.set_ylabel("share of items with IoU ≤ x")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small", loc="best")
    _save(figure, path)


def plot_metric_bars(metrics: dict[str, dict], models: list[str], path: str | Path) -> None:
    """Grouped horizontal bars: one group per (source, task, metric), one bar per model."""
    from matplotlib.figure import Figure

    rows = bars_table(metrics, models)
    labels = list(dict.fromkeys(row["metric"] for row in rows))
    models = [m for m in models if m in metrics]
    figure = Figure(figsize=(8, 1.0 + 0.25 * max(1, len(labels)) * max(1, len(models))))
    axes = figure.add_subplot(1, 1, 1)
    if not labels:
        axes.text(0.5, 0.5, "no metrics", ha="center", va="center")
        axes.set_axis_off()
        _save(figure, path)
        return
    value = {(row["metric"], row["model"]): row["value"] for row in rows}
    height = 0.8 / max(1, len(models))
    for offset, model in enumerate(models):
        ys = [i + (offset - (len(models) - 1) / 2) * height for i in range(len(labels))]
        xs = [100 * value.get((label, model), 0.0) for label in labels]
        axes.barh(ys, xs, height=height, label=model)
    axes.set_yticks(range(len(labels)))
    axes.set_yticklabels(labels, fontsize="small")
    axes.invert_yaxis()  # first metric on top, as in the table
    axes.set_xlim(0, 100)
    axes.set_xlabel("%")
    axes.grid(axis="x", alpha=0.3)
    axes.legend(fontsize="small", loc="lower right")
    _save(figure, path)
