"""Seeded percentile bootstrap over items: intervals for a mean and for a paired difference.

Every table metric is the mean of one value per item (see
:func:`videorft.evaluation.scoring.item_values`), so its uncertainty is that of a mean over the
evaluated items; the items are the unit that was sampled, so they are what we resample. A
replicate draws ``n`` item indices with replacement (``rng.integers(0, n, (B, n))``, all
replicates at once) and takes the mean of the drawn values; the interval is the
``(1 - c) / 2`` and ``(1 + c) / 2`` percentiles of the ``B`` replicate means (numpy's default
linear interpolation).

**Paired.** Two models answered the same items, and their per-item values are correlated (an
easy item is easy for both). The interval of their difference therefore resamples item indices
once per replicate and applies them to both models, i.e. it resamples the per-item differences
``a_i - b_i``. Two separate intervals would ignore that correlation and be far too wide; two
identical models get exactly ``[0, 0]``.

**Deterministic.** The indices depend only on ``(n, samples, seed)``: the same seed gives the
same bytes in metrics.json, and every model and metric of one benchmark task is resampled with
the same item draws. Pure numpy, no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Interval",
    "mean_interval",
    "paired_difference_interval",
    "percentile_interval",
    "replicate_means",
    "resample_indices",
]


@dataclass(frozen=True)
class Interval:
    """A point value and its bootstrap interval ``[low, high]``."""

    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def _vector(values: object, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or not len(array):
        raise ValueError(f"{what} must be a non-empty 1-D vector of per-item values, "
                         f"got shape {list(array.shape)}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} holds a non-finite per-item value")
    return array


def _check_settings(samples: int, confidence: float) -> None:
    if int(samples) < 1:
        raise ValueError(f"bootstrap samples must be positive, got {samples}")
    if not 0 < confidence < 1:
        raise ValueError(f"bootstrap confidence must be in (0, 1), got {confidence}")


def resample_indices(n: int, samples: int, seed: int) -> np.ndarray:
    """``samples`` replicates of ``n`` item indices drawn with replacement: int array (B, n)."""
    if n < 1:
        raise ValueError("resample_indices needs at least one item")
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, (int(samples), n))


def replicate_means(values: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The mean of ``values`` over each replicate's drawn items: shape (B,)."""
    return values[indices].mean(axis=1)


def percentile_interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` percentile interval of the replicate statistics."""
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def _mean(values: np.ndarray) -> float:
    """The exact mean (math.fsum), as scoring.aggregate computes the metric."""
    return math.fsum(values.tolist()) / len(values)


def mean_interval(
    values: object,
    *,
    samples: int,
    confidence: float,
    seed: int,
    indices: np.ndarray | None = None,
) -> Interval:
    """The mean of per-item ``values`` with its percentile bootstrap interval.

    ``indices`` (from :func:`resample_indices` for ``len(values)`` items) can be passed to
    reuse one draw for several vectors; otherwise they are drawn from ``seed``.
    """
    _check_settings(samples, confidence)
    vector = _vector(values, "values")
    if indices is None:
        indices = resample_indices(len(vector), samples, seed)
    low, high = percentile_interval(replicate_means(vector, indices), confidence)
    return Interval(_mean(vector), low, high)


def paired_difference_interval(
    a: object,
    b: object,
    *,
    samples: int,
    confidence: float,
    seed: int,
    indices: np.ndarray | None = None,
) -> Interval:
    """``mean(a) - mean(b)`` with its paired percentile bootstrap interval.

    ``a[i]`` and ``b[i]`` must be the two models' values on the same item ``i`` (pair them by
    item id first). Each replicate applies the same drawn indices to both vectors.
    """
    _check_settings(samples, confidence)
    first, second = _vector(a, "a"), _vector(b, "b")
    if len(first) != len(second):
        raise ValueError(f"paired vectors differ in length ({len(first)} vs {len(second)}): "
                         "both models must be scored on the same items")
    if indices is None:
        indices = resample_indices(len(first), samples, seed)
    low, high = percentile_interval(replicate_means(first - second, indices), confidence)
    return Interval(_mean(first) - _mean(second), low, high)
