"""Comparison of evaluated models: deltas, the paper-style table, plots (no torch).

``metrics`` everywhere is ``{model: {source: {task: {metric: value, ..., "format": share,
"count": n}}}}``, values being fractions in [0, 1] as
:func:`videorft.evaluation.scoring.aggregate` returns them (``format`` and ``count`` are no
table rows); ``blind`` has the same shape (the blind control's scores, see
:mod:`videorft.evaluation.blind`), and intervals are ``{"value", "low", "high"}`` as
:mod:`videorft.evaluation.intervals` computes them. The table shows percentages with one
decimal, like Table 1 of VideoChat-R1, so the numbers read the same as the paper's. Plots use
matplotlib's object API with the Agg canvas (no pyplot, no global backend switch) and are
written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from videorft.evaluation.blind import blind_name
from videorft.evaluation.scoring import COUNT, EXTRA_KEYS, FORMAT, METRICS
from videorft.io import atomic_open

MISSING = "–"

#: A blind pass whose share of answers in format is this much below the same model's with the
#: video gets a line under the table: its value − blind counts broken answers too.
FORMAT_GAP = 0.25

#: The one metric per task (two for grounded QA) that the plot shows, in paper order.
HEADLINES: tuple[tuple[str, str], ...] = (
    ("temporal_grounding", "miou"),
    ("tracking", "ao"),
    ("grounded_qa", "miou"),
    ("grounded_qa", "accuracy"),
    ("mcq", "accuracy"),
)


def _metric_names(task: str, values: dict[str, Any]) -> list[str]:
    """The task's metrics in table order, then any others it has (format and count excluded)."""
    known = [m for m in METRICS.get(task, ()) if m in values]
    return known + [m for m in values if m not in known and m not in EXTRA_KEYS]


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


def _interval_cell(value: Any, interval: dict[str, float] | None) -> str:
    """``+12.3 [+4.1, +20.5]`` (percentage points), or the signed value alone."""
    cell = _signed_percent(value)
    if interval is None or cell == MISSING:
        return cell
    low, high = _signed_percent(interval.get("low")), _signed_percent(interval.get("high"))
    return f"{cell} [{low}, {high}]"


def _cell(table: dict[str, Any] | None, source: str, task: str, name: str) -> Any:
    return ((table or {}).get(source) or {}).get(task, {}).get(name)


def _legend(
    baseline: str,
    target: str,
    *,
    blind: bool,
    bootstrap: dict[str, Any] | None,
) -> list[str]:
    """The lines under the table saying how to read the blind columns and the intervals."""
    lines = ["Values in percent (Δ in percentage points)."]
    if blind:
        lines.append(
            "*blind*: the same model answering the same items with every frame blank (same "
            "prompt and video tokens, no pixels); value − blind is its reliance on the video."
        )
    if bootstrap:
        confidence = f"{100 * float(bootstrap.get('confidence', 0.95)):g}%"
        lines.append(
            f"[low, high]: the {confidence} paired bootstrap interval over items "
            f"({bootstrap.get('samples')} resamples, seed {bootstrap.get('seed')}); an "
            f"interval wholly above 0 means {target} is significantly better than {baseline}, "
            "wholly below 0 significantly worse."
        )
    return lines


def format_warnings(metrics: dict[str, dict], blind: dict[str, dict]) -> list[str]:
    """One sentence per model, source and task whose blind answers are in format at least
    :data:`FORMAT_GAP` less often than with the video: there, value − blind is not only the
    model's reliance on the video but also answers that broke without it."""
    lines = []
    for model, blind_sources in blind.items():
        for source, tasks in blind_sources.items():
            for task in _tasks(tasks):
                seen = _cell(metrics.get(model), source, task, FORMAT)
                unseen = _cell(blind_sources, source, task, FORMAT)
                if seen is None or unseen is None or seen - unseen < FORMAT_GAP:
                    continue
                lines.append(
                    f"{model} blind, {source} {task.replace('_', ' ')}: {_percent(unseen)}% of "
                    f"the answers are in the task's format against {_percent(seen)}% with the "
                    "video, so value − blind there also counts answers that broke without it."
                )
    return lines


def markdown_table(
    metrics: dict[str, dict],
    models: list[str],
    baseline: str,
    target: str = "trained",
    *,
    blind: dict[str, dict] | None = None,
    delta_intervals: dict[str, Any] | None = None,
    bootstrap: dict[str, Any] | None = None,
) -> str:
    """The paper's Table 1 in Markdown: one row per benchmark (source), task and metric.

    Columns: each model (percent, one decimal), followed by its blind value when ``blind``
    has it, then ``Δ (trained − baseline)`` signed, when both are evaluated, with its interval
    ``[low, high]`` when ``delta_intervals`` has it, and the item count. A value a model lacks
    shows as ``–``. With blind values or ``bootstrap`` settings, a legend follows the table,
    and a warning where blind answers broke their format (:func:`format_warnings`).
    """
    models = [m for m in models if m in metrics]
    blind = {m: blind[m] for m in models if blind and m in blind}
    deltas = (
        compare(metrics, baseline, target)
        if target in metrics and baseline in metrics and target != baseline
        else None
    )
    header = ["Benchmark", "Task", "Metric"]
    for model in models:
        header += [model, f"{model} blind"] if model in blind else [model]
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
                for model in models:
                    cells.append(_percent(_cell(metrics[model], source, task, name)))
                    if model in blind:
                        cells.append(_percent(_cell(blind[model], source, task, name)))
                if deltas is not None:
                    cells.append(_interval_cell(_cell(deltas, source, task, name),
                                                _cell(delta_intervals, source, task, name)))
                cells.append(count)
                lines.append("| " + " | ".join(cells) + " |")
    notes = _legend(baseline, target, blind=bool(blind),
                   bootstrap=bootstrap if deltas is not None and delta_intervals else None)
    if len(notes) > 1:
        lines += ["", " ".join(notes)]
    warnings = format_warnings(metrics, blind)
    if warnings:
        lines += ["", "**Blind answers out of format.** " + " ".join(warnings)]
    return "\n".join(lines) + "\n"


