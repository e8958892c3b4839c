"""The model-family contract and registry: config discriminated by `family`, one class per family.

A `GenerativeModel` pairs a network (`.net`, an nn.Module that knows nothing of losses or schedules)
with its family's config and glue: which loss from `genlib.losses` trains it, which sampler from
`genlib.samplers` generates from it, and how data maps into model space (diffusion uses [-1, 1]).
Adding a family means one new file in this package that registers a subclass with `MODELS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from genlib.config import ConfigError
from genlib.registry import Registry, UnknownNameError

MODELS: Registry[type["GenerativeModel"]] = Registry("model family")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Base of every family's config; `family` picks the subclass when a config is read."""

    family: str

    @classmethod
    def resolve_variant(cls, data: dict, path: str) -> type["ModelConfig"]:
        if cls is not ModelConfig:
            return cls
        key = f"{path}.family" if path else "family"
        if "family" not in data:
            raise ConfigError(f"missing required key '{key}' (one of: {', '.join(MODELS.names())})")
        try:
            return MODELS.get(str(data["family"])).config_cls
        except UnknownNameError as exc:
            raise ConfigError(f"'{key}': {exc}") from None


@dataclass(frozen=True, kw_only=True)
class SampleConfig:
    """How to generate from a trained model. Fields a family does not use must stay at their defaults."""

    # auto = the family's default: ae -> ae, vae -> vae, denoiser_chain -> chain, ddpm -> ddpm.
    sampler: Literal["auto", "ae", "vae", "chain", "ddpm", "ddim"] = "auto"
    # diffusion: S respaced sampling steps (None = T); DDIM stochasticity; DDPM reverse variance.
    steps: int | None = None
    eta: float = 0.0
    variance: Literal["small", "large"] = "small"
    # diffusion on images: clip the predicted x0 to the data range [-1, 1] at each step.
    clip_x0: bool = True
    # vae: refinement passes (decode, re-encode, decode) and how the re-encoding is used.
    passes: int = 0
    reencode: Literal["mean", "sample"] = "mean"
    # ae: decode z ~ N(0, I) (`standard`) or z from a Gaussian fitted to the training codes.
    prior: Literal["standard", "fitted"] = "standard"

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")
        if self.passes < 0:
            raise ValueError(f"passes must be >= 0, got {self.passes}")


# The SampleConfig fields each sampler reads; any other field set away from its default is an error.
SAMPLER_SETTINGS: dict[str, tuple[str, ...]] = {
    "ae": ("prior",),
    "vae": ("passes", "reencode"),
    "chain": (),
    "ddpm": ("steps", "variance", "clip_x0"),
    "ddim": ("steps", "eta", "clip_x0"),
}
_ALL_SETTINGS = ("steps", "eta", "variance", "clip_x0", "passes", "reencode", "prior")


class GenerativeModel:
    """A family's network plus the glue that trains and samples it. Subclasses register with MODELS."""

    config_cls: ClassVar[type[ModelConfig]]
    samplers: ClassVar[tuple[str, ...]]

    def __init__(self, cfg: ModelConfig, sample_shape: tuple[int, ...], kind: str) -> None:
        self.cfg = cfg
        self.sample_shape = tuple(sample_shape)
        self.kind = kind  # "image" or "toy"
        self.net = self.build_net()

    # -- to implement ------------------------------------------------------------------------------
    def build_net(self) -> torch.nn.Module:
        raise NotImplementedError

    def training_loss(self, x: torch.Tensor, step: int, total_steps: int, loss_cfg: Any,
                      generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss on a model-space batch x (B, *shape); returns (scalar loss, logged floats)."""
        raise NotImplementedError

    def generate(self, n: int, cfg: SampleConfig, generator: torch.Generator) -> torch.Tensor:
        """n samples in data space ([0, 1] for images), shape (n, *sample_shape)."""
        raise NotImplementedError

    # -- shared behaviour --------------------------------------------------------------------------
    def to_model_space(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def to_data_space(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def finish_training(self, x_train: torch.Tensor) -> None:
        """Hook after the last step, given the model-space training set (the AE fits its code Gaussian)."""

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: torch.device | str) -> "GenerativeModel":
        self.net.to(device)
        return self

    def randn(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """Standard normal noise drawn on the CPU generator (reproducible across devices), moved to the net's device."""
        return torch.randn(shape, generator=generator).to(self.device)

    def resolve_sampler(self, cfg: SampleConfig) -> str:
        """The sampler to run; settings that the sampler would silently ignore are errors."""
        name = self.samplers[0] if cfg.sampler == "auto" else cfg.sampler
        if name not in self.samplers:
            raise ConfigError(f"sampler '{name}' does not apply to model family '{self.cfg.family}' "
                              f"(use one of: {', '.join(self.samplers)})")
        default = SampleConfig()
        ignored = [f for f in _ALL_SETTINGS if f not in SAMPLER_SETTINGS[name] and getattr(cfg, f) != getattr(default, f)]
        if ignored:
            raise ConfigError(f"sampler '{name}' does not use {', '.join(ignored)} "
                              f"(it uses: {', '.join(SAMPLER_SETTINGS[name]) or 'no settings'})")
        return name


def build_model(cfg: ModelConfig, sample_shape: tuple[int, ...], kind: str) -> GenerativeModel:
    return MODELS.get(cfg.family)(cfg, sample_shape, kind)
