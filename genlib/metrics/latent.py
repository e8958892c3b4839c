"""Likelihood bounds and latent health of a Gaussian-encoder VAE.

Negative ELBO (Kingma & Welling 2014, eq. 3) with the KL in closed form; the importance-weighted bound
L_k = E[log (1/k) sum_i p(x, z_i) / q(z_i | x)] (Burda et al. 2016, eq. 8), non-decreasing in k; KL per
latent dimension; active units A_u = Cov_x(E_q[z_u | x]) > 0.01 (Burda et al. 2016, sec. 5.2); and the
mutual information I_q(x; z) estimated with the aggregate posterior over the evaluation set (Hoffman &
Johnson 2016; He et al. 2019). The model is any object with `.net.encode(x) -> (mu, scale)`,
`.net.decode_raw(z)` and `.cfg.likelihood` / `.cfg.obs_sigma`; nothing here trains or samples.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from genlib.losses import (gaussian_log_prob, is_full, kl_per_dim, kl_standard_normal, reconstruction_nll,
                           reparameterize, standard_normal_log_prob)
from genlib.progress import tqdm

MAX_DECODED = 4_000_000  # decoder output elements held at once (draws x images x dims)


def _device(model) -> torch.device:
    return next(model.net.parameters()).device


def _batches(x: np.ndarray | torch.Tensor, size: int):
    x = x.float() if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x, dtype=np.float32))
    for start in range(0, len(x), size):
        yield x[start:start + size]


@torch.no_grad()
def posterior(model, x: np.ndarray | torch.Tensor, batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """q(z|x) for x (N, *shape): mu (N, k) and scale (N, k) or (N, k, k), float64 on the CPU."""
    dev = _device(model)
    mus, scales = [], []
    for xb in _batches(x, batch_size):
        mu, scale = model.net.encode(xb.to(dev))
        mus.append(mu.double().cpu())
        scales.append(scale.double().cpu())
    return torch.cat(mus), torch.cat(scales)


def _log_likelihood(model, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log p(x | z) per row, nats: x (B, *shape), z (B, k)."""
    return -reconstruction_nll(x, model.net.decode_raw(z), model.cfg.likelihood, model.cfg.obs_sigma)


