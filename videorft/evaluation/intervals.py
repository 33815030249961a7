"""Bootstrap intervals of the evaluation's metrics, from the scored items (no torch).

Per benchmark (source) and task, the items are paired by id and put in id order; each metric's
per-item values come from :func:`videorft.evaluation.scoring.item_values` (the values whose mean
*is* the metric), and :mod:`videorft.evaluation.bootstrap` resamples them. All vectors of one
source/task are resampled with the same draws (one ``(samples, n)`` index array per item
count), so the intervals of every model and metric and every paired difference use the same
replicate item sets.

Every interval is ``{"value", "low", "high"}``: ``value`` is the metric (or the difference of
two metrics) exactly as :func:`~videorft.evaluation.scoring.aggregate` computes it, ``low`` and
``high`` the bootstrap percentiles.

A paired difference needs both models to have answered the same items: differing item sets in
one source/task raise a ValueError naming both models, the place and an example id, rather
than pairing what is not a pair.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

import videorft.video_tasks as video_tasks
from videorft.evaluation.bootstrap import (
    Interval,
    mean_interval,
    paired_difference_interval,
    resample_indices,
)
from videorft.evaluation.scoring import item_values

#: ``{source: {task: {metric: {"value", "low", "high"}}}}``
Intervals = dict[str, dict[str, dict[str, dict[str, float]]]]


class Bootstrap:
    """The bootstrap settings, with the index draws cached per item count (one draw per ``n``
    for the whole evaluation: deterministic, and shared by every vector of that length)."""

    def __init__(self, *, samples: int, confidence: float, seed: int):
        self.samples = int(samples)
        self.confidence = float(confidence)
        self.seed = int(seed)
        self._indices: dict[int, np.ndarray] = {}

    def settings(self) -> dict[str, Any]:
        """What metrics.json records about the intervals (``bootstrap``)."""
        return {"samples": self.samples, "confidence": self.confidence, "seed": self.seed,
                "unit": "item", "method": "percentile", "paired": "by item id"}

    def indices(self, n: int) -> np.ndarray:
        if n not in self._indices:
            self._indices[n] = resample_indices(n, self.samples, self.seed)
        return self._indices[n]

    def mean(self, values: list[float]) -> Interval:
        return mean_interval(values, samples=self.samples, confidence=self.confidence,
                             seed=self.seed, indices=self.indices(len(values)))

    def paired(self, a: list[float], b: list[float]) -> Interval:
        return paired_difference_interval(a, b, samples=self.samples,
                                          confidence=self.confidence, seed=self.seed,
                                          indices=self.indices(len(a)))


def group_items(scored: Iterable[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{source: {task: {id: item}}}`` of :func:`score_item` outputs; sources sorted, tasks in
    the task registry's order, like :func:`videorft.stages.evaluate.aggregate_by_source`."""
    grouped: dict[str, dict[str, dict[str, Any]]] = {}
    for item in scored:
        source, task, ident = str(item.get("source")), item["task"], item["id"]
        by_id = grouped.setdefault(source, {}).setdefault(task, {})
        if ident in by_id:
            raise ValueError(f"item {ident!r} is scored twice in {source}/{task}")
        by_id[ident] = item
    return {
        source: {
            task: grouped[source][task] for task in video_tasks.names() if task in grouped[source]
        }
        for source in sorted(grouped)
    }


def _vectors(task: str, by_id: dict[str, Any], ids: list[str]) -> dict[str, list[float]]:
    return item_values(task, [by_id[i] for i in ids])


def model_intervals(scored: Iterable[dict[str, Any]], boot: Bootstrap) -> Intervals:
    """Each metric of one model with its bootstrap interval."""
    result: Intervals = {}
    for source, tasks in group_items(scored).items():
        for task, by_id in tasks.items():
            vectors = _vectors(task, by_id, sorted(by_id))
            result.setdefault(source, {})[task] = {
                metric: boot.mean(values).as_dict() for metric, values in vectors.items()
            }
    return result


def _check_same_items(a: dict[str, Any], b: dict[str, Any], names: tuple[str, str],
                      where: str) -> None:
    if a.keys() == b.keys():
        return
    only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
    parts = [f"{len(ids)} only in {name} (e.g. {ids[0]!r})"
             for name, ids in ((names[0], only_a), (names[1], only_b)) if ids]
    raise ValueError(f"cannot pair {names[0]} with {names[1]} in {where}: they were scored on "
                     f"different items ({'; '.join(parts)})")


def paired_intervals(
    first: Iterable[dict[str, Any]],
    second: Iterable[dict[str, Any]],
    boot: Bootstrap,
    *,
    names: tuple[str, str] = ("first", "second"),
) -> Intervals:
    """``first − second`` for each metric of every source/task both have, with its paired
    bootstrap interval (items paired by id). Positive: ``first`` is better (every metric is
    higher-is-better)."""
    grouped_a, grouped_b = group_items(first), group_items(second)
    result: Intervals = {}
    for source, tasks in grouped_a.items():
        for task, by_id in tasks.items():
            other = grouped_b.get(source, {}).get(task)
            if other is None:
                continue
            _check_same_items(by_id, other, names, f"{source}/{task}")
            ids = sorted(by_id)
            a, b = _vectors(task, by_id, ids), _vectors(task, other, ids)
            result.setdefault(source, {})[task] = {
                metric: boot.paired(a[metric], b[metric]).as_dict() for metric in a
            }
    return result


def evaluation_intervals(
    per_item: dict[str, list[dict[str, Any]]],
    blind_items: dict[str, list[dict[str, Any]]],
    *,
    baseline: str,
    target: str,
    boot: Bootstrap,
) -> dict[str, Any]:
    """metrics.json's ``intervals``: ``models`` and ``blind`` (each model's metrics),
    ``reliance`` (video − blind, paired, per model) and ``delta`` (target − baseline, paired).
    ``blind_items`` is empty when the blind control is off; then so are ``blind`` and
    ``reliance``."""
    intervals: dict[str, Any] = {
        "models": {name: model_intervals(items, boot) for name, items in per_item.items()},
    }
    if blind_items:
        intervals["blind"] = {
            name: model_intervals(items, boot) for name, items in blind_items.items()
        }
        intervals["reliance"] = {
            name: paired_intervals(per_item[name], items, boot,
                                   names=(name, f"{name} (blind)"))
            for name, items in blind_items.items()
        }
    if baseline in per_item and target in per_item:
        intervals["delta"] = paired_intervals(per_item[target], per_item[baseline], boot,
                                              names=(target, baseline))
    return intervals
