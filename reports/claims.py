"""Claims decided from the store: each grid study's own claims (stored with it) plus the analytic checks.

A grid run stores its study's definition as a `kind="study"` row (`genlib.records`), whose claims each hold a
pre-registered primary test and secondary tests (`genlib.study_schema.ClaimTest`, the one declaration of a test's
keys): so a user's own grid is decided like a bundled one. Only the analytic checks (claims 8, 9, 9b and the
closed-form part of 10) live in this file.
A `Comparison` contrasts two settings of one study on one metric, each side one configuration (never pooled:
a side holding several, or sides differing beyond the axis, is inconclusive naming the keys that differ);
`reports.stats.verdict` is the rule. The analytic rows (`kind="analytic"`, study "analytic", one run per
check) hold:

    kl_closed_form and kl_monte_carlo (nats) in one run; kl_monte_carlo's extra holds "std_error" (standard
    error of the Monte Carlo mean, nats) and "draws" (the catalogue: genlib.records.ANALYTIC).
    kl_forward = KL(p||q) and kl_reverse = KL(q||p) (nats) in one run, with "std_error" in extra when they are
    Monte Carlo estimates.
    alpha_bar_T (unit "") with extra {"T": 100, "schedule": "linear", "scaled": false}.
    sanov_log_prob (log P(heads fraction >= q) for n flips of Bernoulli(p), exact) and sanov_kl = KL(Q||P) (nats)
    in one run, extra {"q", "p", "n", "kl_reverse", "reverse_log_prob"} (non-finite values as strings).
Only claims whose studies or checks are in the store are listed; nothing is filled in from elsewhere.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

import pandas as pd

from genlib import records
from genlib.study_schema import ClaimTest as StoredTest

from reports.load import StoreData, same_value, select_rows, setting_value
from reports.render import fmt_num
from reports.stats import (ALPHA, LEVEL, POWER, RULE, Difference, Interval, Verdict, difference, holm, mde,
                           seeds_needed, sign_flip_min_p, sign_flip_min_seeds, t_interval, verdict)
from reports.tables import per_seed

ANALYTIC_STUDY = "analytic"
STUDY_KIND = "study"
QUICK_PROFILE = "quick"  # CI- and demo-sized: its verdicts are indicative; `claims --profile standard` decides
SE_MULTIPLE = 3.0  # closed form vs Monte Carlo: agreement within this many standard errors
ALPHA_BAR_EXPECTED = 0.36  # unscaled linear schedule (1e-4..0.02), T = 100: prod(1 - beta_t) = 0.3636
ALPHA_BAR_TOLERANCE = 0.05


@dataclass(frozen=True)
class CheckResult:
    """One test of a claim, evaluated on the store. role: primary, secondary or analytic."""

    description: str
    verdict: Verdict
    measured: str  # the effect with its interval, margin and power, or why it is not measured
    study: str
    metric: str
    role: str = "primary"
    difference: Difference | None = None
    treatment: Interval | None = None
    reference: Interval | None = None
    margin: float | None = None
    mde: float | None = None  # minimum detectable effect at the seeds stored (80% power, two-sided 5%)
    seeds_needed: int | None = None  # seeds for 80% power at the margin
    p_value: float | None = None
    p_adjusted: float | None = None  # Holm, secondary tests only


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _iv_text(iv: Interval) -> str:
    if iv.n == 0:
        return "n/a"
    if not iv.defined:
        return f"{fmt_num(iv.mean)} (n={iv.n})"
    return f"{fmt_num(iv.mean)} [{fmt_num(iv.low)}, {fmt_num(iv.high)}] (n={iv.n})"


def _p_text(p: float) -> str:
    """'= 0.0123', '< 0.0001' or '= n/a': to follow 'p '."""
    return "= n/a" if not math.isfinite(p) else ("< 0.0001" if p < 1e-4 else f"= {p:.4f}")


@dataclass(frozen=True, kw_only=True)
class Comparison(StoredTest):
    """A stored claim test (`genlib.study_schema.ClaimTest`: treatment vs reference on `axis`, rows filtered by
    `where`, `direction` the expected sign of treatment - reference, `margin` the smallest effect that matters)
    decided on the evaluations of grid `study`."""

    study: str

    @classmethod
    def from_stored(cls, study: str, data: Mapping[str, Any]) -> "Comparison":
        """A test as the study row stores it (`ClaimTest.to_dict`)."""
        return cls.from_dict(data, study=study)

    @property
    def where_dict(self) -> dict[str, Any]:
        return dict(self.where)

    def describe(self) -> str:
        where = ", ".join(f"{k}={_show(v)}" for k, v in self.where)
        by = self.interaction
        what = (f"`{self.metric}` {self.direction} at {self.axis}={_show(self.treatment)} than at "
                f"{self.axis}={_show(self.reference)}" if by is None else
                f"interaction: (`{self.metric}` at {self.axis}={_show(self.treatment)} - at {self.axis}="
                f"{_show(self.reference)}) {self.direction} at {by.axis}={_show(by.treatment)} than at "
                f"{by.axis}={_show(by.reference)}")
        return (what + (f" ({where})" if where else "") + f", margin {fmt_num(self.margin)}"
                + (f"; {self.note}" if self.note else ""))

    def side(self, rows: pd.DataFrame, value: Any, axis: str | None = None) -> pd.DataFrame:
        axis = self.axis if axis is None else axis
        return select_rows(rows, (same_value(setting_value(cfg, axis), value) for cfg in rows["config"]))

    def measure(self, data: StoreData) -> Measurement:
        """The paired difference and each side's interval, or why the test is not measured (nothing stored) or
        not decided (a side holds several configurations, or the sides differ in more than the axis)."""
        m = data.metrics
        study_rows = m[(m["study"] == self.study) & (m["kind"] == "eval") & (m["status"] == "done")]
        if study_rows.empty:
            return Measurement(why=f"no finished evaluations of study `{self.study}` in the store")
        study_rows = study_rows[study_rows["metric"] == self.metric]
        if self.split is not None:
            study_rows = study_rows[study_rows["split"] == self.split]
        if study_rows.empty:
            return Measurement(why=f"study `{self.study}` has no metric `{self.metric}`")
        rows = study_rows
        for key, want in self.where:
            options = want if isinstance(want, list) else [want]
            rows = select_rows(rows, (any(same_value(setting_value(cfg, key), w) for w in options)
                                      for cfg in rows["config"]))
        if self.interaction is not None:
            return self._measure_interaction(study_rows, rows)
        t_rows, r_rows = self.side(rows, self.treatment), self.side(rows, self.reference)
        missing = [f"{self.axis}={_show(v)}" for v, r in ((self.treatment, t_rows), (self.reference, r_rows))
                   if r.empty]
        if missing:
            return Measurement(why=f"no stored cells with {' or '.join(missing)} matching the filter")
        why = self._one_configuration(study_rows, t_rows, r_rows)
        if why:
            return Measurement(why=why, undecided=True)
        t_seed, r_seed = per_seed(t_rows), per_seed(r_rows)
        return Measurement(difference=difference(t_seed, r_seed), treatment=t_interval(list(t_seed.values())),
                           reference=t_interval(list(r_seed.values())))

    def _measure_interaction(self, study_rows: pd.DataFrame, rows: pd.DataFrame) -> Measurement:
        """The interaction: per seed, (axis T - axis R) at by=T minus the same at by=R, over four cells that are
        each one configuration; the two contrasts share every setting but `by`, and each pair shares every
        setting but the axis (never pooled)."""
        by = self.interaction
        cells = {(a, b): self.side(self.side(rows, av), bv, by.axis)
                 for a, av in (("T", self.treatment), ("R", self.reference))
                 for b, bv in (("T", by.treatment), ("R", by.reference))}
        names = {"T": (self.treatment, by.treatment), "R": (self.reference, by.reference)}
        missing = [f"{self.axis}={_show(names[a][0])} with {by.axis}={_show(names[b][1])}"
                   for (a, b), frame in cells.items() if frame.empty]
        if missing:
            return Measurement(why=f"no stored cells with {' or '.join(missing)} matching the filter")
        why = (self._one_configuration(study_rows, cells["T", "T"], cells["R", "T"])
               or self._one_configuration(study_rows, cells["T", "R"], cells["R", "R"])
               or self._one_configuration(study_rows, cells["T", "T"], cells["T", "R"], axis=by.axis,
                                          treatment=by.treatment, reference=by.reference))
        if why:
            return Measurement(why=why, undecided=True)
        seed = {k: per_seed(v) for k, v in cells.items()}

        def contrast(b: str) -> dict:
            t, r = seed["T", b], seed["R", b]
            return {s: t[s] - r[s] for s in t if s in r}

        at_t, at_r = contrast("T"), contrast("R")
        return Measurement(difference=difference(at_t, at_r), treatment=t_interval(list(at_t.values())),
                           reference=t_interval(list(at_r.values())))

    def _one_configuration(self, study_rows: pd.DataFrame, t_rows: pd.DataFrame, r_rows: pd.DataFrame, *,
                           axis: str | None = None, treatment: Any = None, reference: Any = None) -> str:
        """'' when each side is one configuration (its seeds) and the two differ only in the axis, else why not.

        A configuration is a `config_key` (the record's config less the seed). The axis's own keys are its
        path (`eval.start`, `model.noise.scaled`) and its `axes` entry; a variant label (`sampler`, `method`)
        also owns each key whose value the label fixes across all of the study's evaluations (`eval.sampler`
        of `ddim_eta0` is always `ddim`). A key present on one side only is a field of another class (another
        model family's) and follows from the key that chose the class, which is checked itself. No other
        difference may remain, so nothing is ever pooled or compared across other settings. axis, treatment and
        reference default to the test's own (an interaction test also checks its second axis)."""
        if axis is None:
            axis, treatment, reference = self.axis, self.treatment, self.reference
        sides = []
        for name, value, frame in (("treatment", treatment, t_rows), ("reference", reference, r_rows)):
            keys = [_config_key(ck, rk) for ck, rk in zip(frame["config_key"], frame["run_key"])]
            configs = dict(zip(keys, frame["config"]))
            if len(configs) > 1:
                names = list(dict.fromkeys(records.setting_name(p)
                                           for p in records.differing_keys(list(configs.values()))))
                return (f"not decided: the {name} side ({axis}={_show(value)}) holds {len(configs)} "
                        f"configurations that differ in {', '.join(names) or 'their stored configuration'}; "
                        "they are never pooled (narrow the test's `where`, or keep one run of the study per store)")
            sides.append(next(iter(configs.values())))
        t_cfg, r_cfg = sides
        own = {f"axes.{axis}", f"train.{axis}", axis}
        label_axis = _path_of(t_cfg, axis) is None and _path_of(r_cfg, axis) is None
        others = []
        for path in records.differing_keys([t_cfg, r_cfg]):
            if (path in own or not (_present(t_cfg, path) and _present(r_cfg, path))
                    or (label_axis and self._fixed_by_label(study_rows, path, t_cfg, r_cfg, axis, treatment,
                                                            reference))):
                continue
            if records.setting_name(path) not in others:
                others.append(records.setting_name(path))
        if others:
            return (f"not decided: the treatment and reference configurations differ in {', '.join(others)} "
                    f"besides {axis}; they are never pooled or compared across other settings")
        return ""

    def _fixed_by_label(self, study_rows: pd.DataFrame, path: str, t_cfg: dict, r_cfg: dict, axis: str,
                        treatment: Any, reference: Any) -> bool:
        for value, cfg in ((treatment, t_cfg), (reference, r_cfg)):
            mine = records.value_at(cfg, path)
            for other in self.side(study_rows, value, axis)["config"]:
                if records.value_at(other, path) != mine:
                    return False
        return True

    def evaluate(self, data: StoreData, *, role: str = "primary", p_adjusted: float | None = None) -> CheckResult:
        got = self.measure(data)
        diff, t_iv, r_iv = got.difference, got.treatment, got.reference
        base = dict(description=self.describe(), study=self.study, metric=self.metric, role=role,
                    margin=self.margin)
        if diff is None or t_iv is None or r_iv is None:
            return CheckResult(**base, verdict="inconclusive" if got.undecided else "not measured", measured=got.why)
        v = verdict(diff, self.direction, self.margin, p_adjusted=p_adjusted)
        d_mde, need = mde(diff.sd, diff.n, test=diff.test), seeds_needed(diff.sd, self.margin, test=diff.test)
        by = self.interaction
        sides = (("treatment", "reference") if by is None else
                 (f"contrast at {by.axis}={_show(by.treatment)}", f"contrast at {by.axis}={_show(by.reference)}"))
        return CheckResult(**base, verdict=v, measured=_effect_text(diff, t_iv, r_iv, self.margin, d_mde, need,
                                                                     p_adjusted, sides),
                           difference=diff, treatment=t_iv, reference=r_iv, mde=d_mde, seeds_needed=need,
                           p_value=diff.p_value, p_adjusted=p_adjusted)


@dataclass(frozen=True)
class Measurement:
    """What a Comparison measured: the paired difference and each side's interval, or `why` not. `undecided`:
    rows exist but do not resolve to one configuration per side (reported inconclusive, never pooled)."""

    difference: Difference | None = None
    treatment: Interval | None = None
    reference: Interval | None = None
    why: str = ""
    undecided: bool = False


def _config_key(value: Any, run_key: str) -> str:
    return value if isinstance(value, str) and value else f"run:{run_key}"


def _present(config: Mapping[str, Any], path: str) -> bool:
    return records.value_at(config, path, records.MISSING) is not records.MISSING


def _path_of(config: Mapping[str, Any], axis: str) -> str | None:
    """The record path of a setting that is a config key ('eval.steps', 'train.model.noise.T'), None for a label."""
    path = axis if axis.startswith("eval.") else f"train.{axis}"
    return path if _present(config, path) else None


def _effect_text(diff: Difference, t_iv: Interval, r_iv: Interval, margin: float, d_mde: float,
                 need: int | None, p_adjusted: float | None,
                 sides: tuple[str, str] = ("treatment", "reference")) -> str:
    iv = diff.interval
    effect = f"{iv.mean:+.4g}" if math.isfinite(iv.mean) else "n/a"
    if iv.defined:
        effect += f", {int(round(iv.level * 100))}% CI [{fmt_num(iv.low)}, {fmt_num(iv.high)}]"
    elif iv.n >= 2 and math.isinf(iv.low):
        effect += (f", {int(round(iv.level * 100))}% CI (-inf, inf): the exact test's smallest p at {iv.n} seeds is "
                   f"{sign_flip_min_p(iv.n):.4g}")
    else:
        effect += " (no interval: fewer than 2 seeds)"
    p = f"p {_p_text(diff.p_value)}" + (f", Holm-adjusted p {_p_text(p_adjusted)}" if p_adjusted is not None else "")
    power = (f"MDE {fmt_num(d_mde)} at {diff.n} seeds" if math.isfinite(d_mde) else
             f"no effect is detectable at {diff.n} seeds (the exact test needs {sign_flip_min_seeds()})"
             if math.isinf(d_mde) else "MDE n/a (fewer than 2 seeds)")
    power += (f"; {need} seeds give {int(POWER * 100)}% power at the margin" if need is not None
              else "; seeds for the margin unknown" if not math.isfinite(diff.sd) else
              "; the margin is out of reach of any practical number of seeds")
    return (f"{sides[0]} - {sides[1]} = {effect} ({diff.method}; {p}); margin {fmt_num(margin)}; {power}; "
            f"{sides[0]} {_iv_text(t_iv)}, {sides[1]} {_iv_text(r_iv)}")


# -- analytic checks ----------------------------------------------------------------------------------------
def _analytic_runs(data: StoreData, names: tuple[str, ...]) -> list[dict[str, tuple[float, dict]]]:
    """Per analytic run holding all of `names`: name -> (value, extra)."""
    m = data.metrics
    rows = m[(m["kind"] == "analytic") & (m["status"] == "done") & m["metric"].isin(list(records.ANALYTIC))]
    out = []
    for _, g in rows.groupby("run_key", sort=False):
        found = {n: (float(v), e) for n, v, e in zip(g["metric"], g["value"], g["extra"])}
        if all(n in found for n in names):
            out.append(found)
    return out


def _std_error(found: dict[str, tuple[float, dict]], name: str) -> float | None:
    se = found[name][1].get("std_error")
    if isinstance(se, (int, float)) and not isinstance(se, bool) and math.isfinite(se) and se >= 0:
        return float(se)
    return None


def _every_run(verdicts: list[Verdict]) -> Verdict:
    """A check over several stored runs: contradicted by any run, supported only when every run supports it."""
    if "contradicted" in verdicts:
        return "contradicted"
    return "supported" if verdicts and all(v == "supported" for v in verdicts) else "inconclusive"


def _check_kl_match(data: StoreData) -> tuple[Verdict, str]:
    runs = _analytic_runs(data, ("kl_closed_form", "kl_monte_carlo"))
    if not runs:
        return "not measured", "no analytic run with both kl_closed_form and kl_monte_carlo"
    verdicts: list[Verdict] = []
    texts = []
    for found in runs:
        cf, mc = found["kl_closed_form"][0], found["kl_monte_carlo"][0]
        se = _std_error(found, "kl_monte_carlo")
        if se is None:
            verdicts.append("inconclusive")
            texts.append(f"closed form {fmt_num(cf)}, Monte Carlo {fmt_num(mc)}: no std_error stored")
            continue
        ok = abs(mc - cf) <= SE_MULTIPLE * se
        verdicts.append("supported" if ok else "contradicted")
        draws = found["kl_monte_carlo"][1].get("draws")
        texts.append(f"closed form {fmt_num(cf)}, Monte Carlo {fmt_num(mc)} ± {fmt_num(se)} (SE"
                     f"{f', {draws} draws' if draws else ''}): |difference| = {fmt_num(abs(mc - cf))} "
                     f"{'<=' if ok else '>'} {SE_MULTIPLE:g} SE")
    return _every_run(verdicts), "; ".join(texts)


def _check_kl_asymmetry(data: StoreData) -> tuple[Verdict, str]:
    runs = _analytic_runs(data, ("kl_forward", "kl_reverse"))
    if not runs:
        return "not measured", "no analytic run with both kl_forward and kl_reverse"
    verdicts, texts = [], []
    for found in runs:
        f, r = found["kl_forward"][0], found["kl_reverse"][0]
        se_f, se_r = _std_error(found, "kl_forward"), _std_error(found, "kl_reverse")
        tol = (SE_MULTIPLE * math.hypot(se_f or 0.0, se_r or 0.0) if (se_f or se_r)
               else 1e-9 * max(1.0, abs(f), abs(r)))
        differ = abs(f - r) > tol
        verdicts.append("supported" if differ else "inconclusive")
        texts.append(f"KL(p||q) = {fmt_num(f)}, KL(q||p) = {fmt_num(r)}: |difference| = {fmt_num(abs(f - r))} "
                     f"{'>' if differ else '<='} {fmt_num(tol)}")
    return ("supported" if "supported" in verdicts else "inconclusive"), "; ".join(texts)


def _check_alpha_bar(data: StoreData) -> tuple[Verdict, str]:
    runs = _analytic_runs(data, ("alpha_bar_T",))
    matching, ignored = [], 0
    for found in runs:
        value, extra = found["alpha_bar_T"]
        if extra.get("T") == 100 and extra.get("scaled") is False and extra.get("schedule", "linear") == "linear":
            matching.append(value)
        else:
            ignored += 1
    if not matching:
        why = "no analytic alpha_bar_T row with extra T=100, scaled=false"
        return "not measured", why + (f" ({ignored} other alpha_bar_T row(s) ignored)" if ignored else "")
    verdicts: list[Verdict] = []
    texts = []
    for value in matching:
        ok = abs(value - ALPHA_BAR_EXPECTED) <= ALPHA_BAR_TOLERANCE
        verdicts.append("supported" if ok else "contradicted")
        texts.append(f"alpha_bar_T = {fmt_num(value)} at T=100, unscaled linear schedule "
                     f"({'within' if ok else 'outside'} {ALPHA_BAR_EXPECTED} ± {ALPHA_BAR_TOLERANCE})")
    return _every_run(verdicts), "; ".join(texts)


SANOV_RTOL = 1e-9  # the all-heads coin: log P = -n KL(Q || P) to rounding


def _as_float(value: Any) -> float:
    """A stored number, or a non-finite one stored as its string ('inf', '-inf')."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _prob_text(log_prob: float) -> str:
    """A probability from its log, as e^(log) where the float would underflow."""
    return f"{math.exp(log_prob):.4g}" if log_prob > -700 else f"e^({fmt_num(log_prob)})"


def _check_sanov(data: StoreData) -> tuple[Verdict, str]:
    runs = _analytic_runs(data, ("sanov_log_prob", "sanov_kl"))
    if not runs:
        return "not measured", "no analytic run with both sanov_log_prob and sanov_kl"
    biased: dict[float, list[tuple[int, float, float]]] = {}
    verdicts: list[Verdict] = []
    texts = []
    for found in runs:
        log_prob, extra = found["sanov_log_prob"]
        kl = found["sanov_kl"][0]
        q, n = _as_float(extra.get("q")), int(extra.get("n", 0))
        if q == 1.0:  # all heads: P = 2^-n = e^{-n KL(Q||P)} exactly; the reverse direction is impossible
            exact = abs(log_prob + n * kl) <= SANOV_RTOL * max(1.0, n * kl)
            reverse = _as_float(extra.get("kl_reverse")) == math.inf and _as_float(extra.get("reverse_log_prob")) == -math.inf
            verdicts.append("supported" if exact and reverse else "contradicted")
            texts.append(f"all-heads coin, n = {n}: P = {_prob_text(log_prob)} (log {fmt_num(log_prob)}), "
                         f"e^(-n KL(Q||P)) = e^({fmt_num(-n * kl)}); KL(P||Q) = {extra.get('kl_reverse')}, so n fair-"
                         f"looking flips of the all-heads coin have probability {math.exp(_as_float(extra.get('reverse_log_prob'))):g}")
        else:
            biased.setdefault(q, []).append((n, log_prob, kl))
    for q, rows in biased.items():
        rows.sort()
        parts, gaps, ok = [], [], True
        for n, log_prob, kl in rows:
            gap = -log_prob / n - kl
            bound = math.log(n + 1) / n if abs(n * q - round(n * q)) < 1e-9 else math.inf
            ok = ok and -1e-12 <= gap <= bound  # Chernoff from below, the method of types from above
            gaps.append(gap)
            parts.append(f"n = {n}: P = {_prob_text(log_prob)}, -(1/n) log P = {fmt_num(-log_prob / n)}, "
                         f"gap {gap:.3g} (log(n+1)/n = {bound:.3g})")
        shrinking = all(b < a for a, b in zip(gaps, gaps[1:]))
        verdicts.append("supported" if ok and shrinking and len(rows) >= 2 else
                        "contradicted" if not ok else "inconclusive")
        texts.append(f"fair coin P, Q = Bernoulli({q:g}), KL(Q||P) = {fmt_num(rows[0][2])} nats: " + "; ".join(parts))
    return _every_run(verdicts), "; ".join(texts)


ANALYTIC_CHECKS = {
    "kl_closed_form_vs_monte_carlo": (
        ("kl_closed_form", "kl_monte_carlo"), _check_kl_match,
        f"closed-form KL within {SE_MULTIPLE:g} Monte Carlo standard errors of the estimate (in every stored run)",
        f"supported when |Monte Carlo - closed form| <= {SE_MULTIPLE:g} SE in every run, contradicted otherwise, "
        "inconclusive without a stored std_error"),
    "kl_asymmetry": (
        ("kl_forward", "kl_reverse"), _check_kl_asymmetry,
        "KL(p||q) differs from KL(q||p) for a stored pair of distributions",
        f"supported when some stored pair differs by more than {SE_MULTIPLE:g} combined SE (or 1e-9 relative for "
        "closed forms); a symmetric pair does not contradict the claim (e.g. equal-covariance Gaussians), so "
        "otherwise inconclusive"),
    "alpha_bar_T": (
        ("alpha_bar_T",), _check_alpha_bar,
        f"alpha_bar_T of the unscaled linear schedule at T = 100 is about {ALPHA_BAR_EXPECTED}",
        f"supported when the stored value lies within {ALPHA_BAR_EXPECTED} ± {ALPHA_BAR_TOLERANCE}, "
        "contradicted otherwise"),
    "sanov_coin": (
        ("sanov_log_prob", "sanov_kl"), _check_sanov,
        "n fair flips look like flips of Q = Bernoulli(q) with probability about e^(-n KL(Q||P)): -(1/n) log P "
        "approaches KL(Q||P) as n grows (exact binomial tails), and equals it for the all-heads coin",
        "supported when, for each biased q, 0 <= -(1/n) log P - KL(Q||P) <= log(n+1)/n at every stored n (Chernoff "
        "below, the method of types above) and the gap shrinks with n, and for the all-heads coin log P = "
        f"-n KL(Q||P) to {SANOV_RTOL:g} relative with KL(P||Q) infinite and probability 0 in that direction; "
        "contradicted when a bound fails"),
}


@dataclass(frozen=True, kw_only=True)
class AnalyticCheck:
    """A check on kind='analytic' rows (layout in the module docstring)."""

    check: Literal["kl_closed_form_vs_monte_carlo", "kl_asymmetry", "alpha_bar_T", "sanov_coin"]
    study: str = ANALYTIC_STUDY

    @property
    def metric(self) -> str:
        return " / ".join(ANALYTIC_CHECKS[self.check][0])

    @property
    def rule(self) -> str:
        return ANALYTIC_CHECKS[self.check][3]

    def describe(self) -> str:
        return ANALYTIC_CHECKS[self.check][2]

    def in_store(self, data: StoreData) -> bool:
        return bool(_analytic_runs(data, ANALYTIC_CHECKS[self.check][0]))

    def evaluate(self, data: StoreData, **_: Any) -> CheckResult:
        v, text = ANALYTIC_CHECKS[self.check][1](data)
        return CheckResult(description=self.describe(), verdict=v, measured=text, study=self.study,
                           metric=self.metric, role="analytic")


ClaimTest = Comparison | AnalyticCheck


@dataclass(frozen=True, kw_only=True)
class Claim:
    """A claim in words, decided by its primary test; secondary tests are reported beside it (Holm)."""

    id: str
    text: str
    primary: ClaimTest
    secondary: tuple[Comparison, ...] = ()

    @property
    def tests(self) -> tuple[ClaimTest, ...]:
        return (self.primary, *self.secondary)

    @property
    def study(self) -> str:
        return self.primary.study

    @property
    def studies(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t.study for t in self.tests))

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t.metric for t in self.tests))

    @property
    def expected(self) -> str:
        return "; ".join(t.describe() for t in self.tests)

    @property
    def rule(self) -> str:
        return self.primary.rule if isinstance(self.primary, AnalyticCheck) else RULE


ANALYTIC_CLAIMS: tuple[Claim, ...] = (
    Claim(id="8", text="The closed-form Gaussian KL matches its Monte Carlo estimate.",
          primary=AnalyticCheck(check="kl_closed_form_vs_monte_carlo")),
    Claim(id="9", text="KL divergence is asymmetric.", primary=AnalyticCheck(check="kl_asymmetry")),
    Claim(id="9b", text="If we have iid draws from P, the probability that they look like draws from Q is around "
                        "e^{-n D(Q||P)} (Sanov's coin: a fair P against a biased and an all-heads Q).",
          primary=AnalyticCheck(check="sanov_coin")),
    Claim(id="10a", text="A short linear schedule without rescaling leaves x_T far from N(0, I) (alpha_bar_T about "
                         "0.36 at T = 100).", primary=AnalyticCheck(check="alpha_bar_T")),
)


def _claim_from_dict(study: str, data: Mapping[str, Any]) -> Claim:
    return Claim(id=str(data["id"]), text=str(data["text"]), primary=Comparison.from_stored(study, data["primary"]),
                 secondary=tuple(Comparison.from_stored(study, t) for t in data.get("secondary") or ()))


def study_claims(data: StoreData) -> list[Claim]:
    """The claims of every study whose definition (`kind="study"` row) is in the store, in store order."""
    runs = data.runs
    rows = runs[(runs["kind"] == STUDY_KIND) & (runs["status"] == "done")]
    out = []
    for study, config in zip(rows["study"], rows["config"]):
        for item in config.get("claims") or ():
            out.append(_claim_from_dict(str(study), item))
    return out


def study_profiles(data: StoreData) -> dict[str, str | None]:
    """The profile each study with a stored definition was run with (the last recorded, by study name)."""
    runs = data.runs
    rows = runs[(runs["kind"] == STUDY_KIND) & (runs["status"] == "done")]
    return {str(study): (config.get("profile") if isinstance(config, Mapping) else None)
            for study, config in zip(rows["study"], rows["config"])}


def indicative_studies(data: StoreData, claims: list[Claim] | tuple[Claim, ...]) -> list[str]:
    """The claims' studies stored from the `quick` profile: their verdicts are indicative, not decisive."""
    profiles = study_profiles(data)
    return [s for s in dict.fromkeys(st for c in claims for st in c.studies) if profiles.get(s) == QUICK_PROFILE]


def studies_without_claims(data: StoreData) -> list[str]:
    """Grid studies with results but no stored definition (written before studies were recorded)."""
    runs = data.runs
    defined = set(runs.loc[runs["kind"] == STUDY_KIND, "study"])
    return [s for s in data.studies(("eval",)) if s not in defined]


def _sort_key(claim: Claim, order: int) -> tuple:
    m = re.fullmatch(r"(\d+)(.*)", claim.id)
    return (0, int(m.group(1)), m.group(2), order) if m else (1, 0, "", order)


def claims_in_store(data: StoreData) -> list[Claim]:
    """Every claim the store can speak to: its studies' claims and the analytic checks it holds rows for,
    ordered by id (lecture numbers first). An id used by several studies is qualified by the study."""
    claims = study_claims(data) + [c for c in ANALYTIC_CLAIMS if c.primary.in_store(data)]
    counts: dict[str, int] = {}
    for c in claims:
        counts[c.id] = counts.get(c.id, 0) + 1
    claims = [Claim(id=f"{c.id} ({c.study})", text=c.text, primary=c.primary, secondary=c.secondary)
              if counts[c.id] > 1 else c for c in claims]
    return [c for _, c in sorted(enumerate(claims), key=lambda ic: _sort_key(ic[1], ic[0]))]


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    verdict: Verdict
    tests: tuple[CheckResult, ...] = field(default_factory=tuple)


def evaluate_claim(data: StoreData, claim: Claim) -> ClaimResult:
    """The primary test decides; secondary tests reject 0 on Holm-adjusted p-values and never change it."""
    primary = claim.primary.evaluate(data)
    measured = [t.measure(data).difference for t in claim.secondary]
    adjusted = holm([d.p_value if d is not None else float("nan") for d in measured])
    secondary = tuple(t.evaluate(data, role="secondary", p_adjusted=p if math.isfinite(p) else None)
                      for t, p in zip(claim.secondary, adjusted))
    return ClaimResult(claim, primary.verdict, (primary, *secondary))


def evaluate_claims(data: StoreData, claims: list[Claim] | tuple[Claim, ...] | None = None) -> list[ClaimResult]:
    """Every claim (default: `claims_in_store`) evaluated on the store."""
    return [evaluate_claim(data, c) for c in (claims_in_store(data) if claims is None else claims)]


def claims_frame(results: list[ClaimResult]) -> pd.DataFrame:
    """One row per test: claim id and verdict, the test's role and verdict, effect, interval, margin, power."""
    records = []
    for res in results:
        for t in res.tests:
            d = t.difference.interval if t.difference else None
            records.append({"claim": res.claim.id, "claim_text": res.claim.text, "claim_verdict": res.verdict,
                            "role": t.role, "study": t.study, "metric": t.metric, "test": t.description,
                            "test_verdict": t.verdict, "effect": d.mean if d else None,
                            "ci_low": d.low if d and d.defined else None, "ci_high": d.high if d and d.defined else None,
                            "n": d.n if d else 0, "margin": t.margin, "mde": t.mde, "seeds_needed": t.seeds_needed,
                            "p_value": t.p_value, "p_holm": t.p_adjusted,
                            "method": t.difference.method if t.difference else "",
                            "decided_by": t.difference.test_name if t.difference else "", "measured": t.measured})
    return pd.DataFrame.from_records(records)


def claim_metadata(claims: list[Claim] | tuple[Claim, ...]) -> list[Mapping[str, Any]]:
    """The claims as plain dicts (id, text, studies, metrics, expected, rule) for listings and JSON."""
    return [{"id": c.id, "text": c.text, "studies": list(c.studies), "metrics": list(c.metrics),
             "expected": c.expected, "rule": c.rule} for c in claims]


__all__ = ["ALPHA", "ANALYTIC_CLAIMS", "ANALYTIC_STUDY", "AnalyticCheck", "Claim", "ClaimResult", "Comparison",
           "CheckResult", "LEVEL", "Measurement", "claim_metadata", "claims_frame", "claims_in_store", "evaluate_claim",
           "evaluate_claims", "indicative_studies", "studies_without_claims", "study_claims", "study_profiles"]
