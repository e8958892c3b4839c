"""`ddpm` and `denoiser_chain`: two families that share a timestep-conditioned network and a noise process.

`ddpm` predicts eps and is trained with L_simple (Ho et al. 2020); it samples with Gaussian reverse
steps built from the posterior q(x_{t-1} | x_t, x0) and fresh noise each step (or DDIM). The naive
`denoiser_chain` regresses x_{t-1} from x_t with MSE and samples with no noise injected, so its
samples are conditional means of conditional means: the blur the lecture shows. Both use
`genlib.diffusion` for every schedule quantity; images are mapped to [-1, 1]. DDPM and DDIM start from
x_T ~ N(0, I), or (`start: data`) from q(x_T | x0) with x0 from the test split of the data the model was
bound to (`bind_data`, called by train and load_run), loaded once on first use.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from genlib.data import DataConfig, from_symmetric, load_dataset, to_symmetric
from genlib.diffusion import NoiseSchedule, NoiseScheduleConfig
from genlib.losses import chain_mse_loss, ddpm_simple_loss
from genlib.config import ConfigError
from genlib.models.base import MODELS, SAMPLERS, GenerativeModel, ModelConfig, PartSpec, SampleConfig, SamplerSpec
from genlib.models.nets import TimeMLP, UNet
from genlib.samplers import (chain_step, clip_x0_for, ddim_step, ddpm_step, sample_chain, sample_ddim, sample_ddpm,
                             start_from_data)


@dataclass(frozen=True, kw_only=True)
class DiffusionConfig(ModelConfig):
    """Shared by `ddpm` and `denoiser_chain` so the two can be compared with the same network and T."""

    family: str
    # mlp on flattened samples (2-D toys, small images) or a small conv U-Net (images only).
    arch: Literal["mlp", "unet"] = "mlp"
    hidden: tuple[int, ...] = (256, 256, 256)
    channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2)
    time_dim: int = 64
    noise: NoiseScheduleConfig = field(default_factory=NoiseScheduleConfig)

    def __post_init__(self) -> None:
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden must be a non-empty list of positive widths, got {self.hidden}")
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError(f"channel_mult must be a non-empty list of positive ints, got {self.channel_mult}")


@dataclass(frozen=True, kw_only=True)
class DDPMConfig(DiffusionConfig):
    family: Literal["ddpm"] = "ddpm"


@dataclass(frozen=True, kw_only=True)
class ChainConfig(DiffusionConfig):
    family: Literal["denoiser_chain"] = "denoiser_chain"
    # What the network outputs. `step_eps`: the noise of the last forward step, so
    # x_{t-1} = (x_t - sqrt(beta_t) f) / sqrt(alpha_t); `direct`: x_{t-1} itself. Both minimise the MSE of
    # x_{t-1} at each t (step_eps reweights it per t by alpha_t / beta_t), so both learn E[x_{t-1} | x_t];
    # direct is the literal naive method; step_eps keeps the output at unit scale.
    parameterization: Literal["direct", "step_eps"] = "direct"


class _DiffusionFamily(GenerativeModel):
    cfg: DiffusionConfig

    def __init__(self, cfg: DiffusionConfig, sample_shape: tuple[int, ...], kind: str) -> None:
        super().__init__(cfg, sample_shape, kind)
        self.schedule = NoiseSchedule.from_config(cfg.noise)
        self.data_cfg: DataConfig | None = None
        self._x_test: torch.Tensor | None = None

    def bind_data(self, data: DataConfig) -> None:
        """Remember the run's data: `start: data` draws x0 from its test split."""
        self.data_cfg, self._x_test = data, None

    def held_out_x0(self) -> torch.Tensor:
        """The test split of the bound data in model space, (N, *sample_shape) on the model's device."""
        if self.data_cfg is None:
            raise ConfigError("start: data needs the model's data: load the run with load_run (or train it), "
                              "which binds it (bind_data)")
        if self._x_test is None:
            x = torch.tensor(np.asarray(load_dataset(self.data_cfg).x_test), dtype=torch.float32)
            self._x_test = self.to_model_space(x)
        return self._x_test.to(self.device)

    def build_net(self) -> torch.nn.Module:
        if self.cfg.arch == "unet":
            if self.kind != "image" or len(self.sample_shape) != 3:
                raise ValueError(f"arch 'unet' needs image data (C, H, W), got sample shape {self.sample_shape}; use 'mlp'")
            return UNet(self.sample_shape, self.cfg.channels, self.cfg.channel_mult, self.cfg.time_dim)
        return TimeMLP(self.sample_shape, self.cfg.hidden, self.cfg.time_dim)

    def to_model_space(self, x: torch.Tensor) -> torch.Tensor:
        return to_symmetric(x) if self.kind == "image" else x

    def to_data_space(self, x: torch.Tensor) -> torch.Tensor:
        return from_symmetric(x).clamp(0, 1) if self.kind == "image" else x

    def draw_timesteps(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, self.schedule.T, (n,), generator=generator).to(self.device)


def _clip(model: "_DiffusionFamily", cfg: SampleConfig):
    """The x0 clip box (low, high) or None, by the one clip rule (genlib.samplers.clip_x0_for)."""
    return clip_x0_for(model, cfg)


def _check_respaced(model_cfg: DiffusionConfig, cfg: SampleConfig) -> None:
    if cfg.steps is not None and cfg.steps > model_cfg.noise.T:
        raise ConfigError(f"steps={cfg.steps} exceeds the training steps model.noise.T={model_cfg.noise.T}")


def _respaced_steps(model_cfg: DiffusionConfig, cfg: SampleConfig) -> int:
    return cfg.steps or model_cfg.noise.T


