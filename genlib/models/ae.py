"""`ae`: the plain autoencoder, trained on reconstruction MSE only.

It has no prior over codes, so decoding z ~ N(0, I) lands off the data manifold: the lecture's first
claim. As the fair alternative it can also decode from a Gaussian fitted to its training codes,
kept as buffers of the network so the checkpoint carries them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn as nn

from genlib.losses import reconstruction_mse
from genlib.models.base import MODELS, SAMPLERS, GenerativeModel, ModelConfig, PartSpec, SampleConfig, SamplerSpec
from genlib.models.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from genlib.records import MetricDef
from genlib.samplers import fit_gaussian, sample_ae


@dataclass(frozen=True, kw_only=True)
class AEConfig(ModelConfig):
    family: Literal["ae"] = "ae"
    arch: Literal["mlp", "conv"] = "mlp"
    latent_dim: int = 8
    hidden: tuple[int, ...] = (256, 128)  # mlp widths, encoder order (the decoder mirrors them)
    channels: int = 32  # conv width

    def __post_init__(self) -> None:
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden must be a non-empty list of positive widths, got {self.hidden}")


def build_coder(arch: str, sample_shape: tuple[int, ...], kind: str, hidden: tuple[int, ...], channels: int,
                latent_dim: int) -> tuple[nn.Module, int, nn.Module]:
    """(encoder body, its feature width, decoder) for `mlp` or `conv` (conv needs images)."""
    if arch == "conv":
        if kind != "image" or len(sample_shape) != 3:
            raise ValueError(f"arch 'conv' needs image data (C, H, W), got sample shape {sample_shape}; use 'mlp'")
        feat = hidden[-1]
        return ConvEncoder(sample_shape, channels, feat), feat, ConvDecoder(sample_shape, channels, latent_dim)
    return MLPEncoder(sample_shape, hidden), hidden[-1], MLPDecoder(sample_shape, hidden, latent_dim)


class AENet(nn.Module):
    def __init__(self, cfg: AEConfig, sample_shape: tuple[int, ...], kind: str) -> None:
        super().__init__()
        self.body, feat, self.decoder = build_coder(cfg.arch, sample_shape, kind, cfg.hidden, cfg.channels, cfg.latent_dim)
        self.head = nn.Linear(feat, cfg.latent_dim)
        self.squash = kind == "image"  # images live in [0, 1]
        self.register_buffer("code_mean", torch.zeros(cfg.latent_dim))
        self.register_buffer("code_chol", torch.eye(cfg.latent_dim))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        out = self.decoder(z)
        return torch.sigmoid(out) if self.squash else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def _run_ae(model: "AutoEncoder", n: int, cfg: SampleConfig, generator: torch.Generator) -> torch.Tensor:
    eps = model.randn((n, model.cfg.latent_dim), generator)
    fitted = (model.net.code_mean, model.net.code_chol) if cfg.prior == "fitted" else None
    return sample_ae(model.net.decode, eps, fitted)


SAMPLERS.register("ae", help="plain AE: decode z ~ N(0, I), or z from a Gaussian fitted to training codes")(
    SamplerSpec(name="ae", run=_run_ae, settings=("prior",), net_parts=("decoder",)))


class _MethodPart(nn.Module):
    """One method of a network as a module's forward, so the export sees exactly that function."""

    def __init__(self, net: nn.Module, method: str) -> None:
        super().__init__()
        self.net = net
        self.method = method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.net, self.method)(x)


def encoder_feeds(model: GenerativeModel, b: int, generator: torch.Generator, held_out) -> dict[str, torch.Tensor]:
    """b held-out data points (drawn with replacement), or uniform / normal noise when no data is at hand."""
    x = held_out()
    if x is not None and len(x) > 0:
        idx = torch.randint(0, len(x), (b,), generator=generator)
        return {"x": torch.from_numpy(np.array(x[idx.numpy()])).reshape(b, *model.sample_shape)}
    shape = (b, *model.sample_shape)
    return {"x": torch.rand(shape, generator=generator) if model.kind == "image"
            else torch.randn(shape, generator=generator)}


decoder_part = PartSpec(help="z (B, k) -> x (B, *shape) in data space (ae, vae)",
                        build=lambda model: _MethodPart(model.net, "decode"), inputs=("z",), outputs=("x",),
                        feeds=lambda model, b, generator, held_out: {
                            "z": torch.randn((b, model.cfg.latent_dim), generator=generator)},
                        calibration_source="z ~ N(0, I), the prior")


@MODELS.register("ae", help="plain autoencoder (mlp | conv); no prior, so N(0, I) codes decode off-distribution")
class AutoEncoder(GenerativeModel):
    config_cls = AEConfig
    samplers = ("ae",)
    provides = ("reconstruction",)
    parts = {"decoder": decoder_part,
             "encoder": PartSpec(help="x (B, *shape) -> z (B, k) (ae)", build=lambda model: _MethodPart(model.net, "encode"),
                                 inputs=("x",), outputs=("z",), feeds=encoder_feeds)}
    cfg: AEConfig

    def build_net(self) -> AENet:
        return AENet(self.cfg, self.sample_shape, self.kind)

    training_logs = {"loss": MetricDef("", False), "recon_mse": MetricDef("", False)}

    def training_loss(self, x, step, total_steps, loss_cfg, generator):
        loss = reconstruction_mse(x, self.net(x))
        return loss, {"loss": loss.item(), "recon_mse": loss.item()}

    @torch.no_grad()
    def finish_training(self, x_train: torch.Tensor) -> None:
        codes = torch.cat([self.net.encode(b) for b in x_train.split(1024)]).double()
        mean, chol = fit_gaussian(codes)
        self.net.code_mean.copy_(mean.float())
        self.net.code_chol.copy_(chol.float())
