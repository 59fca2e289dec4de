"""The statistics behind every interval (``pipeline.tracking.intervals``), on known answers and against a
slow reference loop over drawn item indices (``scipy.stats`` on each resample)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from pipeline.tracking import intervals
from pipeline.tracking.intervals import Items


def sts_items(rng, size: int, noise: float, label=None) -> Items:
    label = np.round(rng.uniform(0, 5, size), 1) if label is None else label  # tied labels, as in STSb
    return Items("spearman", (label + rng.normal(0, noise, size), label))


def reference(a: Items, b: Items, resamples: int, seed: int) -> np.ndarray:
    """B - A on each resample, drawn as :func:`intervals.counts` draws them, scored by scipy on the drawn items."""
    drawn = np.random.default_rng(seed).integers(0, a.size, size=(resamples, a.size))
    score = {"spearman": lambda x, y: stats.spearmanr(x, y)[0], "pearson": lambda x, y: stats.pearsonr(x, y)[0]}
    deltas = []
    for index in drawn:
        if a.statistic == "mean":
            deltas.append(b.columns[0][index].mean() - a.columns[0][index].mean())
        else:
            f = score[a.statistic]
            deltas.append(f(*(c[index] for c in b.columns)) - f(*(c[index] for c in a.columns)))
    return np.array(deltas)


@pytest.mark.parametrize("statistic", ["spearman", "pearson", "mean"])
def test_identical_runs_differ_by_exactly_zero_with_p_one(statistic):
    rng = np.random.default_rng(1)
    items = sts_items(rng, 200, 1.0)
    items = Items(statistic, items.columns[:1] if statistic == "mean" else items.columns)
    difference = intervals.paired(items, items, resamples=2000)
    assert (difference.delta, difference.low, difference.high, difference.p_value) == (0, 0, 0, 1)
    assert not difference.excludes_zero()


def test_a_clearly_better_copy_gets_an_interval_above_zero():
    rng = np.random.default_rng(2)
    label = np.round(rng.uniform(0, 5, 500), 1)
    worse, better = sts_items(rng, 500, 2.0, label), sts_items(rng, 500, 0.5, label)
    difference = intervals.paired(worse, better, resamples=2000)
    assert difference.low > 0 and difference.excludes_zero() and difference.p_value < 0.01
    shifted = intervals.paired(Items("mean", (label,)), Items("mean", (label + 0.1,)), resamples=500)
    assert shifted.low == pytest.approx(0.1) and shifted.high == pytest.approx(0.1)


@pytest.mark.parametrize("statistic", ["spearman", "pearson", "mean"])
def test_resampled_statistics_equal_scipy_on_the_drawn_items(statistic):
    rng = np.random.default_rng(3)
    label = np.round(rng.uniform(0, 5, 40), 0)  # many ties
    a, b = sts_items(rng, 40, 1.0, label), sts_items(rng, 40, 0.3, label)
    b = Items(b.statistic, (np.round(b.columns[0], 1), label))  # ties in a score too
    if statistic != "spearman":
        a, b = (Items(statistic, x.columns[:1] if statistic == "mean" else x.columns) for x in (a, b))
    values = intervals.on_resamples([a, b], 300, seed=5)
    np.testing.assert_allclose(values[:, 1] - values[:, 0], reference(a, b, 300, 5), atol=1e-12)
    # the point value is sentence-transformers' own (scipy's)
    expected = {"spearman": lambda: stats.spearmanr(*a.columns)[0], "pearson": lambda: stats.pearsonr(*a.columns)[0]}
    assert intervals.value(a) == pytest.approx(expected.get(statistic, lambda: a.columns[0].mean())())


def test_interval_and_p_value_are_the_percentiles_and_tails_of_the_reference():
    rng = np.random.default_rng(4)
    label = np.round(rng.uniform(0, 5, 60), 1)
    a, b = sts_items(rng, 60, 1.0, label), sts_items(rng, 60, 0.9, label)
    deltas = reference(a, b, 400, 9)
    difference = intervals.paired(a, b, resamples=400, seed=9)
    assert (difference.low, difference.high) == pytest.approx(tuple(np.percentile(deltas, [2.5, 97.5])))
    tail = min((deltas <= 0).sum(), (deltas >= 0).sum())
    assert difference.p_value == pytest.approx(min(1, 2 * (tail + 1) / 401))


def test_holm_adjusts_step_down():
    assert intervals.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert intervals.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert intervals.holm([]) == []


def test_two_level_bootstrap_against_a_reference_loop():
    rng = np.random.default_rng(6)
    label = np.round(rng.uniform(0, 5, 50), 1)
    configs = {
        "good": [sts_items(rng, 50, 0.5, label) for _ in range(3)],
        "bad": [sts_items(rng, 50, 3.0, label) for _ in range(3)],
        "also good": [sts_items(rng, 50, 0.55, label) for _ in range(2)],
    }
    result = intervals.versus_best(configs, "good", resamples=300, seed=2)
    assert (result["good"].low, result["good"].high, result["good"].p_value) == (0, 0, 1)
    assert result["bad"].high < 0  # clearly worse than the best
    assert result["also good"].low < 0 < result["also good"].high  # tied
    # the reference: the same drawn items for every run, then each configuration's seeds drawn
    drawn = np.random.default_rng(2).integers(0, 50, size=(300, 50))
    seeds = np.random.default_rng(3)
    runs = [r for name in configs for r in configs[name]]
    per_run = np.array([[stats.spearmanr(*(c[i] for c in r.columns))[0] for r in runs] for i in drawn])
    start, means = 0, {}
    for name, members in configs.items():
        picks = seeds.integers(0, len(members), size=(300, len(members))) + start
        means[name] = np.array([per_run[row, pick].mean() for row, pick in enumerate(picks)])
        start += len(members)
    deltas = means["bad"] - means["good"]
    assert (result["bad"].low, result["bad"].high) == pytest.approx(tuple(np.percentile(deltas, [2.5, 97.5])))
    point = np.mean([intervals.value(r) for r in configs["bad"]]) - np.mean(
        [intervals.value(r) for r in configs["good"]]
    )
    assert result["bad"].delta == pytest.approx(point)


def test_spelled():
    assert (
        intervals.spelled(intervals.Difference(0.8, 0.8041, 0.0041, -0.001, 0.0093, 0.2))
        == ("+0.0041 [-0.0010, +0.0093] ").strip()
    )


def test_metrics_of_one_file_share_resamples_and_match_one_at_a_time():
    rng = np.random.default_rng(7)
    label = np.round(rng.uniform(0, 5, 80), 1)
    a, b = sts_items(rng, 80, 1.0, label), sts_items(rng, 80, 0.8, label)
    pa, pb = Items("pearson", a.columns), Items("pearson", b.columns)
    together = intervals.paired_many([(a, b), (pa, pb)], resamples=500, seed=3)
    assert together == [intervals.paired(a, b, 500, 3), intervals.paired(pa, pb, 500, 3)]


def test_an_undefined_metric_gives_no_interval_and_no_p_value():
    label = np.arange(30.0)
    flat = Items("pearson", (np.ones(30), label))  # a constant score: no correlation defined
    difference = intervals.paired(flat, Items("pearson", (label, label)), resamples=200)
    assert np.isnan(difference.p_value) and np.isnan(difference.low) and not difference.excludes_zero()