def table_from_report(report: dict[str, Any]) -> str:
    """table.md from the evaluate stage's metrics.json (the stage writes it from this same
    dict; publish rebuilds it for an evaluation that left no table.md)."""
    metrics = report["models"]
    models = list(metrics)
    baseline = report.get("baseline") or (models[0] if models else "base")
    return markdown_table(
        metrics, models, baseline, report.get("target") or "trained",
        blind=report.get("blind"),
        delta_intervals=(report.get("intervals") or {}).get("delta"),
        bootstrap=report.get("bootstrap"),
    )


def bars_table(
    metrics: dict[str, dict], models: list[str], blind: dict[str, dict] | None = None
) -> list[dict[str, Any]]:
    """Rows ``{"metric": "source/task/metric", "model", "value"}`` for a DVC bar plot
    (template ``bar_horizontal``: x = value, y = metric, colour = model); a model's blind
    values follow it as model ``<model>-blind``."""
    rows: list[dict[str, Any]] = []
    models = [m for m in models if m in metrics]
    series = [(m, metrics[m]) for m in models]
    if blind:
        series = [entry for m in models
                  for entry in [(m, metrics[m])] + ([(blind_name(m), blind[m])] if m in blind
                                                    else [])]
    for source in _sources(metrics, models):
        for task in _tasks(t for m in models for t in metrics[m].get(source, {})):
            for model, table in series:
                values = table.get(source, {}).get(task)
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


def plot_metrics(
    metrics: dict[str, dict],
    models: list[str],
    path: str | Path,
    *,
    intervals: dict[str, Any] | None = None,
    blind: dict[str, dict] | None = None,
    confidence: float | None = None,
) -> None:
    """One panel per headline metric (:data:`HEADLINES`), one bar group per benchmark: each
    model's value with its bootstrap interval as an error bar (``intervals["models"]``), and,
    right of it, its blind value as a lighter hatched bar (``intervals["blind"]``).

    Headline metrics only: the error bars of every metric of every task would not read; the
    table and metrics.json have them all.
    """
    from matplotlib.colors import to_rgba
    from matplotlib.figure import Figure

    models = [m for m in models if m in metrics]
    blind = {m: blind[m] for m in models if blind and m in blind}
    intervals = intervals or {}
    panels = [
        (task, metric) for task, metric in HEADLINES
        if any(_cell(metrics[m], s, task, metric) is not None
               for m in models for s in metrics[m])
    ]
    series = [(m, False) for m in models]
    if blind:
        series = [entry for m in models for entry in [(m, False)] + ([(m, True)] * (m in blind))]
    figure = Figure(figsize=(max(5.0, 3.2 * len(panels)), 4.2))
    if not panels:
        axes = figure.add_subplot(1, 1, 1)
        axes.text(0.5, 0.5, "no metrics", ha="center", va="center")
        axes.set_axis_off()
        _save(figure, path)
        return
    for index, (task, metric) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), index)
        sources = [s for s in _sources(metrics, models)
                   if any(_cell(metrics[m], s, task, metric) is not None for m in models)]
        width = 0.8 / len(series)
        for k, (model, is_blind) in enumerate(series):
            table = blind[model] if is_blind else metrics[model]
            bounds = (intervals.get("blind" if is_blind else "models") or {}).get(model)
            xs: list[float] = []
            ys: list[float] = []
            errors: list[list[float]] = [[], []]
            for i, source in enumerate(sources):
                value = _cell(table, source, task, metric)
                if value is None:
                    continue
                xs.append(i + (k - (len(series) - 1) / 2) * width)
                ys.append(100 * value)
                interval = _cell(bounds, source, task, metric) or {}
                low, high = interval.get("low", value), interval.get("high", value)
                errors[0].append(max(0.0, 100 * (value - low)))
                errors[1].append(max(0.0, 100 * (high - value)))
            if not xs:
                continue
            color = f"C{models.index(model)}"
            style: dict[str, Any] = (
                {"facecolor": to_rgba(color, 0.3), "edgecolor": color, "hatch": "//",
                 "label": f"{model} blind"}
                if is_blind else {"color": color, "label": model}
            )
            axes.bar(xs, ys, width=width, yerr=errors if bounds else None, capsize=3,
                     error_kw={"elinewidth": 1, "ecolor": "black"}, **style)
        axes.set_xticks(range(len(sources)))
        axes.set_xticklabels(sources, fontsize="small", rotation=20 if len(sources) > 2 else 0)
        axes.set_ylim(0, 100)
        axes.set_title(f"{task.replace('_', ' ')}: {metric}", fontsize="medium")
        axes.grid(axis="y", alpha=0.3)
        if index == 1:
            axes.set_ylabel("%")
            axes.legend(fontsize="small", loc="upper left")
    notes = []
    if intervals.get("models"):
        level = f"{100 * confidence:g}% " if confidence is not None else ""
        notes.append(f"error bars: {level}bootstrap interval over items")
    if blind:
        notes.append("hatched: blind (every frame blank)")
    if notes:
        figure.text(0.5, -0.02, "; ".join(notes), ha="center", va="top", fontsize="small")
    _save(figure, path)
