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
from typing import Callable, Literal

import numpy as np
import torch

from genlib.data import DataConfig, from_symmetric, load_dataset, to_symmetric
from genlib.diffusion import NoiseSchedule, NoiseScheduleConfig
from genlib.losses import chain_mse_loss, ddpm_simple_loss
from genlib.config import ConfigError
from genlib.models.base import (MODELS, SAMPLERS, GenerativeModel, ModelConfig, PartSpec, PeerSampler, SampleConfig,
                                SamplerSpec)
from genlib.models.nets import TimeMLP, UNet
from genlib.perturb import perturb_denoiser
from genlib.samplers import (SamplerProgram, chain_program, clip_x0_for, ddim_plan, ddim_step, ddpm_plan,
                             ddpm_step, plan_program, start_from_data)


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


def _check_respaced(model_cfg: DiffusionConfig, cfg: SampleConfig) -> None:
    if cfg.steps is not None and cfg.steps > model_cfg.noise.T:
        raise ConfigError(f"steps={cfg.steps} exceeds the training steps model.noise.T={model_cfg.noise.T}")


def respaced_steps(model_cfg: DiffusionConfig, cfg: SampleConfig) -> int:
    """S, the respaced sampling steps of a diffusion sampler (eval.steps null means S = T)."""
    return cfg.steps or model_cfg.noise.T


def x_T_draw(model: "_DiffusionFamily", cfg: SampleConfig):
    """Where the reverse chain starts: N(0, I), or q(x_T | x0) from held-out data (`start: data`)."""
    if cfg.start == "data":
        return lambda n, generator: start_from_data(model.held_out_x0(), n, model.schedule, generator)
    return lambda n, generator: model.randn((n, *model.sample_shape), generator)


def diffusion_program(model: "_DiffusionFamily", cfg: SampleConfig, build: Callable[..., SamplerProgram]
                      ) -> SamplerProgram:
    """A sampler's program on this model: build(denoise, x_like, clip_x0=, draw_start=, finish=) with the
    network as denoise (perturbed as `cfg.perturb` says, genlib.perturb), x_like (1, *sample_shape) on its
    device, the x0 clip box of `cfg`, the start of `cfg` and the data-space finish (`plan_program` and
    `solver_program` take exactly these)."""
    like = torch.zeros((1, *model.sample_shape), device=model.device)
    denoise = perturb_denoiser(model.net, cfg.perturb, model.sample_shape)
    return build(denoise, like, clip_x0=clip_x0_for(model, cfg), draw_start=x_T_draw(model, cfg),
                 finish=model.to_data_space)


def diffusion_sampler(name: str, help: str, program, *, settings: tuple[str, ...], label=None, nfe=None,
                      peer=None) -> SamplerSpec:
    """Register a sampler over S respaced steps of a `ddpm`-family network (and the families derived from it,
    such as the exact `oracle`): S <= T is checked, `steps` is its step count, it calls the denoiser."""
    return SAMPLERS.register(name, help=help)(SamplerSpec(
        name=name, program=program,
        settings=settings + ("steps", "start", "clip_x0", "clip_low", "clip_high", "perturb"),
        check=_check_respaced, steps=respaced_steps, step_setting="steps", net_parts=("denoiser",),
        families=("ddpm",), label=label, nfe=nfe, peer=peer))


def _ddpm_program(model: "DDPM", cfg: SampleConfig) -> SamplerProgram:
    plan = ddpm_plan(model.schedule, respaced_steps(model.cfg, cfg), cfg.variance, device=model.device)
    return diffusion_program(model, cfg, lambda net, like, **kw: plan_program(plan, ddpm_step, net, like, **kw))


def _ddim_program(model: "DDPM", cfg: SampleConfig) -> SamplerProgram:
    plan = ddim_plan(model.schedule, respaced_steps(model.cfg, cfg), cfg.eta, device=model.device)
    return diffusion_program(model, cfg, lambda net, like, **kw: plan_program(plan, ddim_step, net, like, **kw))


def _check_chain(model_cfg: ChainConfig, cfg: SampleConfig) -> None:
    if cfg.steps is not None:
        raise ConfigError(f"the naive chain runs all T={model_cfg.noise.T} steps: sampler 'chain' does not use "
                          f"steps (it uses: no settings)")


