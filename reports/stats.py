"""Interval arithmetic over seeds and the verdict rule: t-intervals, paired and Welch differences, power, Holm.

mean +- t_{1-a/2, n-1} * s / sqrt(n) with s the sample standard deviation (ddof 1); a paired difference
is the t-interval of the per-seed differences; Welch's interval (unequal variances, Welch-Satterthwaite
degrees of freedom) is the fallback when the two sides share no seeds. `verdict` states the four-outcome
rule (a test of 0 combined with an equivalence test against a margin; Lakens, Scheel & Isager 2018), `mde`
and `seeds_needed` the power of the paired t-test (noncentral t), `holm` the multiplicity correction.
Where the t statistic means nothing (paired differences with zero variance, or an integer-valued metric
with ties such as active units), `difference` decides with the exact sign-flip permutation test instead
(Fisher 1935; exhaustive over the 2^n sign vectors up to n = 16, Monte Carlo beyond), and its interval,
MDE and seeds needed follow that test. Nothing here reads the store or formats numbers.
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
EXACT_MAX_N = 16  # the sign-flip test enumerates all 2^n sign vectors up to this many pairs
SIGN_FLIP_DRAWS = 100_000  # Monte Carlo sign vectors beyond EXACT_MAX_N
SIGN_FLIP_SEED = 0  # fixed, so a Monte Carlo p value is reproducible
ZERO_SD_RTOL = 1e-9  # a paired sd at most this times the largest |value| is zero (rounding only)
Test = Literal["t", "welch", "sign-flip"]
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
    sqrt(var_treatment + var_reference)), NaN with fewer than 2 values. p_value: two-sided test of 0 by `test`:
    the paired t-test, Welch's t-test, or the sign-flip permutation test (then `interval` is that test inverted,
    `draws` its sign vectors, and `p_error` the Monte Carlo standard error of p, 0 when exhaustive)."""

    interval: Interval
    paired: bool
    seeds: tuple[int, ...]  # the common seeds (paired) or () (unpaired)
    n_treatment: int
    n_reference: int
    sd: float = float("nan")
    p_value: float = float("nan")
    test: Test = "t"
    why_exact: str = ""  # why the sign-flip test decides (zero variance, integer values with ties)
    draws: int = 0
    p_error: float = 0.0

    @property
    def test_label(self) -> str:
        """The test's short name, for a table cell."""
        if self.test == "sign-flip":
            return "exact sign-flip" if self.p_error == 0.0 else "sign-flip (Monte Carlo)"
        return "Welch t" if self.test == "welch" else "paired t"

    @property
    def test_name(self) -> str:
        """The test that decided, as the report names it."""
        if self.test == "sign-flip":
            how = (f"exact over all {self.draws} sign vectors" if self.p_error == 0.0 else
                   f"Monte Carlo over {self.draws} sign vectors, p standard error {self.p_error:.2g}")
            return f"sign-flip permutation test ({how}; {self.why_exact})"
        return "Welch's t-test" if self.test == "welch" else "paired t-test"

    @property
    def method(self) -> str:
        if self.paired:
            return f"paired over {len(self.seeds)} seed(s), {self.test_name}"
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


# -- the exact sign-flip test -------------------------------------------------------------------------------
def _sign_vectors(n: int, draws: int = SIGN_FLIP_DRAWS, seed: int = SIGN_FLIP_SEED) -> tuple[np.ndarray, bool]:
    """(m, n) sign vectors in {-1, +1}: all 2^n of them when n <= EXACT_MAX_N (exhaustive: True), else `draws`
    uniform random ones from a fixed seed (False)."""
    if n <= EXACT_MAX_N:
        bits = (np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]) & 1  # (2^n, n)
        return 1.0 - 2.0 * bits, True
    rng = np.random.default_rng(seed)
    return rng.choice(np.array([-1.0, 1.0]), size=(draws, n)), False


def _flip_p(diffs: np.ndarray, signs: np.ndarray, exhaustive: bool) -> float:
    """Share of sign vectors s with |sum s d| >= |sum d| (ties count; a Monte Carlo share adds the observed
    vector: (1 + k) / (1 + m), which keeps the test valid)."""
    observed = abs(float(diffs.sum()))
    tol = 1e-12 * float(np.abs(diffs).sum())  # rounding of the sums: equal sums count as ties
    hits = int(np.count_nonzero(np.abs(signs @ diffs) >= observed - tol))
    return hits / len(signs) if exhaustive else (1 + hits) / (1 + len(signs))


