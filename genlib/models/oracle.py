"""`oracle`: the exact denoiser of a Gaussian-mixture dataset, a model family with nothing to train.

For x0 ~ sum_k w_k N(m_k, s_k^2 I), q(x_t) = sum_k w_k N(sqrt(alpha_bar_t) m_k, (alpha_bar_t s_k^2 + 1 - alpha_bar_t) I),
so the minimiser of L_simple, eps*(x_t, t) = E[eps | x_t] = -sqrt(1 - alpha_bar_t) grad log q(x_t) (Tweedie), is
closed form: component responsibilities times per-component eps. Sampled by the same DDPM/DDIM code as `ddpm`,
it measures a sampler's own discretisation error apart from a network's. Data that is not a registered
Gaussian mixture (`GAUSSIAN_MIXTURES`) is refused.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
import torch

from genlib.config import ConfigError
from genlib.data import EIGHT_GAUSSIANS_MU, EIGHT_GAUSSIANS_SIGMA, DataConfig
from genlib.diffusion import NoiseSchedule, NoiseScheduleConfig
from genlib.models.base import MODELS, ModelConfig
from genlib.models.ddpm import DDPM
from genlib.registry import Registry


@dataclass(frozen=True)
class GaussianMixture:
    """sum_k weights[k] N(means[k], stds[k]^2 I): weights (K,) summing to 1, means (K, D), stds (K,) > 0."""

    weights: np.ndarray
    means: np.ndarray
    stds: np.ndarray

    def __post_init__(self) -> None:
        k = len(self.weights)
        if self.means.shape[:1] != (k,) or self.means.ndim != 2 or self.stds.shape != (k,):
            raise ValueError(f"mixture shapes disagree: weights {self.weights.shape}, means {self.means.shape}, "
                             f"stds {self.stds.shape}; expected (K,), (K, D), (K,)")
        if not (abs(float(np.sum(self.weights)) - 1.0) < 1e-9 and (self.weights > 0).all() and (self.stds > 0).all()):
            raise ValueError("mixture weights must be positive and sum to 1, and stds positive")


# Dataset name -> its exact mixture; the names the oracle accepts as data.name.
GAUSSIAN_MIXTURES: Registry[Callable[[], GaussianMixture]] = Registry("Gaussian-mixture dataset")


@GAUSSIAN_MIXTURES.register("8gaussians", help="8 equal isotropic Gaussians on a circle (genlib.data)")
def _eight_gaussians() -> GaussianMixture:
    k = len(EIGHT_GAUSSIANS_MU)
    return GaussianMixture(weights=np.full(k, 1.0 / k), means=np.asarray(EIGHT_GAUSSIANS_MU, dtype=np.float64),
                           stds=np.full(k, EIGHT_GAUSSIANS_SIGMA))


class MixtureEps(torch.nn.Module):
    """forward(x_t (B, *shape), t (B,) int) -> eps*(x_t, t) (B, *shape), computed in float64.

    Buffers only (saved in model.pt, so a run directory holds the mixture it was built for): alpha_bar (T,),
    log_weights (K,), means (K, D), variances (K,). Empty (K = 0) until `set_mixture`.
    """

    def __init__(self, alpha_bar: torch.Tensor, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("alpha_bar", alpha_bar.to(torch.float64).clone())
        self.register_buffer("log_weights", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("means", torch.zeros(0, dim, dtype=torch.float64))
        self.register_buffer("variances", torch.zeros(0, dtype=torch.float64))

    def set_mixture(self, mixture: GaussianMixture) -> None:
        like = {"dtype": torch.float64, "device": self.alpha_bar.device}
        self.log_weights = torch.as_tensor(np.log(mixture.weights), **like)
        self.means = torch.as_tensor(mixture.means, **like)
        self.variances = torch.as_tensor(mixture.stds, **like) ** 2

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.log_weights.numel() == 0:
            raise RuntimeError("the oracle holds no mixture yet: bind it to its data with bind_data(DataConfig)")
        x = x_t.reshape(x_t.shape[0], -1).to(torch.float64)  # (B, D)
        ab = self.alpha_bar[t.long().to(self.alpha_bar.device)].to(x.device)[:, None]  # (B, 1)
        var_t = ab * self.variances[None] + (1 - ab)  # (B, K): per-component variance of q(x_t)
        resid = x[:, None, :] - ab.sqrt()[:, :, None] * self.means[None]  # (B, K, D): x_t - sqrt(abar) m_k
        log_r = (self.log_weights[None] - 0.5 * self.dim * torch.log(2 * math.pi * var_t)
                 - 0.5 * (resid**2).sum(-1) / var_t)  # (B, K): log w_k N(x_t; sqrt(abar) m_k, var_t I)
        resp = torch.softmax(log_r, dim=1)  # posterior responsibilities p(k | x_t)
        # -grad log q(x_t) = sum_k p(k | x_t) (x_t - sqrt(abar) m_k) / var_k; eps* is sqrt(1 - abar) times it
        score = (resp[:, :, None] * resid / var_t[:, :, None]).sum(1)  # (B, D)
        return ((1 - ab).sqrt() * score).reshape(x_t.shape).to(x_t.dtype)


@dataclass(frozen=True, kw_only=True)
class OracleConfig(ModelConfig):
    """The exact eps of the run's data (data.name must be in GAUSSIAN_MIXTURES) under this noise schedule."""

    family: Literal["oracle"] = "oracle"
    noise: NoiseScheduleConfig = field(default_factory=NoiseScheduleConfig)

    def check_data(self, data: DataConfig) -> None:
        if data.name not in GAUSSIAN_MIXTURES:
            raise ConfigError(f"model.family 'oracle' needs a dataset whose exact denoiser is known (one of: "
                              f"{', '.join(GAUSSIAN_MIXTURES.names())}); data.name '{data.name}' is not a known "
                              "Gaussian mixture")


@MODELS.register("oracle", help="exact eps of a Gaussian-mixture toy (8gaussians), no training")
class Oracle(DDPM):
    """DDPM's sampling path (to_model_space, clipping, samplers) around the exact eps instead of a network."""

    config_cls = OracleConfig
    cfg: OracleConfig  # type: ignore[assignment]
    trainable = False  # exact: nothing to learn, no early checkpoint, nothing to quantize

    def build_net(self) -> torch.nn.Module:
        return MixtureEps(NoiseSchedule.from_config(self.cfg.noise).alpha_bar, math.prod(self.sample_shape))

    def bind_data(self, data: DataConfig) -> None:
        super().bind_data(data)
        self.cfg.check_data(data)
        mixture = GAUSSIAN_MIXTURES.get(data.name)()
        if self.kind != "toy" or mixture.means.shape[1] != self.net.dim:
            raise ConfigError(f"data '{data.name}' is a {mixture.means.shape[1]}-D mixture but the oracle was built "
                              f"for {self.kind} data of shape {self.sample_shape}")
        self.net.set_mixture(mixture)

    training_logs = {}  # it never trains, so it logs nothing

    def training_loss(self, x, step, total_steps, loss_cfg, generator):
        raise RuntimeError("the oracle is exact and has no weights to train; train() runs no steps for it")

    @property
    def device(self) -> torch.device:
        return self.net.alpha_bar.device
