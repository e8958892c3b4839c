"""Explicit export wrappers: the exact function each ONNX graph computes, as small nn.Modules.

Parts wrap a trained network without patching it: `DecoderPart` (z -> x), `EncoderPart` (x -> mu, L),
`DenoiserPart` (x_t, t -> eps), `ChainPart` (x_t, t -> x_{t-1}). Sampler steps (`DDIMStep`, `DDPMStep`,
`ChainStep`, `VAEPassStep`) hold per-step float32 coefficient tables computed from
`genlib.diffusion.NoiseSchedule` with the same float32 operations `genlib.samplers` uses, so a graph fed
the same noise reproduces the torch sampler; they never re-derive the schedule. Every step maps
(x, i, noise) -> (x_next, out), `out` being x_next in data space; `bench.onnx_graph` composes S of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from genlib.diffusion import NoiseSchedule
from genlib.losses import reparameterize


class DecoderPart(nn.Module):
    """z (B, k) -> E[x | z] (B, *shape) in data space: the network's own `decode`."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net.decode(z)


class EncoderPart(nn.Module):
    """x (B, *shape) -> (mu (B, k), L (B, k, k)) for a VAE (a diagonal std becomes diag(std)), or
    x -> z (B, k) for a plain autoencoder."""

    def __init__(self, net: nn.Module, gaussian: bool) -> None:
        super().__init__()
        self.net = net
        self.gaussian = gaussian

    def forward(self, x: torch.Tensor):
        if not self.gaussian:
            return self.net.encode(x)
        mu, scale = self.net.encode(x)
        return mu, (scale if scale.ndim == 3 else torch.diag_embed(scale))


class DenoiserPart(nn.Module):
    """(x_t (B, *shape), t (B,) int64) -> the network's prediction (eps for ddpm, x_{t-1} for the chain)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x_t, t)


class ChainPart(DenoiserPart):
    """The naive chain's denoiser: (x_t, t) -> x_{t-1} = E[x_{t-1} | x_t]."""


# ---------------------------------------------------------------------------------------- tables
@dataclass(frozen=True)
class StepTables:
    """Per-step float32 tables indexed by the respaced step i (shape (S,)), plus the original timesteps."""

    timesteps: torch.Tensor  # (S,) int64: original t each respaced step stands for
    sqrt_alpha_bar: torch.Tensor
    sqrt_one_minus_alpha_bar: torch.Tensor
    coef_x0: torch.Tensor  # multiplies x0_hat
    coef_second: torch.Tensor  # multiplies eps_hat (DDIM) or x_t (DDPM posterior mean)
    noise_std: torch.Tensor  # multiplies the fresh noise; 0 where the torch sampler adds none


def _f32(v: torch.Tensor) -> torch.Tensor:
    return v.to(torch.float32)


def ddim_tables(schedule: NoiseSchedule, steps: int, eta: float) -> StepTables:
    """DDIM eq. 12 coefficients, computed like `genlib.samplers.sample_ddim` (float32 from the float64 tables)."""
    sched, ts = schedule.respaced(steps)
    ab, ab_prev = _f32(sched.alpha_bar), _f32(sched.alpha_bar_prev)
    sigma = eta * ((1 - ab_prev) / (1 - ab)).sqrt() * (1 - ab / ab_prev).sqrt()  # eq. 16
    coef_eps = (1 - ab_prev - sigma**2).clamp(min=0).sqrt()
    noise_std = sigma.clone() if eta > 0 else torch.zeros_like(sigma)
    noise_std[0] = 0.0  # the last step (i = 0) adds no noise
    return StepTables(ts.to(torch.int64), _f32(sched.alpha_bar.sqrt()), _f32((1 - sched.alpha_bar).sqrt()),
                      ab_prev.sqrt(), coef_eps, noise_std)


def ddpm_tables(schedule: NoiseSchedule, steps: int, variance: str) -> StepTables:
    """Posterior q(x_{t-1} | x_t, x0) coefficients (eqs. 6-7), computed like `sample_ddpm`."""
    sched, ts = schedule.respaced(steps)
    var = _f32(sched.posterior_variance) if variance == "small" else _f32(sched.betas)
    noise_std = var.sqrt()
    noise_std[0] = 0.0  # i = 0 returns the posterior mean
    return StepTables(ts.to(torch.int64), _f32(sched.alpha_bar.sqrt()), _f32((1 - sched.alpha_bar).sqrt()),
                      _f32(sched.posterior_coef_x0), _f32(sched.posterior_coef_xt), noise_std)