@torch.no_grad()
def negative_elbo(model, x: np.ndarray | torch.Tensor, *, draws: int = 1, generator: torch.Generator,
                  batch_size: int = 512) -> np.ndarray:
    """-ELBO per sample (N,) in nats: recon NLL averaged over `draws` draws z ~ q(z|x), plus KL(q || N(0, I))."""
    if draws < 1:
        raise ValueError(f"negative_elbo: draws must be >= 1, got {draws}")
    dev = _device(model)
    out = []
    for xb in _batches(x, batch_size):
        xb = xb.to(dev)
        mu, scale = model.net.encode(xb)
        rec = torch.zeros(len(xb), dtype=torch.float64, device=dev)
        for _ in range(draws):
            eps = torch.randn(mu.shape, generator=generator).to(dev)
            rec -= _log_likelihood(model, xb, reparameterize(mu, scale, eps)).double()
        out.append((rec / draws + kl_standard_normal(mu, scale).double()).cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def iwae_bound(model, x: np.ndarray | torch.Tensor, k: int, *, generator: torch.Generator,
               batch_size: int = 256, progress: bool = False) -> np.ndarray:
    """L_k per sample (N,) in nats: log (1/k) sum_{i<=k} p(x | z_i) p(z_i) / q(z_i | x), z_i ~ q(z | x).

    A lower bound on log p(x), tight as k -> infinity; L_1 is the ELBO. Draws are processed in chunks with
    a running log-sum-exp, so k can be large.
    """
    if k < 1:
        raise ValueError(f"iwae: k must be >= 1, got {k}")
    dev = _device(model)
    out = []
    n_batches = -(-len(x) // batch_size)
    for xb in tqdm(_batches(x, batch_size), total=n_batches, desc=f"iwae k={k}", disable=not progress, leave=False):
        xb = xb.to(dev)
        b = len(xb)
        mu, scale = model.net.encode(xb)
        dim = xb[0].numel()
        chunk = max(1, min(k, MAX_DECODED // max(1, b * dim)))
        acc = torch.full((b,), -math.inf, dtype=torch.float64, device=dev)
        done = 0
        while done < k:
            c = min(chunk, k - done)
            eps = torch.randn((c, *mu.shape), generator=generator).to(dev)  # (c, B, k)
            mu_c = mu.expand(c, *mu.shape).reshape(c * b, -1)
            scale_c = scale.expand(c, *scale.shape).reshape(c * b, *scale.shape[1:])
            z = reparameterize(mu_c, scale_c, eps.reshape(c * b, -1))
            x_c = xb.expand(c, *xb.shape).reshape(c * b, *xb.shape[1:])
            log_w = (_log_likelihood(model, x_c, z) + standard_normal_log_prob(z)
                     - gaussian_log_prob(z, mu_c, scale_c)).double().reshape(c, b)
            acc = torch.logaddexp(acc, torch.logsumexp(log_w, 0))
            done += c
        out.append((acc - math.log(k)).cpu())
    return torch.cat(out).numpy()


def kl_by_dimension(mu: torch.Tensor, scale: torch.Tensor) -> np.ndarray:
    """Mean over samples of KL(q(z_j | x) || N(0, 1)) per latent dimension, (k,) nats."""
    return kl_per_dim(mu, scale).mean(0).numpy()


def activity(mu: torch.Tensor) -> np.ndarray:
    """Cov_x(E_q[z_u | x]) per latent dimension u: the unbiased variance of mu over samples, (k,)."""
    return mu.var(0, unbiased=True).numpy()


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> tuple[int, np.ndarray]:
    """(number of dimensions with activity > threshold, activity (k,))."""
    a = activity(mu)
    return int((a > threshold).sum()), a


def _log_q_matrix(z: torch.Tensor, mu: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log q(z_i | x_j) for all pairs: z (N, k) against posteriors j (M) -> (N, M)."""
    k = mu.shape[1]
    if is_full(scale):
        diff = z[None] - mu[:, None]  # (M, N, k)
        sol = torch.linalg.solve_triangular(scale, diff.transpose(1, 2), upper=False)  # (M, k, N)
        log_det = 2.0 * torch.log(torch.diagonal(scale, dim1=-2, dim2=-1)).sum(-1)  # (M,)
        return (-0.5 * ((sol**2).sum(1) + log_det[:, None] + k * math.log(2 * math.pi))).T
    diff = (z[:, None] - mu[None]) / scale[None]  # (N, M, k)
    log_det = 2.0 * torch.log(scale).sum(-1)  # (M,)
    return -0.5 * ((diff**2).sum(-1) + log_det[None] + k * math.log(2 * math.pi))


def mutual_information(mu: torch.Tensor, scale: torch.Tensor, *, generator: torch.Generator,
                       block: int = 256) -> float:
    """I_q(x; z) = E_x E_q(z|x)[log q(z|x) - log q(z)] with q(z) ~ (1/N) sum_j q(z | x_j), nats.

    One draw z_i ~ q(z | x_i) per sample; bounded above by log N, so it needs N well above exp(I).
    """
    n = len(mu)
    z = reparameterize(mu, scale, torch.randn(mu.shape, generator=generator, dtype=mu.dtype))
    log_q_own = gaussian_log_prob(z, mu, scale)  # (N,)
    log_q_agg = torch.cat([torch.logsumexp(_log_q_matrix(z[s:s + block], mu, scale), dim=1)
                           for s in range(0, n, block)]) - math.log(n)
    return float((log_q_own - log_q_agg).mean())


__all__ = ["active_units", "activity", "iwae_bound", "kl_by_dimension", "mutual_information", "negative_elbo",
           "posterior"]
