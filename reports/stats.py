"""Interval arithmetic over seeds and the verdict rule: t-intervals, paired and Welch differences, power, Holm.

mean +- t_{1-a/2, n-1} * s / sqrt(n) with s the sample standard deviation (ddof 1); a paired difference
is the t-interval of the per-seed differences; Welch's interval (unequal variances, Welch-Satterthwaite
degrees of freedom) is the fallback when the two sides share no seeds. `verdict` states the four-outcome
rule (a test of 0 combined with an equivalence test against a margin; Lakens, Scheel & Isager 2018), `mde`
and `seeds_needed` the power of the paired t-test (noncentral t), `holm` the multiplicity correction.
Nothing here reads the store or formats numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import numpy as np
from scipy import optimize, stats

LEVEL = 0.95
ALPHA = 1.0 - LEVEL  # two-sided significance level of every test
POWER = 0.80  # power at which the minimum detectable effect is quoted
MAX_SEEDS = 100_000  # seeds_needed gives up beyond this
Verdict = Literal["supported", "contradicted", "no effect", "inconclusive", "not measured"]
VERDICTS: tuple[str, ...] = ("supported", "contradicted", "no effect", "inconclusive", "not measured")


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided confidence interval. low/high are NaN when n < 2 (no spread to estimate)."""

    mean: float
    low: float
    high: float
    n: int
    level: float = LEVEL
    df: float = float("nan")  # degrees of freedom of the t quantile

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0

    @property
    def defined(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)


def _finite(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(list(values), dtype=np.float64)
    return arr[np.isfinite(arr)]


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean and Student-t interval of `values` (non-finite values are dropped); n < 2 gives NaN bounds."""
    x = _finite(values)
    n = len(x)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, level)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, float("nan"), float("nan"), 1, level)
    sem = float(x.std(ddof=1)) / math.sqrt(n)
    q = float(stats.t.ppf(0.5 + level / 2.0, n - 1))
    return Interval(mean, mean - q * sem, mean + q * sem, n, level, float(n - 1))


def welch_interval(treatment: Sequence[float], reference: Sequence[float], level: float = LEVEL) -> Interval:
    """Interval of mean(treatment) - mean(reference) with unequal variances (Welch-Satterthwaite df)."""
    a, b = _finite(treatment), _finite(reference)
    n = min(len(a), len(b))
    if len(a) == 0 or len(b) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, level)
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return Interval(diff, float("nan"), float("nan"), n, level)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0.0:
        return Interval(diff, diff, diff, n, level, float("inf"))
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    q = float(stats.t.ppf(0.5 + level / 2.0, df))
    return Interval(diff, diff - q * se, diff + q * se, n, level, float(df))


@dataclass(frozen=True)
class Difference:
    """treatment - reference: paired over common seeds when there are any, else Welch (unpaired).

    sd: spread of one seed's difference (paired: the sample sd of the per-seed differences; Welch:
    sqrt(var_treatment + var_reference)), NaN with fewer than 2 values. p_value: two-sided t-test of 0."""

    interval: Interval
    paired: bool
    seeds: tuple[int, ...]  # the common seeds (paired) or () (unpaired)
    n_treatment: int
    n_reference: int
    sd: float = float("nan")
    p_value: float = float("nan")

    @property
    def method(self) -> str:
        if self.paired:
            return f"paired over {len(self.seeds)} seed(s)"
        return "Welch, unpaired (no common seeds)"

    @property
    def n(self) -> int:
        """Seeds per side the power calculation uses (pairs, or the smaller side when unpaired)."""
        return self.interval.n


def _p_value(mean: float, se: float, df: float) -> float:
    """Two-sided t-test of a zero mean difference."""
    if not (math.isfinite(se) and math.isfinite(mean)) or not df > 0:
        return float("nan")
    if se == 0.0:
        return 1.0 if mean == 0.0 else 0.0
    return float(2.0 * stats.t.sf(abs(mean) / se, df))


def difference(treatment: Mapping[int, float], reference: Mapping[int, float], level: float = LEVEL) -> Difference:
    """Effect of treatment over reference; each side maps seed -> that seed's value."""
    t = {s: v for s, v in treatment.items() if v is not None and math.isfinite(v)}
    r = {s: v for s, v in reference.items() if v is not None and math.isfinite(v)}
    common = tuple(sorted(set(t) & set(r), key=lambda s: (s is None, s)))
    if common:
        diffs = np.array([t[s] - r[s] for s in common])
        iv = t_interval(diffs, level)
        sd = float(diffs.std(ddof=1)) if len(diffs) > 1 else float("nan")
        return Difference(iv, True, common, len(t), len(r), sd, _p_value(iv.mean, sd / math.sqrt(len(diffs)), iv.df))
    iv = welch_interval(list(t.values()), list(r.values()), level)
    a, b = np.array(list(t.values())), np.array(list(r.values()))
    if len(a) < 2 or len(b) < 2:
        return Difference(iv, False, (), len(t), len(r))
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    sd = math.sqrt(a.var(ddof=1) + b.var(ddof=1))
    return Difference(iv, False, (), len(t), len(r), sd, _p_value(iv.mean, se, iv.df))


# -- power --------------------------------------------------------------------------------------------------
def _two_sided(q: float, df: float, ncp: float) -> float:
    """P(|T| > q) for T noncentral t(df, ncp); P(T < -q | ncp) is written as P(T > q | -ncp), whose scipy
    evaluation stays finite where nct.cdf's far tail returns NaN."""
    return float(stats.nct.sf(q, df, ncp) + stats.nct.sf(q, df, -ncp))