# ----------------------------------------------------------------------------------------- steps
class _Step(nn.Module):
    """Common plumbing: table lookup by a (1,) int64 index and the data-space view of the result."""

    def __init__(self, net: nn.Module, to_data_space: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.net = net
        self._to_data_space = to_data_space

    @staticmethod
    def at(table: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return table.index_select(0, i)  # (1,): broadcasts like genlib's per-sample (B, 1, ...) tables

    def finish(self, x_next: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x_next, self._to_data_space(x_next)


class _DiffusionStep(_Step):
    def __init__(self, net: nn.Module, tables: StepTables, to_data_space, clip_x0: float | None) -> None:
        super().__init__(net, to_data_space)
        for name in ("timesteps", "sqrt_alpha_bar", "sqrt_one_minus_alpha_bar", "coef_x0", "coef_second", "noise_std"):
            self.register_buffer(name, getattr(tables, name).clone())
        self.clip_x0 = clip_x0
        self.steps = int(tables.timesteps.shape[0])

    def predict_x0_eps(self, x: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # t has shape (1,) and broadcasts inside the network: the same values as genlib's (B,) timesteps,
        # and ONNX Runtime can constant-fold the whole time-embedding path of an unrolled graph.
        eps = self.net(x, self.at(self.timesteps, i))
        x0 = (x - self.at(self.sqrt_one_minus_alpha_bar, i) * eps) / self.at(self.sqrt_alpha_bar, i)  # DDIM eq. 12
        if self.clip_x0 is not None:
            x0 = x0.clamp(-self.clip_x0, self.clip_x0)
            eps = (x - self.at(self.sqrt_alpha_bar, i) * x0) / self.at(self.sqrt_one_minus_alpha_bar, i)
        return x0, eps

    def noise_at(self, noise: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return noise.index_select(0, i)[0]  # (B, *shape)


class DDIMStep(_DiffusionStep):
    """One DDIM step (Song et al. 2021, eq. 12): x_{t-1} = sqrt(abar_{t-1}) x0 + sqrt(1 - abar_{t-1} - sigma^2) eps + sigma z."""

    def __init__(self, net, tables, to_data_space, clip_x0, stochastic: bool) -> None:
        super().__init__(net, tables, to_data_space, clip_x0)
        self.stochastic = stochastic

    def forward(self, x: torch.Tensor, i: torch.Tensor, noise: torch.Tensor | None = None):
        x0, eps = self.predict_x0_eps(x, i)
        x_next = self.at(self.coef_x0, i) * x0 + self.at(self.coef_second, i) * eps
        if self.stochastic:
            x_next = x_next + self.at(self.noise_std, i) * self.noise_at(noise, i)
        return self.finish(x_next)


class DDPMStep(_DiffusionStep):
    """One ancestral step (Ho et al. 2020, Alg. 2): x_{t-1} = mu_tilde(x_t, x0_hat) + sigma_t z."""

    def forward(self, x: torch.Tensor, i: torch.Tensor, noise: torch.Tensor):
        x0, _ = self.predict_x0_eps(x, i)
        mean = self.at(self.coef_x0, i) * x0 + self.at(self.coef_second, i) * x  # eq. 7
        return self.finish(mean + self.at(self.noise_std, i) * self.noise_at(noise, i))


class ChainStep(_Step):
    """One step of the naive chain: x_{t-1} = f(x_t, t) with t = i (all T steps, no noise)."""

    def __init__(self, net: nn.Module, T: int, to_data_space) -> None:
        super().__init__(net, to_data_space)
        self.register_buffer("timesteps", torch.arange(T, dtype=torch.int64))
        self.steps = T

    def forward(self, x: torch.Tensor, i: torch.Tensor):
        return self.finish(self.net(x, self.at(self.timesteps, i)))


class VAEPassStep(_Step):
    """One refinement pass on the code: z -> decode -> encode -> z' (mu, or mu + Sigma^(1/2) eps).

    The state is the code z (B, k); `out` is decode(z'), so K composed passes give the sampler's x.
    """

    def __init__(self, net: nn.Module, passes: int, reencode: str) -> None:
        super().__init__(net, lambda z: net.decode(z))
        self.passes = passes
        self.sample = reencode == "sample"

    def forward(self, x: torch.Tensor, i: torch.Tensor, noise: torch.Tensor | None = None):
        mu, scale = self.net.encode(self.net.decode(x))
        z = reparameterize(mu, scale, noise.index_select(0, i)[0]) if self.sample else mu
        return self.finish(z)