def sign_flip_test(diffs: Sequence[float], *, draws: int = SIGN_FLIP_DRAWS) -> tuple[float, float, int]:
    """Two-sided sign-flip permutation test of a zero mean for paired differences (under H0 each difference is
    symmetric about 0, so flipping its sign leaves the distribution unchanged). Statistic |sum d| (equivalent to
    the t statistic, since sum d^2 is the same under every flip). Returns (p, standard error of p, sign vectors
    used): exhaustive and exact (error 0) for n <= EXACT_MAX_N, else Monte Carlo over `draws` vectors.
    3 equal nonzero differences give p = 2/8 = 0.25; 6 give 2/64 = 0.03125."""
    d = _finite(diffs)
    if len(d) == 0:
        return float("nan"), float("nan"), 0
    signs, exhaustive = _sign_vectors(len(d), draws)
    p = _flip_p(d, signs, exhaustive)
    return p, (0.0 if exhaustive else math.sqrt(p * (1.0 - p) / len(signs))), len(signs)


def sign_flip_min_p(n: int) -> float:
    """The smallest two-sided p the exhaustive sign-flip test can give with n pairs: 2 / 2^n."""
    return 2.0 / 2.0 ** n if n >= 1 else 1.0


def sign_flip_min_seeds(alpha: float = ALPHA) -> int:
    """Fewest pairs at which the sign-flip test can reject at level alpha (2 / 2^n < alpha): 6 at 5%."""
    n = 1
    while sign_flip_min_p(n) >= alpha:
        n += 1
    return n


def sign_flip_interval(diffs: Sequence[float], level: float = LEVEL) -> Interval:
    """The sign-flip test inverted: the shifts delta for which the test of d - delta keeps p >= 1 - level.
    p changes only where delta is the mean of a subset of d, so the bounds are subset means (searched by
    bisection over them when exhaustive; continuous bisection with fixed Monte Carlo vectors beyond). Bounds
    are -inf/+inf when even the most extreme shift is not rejected (n < 6 at 95%); one point when all d are
    equal and n >= 6."""
    d = _finite(diffs)
    n = len(d)
    if n < 2:
        return Interval(float(d.mean()) if n else float("nan"), float("nan"), float("nan"), n, level)
    mean, alpha = float(d.mean()), 1.0 - level
    signs, exhaustive = _sign_vectors(n)

    def accepted(delta: float) -> bool:
        return _flip_p(d - delta, signs, exhaustive) >= alpha

    span = float(np.ptp(d)) + abs(mean) + 1.0
    if accepted(mean - 1e6 * span):
        return Interval(mean, float("-inf"), float("inf"), n, level)
    if exhaustive:
        bits = (signs < 0)  # every subset of the pairs (the empty one is dropped below)
        counts = bits.sum(axis=1)
        means = np.unique((bits @ d)[counts > 0] / counts[counts > 0])

        def bound(candidates: np.ndarray) -> float:  # the accepted candidate farthest from the mean
            lo, hi = 0, len(candidates) - 1  # candidates ordered from the mean outwards; [0] is accepted
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if accepted(float(candidates[mid])) else (lo, mid - 1)
            return float(candidates[lo])

        below = np.concatenate([[mean], means[means < mean][::-1]])
        above = np.concatenate([[mean], means[means > mean]])
        return Interval(mean, bound(below), bound(above), n, level)

    def edge(far: float) -> float:  # continuous bisection between the mean (accepted) and a rejected shift
        inside, outside = mean, far
        for _ in range(60):
            mid = 0.5 * (inside + outside)
            inside, outside = (mid, outside) if accepted(mid) else (inside, mid)
        return inside

    return Interval(mean, edge(mean - span), edge(mean + span), n, level)


def exact_test_reason(treatment: Sequence[float], reference: Sequence[float], diffs: Sequence[float]) -> str:
    """Why the t-test cannot decide these paired values ('' when it can): the per-seed differences have zero
    (numerically zero) variance, or both sides are integer-valued and the differences have ties."""
    d = _finite(diffs)
    if len(d) < 2:
        return ""
    values = np.concatenate([_finite(treatment), _finite(reference)])
    scale = float(np.abs(values).max()) if len(values) else 0.0
    if float(d.std(ddof=1)) <= ZERO_SD_RTOL * max(scale, float(np.abs(d).max()), 1e-300):
        return "the paired differences have zero variance"
    if np.all(values == np.round(values)) and len(np.unique(d)) < len(d):
        return "integer-valued metric with tied differences"
    return ""


