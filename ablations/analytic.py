"""Analytic checks behind claims 8-10, measured and stored as `kind="analytic"` rows (study "analytic").

8: the closed-form KL(N(mu, Sigma) || N(0, I)) against a Monte Carlo estimate E_q[log q(z) - log p(z)]
   with its standard error, for a full covariance Sigma = L L^T;
9: KL(p || q) against KL(q || p) for two fixed Gaussians (the asymmetry);
9b: Sanov's coin: the exact binomial log-probability that n fair flips show a heads fraction >= q, against
   -n KL(Bernoulli(q) || Bernoulli(1/2)), for a biased q and for the all-heads coin (q = 1);
10: alpha_bar_T of the unscaled linear schedule (1e-4..0.02) at T = 100, and of the scaled one.
Rows follow the record contract (genlib.records, kind "analytic"). Everything is computed with genlib's
own functions (losses, diffusion), so the checks test the code that trains the models.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import special, stats

from genlib import records
from genlib.config import config_hash
from genlib.diffusion import NoiseSchedule, NoiseScheduleConfig
from genlib.losses import gaussian_log_prob, kl_gaussians, kl_standard_normal, standard_normal_log_prob
from genlib.provenance import provenance
from genlib.store import Metric, ResultsStore

STUDY = "analytic"


def _example_gaussian(k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed mean (k,) and lower-triangular L (k, k) with a positive diagonal."""
    gen = torch.Generator().manual_seed(seed)
    mu = torch.randn(k, generator=gen, dtype=torch.float64)
    L = torch.tril(0.3 * torch.randn(k, k, generator=gen, dtype=torch.float64), -1)
    L = L + torch.diag(0.5 + torch.rand(k, generator=gen, dtype=torch.float64))
    return mu, L


def kl_closed_form_vs_monte_carlo(k: int = 4, draws: int = 200_000, seed: int = 0) -> list[Metric]:
    """Claim 8: 1/2 (tr Sigma + mu^T mu - k - log det Sigma) vs the mean of log q(z) - log p(z), z ~ q."""
    mu, L = _example_gaussian(k, seed)
    closed = float(kl_standard_normal(mu[None], L[None])[0])
    gen = torch.Generator().manual_seed(seed + 1)
    z = mu + torch.randn(draws, k, generator=gen, dtype=torch.float64) @ L.T  # z = mu + L eps, (draws, k)
    log_ratio = gaussian_log_prob(z, mu.expand(draws, k), L.expand(draws, k, k)) - standard_normal_log_prob(z)
    mc, se = float(log_ratio.mean()), float(log_ratio.std() / math.sqrt(draws))
    desc = {"q": f"N(mu, L L^T), k={k}, seed {seed}", "p": "N(0, I)"}
    return [records.metric("analytic", "kl_closed_form", closed, extra=desc),
            records.metric("analytic", "kl_monte_carlo", mc, extra={**desc, "std_error": se, "draws": draws})]


def kl_asymmetry(k: int = 2, seed: int = 0) -> list[Metric]:
    """Claim 9: KL(p || q) and KL(q || p) for a broad p and a narrow, shifted q (closed forms)."""
    mu_p, cov_p = torch.zeros(k, dtype=torch.float64), torch.eye(k, dtype=torch.float64) * 4.0
    mu_q, cov_q = torch.full((k,), 1.0, dtype=torch.float64), torch.eye(k, dtype=torch.float64) * 0.25
    desc = {"p": f"N(0, 4 I_{k})", "q": f"N(1, 0.25 I_{k})"}
    return [records.metric("analytic", "kl_forward", float(kl_gaussians(mu_p, cov_p, mu_q, cov_q)), extra=desc),
            records.metric("analytic", "kl_reverse", float(kl_gaussians(mu_q, cov_q, mu_p, cov_p)), extra=desc)]