def _x_T(model: "DDPM", n: int, cfg: SampleConfig, generator: torch.Generator) -> torch.Tensor:
    """Where the reverse chain starts: N(0, I), or q(x_T | x0) from held-out data (`start: data`)."""
    if cfg.start == "data":
        return start_from_data(model.held_out_x0(), n, model.schedule, generator)
    return model.randn((n, *model.sample_shape), generator)


def _run_ddpm(model: "DDPM", n: int, cfg: SampleConfig, generator: torch.Generator) -> torch.Tensor:
    x_T = _x_T(model, n, cfg, generator)
    x0 = sample_ddpm(model.net, x_T, model.schedule, cfg.steps, variance=cfg.variance, clip_x0=_clip(model, cfg),
                     generator=generator)
    return model.to_data_space(x0)


def _run_ddim(model: "DDPM", n: int, cfg: SampleConfig, generator: torch.Generator) -> torch.Tensor:
    x_T = _x_T(model, n, cfg, generator)
    x0 = sample_ddim(model.net, x_T, model.schedule, cfg.steps, eta=cfg.eta, clip_x0=_clip(model, cfg),
                     generator=generator)
    return model.to_data_space(x0)


def _check_chain(model_cfg: ChainConfig, cfg: SampleConfig) -> None:
    if cfg.steps is not None:
        raise ConfigError(f"the naive chain runs all T={model_cfg.noise.T} steps: sampler 'chain' does not use "
                          f"steps (it uses: no settings)")


def _run_chain(model: "DenoiserChain", n: int, cfg: SampleConfig, generator: torch.Generator) -> torch.Tensor:
    x_T = model.randn((n, *model.sample_shape), generator)
    return model.to_data_space(sample_chain(model.predict_prev, x_T, model.schedule.T))


SAMPLERS.register("ddpm", help="DDPM ancestral sampling over S respaced steps (Ho et al. 2020, Alg. 2)")(SamplerSpec(
    name="ddpm", run=_run_ddpm, settings=("steps", "variance", "start", "clip_x0", "clip_low", "clip_high"),
    check=_check_respaced,
    steps=_respaced_steps, net_parts=("denoiser",), step=ddpm_step))
SAMPLERS.register("ddim", help="DDIM over S respaced steps with stochasticity eta (Song et al. 2021, eq. 12)")(
    SamplerSpec(name="ddim", run=_run_ddim, settings=("steps", "eta", "start", "clip_x0", "clip_low", "clip_high"),
                check=_check_respaced,
                steps=_respaced_steps, net_parts=("denoiser",), step=ddim_step))
SAMPLERS.register("chain", help="the naive repeated-denoiser chain: x_{t-1} = f(x_t, t), no noise injected")(
    SamplerSpec(name="chain", run=_run_chain, check=_check_chain, steps=lambda model_cfg, cfg: model_cfg.noise.T,
                net_parts=("chain",), step=chain_step))


class _TimeNetPart(torch.nn.Module):
    """(x_t (B, *shape), t (B,) int64) -> the network's output (eps for ddpm, x_{t-1} for the chain)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x_t, t)


def _time_net_feeds(model: "_DiffusionFamily", b: int, generator: torch.Generator, held_out) -> dict[str, torch.Tensor]:
    return {"x_t": torch.randn((b, *model.sample_shape), generator=generator),
            "t": torch.randint(0, model.schedule.T, (b,), generator=generator)}


def _time_net_part(help: str, output: str) -> PartSpec:
    return PartSpec(help=help, build=lambda model: _TimeNetPart(model.net), inputs=("x_t", "t"), outputs=(output,),
                    feeds=_time_net_feeds, details=lambda model: {"T": model.schedule.T})


@MODELS.register("ddpm", help="DDPM eps-prediction (mlp | unet), linear/cosine noise; samplers ddpm, ddim")
class DDPM(_DiffusionFamily):
    config_cls = DDPMConfig
    samplers = ("ddpm", "ddim")
    parts = {"denoiser": _time_net_part("(x_t (B, *shape), t (B,) int64) -> eps (ddpm)", "eps")}

    def training_loss(self, x, step, total_steps, loss_cfg, generator):
        t = self.draw_timesteps(x.shape[0], generator)
        eps = self.randn(tuple(x.shape), generator)
        loss = ddpm_simple_loss(self.net(self.schedule.q_sample(x, t, eps), t), eps)
        return loss, {"loss": loss.item()}


@MODELS.register("denoiser_chain", help="naive chain: denoisers regress x_{t-1} from x_t, sampled without noise")
class DenoiserChain(_DiffusionFamily):
    config_cls = ChainConfig
    samplers = ("chain",)
    parts = {"chain": _time_net_part("(x_t, t) -> x_{t-1}: the naive chain's denoiser (denoiser_chain)", "x_prev")}

    cfg: ChainConfig

    def training_loss(self, x, step, total_steps, loss_cfg, generator):
        t = self.draw_timesteps(x.shape[0], generator)
        eps_step = self.randn(tuple(x.shape), generator)
        x_prev, x_t = self.schedule.chain_pair(x, t, self.randn(tuple(x.shape), generator), eps_step)
        out = self.net(x_t, t)
        if self.cfg.parameterization == "direct":
            loss = chain_mse_loss(out, x_prev)
        else:  # the x_{t-1} MSE reweighted per t by alpha_t / beta_t: the same minimiser at every t
            loss = chain_mse_loss(out, eps_step)
        return loss, {"loss": loss.item()}

    def predict_prev(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The learned conditional mean E[x_{t-1} | x_t] (B, *shape)."""
        out = self.net(x_t, t)
        return out if self.cfg.parameterization == "direct" else self.schedule.chain_prev_from_step_eps(x_t, t, out)
