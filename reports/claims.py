"""The ten lecture claims, the stored results that test each one, and the verdict rule that decides it.

A claim is a list of tests. A `Comparison` contrasts two settings of one grid study on one metric (effect
= treatment - reference, paired over seeds, 95% t-interval; rule in `reports.stats.verdict`). An
`AnalyticCheck` reads `kind="analytic"` rows; their layout (the contract for whoever writes them):

    runs:    kind="analytic", study="analytic", status="done", one run per check, any name and seed.
    metrics: kl_closed_form and kl_monte_carlo (nats) in one run; kl_monte_carlo's extra holds "std_error"
             (standard error of the Monte Carlo mean, nats; or store a metric kl_monte_carlo_se) and
             "draws"; optional "p" and "q" in extra describe the two Gaussians.
             kl_forward = KL(p||q) and kl_reverse = KL(q||p) (nats) in one run, with "std_error" in extra
             when they are Monte Carlo estimates.
             alpha_bar_T (unit "") with extra {"T": 100, "schedule": "linear", "scaled": false}: the
             product of (1 - beta_t) over the noise schedule.
Claims whose rows are absent are reported "not measured"; nothing is filled in from elsewhere.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

import pandas as pd

from reports.load import StoreData, same_value, select_rows, setting_value
from reports.render import fmt_num
from reports.stats import LEVEL, Difference, Interval, Verdict, combine, difference, t_interval, verdict
from reports.tables import per_seed

ANALYTIC_STUDY = "analytic"
SE_MULTIPLE = 3.0  # closed form vs Monte Carlo: agreement within this many standard errors
ALPHA_BAR_EXPECTED = 0.36  # unscaled linear schedule (1e-4..0.02), T = 100: prod(1 - beta_t) = 0.3636
ALPHA_BAR_TOLERANCE = 0.05


@dataclass(frozen=True)
class CheckResult:
    """One test of a claim, evaluated on the store."""

    description: str
    verdict: Verdict
    measured: str  # the effect with its interval, or why it is not measured
    study: str
    metric: str
    difference: Difference | None = None
    treatment: Interval | None = None
    reference: Interval | None = None


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """treatment vs reference on `axis` in grid `study`, rows filtered by `where`; `direction`: the expected
    sign of treatment - reference ('higher' or 'lower'), not whether the metric is better that way."""

    study: str
    metric: str
    axis: str
    treatment: Any
    reference: Any
    direction: Literal["higher", "lower"]
    where: tuple[tuple[str, Any], ...] = ()
    split: str | None = None
    rule: str = "interval"

    @property
    def where_dict(self) -> dict[str, Any]:
        return dict(self.where)

    def describe(self) -> str:
        where = ", ".join(f"{k}={_show(v)}" for k, v in self.where)
        return (f"`{self.metric}` {self.direction} at {self.axis}={_show(self.treatment)} than at "
                f"{self.axis}={_show(self.reference)}" + (f" ({where})" if where else ""))

    def side(self, rows: pd.DataFrame, value: Any) -> pd.DataFrame:
        return select_rows(rows, (same_value(setting_value(cfg, self.axis), value) for cfg in rows["config"]))

    def evaluate(self, data: StoreData) -> CheckResult:
        m = data.metrics
        rows = m[(m["study"] == self.study) & (m["kind"] == "eval") & (m["status"] == "done")]
        base = dict(description=self.describe(), study=self.study, metric=self.metric)
        if rows.empty:
            return CheckResult(**base, verdict="not measured", measured=f"no finished evaluations of study "
                                                                      f"`{self.study}` in the store")
        rows = rows[rows["metric"] == self.metric]
        if self.split is not None:
            rows = rows[rows["split"] == self.split]
        if rows.empty:
            return CheckResult(**base, verdict="not measured", measured=f"study `{self.study}` has no metric "
                                                                      f"`{self.metric}`")
        for key, want in self.where:
            options = want if isinstance(want, list) else [want]
            rows = select_rows(rows, (any(same_value(setting_value(cfg, key), w) for w in options)
                                      for cfg in rows["config"]))
        t_rows, r_rows = self.side(rows, self.treatment), self.side(rows, self.reference)
        missing = [f"{self.axis}={_show(v)}" for v, r in ((self.treatment, t_rows), (self.reference, r_rows))
                   if r.empty]
        if missing:
            return CheckResult(**base, verdict="not measured",
                              measured=f"no stored cells with {' or '.join(missing)} matching the filter")
        t_seed, r_seed = per_seed(t_rows), per_seed(r_rows)
        diff = difference(t_seed, r_seed)
        v = verdict(diff, self.direction)
        t_iv, r_iv = t_interval(list(t_seed.values())), t_interval(list(r_seed.values()))
        return CheckResult(**base, verdict=v, measured=_effect_text(diff, t_iv, r_iv), difference=diff,
                          treatment=t_iv, reference=r_iv)


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


def _effect_text(diff: Difference, t_iv: Interval, r_iv: Interval) -> str:
    iv = diff.interval
    effect = f"{iv.mean:+.4g}" if math.isfinite(iv.mean) else "n/a"
    if iv.defined:
        effect += f", {int(round(iv.level * 100))}% CI [{fmt_num(iv.low)}, {fmt_num(iv.high)}]"
    else:
        effect += " (no interval: fewer than 2 seeds)"
    return (f"treatment - reference = {effect} ({diff.method}); treatment {_iv_text(t_iv)}, "
            f"reference {_iv_text(r_iv)}")


# -- analytic checks ----------------------------------------------------------------------------------------
def _analytic_runs(data: StoreData, names: tuple[str, ...]) -> list[dict[str, tuple[float, dict]]]:
    """Per analytic run holding all of `names`: name -> (value, extra)."""
    m = data.metrics
    rows = m[(m["kind"] == "analytic") & (m["status"] == "done")]
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
    alt = found.get(f"{name}_se")
    return alt[0] if alt and math.isfinite(alt[0]) else None


def _check_kl_match(data: StoreData) -> tuple[Verdict, str]:
    runs = _analytic_runs(data, ("kl_closed_form", "kl_monte_carlo"))
    if not runs:
        return "not measured", "no analytic run with both kl_closed_form and kl_monte_carlo"
    verdicts, texts = [], []
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
    return combine(verdicts), "; ".join(texts)


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
    verdicts, texts = [], []
    for value in matching:
        ok = abs(value - ALPHA_BAR_EXPECTED) <= ALPHA_BAR_TOLERANCE
        verdicts.append("supported" if ok else "contradicted")
        texts.append(f"alpha_bar_T = {fmt_num(value)} at T=100, unscaled linear schedule "
                     f"({'within' if ok else 'outside'} {ALPHA_BAR_EXPECTED} ± {ALPHA_BAR_TOLERANCE})")
    return combine(verdicts), "; ".join(texts)


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
}


@dataclass(frozen=True, kw_only=True)
class AnalyticCheck:
    """A check on kind='analytic' rows (layout in the module docstring)."""

    check: Literal["kl_closed_form_vs_monte_carlo", "kl_asymmetry", "alpha_bar_T"]
    study: str = ANALYTIC_STUDY

    @property
    def metric(self) -> str:
        return " / ".join(ANALYTIC_CHECKS[self.check][0])

    @property
    def rule(self) -> str:
        return ANALYTIC_CHECKS[self.check][3]

    def describe(self) -> str:
        return ANALYTIC_CHECKS[self.check][2]

    def evaluate(self, data: StoreData) -> CheckResult:
        v, text = ANALYTIC_CHECKS[self.check][1](data)
        return CheckResult(description=self.describe(), verdict=v, measured=text, study=self.study,
                          metric=self.metric)


ClaimTest = Comparison | AnalyticCheck


@dataclass(frozen=True, kw_only=True)
class Claim:
    id: int
    text: str
    tests: tuple[ClaimTest, ...]

    @property
    def study(self) -> str:
        return self.tests[0].study

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
        parts = []
        for t in self.tests:
            parts.append(COMPARISON_RULE if isinstance(t, Comparison) else t.rule)
        return "; ".join(dict.fromkeys(parts)) + ". " + COMBINE_RULE


COMPARISON_RULE = (f"paired difference treatment - reference over seeds, {int(LEVEL * 100)}% t-interval: supported "
                   "when it excludes 0 on the expected side, contradicted when it excludes 0 on the other side, "
                   "inconclusive when it contains 0 or has fewer than 2 seeds")
COMBINE_RULE = ("A claim is supported when every measured test is, contradicted when any test is, inconclusive "
                "otherwise; tests without stored data are not measured and do not count.")


def _cmp(study: str, metric: str, axis: str, treatment: Any, reference: Any, direction: str,
         **where: Any) -> Comparison:
    return Comparison(study=study, metric=metric, axis=axis, treatment=treatment, reference=reference,
                      direction=direction, where=tuple((k.replace("__", "."), v) for k, v in where.items()))


DIGITS, MOONS = {"data__name": "digits"}, {"data__name": "moons"}
REFINE = {"loss__beta": 1, "eval__reencode": "mean"}
STEPS_T1000 = {"data__name": "moons", "model__noise__T": 1000, "model__noise__scaled": True}

CLAIMS: tuple[Claim, ...] = (
    Claim(id=1, text="Sampling a plain autoencoder's latent space from N(0, I) gives off-distribution samples; "
                     "a VAE does not.",
          tests=(_cmp("baselines", "fd", "method", "ae_standard", "vae_diagonal", "higher", **DIGITS),
                 _cmp("baselines", "swd", "method", "ae_standard", "vae_diagonal", "higher", **MOONS))),
    Claim(id=2, text="The naive repeated-denoiser chain gives blurrier, worse samples than DDPM with the same "
                     "network and T.",
          tests=(_cmp("baselines", "sharpness", "method", "denoiser_chain", "ddpm", "lower", **DIGITS),
                 _cmp("baselines", "fd", "method", "denoiser_chain", "ddpm", "higher", **DIGITS),
                 _cmp("baselines", "swd", "method", "denoiser_chain", "ddpm", "higher", **MOONS))),
    Claim(id=3, text="KL dominating (large beta) collapses the posterior: active units go to 0, outputs become "
                     "the blurry average.",
          tests=(_cmp("beta", "active_units", "loss.beta", 64, 1, "lower"),
                 _cmp("beta", "sharpness", "loss.beta", 64, 1, "lower"))),
    Claim(id=4, text="Reconstruction dominating (small beta) gives good reconstructions but bad prior samples.",
          tests=(_cmp("beta", "mse", "loss.beta", 0, 1, "lower"),
                 _cmp("beta", "fd", "loss.beta", 0, 1, "higher"))),
    Claim(id=5, text="Letting reconstruction dominate early and adding KL later gives a better trade-off than "
                     "constant beta, and than the reverse order.",
          tests=(_cmp("warmup", "neg_elbo", "loss.kl_schedule.kind", "linear", "constant", "lower"),
                 _cmp("warmup", "neg_elbo", "loss.kl_schedule.kind", "recon_first", "kl_first", "lower"))),
    Claim(id=6, text="One or two refinement passes improve prior samples; many passes turn them to mush (recall "
                     "and coverage fall).",
          tests=(_cmp("refinement", "precision", "eval.passes", 1, 0, "higher", **REFINE),
                 _cmp("refinement", "recall", "eval.passes", 10, 1, "lower", **REFINE),
                 _cmp("refinement", "coverage", "eval.passes", 10, 1, "lower", **REFINE))),
    Claim(id=7, text="More, smaller diffusion steps give better samples; DDIM beats DDPM ancestral sampling at "
                     "few steps.",
          tests=(_cmp("steps", "swd", "eval.steps", 50, 5, "lower", **STEPS_T1000, sampler="ddim_eta0"),
                 _cmp("steps", "swd", "sampler", "ddim_eta0", "ddpm_small", "lower", **STEPS_T1000,
                      eval__steps=5),
                 _cmp("steps", "fd", "eval.steps", 50, 5, "lower", **{**STEPS_T1000, **DIGITS},
                      sampler="ddim_eta0"))),
    Claim(id=8, text="The closed-form Gaussian KL matches its Monte Carlo estimate.",
          tests=(AnalyticCheck(check="kl_closed_form_vs_monte_carlo"),)),
    Claim(id=9, text="KL divergence is asymmetric.", tests=(AnalyticCheck(check="kl_asymmetry"),)),
    Claim(id=10, text="A short linear schedule without rescaling leaves x_T far from N(0, I) (alpha_bar_T about "
                      "0.36 at T = 100) and hurts samples.",
          tests=(AnalyticCheck(check="alpha_bar_T"),
                 _cmp("steps", "swd", "model.noise.scaled", False, True, "higher", data__name="moons",
                      model__noise__T=100, eval__steps=None, sampler="ddpm_small"))),
)


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    verdict: Verdict
    tests: tuple[CheckResult, ...] = field(default_factory=tuple)


def evaluate_claims(data: StoreData, claims: tuple[Claim, ...] = CLAIMS) -> list[ClaimResult]:
    """Every claim's tests evaluated on the store and combined into the claim's verdict."""
    out = []
    for claim in claims:
        results = tuple(t.evaluate(data) for t in claim.tests)
        out.append(ClaimResult(claim, combine([r.verdict for r in results]), results))
    return out


def claims_frame(results: list[ClaimResult]) -> pd.DataFrame:
    """One row per test: claim id, verdicts, study, metric, expectation and the measured effect."""
    records = []
    for res in results:
        for t in res.tests:
            d = t.difference.interval if t.difference else None
            records.append({"claim": res.claim.id, "claim_text": res.claim.text, "claim_verdict": res.verdict,
                            "study": t.study, "metric": t.metric, "test": t.description, "test_verdict": t.verdict,
                            "effect": d.mean if d else None,
                            "ci_low": d.low if d and d.defined else None, "ci_high": d.high if d and d.defined else None,
                            "n": d.n if d else 0, "method": t.difference.method if t.difference else "",
                            "measured": t.measured})
    return pd.DataFrame.from_records(records)


def claim_metadata(claims: tuple[Claim, ...] = CLAIMS) -> list[Mapping[str, Any]]:
    """The claims as plain dicts (id, text, studies, metrics, expected, rule) for listings and JSON."""
    return [{"id": c.id, "text": c.text, "studies": list(c.studies), "metrics": list(c.metrics),
             "expected": c.expected, "rule": c.rule} for c in claims]


__all__ = ["ANALYTIC_STUDY", "AnalyticCheck", "CLAIMS", "Claim", "ClaimResult", "Comparison", "CheckResult",
           "claim_metadata", "claims_frame", "evaluate_claims"]