def power(effect: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test at level `alpha` with n seeds when the true mean difference is
    `effect` and one seed's difference has standard deviation `sd` (noncentral t, df n - 1)."""
    if n < 2 or not math.isfinite(sd) or sd < 0:
        return float("nan")
    if sd == 0.0:
        return 1.0 if effect != 0.0 else alpha
    df, ncp = n - 1, effect * math.sqrt(n) / sd
    q = float(stats.t.ppf(1.0 - alpha / 2.0, df))
    return _two_sided(q, df, ncp)


def mde(sd: float, n: int, target: float = POWER, alpha: float = ALPHA) -> float:
    """Minimum detectable effect: the true difference the two-sided paired t-test (level alpha, n seeds,
    per-seed sd `sd`) rejects 0 for with probability `target`. NaN when n < 2 or sd is unknown."""
    if n < 2 or not math.isfinite(sd) or sd < 0:
        return float("nan")
    if sd == 0.0:
        return 0.0
    df = n - 1
    q = float(stats.t.ppf(1.0 - alpha / 2.0, df))

    def gap(ncp: float) -> float:
        return _two_sided(q, df, ncp) - target

    high = q + 10.0
    while gap(high) < 0:
        high *= 2.0
    ncp = optimize.brentq(gap, 0.0, high, xtol=1e-10)
    return ncp * sd / math.sqrt(n)


def seeds_needed(sd: float, margin: float, target: float = POWER, alpha: float = ALPHA) -> int | None:
    """Fewest seeds (>= 2) at which a true difference of `margin` reaches `target` power, given the per-seed
    sd; None when unknown (no sd, margin <= 0) or beyond MAX_SEEDS."""
    if not math.isfinite(sd) or sd < 0 or not math.isfinite(margin) or margin <= 0:
        return None
    if power(margin, sd, 2, alpha) >= target:
        return 2
    low, high = 2, 4
    while power(margin, sd, high, alpha) < target:  # power grows with n: double, then bisect
        low, high = high, high * 2
        if high > MAX_SEEDS:
            return None
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if power(margin, sd, mid, alpha) >= target else (mid, high)
    return high


# -- multiplicity -------------------------------------------------------------------------------------------
def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family: the finite p-values; NaN stays NaN). Reject test i at
    level a when its adjusted p-value is < a: that controls the family-wise error rate at a."""
    p = [float(v) for v in p_values]
    finite = sorted((v, i) for i, v in enumerate(p) if math.isfinite(v))
    k = len(finite)
    out = [float("nan")] * len(p)
    running = 0.0
    for rank, (v, i) in enumerate(finite):
        running = max(running, min(1.0, (k - rank) * v))
        out[i] = running
    return out


# -- the verdict rule ---------------------------------------------------------------------------------------
RULE = ("For each test, d = treatment - reference is paired by seed (Welch when the sides share no seed) and "
        "given with its 95% Student-t interval and the two-sided t-test of d = 0; the margin m > 0 is the "
        "smallest effect that matters, in the metric's unit. **supported**: the test rejects 0 at 5% on the "
        "expected side and the interval reaches the margin (its far end is at least m beyond 0 on that side); "
        "**contradicted**: it rejects 0 on the other side and the interval reaches -m there; **no effect**: "
        "the interval lies strictly inside (-m, +m) (equivalence at 2.5% per side, so also an effect "
        "that is detectable but smaller than the margin); **inconclusive**: anything else, or fewer than 2 "
        "seeds. The minimum detectable effect (MDE) is the true effect the two-sided 5% paired t-test detects "
        "with 80% power at the seeds stored (noncentral t, from the sd of the per-seed differences); "
        "'seeds for m' is the fewest seeds giving 80% power at the margin. The primary test decides the claim; "
        "secondary tests reject 0 on their Holm-adjusted p-values (family: the claim's measured secondary "
        "tests) and never change the claim's verdict.")


def verdict(diff: Difference | None, direction: Literal["higher", "lower"], margin: float, *,
            p_adjusted: float | None = None) -> Verdict:
    """RULE applied to one test. direction: the expected sign of treatment - reference; margin: the smallest
    effect that matters (>= 0, metric units); p_adjusted: a multiplicity-adjusted p-value that replaces the
    interval's test of 0 (secondary tests, Holm)."""
    if direction not in ("higher", "lower"):
        raise ValueError(f"direction must be 'higher' or 'lower', got {direction!r}")
    if not isinstance(margin, (int, float)) or isinstance(margin, bool) or not math.isfinite(margin) or margin < 0:
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    if diff is None or diff.n_treatment == 0 or diff.n_reference == 0:
        return "not measured"
    iv = diff.interval
    if not iv.defined:
        return "inconclusive"
    sign = 1.0 if direction == "higher" else -1.0
    low, high = sorted((sign * iv.low, sign * iv.high))
    mean = sign * iv.mean
    rejects = (p_adjusted < ALPHA) if p_adjusted is not None and math.isfinite(p_adjusted) else (low > 0 or high < 0)
    if rejects and mean > 0 and high >= margin:
        return "supported"
    if rejects and mean < 0 and low <= -margin:
        return "contradicted"
    if -margin < low and high < margin:
        return "no effect"
    return "inconclusive"


__all__ = ["ALPHA", "Difference", "Interval", "LEVEL", "POWER", "RULE", "VERDICTS", "Verdict", "difference", "holm",
           "mde", "power", "seeds_needed", "t_interval", "verdict", "welch_interval"]
