"""Interval arithmetic against scipy; the verdict rule, power and Holm on synthetic data whose answer is known."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from reports.stats import difference, holm, mde, power, seeds_needed, t_interval, verdict, welch_interval


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


def _exact(diffs: list[float]) -> tuple[dict, dict]:
    """Pairs whose per-seed differences are exactly `diffs` on top of a large shared seed effect."""
    ref = {s: 50.0 + 7.0 * s for s in range(len(diffs))}
    return {s: ref[s] + d for s, d in enumerate(diffs)}, ref


def test_p_value_matches_ttest_rel_and_welch():
    rng = np.random.default_rng(4)
    ref = rng.normal(10, 3, 5)
    treat = ref + rng.normal(0.3, 0.5, 5)
    d = difference(dict(enumerate(treat)), dict(enumerate(ref)))
    assert d.p_value == pytest.approx(stats.ttest_rel(treat, ref).pvalue, rel=1e-9)
    assert d.sd == pytest.approx(np.std(treat - ref, ddof=1))
    a, b = [5.1, 4.7, 5.6, 5.0], [3.9, 4.4, 4.1]
    w = difference(dict(enumerate(a)), {10 + i: v for i, v in enumerate(b)})
    assert w.p_value == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-9)


def test_each_of_the_four_verdicts_on_known_effects():
    margin = 1.0
    # true effect 3 margins, small noise: the interval excludes 0 and reaches past the margin
    treat, ref = _synthetic(effect=3.0, noise=0.3)
    assert verdict(difference(treat, ref), "higher", margin) == "supported"
    assert verdict(difference(treat, ref), "lower", margin) == "contradicted"
    # true effect 0, small noise: the interval sits inside (-1, 1)
    treat, ref = _synthetic(effect=0.0, noise=0.3)
    assert verdict(difference(treat, ref), "higher", margin) == "no effect"
    assert verdict(difference(treat, ref), "lower", margin) == "no effect"
    # differences of both signs, spread wider than the margin: the interval straddles 0 and both margins
    wide = difference(*_exact([2.0, -1.5, 1.0, -2.5, 0.5]))
    assert wide.interval.low < -margin and wide.interval.high > margin
    assert verdict(wide, "higher", margin) == verdict(wide, "lower", margin) == "inconclusive"


def test_verdict_boundaries_on_exact_differences():
    diffs = [1.0, 1.2, 0.8, 1.1, 0.9]  # mean 1.0, 95% CI about [0.80, 1.20]
    d = difference(*_exact(diffs))
    assert 0.75 < d.interval.low < 0.85 and 1.15 < d.interval.high < 1.25
    assert verdict(d, "higher", 1.19) == "supported"  # significant and the interval reaches the margin
    assert verdict(d, "higher", 1.2) == "no effect"  # significant but the whole interval is below the margin
    assert verdict(d, "lower", 0.5) == "contradicted"
    assert verdict(d, "lower", 1.25) == "no effect"
    straddle = difference(*_exact([0.4, -0.3, 0.5, -0.2, 0.1]))
    assert straddle.interval.low < 0 < straddle.interval.high
    assert verdict(straddle, "higher", 1.0) == "no effect"
    assert verdict(straddle, "higher", 0.5) == "inconclusive"  # the interval reaches 0.539


def test_verdict_needs_two_seeds_data_on_both_sides_and_a_valid_margin():
    assert verdict(difference({0: 5.0}, {0: 1.0}), "higher", 0.1) == "inconclusive"  # one pair: no interval
    assert verdict(difference({0: 5.0, 1: 6.0}, {}), "higher", 0.1) == "not measured"
    assert verdict(None, "lower", 0.1) == "not measured"
    d = difference({0: 1.0, 1: 2.0}, {0: 0.0, 1: 0.0})
    with pytest.raises(ValueError, match="direction"):
        verdict(d, "up", 0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="margin"):
        verdict(d, "higher", -1.0)


def test_adjusted_p_value_replaces_the_test_of_zero():
    d = difference(*_exact([1.0, 1.2, 0.8, 1.1, 0.9]))
    assert d.p_value < 0.001
    assert verdict(d, "higher", 0.5, p_adjusted=0.2) == "inconclusive"  # not rejected after adjustment
    assert verdict(d, "higher", 0.5, p_adjusted=0.01) == "supported"


def test_mde_matches_closed_form_limits_and_power():
    # 3 seeds: the t quantile is 4.30 and 80% power needs about 3.3 per-seed sds
    assert mde(1.0, 3) == pytest.approx(3.264, abs=2e-3)
    assert power(mde(2.0, 7), 2.0, 7) == pytest.approx(0.80, abs=1e-6)
    # many seeds: the normal approximation (z_0.975 + z_0.8) * sd / sqrt(n) holds
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert mde(1.0, 400) == pytest.approx(z / 20, rel=0.01)
    assert mde(0.0, 3) == 0.0 and math.isnan(mde(1.0, 1)) and math.isnan(mde(float("nan"), 5))


@pytest.mark.parametrize("n", [3, 5, 10])
def test_power_is_simulated_not_assumed(n):
    """2,000 simulated experiments at effect = MDE: the 95% interval excludes 0 in 80% +- 3% of them."""
    sd = 0.7
    effect = mde(sd, n)
    rng = np.random.default_rng(100 + n)
    rejected = 0
    for row in rng.normal(effect, sd, (2000, n)):
        iv = difference(*_exact(list(row))).interval
        rejected += iv.low > 0 or iv.high < 0
    assert rejected / 2000 == pytest.approx(0.80, abs=0.03)
    # at a quarter of the MDE the same test rarely rejects
    rows = rng.normal(effect / 4, sd, (2000, n))
    low = rows.mean(1) - stats.t.ppf(0.975, n - 1) * rows.std(1, ddof=1) / math.sqrt(n)
    assert (low > 0).mean() < 0.25


def test_seeds_needed_is_the_smallest_count_with_power():
    sd, margin = 1.0, 0.8
    n = seeds_needed(sd, margin)
    assert n is not None and power(margin, sd, n) >= 0.8 > power(margin, sd, n - 1)
    assert mde(sd, n) <= margin < mde(sd, n - 1)
    # simulated: with that many seeds a true effect of the margin is "supported" about 80% of the time
    rng = np.random.default_rng(7)
    supported = sum(verdict(difference(*_exact(list(row))), "higher", margin) == "supported"
                    for row in rng.normal(margin, sd, (2000, n)))
    assert 0.76 <= supported / 2000 <= 0.84
    assert seeds_needed(0.0, 1.0) == 2 and seeds_needed(1.0, 0.0) is None
    assert seeds_needed(1.0, 1e-4) is None  # beyond MAX_SEEDS


def test_holm_against_a_hand_computed_case():
    # sorted p: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04, raised to 0.06)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.2, 0.5]) == pytest.approx([0.4, 0.5])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1
    out = holm([0.01, float("nan"), 0.02])  # an unmeasured test is not part of the family
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    assert holm([]) == []
