"""Losses as pure tensor functions: Gaussian KL, reconstruction likelihoods, ELBO, DDPM and chain MSE.

A Gaussian posterior q(z|x) = N(mu, Sigma) is passed as (mu, scale): `scale` of shape (B, k) is the
diagonal standard deviation (Sigma = diag(scale^2)); shape (B, k, k) is a lower-triangular L with a
positive diagonal (Sigma = L L^T). Everything is in nats and summed over data/latent dimensions,
averaged over the batch only where a name says `mean`. No module here owns parameters.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

Likelihood = Literal["bernoulli", "gaussian"]


def is_full(scale: torch.Tensor) -> bool:
    return scale.ndim == 3


def covariance(scale: torch.Tensor) -> torch.Tensor:
    """Sigma (B, k, k) from a diagonal std (B, k) or a lower-triangular L (B, k, k)."""
    return scale @ scale.transpose(-1, -2) if is_full(scale) else torch.diag_embed(scale**2)


def reparameterize(mu: torch.Tensor, scale: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = mu + Sigma^(1/2) eps with Sigma^(1/2) = diag(scale) or L; mu, eps (B, k)."""
    if is_full(scale):
        return mu + (scale @ eps.unsqueeze(-1)).squeeze(-1)
    return mu + scale * eps


def kl_standard_normal(mu: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, Sigma) || N(0, I)) = 1/2 (tr Sigma + mu^T mu - k - log det Sigma), nats, shape (B,)."""
    k = mu.shape[-1]
    if is_full(scale):
        diag = torch.diagonal(scale, dim1=-2, dim2=-1)
        trace = (scale**2).sum(dim=(-2, -1))  # tr(L L^T) = ||L||_F^2
    else:
        diag = scale
        trace = (scale**2).sum(-1)
    log_det = 2.0 * torch.log(diag).sum(-1)  # log det(L L^T) = 2 sum log L_ii
    return 0.5 * (trace + (mu**2).sum(-1) - k - log_det)


def kl_per_dim(mu: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Per-latent-dimension KL of the marginals N(mu_j, Sigma_jj) to N(0, 1), nats, shape (B, k).

    For a diagonal posterior these sum to the full KL; for a full one they ignore correlations.
    """
    var = torch.diagonal(covariance(scale), dim1=-2, dim2=-1) if is_full(scale) else scale**2
    return 0.5 * (var + mu**2 - 1.0 - torch.log(var))


def kl_gaussians(mu_q: torch.Tensor, cov_q: torch.Tensor, mu_p: torch.Tensor, cov_p: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_q, cov_q) || N(mu_p, cov_p)) for general full covariances (k,) / (k, k), nats.

    1/2 (tr(cov_p^-1 cov_q) + (mu_p - mu_q)^T cov_p^-1 (mu_p - mu_q) - k + log det cov_p - log det cov_q).
    Not symmetric in its arguments: the asymmetry the lecture points at.
    """
    k = mu_q.shape[-1]
    cov_p_inv = torch.linalg.inv(cov_p)
    d = (mu_p - mu_q).unsqueeze(-1)
    return 0.5 * (
        torch.diagonal(cov_p_inv @ cov_q, dim1=-2, dim2=-1).sum(-1)
        + (d.transpose(-1, -2) @ cov_p_inv @ d).squeeze(-1).squeeze(-1)
        - k
        + torch.logdet(cov_p)
        - torch.logdet(cov_q)
    )


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, Sigma) in nats, shape (B,), for a diagonal std or lower-triangular L scale."""
    k = mu.shape[-1]
    diff = z - mu
    if is_full(scale):
        sol = torch.linalg.solve_triangular(scale, diff.unsqueeze(-1), upper=False).squeeze(-1)
        log_det = 2.0 * torch.log(torch.diagonal(scale, dim1=-2, dim2=-1)).sum(-1)
    else:
        sol = diff / scale
        log_det = 2.0 * torch.log(scale).sum(-1)
    return -0.5 * ((sol**2).sum(-1) + log_det + k * math.log(2 * math.pi))


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), nats, shape (B,)."""
    return -0.5 * ((z**2).sum(-1) + z.shape[-1] * math.log(2 * math.pi))


def reconstruction_nll(x: torch.Tensor, decoded: torch.Tensor, likelihood: Likelihood, obs_sigma: float = 0.1) -> torch.Tensor:
    """-log p(x | z) in nats summed over data dimensions, shape (B,).

    `decoded` is the decoder's raw output: logits for `bernoulli` (x in [0, 1], continuous targets
    allowed), the mean for `gaussian` with fixed std `obs_sigma`.
    """
    if likelihood == "bernoulli":
        per = F.binary_cross_entropy_with_logits(decoded, x, reduction="none")
    elif likelihood == "gaussian":
        per = 0.5 * ((x - decoded) / obs_sigma) ** 2 + math.log(obs_sigma) + 0.5 * math.log(2 * math.pi)
    else:
        raise ValueError(f"unknown likelihood {likelihood!r}; expected 'bernoulli' or 'gaussian'")
    return per.flatten(1).sum(-1)


def decoded_mean(decoded: torch.Tensor, likelihood: Likelihood) -> torch.Tensor:
    """E[x | z] from the decoder's raw output (sigmoid of logits for bernoulli)."""
    return torch.sigmoid(decoded) if likelihood == "bernoulli" else decoded


def negative_elbo(recon_nll: torch.Tensor, kl: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Batch mean of recon_nll + beta * KL (beta = 1 is the true negative ELBO, in nats)."""
    return (recon_nll + beta * kl).mean()


def ddpm_simple_loss(eps_pred: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """L_simple of Ho et al. (2020) eq. 14: mean squared error between predicted and true noise."""
    return F.mse_loss(eps_pred, eps)


def chain_mse_loss(x_prev_pred: torch.Tensor, x_prev: torch.Tensor) -> torch.Tensor:
    """The naive chain's regression loss: MSE of x_{t-1} predicted from x_t (so it learns E[x_{t-1}|x_t])."""
    return F.mse_loss(x_prev_pred, x_prev)


def reconstruction_mse(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Plain autoencoder loss: mean squared error over all elements."""
    return F.mse_loss(x_hat, x)
