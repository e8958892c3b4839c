"""Generation procedures as stateless functions over network *callables*.

`denoise(x_t, t) -> eps` and `decode(z) -> x` may be torch modules, lambdas or wrapped ONNX Runtime
sessions: a sampler never holds state, counts steps or owns weights (k-diffusion's style). All noise
comes from an explicit `generator` or an explicit `noise` tensor, so runs are reproducible and a
torch loop can be compared with an exported graph on identical noise. The noise process itself lives
in `genlib.diffusion`; this module only composes its functions.
"""
from __future__ import annotations

from typing import Callable, Literal

import torch

from genlib.diffusion import NoiseSchedule
from genlib.losses import reparameterize
from genlib.registry import Registry

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SAMPLERS: Registry[Callable] = Registry("sampler")


def _noise(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=like.dtype, device="cpu").to(like.device)


def _step_noise(noise: torch.Tensor | None, i: int, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return noise[i].to(like) if noise is not None else _noise(tuple(like.shape), like, generator)


def _timesteps(t: int, like: torch.Tensor) -> torch.Tensor:
    return torch.full((like.shape[0],), int(t), dtype=torch.long, device=like.device)


def _predict_x0_eps(denoise: Denoise, sched: NoiseSchedule, x: torch.Tensor, i: int, t_orig: int,
                    clip_x0: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Network eps at original timestep t_orig -> (x0, eps), x0 optionally clipped (then eps is
    recomputed from the clipped x0 so the two stay consistent)."""
    idx = _timesteps(i, x)
    eps = torch.as_tensor(denoise(x, _timesteps(t_orig, x))).to(x)
    x0 = sched.x0_from_eps(x, idx, eps)  # DDIM eq. 12: x0 from eps
    if clip_x0 is not None:
        x0 = x0.clamp(-clip_x0, clip_x0)
        eps = sched.eps_from_x0(x, idx, x0)
    return x0, eps


@SAMPLERS.register("ddpm", help="DDPM ancestral sampling over S respaced steps (Ho et al. 2020, Alg. 2)")
@torch.no_grad()
def sample_ddpm(denoise: Denoise, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int | None = None, *,
                variance: Literal["small", "large"] = "small", clip_x0: float | None = None,
                generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Ancestral sampling with Gaussian reverse steps N(mu_tilde(x_t, x0_hat), sigma_t^2 I).

    x_T: (B, ...) starting noise. steps: S <= T respaced steps (default T). variance: `small` uses
    beta_tilde_t (the posterior variance), `large` uses beta_t. noise: optional (S, B, ...) tensor of the
    fresh N(0, I) draws, one per step, for reproducible comparisons; else drawn from `generator`.
    """
    sched, ts = schedule.respaced(steps or schedule.T)
    x = x_T
    for i in reversed(range(sched.T)):
        x0, _ = _predict_x0_eps(denoise, sched, x, i, int(ts[i]), clip_x0)
        mean, var_small = sched.posterior_mean_var(x0, x, _timesteps(i, x))  # eqs. 6-7
        if i == 0:
            x = mean
            break
        var = var_small if variance == "small" else sched.betas[i].to(x)
        x = mean + var.sqrt() * _step_noise(noise, i, x, generator)  # fresh noise at each step
    return x


@SAMPLERS.register("ddim", help="DDIM over S respaced steps with stochasticity eta (Song et al. 2021, eq. 12)")
@torch.no_grad()
def sample_ddim(denoise: Denoise, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int | None = None, *,
                eta: float = 0.0, clip_x0: float | None = None, generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None) -> torch.Tensor:
    """DDIM: x_{t-1} = sqrt(abar_{t-1}) x0_hat + sqrt(1 - abar_{t-1} - sigma^2) eps_hat + sigma z.

    sigma_t = eta sqrt((1 - abar_{t-1}) / (1 - abar_t)) sqrt(1 - abar_t / abar_{t-1}) (eq. 16); eta = 0 is
    deterministic, eta = 1 matches DDPM's small-variance ancestral step. Shapes as in `sample_ddpm`.
    """
    sched, ts = schedule.respaced(steps or schedule.T)
    x = x_T
    for i in reversed(range(sched.T)):
        x0, eps = _predict_x0_eps(denoise, sched, x, i, int(ts[i]), clip_x0)
        ab = sched.alpha_bar[i].to(x)
        ab_prev = sched.alpha_bar_prev[i].to(x)
        sigma = eta * ((1 - ab_prev) / (1 - ab)).sqrt() * (1 - ab / ab_prev).sqrt()
        x = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps
        if i > 0 and eta > 0:
            x = x + sigma * _step_noise(noise, i, x, generator)
    return x


@SAMPLERS.register("chain", help="the naive repeated-denoiser chain: x_{t-1} = f(x_t, t), no noise injected")
@torch.no_grad()
def sample_chain(predict_prev: Denoise, x_T: torch.Tensor, T: int) -> torch.Tensor:
    """Run learned conditional means x_{t-1} = E[x_{t-1} | x_t] from t = T-1 down to 0, deterministically.

    Each step regresses to a mean, so errors and blur accumulate: the failure the lecture shows.
    """
    x = x_T
    for t in reversed(range(T)):
        x = torch.as_tensor(predict_prev(x, _timesteps(t, x))).to(x)
    return x


@SAMPLERS.register("vae", help="VAE prior samples with k refinement passes (decode, re-encode, decode)")
@torch.no_grad()
def sample_vae(decode: Callable[[torch.Tensor], torch.Tensor],
               encode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None,
               z: torch.Tensor, *, passes: int = 0, reencode: Literal["mean", "sample"] = "mean",
               generator: torch.Generator | None = None, return_passes: bool = False
               ) -> torch.Tensor | list[torch.Tensor]:
    """Decode prior draws z (B, k) ~ N(0, I), then `passes` times: re-encode to (mu, scale) and decode
    mu (`mean`) or a reparameterised draw (`sample`). With return_passes, returns [x_pass0, ..., x_passk].
    """
    if passes < 0:
        raise ValueError(f"passes must be >= 0, got {passes}")
    if passes > 0 and encode is None:
        raise ValueError("refinement passes need an encoder")
    x = decode(z)
    outs = [x]
    for _ in range(passes):
        mu, scale = encode(x)
        z = mu if reencode == "mean" else reparameterize(mu, scale, _noise(tuple(mu.shape), mu, generator))
        x = decode(z)
        outs.append(x)
    return outs if return_passes else x


def fit_gaussian(codes: torch.Tensor, jitter: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (k,) and lower Cholesky factor (k, k) of a Gaussian fitted to codes (N, k)."""
    mean = codes.mean(0)
    centred = codes - mean
    cov = centred.T @ centred / max(1, codes.shape[0] - 1)
    return mean, torch.linalg.cholesky(cov + jitter * torch.eye(codes.shape[1], dtype=codes.dtype))


@SAMPLERS.register("ae", help="plain AE: decode z ~ N(0, I), or z from a Gaussian fitted to training codes")
@torch.no_grad()
def sample_ae(decode: Callable[[torch.Tensor], torch.Tensor], eps: torch.Tensor,
              fitted: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """eps (B, k) ~ N(0, I). With fitted = (mean, L) decode mean + L eps, else decode eps itself."""
    z = eps if fitted is None else fitted[0] + eps @ fitted[1].T
    return decode(z)