def difference(treatment: Mapping[int, float], reference: Mapping[int, float], level: float = LEVEL) -> Difference:
    """Effect of treatment over reference; each side maps seed -> that seed's value. Paired differences go to
    the t-test, or to the sign-flip test when `exact_test_reason` says the t statistic means nothing."""
    t = {s: v for s, v in treatment.items() if v is not None and math.isfinite(v)}
    r = {s: v for s, v in reference.items() if v is not None and math.isfinite(v)}
    common = tuple(sorted(set(t) & set(r), key=lambda s: (s is None, s)))
    if common:
        diffs = np.array([t[s] - r[s] for s in common])
        sd = float(diffs.std(ddof=1)) if len(diffs) > 1 else float("nan")
        why = exact_test_reason([t[s] for s in common], [r[s] for s in common], diffs)
        if why:
            p, p_error, draws = sign_flip_test(diffs)
            return Difference(sign_flip_interval(diffs, level), True, common, len(t), len(r), sd, p,
                              test="sign-flip", why_exact=why, draws=draws, p_error=p_error)
        iv = t_interval(diffs, level)
        return Difference(iv, True, common, len(t), len(r), sd, _p_value(iv.mean, sd / math.sqrt(len(diffs)), iv.df))
    iv = welch_interval(list(t.values()), list(r.values()), level)
    a, b = np.array(list(t.values())), np.array(list(r.values()))
    if len(a) < 2 or len(b) < 2:
        return Difference(iv, False, (), len(t), len(r), test="welch")
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    sd = math.sqrt(a.var(ddof=1) + b.var(ddof=1))
    return Difference(iv, False, (), len(t), len(r), sd, _p_value(iv.mean, se, iv.df), test="welch")


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


def mde(sd: float, n: int, target: float = POWER, alpha: float = ALPHA, *, test: Test = "t") -> float:
    """Minimum detectable effect: the true difference the two-sided paired t-test (level alpha, n seeds,
    per-seed sd `sd`) rejects 0 for with probability `target`. NaN when n < 2 or sd is unknown.
    test="sign-flip": +inf below `sign_flip_min_seeds` (no effect of any size can be rejected), 0 for zero sd
    (a constant nonzero difference is rejected with certainty), else the t-test's value (the permutation
    t-test has the t-test's power as n grows; at small n its discreteness makes this a lower bound)."""
    if n < 2 or not math.isfinite(sd) or sd < 0:
        return float("nan")
    if test == "sign-flip" and n < sign_flip_min_seeds(alpha):
        return float("inf")
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


def seeds_needed(sd: float, margin: float, target: float = POWER, alpha: float = ALPHA, *,
                 test: Test = "t") -> int | None:
    """Fewest seeds (>= 2) at which a true difference of `margin` reaches `target` power, given the per-seed
    sd; None when unknown (no sd, margin <= 0) or beyond MAX_SEEDS. test="sign-flip": never fewer than
    `sign_flip_min_seeds` (6 at 5%), the count at which the exact test can reject at all."""
    if not math.isfinite(sd) or sd < 0 or not math.isfinite(margin) or margin <= 0:
        return None
    if test == "sign-flip":
        need = seeds_needed(sd, margin, target, alpha)
        return None if need is None else max(need, sign_flip_min_seeds(alpha))
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
        "given with its 95% Student-t interval and the two-sided t-test of d = 0 (when the differences have "
        "zero variance, or the metric is integer-valued with tied differences, the exact sign-flip permutation "
        "test and its inverted interval instead: with n seeds its smallest p is 2/2^n, so it needs 6 seeds to "
        "reject at 5%); the margin m > 0 is the "
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
    if p_adjusted is not None and math.isfinite(p_adjusted):
        rejects = p_adjusted < ALPHA
    elif diff.test == "sign-flip":  # its interval is the test inverted; decide on the exact p itself
        rejects = diff.p_value < ALPHA
    else:
        rejects = low > 0 or high < 0
    if rejects and mean > 0 and high >= margin:
        return "supported"
    if rejects and mean < 0 and low <= -margin:
        return "contradicted"
    if -margin < low and high < margin:
        return "no effect"
    return "inconclusive"


__all__ = ["ALPHA", "Difference", "EXACT_MAX_N", "Interval", "LEVEL", "POWER", "RULE", "Test", "VERDICTS", "Verdict",
           "difference", "exact_test_reason", "holm", "mde", "power", "seeds_needed", "sign_flip_interval",
           "sign_flip_min_p", "sign_flip_min_seeds", "sign_flip_test", "t_interval", "verdict", "welch_interval"]
