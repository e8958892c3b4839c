"""Interval arithmetic over seeds: Student-t confidence intervals, paired and Welch differences, verdicts.

mean +- t_{1-a/2, n-1} * s / sqrt(n) with s the sample standard deviation (ddof 1); a paired difference
is the t-interval of the per-seed differences; Welch's interval (unequal variances, Welch-Satterthwaite
degrees of freedom) is the fallback when the two sides share no seeds. The verdict rule is in `verdict`.
Nothing here reads the store or formats numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import numpy as np
from scipy import stats

LEVEL = 0.95
Verdict = Literal["supported", "contradicted", "inconclusive", "not measured"]


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
    """treatment - reference: paired over common seeds when there are any, else Welch (unpaired)."""

    interval: Interval
    paired: bool
    seeds: tuple[int, ...]  # the common seeds (paired) or () (unpaired)
    n_treatment: int
    n_reference: int

    @property
    def method(self) -> str:
        if self.paired:
            return f"paired over {len(self.seeds)} seed(s)"
        return "Welch, unpaired (no common seeds)"


def difference(treatment: Mapping[int, float], reference: Mapping[int, float], level: float = LEVEL) -> Difference:
    """Effect of treatment over reference; each side maps seed -> that seed's value."""
    t = {s: v for s, v in treatment.items() if v is not None and math.isfinite(v)}
    r = {s: v for s, v in reference.items() if v is not None and math.isfinite(v)}
    common = tuple(sorted(set(t) & set(r), key=lambda s: (s is None, s)))
    if common:
        diffs = [t[s] - r[s] for s in common]
        return Difference(t_interval(diffs, level), True, common, len(t), len(r))
    return Difference(welch_interval(list(t.values()), list(r.values()), level), False, (), len(t), len(r))


RULE = ("supported when the 95% interval of treatment - reference lies entirely on the expected side of 0, "
        "contradicted when it lies entirely on the other side, inconclusive when it contains 0 or cannot "
        "be computed (fewer than 2 seeds), not measured when either side has no stored result")


def verdict(diff: Difference | None, direction: Literal["higher", "lower"]) -> Verdict:
    """The rule of RULE applied to one comparison; `direction` is the expected sign of the difference."""
    if direction not in ("higher", "lower"):
        raise ValueError(f"direction must be 'higher' or 'lower', got {direction!r}")
    if diff is None or diff.n_treatment == 0 or diff.n_reference == 0:
        return "not measured"
    iv = diff.interval
    if not iv.defined:
        return "inconclusive"
    sign = 1.0 if direction == "higher" else -1.0
    if sign * iv.low > 0 and sign * iv.high > 0:
        return "supported"
    if sign * iv.low < 0 and sign * iv.high < 0:
        return "contradicted"
    return "inconclusive"


def combine(verdicts: Sequence[Verdict]) -> Verdict:
    """A claim's verdict from its tests: tests without data do not count; any contradicted test contradicts
    the claim; it is supported only when every measured test is; otherwise inconclusive."""
    measured = [v for v in verdicts if v != "not measured"]
    if not measured:
        return "not measured"
    if "contradicted" in measured:
        return "contradicted"
    if all(v == "supported" for v in measured):
        return "supported"
    return "inconclusive"


__all__ = ["Difference", "Interval", "LEVEL", "RULE", "Verdict", "combine", "difference", "t_interval", "verdict",
           "welch_interval"]
