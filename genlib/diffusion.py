"""The Gaussian noise process of DDPM (Ho et al. 2020) and its respacing: the one place it lives.

Notation (used everywhere in genbench):
    T            number of training diffusion steps; timesteps t = 0..T-1 index beta_t
    beta_t       variance added at step t of the forward chain;  alpha_t = 1 - beta_t
    alpha_bar_t  prod_{s<=t} alpha_s;  q(x_t | x0) = N(sqrt(alpha_bar_t) x0, (1 - alpha_bar_t) I)   (eq. 4)
    x0, x_t      clean data and its noised version;  eps ~ N(0, I) the noise that made x_t
    posterior    q(x_{t-1} | x_t, x0) = N(mu_tilde, beta_tilde_t I)                               (eqs. 6-7)
Training (losses.py) and every sampler (samplers.py) call these functions, so they cannot drift apart.
This module holds no network and no randomness of its own: callers pass noise in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from genlib.registry import Registry

NOISE_SCHEDULES: Registry = Registry("noise schedule")
# Largest last beta the 1000/T rescaling of the linear schedule may reach: 0.02 * 1000 / 50. One step at
# beta = 0.4 keeps sqrt(0.6) = 77% of the signal; shorter scaled chains push beta_T past 1 (clipped at
# max_beta), so beta_end 0.02 needs T >= 50.
MAX_SCALED_BETA_END = 0.4


@dataclass(frozen=True, kw_only=True)
class NoiseScheduleConfig:
    kind: Literal["linear", "cosine"] = "linear"
    # Training steps T. The classic linear schedule (1e-4..0.02) was tuned for T = 1000.
    T: int = 1000
    # linear only: multiply beta_1 and beta_T by 1000/T so that short chains still end near N(0, I)
    # (improved-diffusion does this). Unscaled linear with T = 100 ends at alpha_bar_T ~ 0.36.
    scaled: bool = True
    beta_start: float = 1e-4
    beta_end: float = 0.02
    # cosine only: offset s of Nichol & Dhariwal (2021) eq. 17, and the beta clip they use.
    cosine_s: float = 0.008
    max_beta: float = 0.999

    def __post_init__(self) -> None:
        if self.T < 1:
            raise ValueError(f"T must be >= 1, got {self.T}")
        if not 0 < self.beta_start <= self.beta_end < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {self.beta_start}, {self.beta_end}")
        scaled_end = self.beta_end * 1000.0 / self.T
        if self.kind == "linear" and self.scaled and scaled_end > MAX_SCALED_BETA_END * (1 + 1e-12):
            min_t = math.ceil(self.beta_end * 1000.0 / MAX_SCALED_BETA_END - 1e-9)
            why = (f" and clipped at max_beta {self.max_beta}, so the schedule is no longer linear"
                   if scaled_end >= self.max_beta else
                   f", so one step keeps only sqrt(1 - beta) = {math.sqrt(1 - scaled_end):.0%} of the signal")
            raise ValueError(
                f"the scaled linear schedule needs T >= {min_t} (beta_end {self.beta_end}), got T={self.T}: the "
                f"1000/T rescaling makes the last beta {self.beta_end} * 1000 / {self.T} = {scaled_end:.3g}, above "
                f"{MAX_SCALED_BETA_END}{why}; use scaled: false or T >= {min_t}")


@NOISE_SCHEDULES.register("linear", help="betas linear from beta_start to beta_end (Ho et al. 2020)")
def linear_betas(cfg: NoiseScheduleConfig) -> np.ndarray:
    scale = 1000.0 / cfg.T if cfg.scaled else 1.0
    return np.linspace(cfg.beta_start * scale, min(cfg.beta_end * scale, cfg.max_beta), cfg.T, dtype=np.float64)


@NOISE_SCHEDULES.register("cosine", help="alpha_bar = cos^2 schedule (Nichol & Dhariwal 2021, eq. 17)")
def cosine_betas(cfg: NoiseScheduleConfig) -> np.ndarray:
    steps = np.arange(cfg.T + 1, dtype=np.float64) / cfg.T
    f = np.cos((steps + cfg.cosine_s) / (1 + cfg.cosine_s) * math.pi / 2) ** 2
    return np.clip(1 - f[1:] / f[:-1], 0, cfg.max_beta)


def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, sqrt_alpha_bar: torch.Tensor,
                sqrt_one_minus_alpha_bar: torch.Tensor) -> torch.Tensor:
    """x0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t) (eq. 4 inverted), given the coefficients
    already looked up (broadcastable to x_t): the one formula the schedule and every sampler step use."""
    return (x_t - sqrt_one_minus_alpha_bar * eps) / sqrt_alpha_bar


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, sqrt_alpha_bar: torch.Tensor,
                sqrt_one_minus_alpha_bar: torch.Tensor) -> torch.Tensor:
    """eps = (x_t - sqrt(alpha_bar_t) x0) / sqrt(1 - alpha_bar_t): the inverse of `x0_from_eps`."""
    return (x_t - sqrt_alpha_bar * x0) / sqrt_one_minus_alpha_bar


class NoiseSchedule:
    """Precomputed float64 tables of the forward process for one beta sequence.

    All per-timestep tables have shape (T,). `t` arguments are integer tensors of shape (B,).
    """

    def __init__(self, betas: np.ndarray | torch.Tensor) -> None:
        b = torch.as_tensor(np.asarray(betas, dtype=np.float64))
        if b.ndim != 1 or len(b) == 0 or not bool(((b > 0) & (b < 1)).all()):
            raise ValueError("betas must be a non-empty 1-D sequence in (0, 1)")
        self.betas = b
        self.alphas = 1.0 - b
        self.alpha_bar = torch.cumprod(self.alphas, 0)
        self.alpha_bar_prev = torch.cat([torch.ones(1, dtype=b.dtype), self.alpha_bar[:-1]])
        # eq. 7: beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t
        self.posterior_variance = b * (1.0 - self.alpha_bar_prev) / (1.0 - self.alpha_bar)
        # eq. 7: mu_tilde = c0 * x0 + ct * x_t
        self.posterior_coef_x0 = b * torch.sqrt(self.alpha_bar_prev) / (1.0 - self.alpha_bar)
        self.posterior_coef_xt = (1.0 - self.alpha_bar_prev) * torch.sqrt(self.alphas) / (1.0 - self.alpha_bar)

    @classmethod
    def from_config(cls, cfg: NoiseScheduleConfig) -> "NoiseSchedule":
        return cls(NOISE_SCHEDULES.get(cfg.kind)(cfg))

    @property
    def T(self) -> int:
        return len(self.betas)

    def respaced(self, steps: int) -> tuple["NoiseSchedule", torch.Tensor]:
        """A schedule over `steps` <= T evenly spaced timesteps that keeps alpha_bar on them.

        Returns (schedule, timesteps): the new betas are 1 - alpha_bar_{t_i} / alpha_bar_{t_{i-1}}
        (improved-diffusion's respacing), and `timesteps[i]` is the original t that step i stands for,
        which is what the network was trained with.
        """
        if not 1 <= steps <= self.T:
            raise ValueError(f"sampling steps must be in 1..T={self.T}, got {steps}")
        ts = torch.as_tensor(np.unique(np.round(np.linspace(0, self.T - 1, steps)).astype(np.int64)))
        ab = self.alpha_bar[ts]
        ab_prev = torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])
        # No clip to max_beta here: a coarse step may need beta > 0.999 (cosine's last step), and clipping
        # it would change alpha_bar at that timestep. The guard only keeps beta < 1 in float64.
        return NoiseSchedule((1.0 - ab / ab_prev).clamp(max=1.0 - 1e-12).numpy()), ts

    # ---- the forward process -------------------------------------------------------------------
    @staticmethod
    def _at(table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """table[t] reshaped to broadcast against `like` (B, ...), in like's dtype and device."""
        v = table.to(like.device)[t.long().to(like.device)].to(like.dtype)
        return v.reshape(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps  (eq. 4, reparameterised)."""
        return self._at(self.alpha_bar.sqrt(), t, x0) * x0 + self._at((1 - self.alpha_bar).sqrt(), t, x0) * eps

    def q_mean_var(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and (per-element) variance of q(x_t | x0)."""
        return self._at(self.alpha_bar.sqrt(), t, x0) * x0, self._at(1 - self.alpha_bar, t, x0).expand_as(x0)

    # ---- parameterisation conversions --------------------------------------------------------------
    def x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)   (eq. 4 inverted; DDIM eq. 12)."""
        return x0_from_eps(x_t, eps, self._at(self.alpha_bar.sqrt(), t, x_t), self._at((1 - self.alpha_bar).sqrt(), t, x_t))

    def eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return eps_from_x0(x_t, x0, self._at(self.alpha_bar.sqrt(), t, x_t), self._at((1 - self.alpha_bar).sqrt(), t, x_t))

    # ---- the tractable posterior q(x_{t-1} | x_t, x0) ----------------------------------------------
    def posterior_mean_var(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu_tilde, beta_tilde_t) of q(x_{t-1} | x_t, x0), eqs. 6-7; the variance broadcasts (B, 1, ...)."""
        mean = self._at(self.posterior_coef_x0, t, x_t) * x0 + self._at(self.posterior_coef_xt, t, x_t) * x_t
        return mean, self._at(self.posterior_variance, t, x_t)

    # ---- the naive chain's marginals (same tables; the chain never uses the posterior) ------------
    def chain_prev_from_step_eps(self, x_t: torch.Tensor, t: torch.Tensor, step_eps: torch.Tensor) -> torch.Tensor:
        """x_{t-1} = (x_t - sqrt(beta_t) eps_step) / sqrt(alpha_t): one forward step inverted, given its noise."""
        return (x_t - self._at(self.betas.sqrt(), t, x_t) * step_eps) / self._at(self.alphas.sqrt(), t, x_t)

    def chain_pair(self, x0: torch.Tensor, t: torch.Tensor, eps_prev: torch.Tensor, eps_step: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_{t-1}, x_t) for the naive chain: x_{t-1} ~ q(x_{t-1}|x0), then one forward step
        x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) eps. For t = 0, x_{t-1} is x0 itself."""
        prev_ab = self._at(self.alpha_bar_prev, t, x0)
        x_prev = prev_ab.sqrt() * x0 + (1 - prev_ab).sqrt() * eps_prev
        x_t = self._at(self.alphas.sqrt(), t, x0) * x_prev + self._at(self.betas.sqrt(), t, x0) * eps_step
        return x_prev, x_t
