"""The paired bootstrap (pure numpy) and the evaluation's intervals built on it.

- On vectors small enough to enumerate every one of the n^n resamples, the exact bootstrap
  distribution's 2.5 / 97.5 percentiles are computed by hand and the seeded estimate must
  find them.
- Pairing: identical models give exactly [0, 0]; a model better by a constant on every item
  gives exactly [c, c], although each model's own interval is wide.
- Determinism: the same seed gives the same bytes.
- Items are paired by id whatever their order, and differing item sets are an error.
- Every table metric is the mean of the per-item values the bootstrap resamples.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from videorft.evaluation.bootstrap import (
    mean_interval,
    paired_difference_interval,
    resample_indices,
)
from videorft.evaluation.intervals import Bootstrap, model_intervals, paired_intervals
from videorft.evaluation.scoring import aggregate, item_values

SETTINGS = {"samples": 2000, "confidence": 0.95}


def _exact_percentiles(values: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """The ``low`` and ``high`` quantiles of the exact bootstrap distribution of the mean:
    every one of the n^n equally likely resamples enumerated. Also checks that neither
    quantile sits near a jump of the (discrete) distribution function, where a finite-sample
    estimate could legitimately land on either neighbour."""
    n = len(values)
    means = np.array([values[list(draw)].mean() for draw in itertools.product(range(n),
                                                                              repeat=n)])
    points, counts = np.unique(np.round(means, 12), return_counts=True)
    cdf = np.cumsum(counts) / len(means)
    quantiles = []
    for q in (low, high):
        k = int(np.searchsorted(cdf, q))  # first point whose cdf reaches q
        below = cdf[k - 1] if k else 0.0
        assert cdf[k] - q > 0.005 and q - below > 0.005, "the example must not sit on a jump"
        quantiles.append(float(points[k]))
    return quantiles[0], quantiles[1]


def test_paired_interval_matches_the_exact_bootstrap_distribution() -> None:
    # Two models on 5 items: accuracy-like values, per-item differences [1, 0, 0, 1, -1].
    a = np.array([1.0, 1.0, 1.0, 1.0, 0.0])
    b = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    exact = _exact_percentiles(a - b, 0.025, 0.975)
    # By hand: P(mean <= -0.6) = 61/3125 < 2.5% <= P(mean <= -0.4) = 221/3125, and
    # P(mean >= 1.0) = 32/3125 < 2.5% <= P(mean >= 0.8) = 192/3125.
    assert exact == (-0.4, 0.8)
    interval = paired_difference_interval(a, b, seed=0, samples=20000, confidence=0.95)
    assert interval.value == pytest.approx(0.2)
    assert (interval.low, interval.high) == pytest.approx(exact, abs=1e-12)


def test_mean_interval_matches_the_exact_bootstrap_distribution() -> None:
    values = np.array([0.5, 0.0, 0.25, 1.0, 0.75])  # IoU-like
    exact = _exact_percentiles(values, 0.025, 0.975)
    interval = mean_interval(values, seed=0, samples=20000, confidence=0.95)
    assert interval.value == 0.5
    assert (interval.low, interval.high) == pytest.approx(exact, abs=1e-12)
    assert exact[0] < 0.5 < exact[1]


def test_identical_models_give_zero_and_a_constant_gain_gives_exactly_it() -> None:
    rng = np.random.default_rng(3)
    a = rng.random(50)
    same = paired_difference_interval(a, a.copy(), seed=0, **SETTINGS)
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)
    # b is a plus 1/16 on every item: the paired interval is exactly [1/16, 1/16], while each
    # model's own interval is wide (unpaired intervals would overlap and say "no difference").
    a = np.round(a * 4) / 4  # multiples of 1/4: sums and differences are exact in binary
    b = a + 0.0625
    gain = paired_difference_interval(b, a, seed=0, **SETTINGS)
    assert (gain.value, gain.low, gain.high) == (0.0625, 0.0625, 0.0625)
    alone_a, alone_b = (mean_interval(v, seed=0, **SETTINGS) for v in (a, b))
    assert alone_a.high - alone_a.low > 0.1 and alone_a.high > alone_b.low


def test_seeded_and_vectorised() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.random(40), rng.random(40)
    first = paired_difference_interval(a, b, seed=7, **SETTINGS)
    assert paired_difference_interval(a, b, seed=7, **SETTINGS) == first
    assert paired_difference_interval(a, b, seed=8, **SETTINGS) != first
    indices = resample_indices(40, 2000, 7)
    assert indices.shape == (2000, 40) and indices.min() >= 0 and indices.max() < 40
    assert paired_difference_interval(a, b, seed=7, indices=indices, **SETTINGS) == first
    # The percentile interval of a mean lies within the data's range and around the mean.
    one = mean_interval(a, seed=7, **SETTINGS)
    assert a.min() <= one.low < one.value < one.high <= a.max()


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="same items"):
        paired_difference_interval([1.0, 0.0], [1.0], seed=0, **SETTINGS)
    with pytest.raises(ValueError, match="non-empty"):
        mean_interval([], seed=0, **SETTINGS)
    with pytest.raises(ValueError, match="non-finite"):
        mean_interval([0.5, float("nan")], seed=0, **SETTINGS)
    with pytest.raises(ValueError, match="confidence"):
        mean_interval([0.5], seed=0, samples=10, confidence=1.0)


# ------------------------------------------------------------------ intervals of scored items


def _items(ious: list[float], *, source: str = "charades", prefix: str = "v") -> list[dict]:
    return [{"id": f"{prefix}{i}", "task": "temporal_grounding", "source": source,
             "format": 1.0, "iou": iou} for i, iou in enumerate(ious)]


def test_metrics_are_means_of_the_per_item_values() -> None:
    items = _items([0.1, 0.3, 0.5, 0.7 - 1e-12, 0.95])
    per_item = item_values("temporal_grounding", items)
    assert per_item["r@0.7"] == [0.0, 0.0, 0.0, 1.0, 1.0]  # round-off forgiven, as aggregate
    metrics = aggregate(items)["temporal_grounding"]
    for metric, values in per_item.items():
        assert metrics[metric] == sum(values) / len(values)
    qa = [{"id": "q", "task": "grounded_qa", "source": "s", "iou": 0.4, "accuracy": 1.0}]
    assert item_values("grounded_qa", qa) == {"accuracy": [1.0], "miou": [0.4]}


def test_items_are_paired_by_id_and_must_match() -> None:
    boot = Bootstrap(seed=0, **SETTINGS)
    base = _items([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    trained = _items([0.3, 0.2, 0.6, 0.4, 0.9, 0.6])
    ordered = paired_intervals(trained, base, boot, names=("trained", "base"))
    shuffled = paired_intervals(trained[::-1], base[2:] + base[:2], boot,
                                names=("trained", "base"))
    assert shuffled == ordered
    miou = ordered["charades"]["temporal_grounding"]["miou"]
    assert miou["value"] == pytest.approx(0.15) and 0 <= miou["low"] <= miou["high"]
    # The value of each model's own interval is the metric exactly.
    own = model_intervals(trained, boot)["charades"]["temporal_grounding"]
    assert {m: v["value"] for m, v in own.items()} == {
        m: v for m, v in aggregate(trained)["temporal_grounding"].items()
        if m not in ("count", "format")}
    # A source/task only one model has is not paired; differing items where both are, refused.
    other_source = paired_intervals(trained, _items([0.5], source="anet"), boot)
    assert other_source == {}
    with pytest.raises(ValueError, match=r"cannot pair trained with base in "
                                         r"charades/temporal_grounding.*1 only in trained "
                                         r"\(e\.g\. 'v5'\)"):
        paired_intervals(trained, base[:5], boot, names=("trained", "base"))
