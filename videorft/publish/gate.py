"""The publish gate: a trained model is published only if it did not regress and meets minimums.

Inputs are the evaluate stage's ``metrics.json``::

    {"models": {model: {source: {task: {metric: value, "format": share, "count": n}}}},
     "delta": ...,
     "intervals": {"delta": {source: {task: {metric: {"value", "low", "high"}}}}, ...},
     "bootstrap": {"confidence": 0.95, ...}, ...}

Three rules, all over fractions in [0, 1]:

- regression: every metric of ``target`` may fall below the ``baseline``'s by at most
  ``gate.max_regression`` (each source/task present for both models is compared);
- significant regression (``gate.fail_on_significant_regression``): no delta target −
  baseline may have its paired bootstrap interval wholly below 0. The two regression rules
  complement each other: a large drop on a handful of items may be noise (wide interval,
  caught by max_regression only if beyond it), a small drop on thousands of items may be real
  (narrow interval below 0, within max_regression);
- minimums: ``gate.min`` keys are ``task.metric`` (every source having that task) or
  ``source.task.metric`` (one source). Metric names contain dots (``r@0.5``), so a key is split
  at a known task name, not at every dot.

The gate never passes silently: a minimum that matches no metric, a baseline without metrics,
nothing at all to compare, or a significance rule without intervals to check is a failure,
not a pass.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import videorft.video_tasks as video_tasks
from videorft.errors import StageError
from videorft.evaluation.scoring import EXTRA_KEYS
from videorft.params import GateParams

log = logging.getLogger(__name__)

#: Float round-off forgiven when comparing (metrics are means of a few hundred items).
TOLERANCE = 1e-9


@dataclass
class GateReport:
    """What the gate checked and why it failed (``failures`` empty <=> ``passed``)."""

    passed: bool
    failures: list[str] = field(default_factory=list)
    checked: int = 0
    notes: list[str] = field(default_factory=list)
    enabled: bool = True
    target: str = "trained"
    baseline: str = "base"
    max_regression: float | None = None
    min: dict[str, float] = field(default_factory=dict)
    fail_on_significant_regression: bool = False
    confidence: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class GateFailedError(StageError):
    """The trained model did not pass the publish gate; nothing was published."""

    def __init__(self, report: GateReport, summary: dict | None = None):
        self.report = report
        super().__init__(
            "publish gate failed, nothing was published:\n" + format_gate_report(report),
            summary=summary,
        )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _model_metrics(metrics: dict[str, Any], model: str) -> dict[str, Any] | None:
    models = metrics.get("models")
    if not isinstance(models, dict):
        return None
    found = models.get(model)
    return found if isinstance(found, dict) else None


def _values(task_metrics: Any) -> dict[str, Any]:
    """The metrics of one source/task, without the format share and the item count."""
    if not isinstance(task_metrics, dict):
        return {}
    return {name: value for name, value in task_metrics.items() if name not in EXTRA_KEYS}


def parse_min_key(key: str) -> list[tuple[str | None, str, str]]:
    """Possible readings ``(source or None, task, metric)`` of a ``gate.min`` key.

    ``temporal_grounding.r@0.5`` -> ``(None, "temporal_grounding", "r@0.5")``;
    ``charades.test.mcq.accuracy`` -> ``("charades.test", "mcq", "accuracy")``. A source named
    like a task makes a key ambiguous, so every reading is returned and the caller keeps the
    one that names an existing metric.
    """
    readings: list[tuple[str | None, str, str]] = []
    for task in video_tasks.names():
        if key.startswith(task + ".") and len(key) > len(task) + 1:
            readings.append((None, task, key[len(task) + 1 :]))
        start = key.find("." + task + ".")
        while start > 0:
            metric = key[start + len(task) + 2 :]
            if metric:
                readings.append((key[:start], task, metric))
            start = key.find("." + task + ".", start + 1)
    return readings


def _check_minimums(
    target_metrics: dict[str, Any], minimums: dict[str, float], target: str,
    report: GateReport,
) -> None:
    for key, minimum in sorted(minimums.items()):
        matches: list[tuple[str, str, str, Any]] = []
        for source, task, metric in parse_min_key(key):
            sources = [source] if source is not None else sorted(target_metrics)
            for name in sources:
                values = _values((target_metrics.get(name) or {}).get(task))
                if metric in values:
                    matches.append((name, task, metric, values[metric]))
            if matches:
                break  # the first reading naming real metrics wins
        if not matches:
            report.failures.append(
                f"min {key}: no such metric for {target} (keys are 'task.metric' or "
                f"'source.task.metric'; tasks: {', '.join(video_tasks.names())})"
            )
            continue
        for source, task, metric, raw in matches:
            report.checked += 1
            value = _number(raw)
            if value is None:
                report.failures.append(
                    f"{source}/{task} {metric}: {target} has no numeric value ({raw!r})"
                )
            elif value < minimum - TOLERANCE:
                report.failures.append(
                    f"{source}/{task} {metric}: {target} {value:.3f} < min {minimum:.3f}"
                )


def _check_regression(
    target_metrics: dict[str, Any], base_metrics: dict[str, Any], gate: GateParams,
    target: str, baseline: str, report: GateReport,
) -> None:
    compared = 0
    for source in sorted(set(target_metrics) | set(base_metrics)):
        if source not in target_metrics or source not in base_metrics:
            only = target if source in target_metrics else baseline
            report.notes.append(f"{source}: evaluated for {only} only, not compared")
            continue
        tasks_t, tasks_b = target_metrics[source] or {}, base_metrics[source] or {}
        for task in sorted(set(tasks_t) & set(tasks_b)):
            values_t, values_b = _values(tasks_t[task]), _values(tasks_b[task])
            for metric in sorted(set(values_t) & set(values_b)):
                compared += 1
                report.checked += 1
                value, base = _number(values_t[metric]), _number(values_b[metric])
                if value is None or base is None:
                    report.failures.append(
                        f"{source}/{task} {metric}: not a number ({target} "
                        f"{values_t[metric]!r}, {baseline} {values_b[metric]!r})"
                    )
                elif value < base - gate.max_regression - TOLERANCE:
                    report.failures.append(
                        f"{source}/{task} {metric}: {target} {value:.3f} < {baseline} "
                        f"{base:.3f} - {gate.max_regression:g}"
                    )
    if not compared:
        report.failures.append(
            f"no metric evaluated for both {target} and {baseline}: nothing to compare"
        )


def _check_significance(metrics: dict[str, Any], target: str, baseline: str,
                        report: GateReport) -> None:
    """Fail every delta whose interval lies wholly below 0 (``metrics["intervals"]["delta"]``)."""
    intervals = metrics.get("intervals")
    deltas = intervals.get("delta") if isinstance(intervals, dict) else None
    if not isinstance(deltas, dict) or not deltas:
        report.failures.append(
            f"metrics.json has no intervals of {target} − {baseline} (intervals.delta) to test "
            "for a significant regression: re-run evaluate, or set "
            "publish.gate.fail_on_significant_regression: false"
        )
        return
    bootstrap = metrics.get("bootstrap")
    confidence = _number(bootstrap.get("confidence")) if isinstance(bootstrap, dict) else None
    report.confidence = confidence
    level = f"{100 * confidence:g}% " if confidence is not None else ""
    for source in sorted(deltas):
        tasks = deltas[source] if isinstance(deltas[source], dict) else {}
        for task in sorted(tasks):
            metric_intervals = tasks[task] if isinstance(tasks[task], dict) else {}
            for metric in sorted(metric_intervals):
                interval = metric_intervals[metric]
                values = interval if isinstance(interval, dict) else {}
                value, low, high = (_number(values.get(k)) for k in ("value", "low", "high"))
                report.checked += 1
                if value is None or low is None or high is None:
                    report.failures.append(
                        f"{source}/{task} {metric}: the interval of {target} − {baseline} is "
                        f"not numeric ({interval!r})"
                    )
                elif high < -TOLERANCE:
                    report.failures.append(
                        f"{source}/{task} {metric}: {target} − {baseline} = {value:+.3f}, "
                        f"{level}interval [{low:+.3f}, {high:+.3f}] wholly below 0 "
                        "(significant regression)"
                    )


def check_gate(
    metrics: dict[str, Any], gate: GateParams, *, baseline: str, target: str = "trained"
) -> GateReport:
    """Check ``target``'s evaluation against the gate (see the module docstring)."""
    report = GateReport(
        passed=False, enabled=gate.enabled, target=target, baseline=baseline,
        max_regression=gate.max_regression, min=dict(gate.min),
        fail_on_significant_regression=gate.fail_on_significant_regression,
    )
    if not gate.enabled:
        report.passed = True
        report.notes.append("gate disabled (publish.gate.enabled: false): nothing checked")
        return report
    target_metrics = _model_metrics(metrics, target)
    if target_metrics is None:
        report.failures.append(f"metrics.json has no metrics for {target!r}")
        return report
    base_metrics = _model_metrics(metrics, baseline)
    if baseline == target:
        report.notes.append(f"baseline is {target} itself: no regression check")
    elif base_metrics is None:
        report.failures.append(
            f"metrics.json has no metrics for the baseline {baseline!r} (list it in "
            "evaluate.models, or set evaluate.baseline)"
        )
    else:
        _check_regression(target_metrics, base_metrics, gate, target, baseline, report)
        if gate.fail_on_significant_regression:
            _check_significance(metrics, target, baseline, report)
    _check_minimums(target_metrics, gate.min, target, report)
    report.passed = not report.failures
    log.info("publish gate %s: %d values checked, %d failures",
             "passed" if report.passed else "FAILED", report.checked, len(report.failures))
    return report


def format_gate_report(report: GateReport) -> str:
    """The report as markdown (reports/gate.md, the model card, the error message)."""
    verdict = "PASSED" if report.passed else "FAILED"
    lines = [f"## Publish gate: {verdict}", ""]
    if report.enabled:
        minimums = ", ".join(f"`{k}` >= {v:g}" for k, v in sorted(report.min.items()))
        significance = (
            "no Δ whose paired bootstrap interval is wholly below 0"
            if report.fail_on_significant_regression
            else "significant regressions not checked"
        )
        lines.append(
            f"{report.checked} values checked: {report.target} vs {report.baseline}, at most "
            f"{report.max_regression:g} lower on any metric, {significance}; minimums: "
            f"{minimums or 'none'}."
        )
    else:
        lines.append("The gate is disabled.")
    if report.failures:
        lines += ["", "### Failures", ""] + [f"- {failure}" for failure in report.failures]
    if report.notes:
        lines += ["", "### Notes", ""] + [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"