def alpha_bar_T(T: int = 100, scaled: bool = False) -> list[Metric]:
    """Claim 10: alpha_bar at the last step of the linear schedule (1e-4..0.02), unscaled or scaled by 1000/T."""
    schedule = NoiseSchedule.from_config(NoiseScheduleConfig(kind="linear", T=T, scaled=scaled))
    return [records.metric("analytic", "alpha_bar_T", float(schedule.alpha_bar[-1]),
                           extra={"T": T, "schedule": "linear", "scaled": scaled})]


def bernoulli_kl(q: float, p: float) -> float:
    """KL(Bernoulli(q) || Bernoulli(p)) in nats; +inf where q puts mass on an outcome p never shows."""
    total = 0.0
    for a, b in ((q, p), (1.0 - q, 1.0 - p)):
        if a > 0.0:
            total += math.inf if b == 0.0 else a * math.log(a / b)
    return total


def sanov_coin(q: float, n: int, p: float = 0.5) -> list[Metric]:
    """Claim 9b: log P(n flips of Bernoulli(p) show a heads fraction >= q), exact (binomial upper tail), and
    KL(Q || P) for Q = Bernoulli(q). Sanov / Chernoff: -(1/n) log P -> KL(Q || P), from above, with a gap of at most
    log(n + 1) / n when n q is an integer (the method of types). extra also holds the other direction: KL(P || Q)
    and log P(n flips of Q show a heads fraction <= p), both degenerate (inf, -inf) for the all-heads coin q = 1."""
    k = math.ceil(n * q - 1e-9)  # fewest heads with fraction >= q
    # log P(heads >= k): the pmf summed in log space (binom.logsf underflows to -inf by n = 10^4)
    log_prob = float(special.logsumexp(stats.binom.logpmf(np.arange(k, n + 1), n, p)))
    reverse = (float(special.logsumexp(stats.binom.logpmf(np.arange(0, math.floor(n * p + 1e-9) + 1), n, q)))
               if q < 1.0 else -math.inf)  # the all-heads coin never shows a tail
    extra = {"q": q, "p": p, "n": n, "heads_at_least": k, "kl_reverse": bernoulli_kl(p, q),
             "reverse_log_prob": reverse}
    extra = {key: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for key, v in extra.items()}
    return [records.metric("analytic", "sanov_log_prob", log_prob, extra=extra),
            records.metric("analytic", "sanov_kl", bernoulli_kl(q, p), extra=extra)]


SANOV_Q = 0.7  # n q is an integer at n = 10, 100, 1000, 10000
SANOV_N = (10, 100, 1000, 10000)
SANOV_ALL_HEADS_N = (10, 100, 1000)

CHECKS = {
    "kl_closed_form_vs_monte_carlo": kl_closed_form_vs_monte_carlo,
    "kl_asymmetry": kl_asymmetry,
    "alpha_bar_T_unscaled_T100": lambda: alpha_bar_T(100, scaled=False),
    "alpha_bar_T_scaled_T100": lambda: alpha_bar_T(100, scaled=True),
    "alpha_bar_T_linear_T1000": lambda: alpha_bar_T(1000, scaled=False),
    **{f"sanov_coin_q{SANOV_Q:g}_n{n}": (lambda n=n: sanov_coin(SANOV_Q, n)) for n in SANOV_N},
    **{f"sanov_all_heads_n{n}": (lambda n=n: sanov_coin(1.0, n)) for n in SANOV_ALL_HEADS_N},
}


def record_analytic(store: ResultsStore) -> int:
    """Compute every check and commit it (idempotent: the run key is a hash of the check's name)."""
    prov = provenance()
    for name, check in CHECKS.items():
        config = {"analytic": name}
        store.commit_run(*records.build("analytic", run_key=config_hash({"kind": "analytic", **config}),
                                        config=config, study=STUDY, name=name, seed=0, device="cpu", prov=prov,
                                        metrics=check()))
    return len(CHECKS)
