"""Interval arithmetic against scipy, and the verdict rule on synthetic data whose answer is known."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from reports.stats import combine, difference, t_interval, verdict, welch_interval


@pytest.mark.parametrize("n", [2, 3, 5, 30])
def test_t_interval_matches_scipy(n):
    x = np.random.default_rng(n).normal(3.0, 2.0, n)
    iv = t_interval(x)
    low, high = stats.t.interval(0.95, df=n - 1, loc=x.mean(), scale=stats.sem(x))
    assert iv.n == n and iv.df == n - 1
    assert iv.mean == pytest.approx(x.mean(), rel=1e-12)
    assert (iv.low, iv.high) == (pytest.approx(low, rel=1e-12), pytest.approx(high, rel=1e-12))


def test_t_interval_other_level_and_degenerate_sizes():
    x = [1.0, 2.0, 4.0, 8.0]
    iv = t_interval(x, level=0.9)
    low, high = stats.t.interval(0.9, df=3, loc=np.mean(x), scale=stats.sem(x))
    assert (iv.low, iv.high) == (pytest.approx(low), pytest.approx(high))
    one = t_interval([2.5])
    assert one.mean == 2.5 and one.n == 1 and not one.defined
    none = t_interval([])
    assert none.n == 0 and math.isnan(none.mean)
    assert t_interval([1.0, float("nan"), 3.0]).n == 2  # non-finite values are dropped


def test_paired_difference_matches_ttest_rel():
    rng = np.random.default_rng(0)
    ref = rng.normal(10, 3, 6)
    treat = ref + rng.normal(0.5, 0.4, 6)
    d = difference(dict(enumerate(treat)), dict(enumerate(ref)))
    ci = stats.ttest_rel(treat, ref).confidence_interval(0.95)
    assert d.paired and d.seeds == tuple(range(6))
    assert (d.interval.low, d.interval.high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    # pairing removes the shared seed-to-seed spread: the paired interval is much narrower than Welch's
    assert d.interval.half_width < welch_interval(treat, ref).half_width / 3


def test_welch_interval_matches_scipy_and_is_used_without_common_seeds():
    a = np.array([5.1, 4.7, 5.6, 5.0])
    b = np.array([3.9, 4.4, 4.1])
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    iv = welch_interval(a, b)
    assert (iv.low, iv.high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    d = difference({0: 5.1, 1: 4.7, 2: 5.6, 3: 5.0}, {10: 3.9, 11: 4.4, 12: 4.1})
    assert not d.paired and "Welch" in d.method
    assert d.interval.low == pytest.approx(ci.low)


def test_paired_uses_only_common_seeds():
    d = difference({0: 1.0, 1: 2.0, 2: 3.5}, {1: 1.0, 2: 2.0, 3: 9.0})
    assert d.seeds == (1, 2) and d.interval.mean == pytest.approx(1.25)


def _synthetic(effect: float, noise: float, n: int = 8, seed: int = 0) -> tuple[dict, dict]:
    """Per-seed values whose true treatment - reference effect is `effect` (seed effects are shared)."""
    rng = np.random.default_rng(seed)
    seed_effect = rng.normal(0, 5, n)  # large, shared: only pairing sees through it
    ref = {s: 100 + seed_effect[s] + rng.normal(0, noise) for s in range(n)}
    treat = {s: 100 + effect + seed_effect[s] + rng.normal(0, noise) for s in range(n)}
    return treat, ref


def test_verdict_rule_on_known_answers():
    treat, ref = _synthetic(effect=2.0, noise=0.1)
    assert verdict(difference(treat, ref), "higher") == "supported"
    assert verdict(difference(treat, ref), "lower") == "contradicted"
    # exactly symmetric per-seed differences: mean 0, so the interval contains 0 whatever its width
    ref = {s: 10.0 + s for s in range(4)}
    treat = {s: ref[s] + d for s, d in zip(range(4), (0.1, -0.1, 0.2, -0.2))}
    assert verdict(difference(treat, ref), "higher") == "inconclusive"
    assert verdict(difference(treat, ref), "lower") == "inconclusive"


def test_verdict_needs_two_seeds_and_data_on_both_sides():
    assert verdict(difference({0: 5.0}, {0: 1.0}), "higher") == "inconclusive"  # one pair: no interval
    assert verdict(difference({0: 5.0, 1: 6.0}, {}), "higher") == "not measured"
    assert verdict(None, "lower") == "not measured"
    with pytest.raises(ValueError, match="direction"):
        verdict(difference({0: 1.0, 1: 2.0}, {0: 0.0, 1: 0.0}), "up")  # type: ignore[arg-type]


def test_verdict_power_grows_with_seeds():
    """A modest effect is inconclusive with 2 seeds (t quantile 12.7) and supported with 20."""
    effect = 1.0
    treat2, ref2 = _synthetic(effect, noise=0.5, n=2, seed=3)
    treat20, ref20 = _synthetic(effect, noise=0.5, n=20, seed=3)
    assert verdict(difference(treat2, ref2), "higher") == "inconclusive"
    assert verdict(difference(treat20, ref20), "higher") == "supported"


def test_combine_rule():
    assert combine(["supported", "supported"]) == "supported"
    assert combine(["supported", "not measured"]) == "supported"
    assert combine(["supported", "inconclusive"]) == "inconclusive"
    assert combine(["supported", "contradicted", "inconclusive"]) == "contradicted"
    assert combine(["not measured", "not measured"]) == "not measured"
    assert combine([]) == "not measured"
