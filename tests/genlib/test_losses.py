"""Tests for genlib.losses: Gaussian KLs against Monte Carlo and torch.distributions, the
reparameterisation's moments and gradients, the full-covariance encoder's L, likelihoods and the ELBO."""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, MultivariateNormal, Normal

from genlib import losses
from genlib.losses import (covariance, gaussian_log_prob, kl_gaussians, kl_per_dim, kl_standard_normal,
                           negative_elbo, reconstruction_nll, reparameterize, standard_normal_log_prob)
from genlib.models.vae import VAEConfig, VAENet

pytestmark = pytest.mark.usefixtures("single_thread")

K = 3


def random_lower(k: int, gen: torch.Generator, batch: int = 1) -> torch.Tensor:
    """A random lower-triangular L (batch, k, k) with a positive diagonal, float64."""
    a = torch.randn(batch, k, k, generator=gen, dtype=torch.float64) * 0.5
    low = torch.tril(a, diagonal=-1)
    diag = torch.rand(batch, k, generator=gen, dtype=torch.float64) * 1.2 + 0.3
    return low + torch.diag_embed(diag)


def posterior(kind: str, gen: torch.Generator, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    mu = torch.randn(batch, K, generator=gen, dtype=torch.float64)
    if kind == "diagonal":
        return mu, torch.rand(batch, K, generator=gen, dtype=torch.float64) * 1.5 + 0.2
    return mu, random_lower(K, gen, batch)


# ---------------------------------------------------------------- KL to N(0, I)

@pytest.mark.parametrize("kind", ["diagonal", "full"])
def test_kl_standard_normal_matches_monte_carlo(kind, generator):
    """KL(q || p) = E_q[log q(z) - log p(z)]: the closed form lies within 5 MC standard errors."""
    mu, scale = posterior(kind, generator)
    n = 200_000
    eps = torch.randn(n, K, generator=generator, dtype=torch.float64)
    z = reparameterize(mu.expand(n, K), scale.expand(n, *scale.shape[1:]), eps)
    q = MultivariateNormal(mu[0], covariance(scale)[0])
    p = MultivariateNormal(torch.zeros(K, dtype=torch.float64), torch.eye(K, dtype=torch.float64))
    log_ratio = q.log_prob(z) - p.log_prob(z)  # independent of genlib's own log-density code
    mc, se = log_ratio.mean().item(), log_ratio.std().item() / math.sqrt(n)
    closed = kl_standard_normal(mu, scale).item()
    assert closed > 0.1  # a non-trivial example
    assert abs(closed - mc) < 5 * se, (closed, mc, se)


def test_full_kl_with_diagonal_l_equals_diagonal_formula(generator):
    mu, std = posterior("diagonal", generator, batch=5)
    full = kl_standard_normal(mu, torch.diag_embed(std))
    diag = kl_standard_normal(mu, std)
    torch.testing.assert_close(full, diag)
    # and the diagonal closed form written out by hand
    by_hand = 0.5 * (std**2 + mu**2 - 1 - torch.log(std**2)).sum(-1)
    torch.testing.assert_close(diag, by_hand)


def test_kl_is_zero_only_at_the_prior(generator):
    zero = kl_standard_normal(torch.zeros(2, K), torch.ones(2, K))
    torch.testing.assert_close(zero, torch.zeros(2))
    mu, scale = posterior("full", generator, batch=20)
    assert (kl_standard_normal(mu, scale) > 0).all()


@pytest.mark.parametrize("kind", ["diagonal", "full"])
def test_kl_gaussians_with_standard_normal_p_equals_kl_standard_normal(kind, generator):
    mu, scale = posterior(kind, generator, batch=4)
    eye = torch.eye(K, dtype=torch.float64).expand(4, K, K)
    general = kl_gaussians(mu, covariance(scale), torch.zeros_like(mu), eye)
    torch.testing.assert_close(general, kl_standard_normal(mu, scale))


def test_kl_gaussians_matches_monte_carlo_and_torch(generator):
    mu_q, l_q = posterior("full", generator)
    mu_p, l_p = posterior("full", generator)
    cov_q, cov_p = covariance(l_q)[0], covariance(l_p)[0]
    q, p = MultivariateNormal(mu_q[0], cov_q), MultivariateNormal(mu_p[0], cov_p)
    closed = kl_gaussians(mu_q[0], cov_q, mu_p[0], cov_p).item()
    torch.testing.assert_close(closed, torch.distributions.kl_divergence(q, p).item())
    n = 200_000
    z = q.sample((n,))
    log_ratio = q.log_prob(z) - p.log_prob(z)
    mc, se = log_ratio.mean().item(), log_ratio.std().item() / math.sqrt(n)
    assert abs(closed - mc) < 5 * se, (closed, mc, se)


def test_kl_gaussians_is_not_symmetric():
    """A broad q against a narrow p and the reverse: KL(Q||P) != KL(P||Q)."""
    mu = torch.zeros(2, dtype=torch.float64)
    narrow = torch.diag(torch.tensor([0.1, 0.1], dtype=torch.float64))
    broad = torch.diag(torch.tensor([4.0, 1.0], dtype=torch.float64))
    kl_qp = kl_gaussians(mu, broad, mu + 1, narrow).item()
    kl_pq = kl_gaussians(mu + 1, narrow, mu, broad).item()
    # by hand: 1/2 (tr + maha - k + logdet_p - logdet_q)
    exp_qp = 0.5 * (40 + 10 + 20 - 2 + math.log(0.01) - math.log(4))
    exp_pq = 0.5 * (0.025 + 0.1 + 0.25 + 1 - 2 + math.log(4) - math.log(0.01))
    assert kl_qp == pytest.approx(exp_qp) and kl_pq == pytest.approx(exp_pq)
    assert kl_qp > 10 * kl_pq


# ---------------------------------------------------------------- per-dimension KL

def test_kl_per_dim_sums_to_kl_for_diagonal(generator):
    mu, std = posterior("diagonal", generator, batch=6)
    per = kl_per_dim(mu, std)
    assert per.shape == (6, K)
    assert (per >= 0).all()
    torch.testing.assert_close(per.sum(-1), kl_standard_normal(mu, std))


def test_kl_per_dim_for_full_is_marginal_kl_and_ignores_correlation(generator):
    mu, l_full = posterior("full", generator, batch=6)
    per = kl_per_dim(mu, l_full)
    marginal_std = torch.diagonal(covariance(l_full), dim1=-2, dim2=-1).sqrt()
    torch.testing.assert_close(per, kl_per_dim(mu, marginal_std))
    # correlations carry extra KL (log det Sigma <= sum log Sigma_jj, Hadamard's inequality)
    assert (kl_standard_normal(mu, l_full) >= per.sum(-1) - 1e-12).all()


# ---------------------------------------------------------------- reparameterisation

@pytest.mark.parametrize("kind", ["diagonal", "full"])
def test_reparameterised_samples_have_requested_moments(kind, generator):
    mu, scale = posterior(kind, generator)
    n = 200_000
    eps = torch.randn(n, K, generator=generator, dtype=torch.float64)
    z = reparameterize(mu.expand(n, K), scale.expand(n, *scale.shape[1:]), eps)
    cov = covariance(scale)[0]
    var = torch.diagonal(cov)
    # sample mean: SE sqrt(var/n); sample covariance entry (i, j): SE sqrt((S_ii S_jj + S_ij^2) / n)
    torch.testing.assert_close(z.mean(0), mu[0], rtol=0, atol=5 * (var.max() / n).sqrt().item())
    emp = torch.cov(z.T)
    se = ((var[:, None] * var[None, :] + cov**2) / n).sqrt()
    assert ((emp - cov).abs() < 5 * se).all(), (emp, cov)
    if kind == "full":
        assert cov[0, 1].abs() > 10 * se[0, 1]  # the example really is correlated


@pytest.mark.parametrize("kind", ["diagonal", "full"])
def test_gradients_reach_mu_and_scale(kind, generator):
    mu, scale = posterior(kind, generator, batch=4)
    mu.requires_grad_(True)
    scale.requires_grad_(True)
    eps = torch.randn(4, K, generator=generator, dtype=torch.float64)
    z = reparameterize(mu, scale, eps)
    ((z**2).sum() + kl_standard_normal(mu, scale).sum()).backward()
    assert mu.grad is not None and mu.grad.abs().min() > 0
    assert scale.grad is not None
    if kind == "full":
        low = torch.tril(torch.ones(K, K, dtype=torch.bool))
        assert (scale.grad[:, low] != 0).all()
    else:
        assert (scale.grad != 0).all()


def test_full_vae_encoder_packs_a_lower_triangular_l_with_positive_diagonal():
    torch.manual_seed(0)
    net = VAENet(VAEConfig(latent_dim=4, hidden=(16,), covariance="full", likelihood="gaussian"), (2,), "toy")
    with torch.no_grad():  # push raw diagonal entries very negative: softplus must still keep them > 0
        net.scale_head.bias.fill_(-30.0)
    x = torch.randn(8, 2) * 3
    mu, l_mat = net.encode(x)
    assert mu.shape == (8, 4) and l_mat.shape == (8, 4, 4)
    assert (torch.triu(l_mat, diagonal=1) == 0).all()
    assert (torch.diagonal(l_mat, dim1=-2, dim2=-1) > 0).all()
    # every packed entry reaches L and gets a gradient through the KL; nothing else exists
    kl_standard_normal(mu, l_mat).sum().backward()
    k = 4
    assert net.scale_head.out_features == k * (k + 1) // 2
    assert (net.scale_head.bias.grad != 0).all()
    # the packed layout round-trips: entry i of the head lands at tril_indices[i]
    rows, cols = torch.tril_indices(k, k)
    with torch.no_grad():
        raw = net.scale_head(net.body(x))
        assert torch.allclose(l_mat[:, rows[rows != cols], cols[rows != cols]], raw[:, rows != cols])


# ---------------------------------------------------------------- log densities

@pytest.mark.parametrize("kind", ["diagonal", "full"])
def test_gaussian_log_prob_matches_torch_multivariate_normal(kind, generator):
    mu, scale = posterior(kind, generator, batch=7)
    z = torch.randn(7, K, generator=generator, dtype=torch.float64) * 2
    ref = MultivariateNormal(mu, scale_tril=scale if kind == "full" else torch.diag_embed(scale)).log_prob(z)
    torch.testing.assert_close(gaussian_log_prob(z, mu, scale), ref)


def test_standard_normal_log_prob(generator):
    z = torch.randn(5, K, generator=generator, dtype=torch.float64)
    ref = MultivariateNormal(torch.zeros(K, dtype=torch.float64), torch.eye(K, dtype=torch.float64)).log_prob(z)
    torch.testing.assert_close(standard_normal_log_prob(z), ref)


def test_reconstruction_nll_bernoulli_and_gaussian(generator):
    x = (torch.rand(4, 1, 3, 3, generator=generator) > 0.5).float()
    logits = torch.randn(4, 1, 3, 3, generator=generator)
    ref = -Bernoulli(logits=logits).log_prob(x).flatten(1).sum(-1)
    torch.testing.assert_close(reconstruction_nll(x, logits, "bernoulli"), ref)
    mean = torch.randn(4, 2, generator=generator)
    y = torch.randn(4, 2, generator=generator)
    ref = -Normal(mean, 0.3).log_prob(y).sum(-1)
    torch.testing.assert_close(reconstruction_nll(y, mean, "gaussian", obs_sigma=0.3), ref)
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'"):
        reconstruction_nll(y, mean, "poisson")  # type: ignore[arg-type]


def test_negative_elbo_weights_the_kl():
    rec, kl = torch.tensor([1.0, 3.0]), torch.tensor([2.0, 4.0])
    assert negative_elbo(rec, kl).item() == pytest.approx(5.0)
    assert negative_elbo(rec, kl, beta=0.5).item() == pytest.approx(3.5)
    assert negative_elbo(rec, kl, beta=0.0).item() == pytest.approx(2.0)


def test_decoded_mean_and_regression_losses():
    logits = torch.tensor([[0.0, 100.0, -100.0]])
    torch.testing.assert_close(losses.decoded_mean(logits, "bernoulli"), torch.tensor([[0.5, 1.0, 0.0]]))
    assert losses.decoded_mean(logits, "gaussian") is logits
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0])
    for fn in (losses.ddpm_simple_loss, losses.chain_mse_loss, losses.reconstruction_mse):
        assert fn(a, b).item() == pytest.approx(2.0)