def _chain_program(model: "DenoiserChain", cfg: SampleConfig) -> SamplerProgram:
    like = torch.zeros((1, *model.sample_shape), device=model.device)
    return chain_program(model.predict_prev, model.schedule.T, like, draw_start=x_T_draw(model, cfg),
                         finish=model.to_data_space)


def _diffusers_ddim(model: "DDPM", cfg: SampleConfig):
    """diffusers' DDIMScheduler as a diffusers user writes it: stateful, set_timesteps per generation, step()
    per t. It spaces steps by T // S where genlib rounds linspace(0, T-1, S), so the two differ in which t
    they visit (the backend records by how much); it clips x0 to a symmetric range only."""
    import numpy as np
    from diffusers import DDIMScheduler

    box = clip_x0_for(model, cfg)
    clip = box is not None and len(box[1]) == 1 and box[0][0] == -box[1][0]
    scheduler = DDIMScheduler(num_train_timesteps=model.schedule.T,
                              trained_betas=model.schedule.betas.numpy().astype(np.float64),
                              clip_sample=clip, clip_sample_range=box[1][0] if clip else 1.0, set_alpha_to_one=True,
                              prediction_type="epsilon", timestep_spacing="linspace")
    steps = respaced_steps(model.cfg, cfg)

    def call(x_T: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        scheduler.set_timesteps(steps, device=x_T.device)
        x = x_T
        for k, t in enumerate(scheduler.timesteps):
            eps = model.net(x, t.expand(x.shape[0]))
            z = noise[len(scheduler.timesteps) - 1 - k].to(x) if noise is not None else None
            x = scheduler.step(eps, t, x, eta=cfg.eta, variance_noise=z).prev_sample
        return x

    return call


diffusion_sampler("ddpm", "DDPM ancestral sampling over S respaced steps (Ho et al. 2020, Alg. 2)", _ddpm_program,
                  settings=("variance",), label=lambda cfg: f"ddpm {cfg.variance}")
diffusion_sampler("ddim", "DDIM over S respaced steps with stochasticity eta (Song et al. 2021, eq. 12)",
                  _ddim_program, settings=("eta",), label=lambda cfg: f"ddim eta={cfg.eta}",
                  peer=PeerSampler(library="diffusers", install="pip install 'diffusers>=0.30'", build=_diffusers_ddim,
                                   note="diffusers spaces DDIM steps by T // S, genlib by rounding linspace(0, T-1, S)"))
SAMPLERS.register("chain", help="the naive repeated-denoiser chain: x_{t-1} = f(x_t, t), no noise injected")(
    SamplerSpec(name="chain", program=_chain_program, check=_check_chain,
                steps=lambda model_cfg, cfg: model_cfg.noise.T, net_parts=("chain",)))


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


def _time_net_calibration(model: "_DiffusionFamily", n: int, generator: torch.Generator, x_train) -> dict[str, torch.Tensor]:
    """n inputs as sampling presents them: x_t ~ q(x_t | x0) (eq. 4) with x0 from the training split and t
    uniform over all T timesteps, so activation ranges cover every t (not one)."""
    x = torch.tensor(np.array(x_train, dtype=np.float32))
    x0 = model.to_model_space(x[torch.randint(0, x.shape[0], (n,), generator=generator)])
    t = torch.randint(0, model.schedule.T, (n,), generator=generator)
    return {"x_t": model.schedule.q_sample(x0, t, torch.randn(x0.shape, generator=generator)), "t": t}


def _time_net_part(help: str, output: str) -> PartSpec:
    return PartSpec(help=help, build=lambda model: _TimeNetPart(model.net), inputs=("x_t", "t"), outputs=(output,),
                    feeds=_time_net_feeds, details=lambda model: {"T": model.schedule.T},
                    calibration=_time_net_calibration,
                    calibration_source="x_t ~ q(x_t | x0), x0 from the training split, t uniform over 0..T-1")


@MODELS.register("ddpm", help="DDPM eps-prediction (mlp | unet), linear/cosine noise")
class DDPM(_DiffusionFamily):
    config_cls = DDPMConfig
    samplers = ("ddpm", "ddim")
    export_sampler = "ddim"  # the usual deployment choice
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
