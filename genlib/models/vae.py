"""`vae`: Gaussian-encoder VAE (Kingma & Welling 2014) with diagonal or full covariance.

The encoder outputs mu and a square root of Sigma: a positive std vector (diagonal) or a
lower-triangular L with a positive diagonal (full, Sigma = L L^T); z = mu + Sigma^(1/2) eps. The
decoder gives Bernoulli logits or a Gaussian mean. The beta-weighted ELBO and its KL-weight schedule
come from `genlib.losses` and `genlib.kl_schedules`; refinement sampling from `genlib.samplers`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from genlib.kl_schedules import kl_weight
from genlib.losses import decoded_mean, kl_standard_normal, negative_elbo, reconstruction_nll, reparameterize
from genlib.models.ae import build_coder, decoder_part, encoder_feeds
from genlib.models.base import MODELS, SAMPLERS, GenerativeModel, ModelConfig, PartSpec, SampleConfig, SamplerSpec
from genlib.records import MetricDef
from genlib.samplers import SamplerProgram, vae_program

MIN_SCALE = 1e-4  # keeps log det Sigma finite


@dataclass(frozen=True, kw_only=True)
class VAEConfig(ModelConfig):
    family: Literal["vae"] = "vae"
    arch: Literal["mlp", "conv"] = "mlp"
    latent_dim: int = 8
    hidden: tuple[int, ...] = (256, 128)
    channels: int = 32
    covariance: Literal["diagonal", "full"] = "diagonal"
    # bernoulli needs data in [0, 1] (images); gaussian uses a fixed observation std obs_sigma.
    likelihood: Literal["bernoulli", "gaussian"] = "bernoulli"
    obs_sigma: float = 0.1

    def __post_init__(self) -> None:
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden must be a non-empty list of positive widths, got {self.hidden}")
        if self.obs_sigma <= 0:
            raise ValueError(f"obs_sigma must be > 0, got {self.obs_sigma}")


class VAENet(nn.Module):
    def __init__(self, cfg: VAEConfig, sample_shape: tuple[int, ...], kind: str) -> None:
        super().__init__()
        k = cfg.latent_dim
        self.full = cfg.covariance == "full"
        self.likelihood = cfg.likelihood
        self.body, feat, self.decoder = build_coder(cfg.arch, sample_shape, kind, cfg.hidden, cfg.channels, k)
        self.mu_head = nn.Linear(feat, k)
        rows, cols = torch.tril_indices(k, k)
        self.scale_head = nn.Linear(feat, len(rows) if self.full else k)
        if self.full:
            # A constant one-hot map from the k(k+1)/2 packed entries to the k*k matrix: plain matmul,
            # so the encoder exports to ONNX without scatter ops.
            place = torch.zeros(len(rows), k * k)
            place[torch.arange(len(rows)), rows * k + cols] = 1.0
            self.register_buffer("tril_place", place, persistent=False)
            self.register_buffer("tril_is_diag", (rows == cols).float(), persistent=False)
        self.k = k

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, *shape) -> (mu (B, k), scale): std (B, k) or lower-triangular L (B, k, k)."""
        h = self.body(x)
        raw = self.scale_head(h)
        if not self.full:
            return self.mu_head(h), F.softplus(raw) + MIN_SCALE
        packed = torch.where(self.tril_is_diag > 0, F.softplus(raw) + MIN_SCALE, raw)
        return self.mu_head(h), (packed @ self.tril_place).reshape(-1, self.k, self.k)

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, k) -> logits (bernoulli) or mean (gaussian), (B, *shape)."""
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, k) -> E[x | z] in data space."""
        return decoded_mean(self.decoder(z), self.likelihood)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0])


def _vae_program(model: "VAE", cfg: SampleConfig) -> SamplerProgram:
    """Prior draws z (n, k) ~ N(0, I) refined `passes` times; every decode is `decode_data` (clamped where the
    family clamps), in torch and in the exported graph alike."""
    like = torch.zeros((1, model.cfg.latent_dim), device=model.device)
    return vae_program(model.decode_data, model.net.encode, like, cfg.passes, cfg.reencode,
                       draw_start=lambda n, generator: model.randn((n, model.cfg.latent_dim), generator))


SAMPLERS.register("vae", help="VAE prior samples with k refinement passes (decode, re-encode, decode)")(SamplerSpec(
    name="vae", program=_vae_program, settings=("passes", "reencode"), steps=lambda model_cfg, cfg: cfg.passes,
    step_setting="passes", nfe=lambda model_cfg, cfg: 2 * cfg.passes + 1, net_parts=("decoder", "encoder")))


class _PartsNet:
    """The VAE network's encode/decode served by other implementations of its parts (ONNX Runtime sessions)."""

    def __init__(self, decode: Callable, encode: Callable | None) -> None:
        self.decode, self._encode = decode, encode

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._encode is None:
            raise ValueError("refinement passes need the encoder part")
        return self._encode(x)


class _GaussianEncoderPart(nn.Module):
    """x (B, *shape) -> (mu (B, k), L (B, k, k)); a diagonal std becomes diag(std)."""

    def __init__(self, net: VAENet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, scale = self.net.encode(x)
        return mu, (scale if scale.ndim == 3 else torch.diag_embed(scale))


@MODELS.register("vae", help="Gaussian VAE, covariance diagonal | full, Bernoulli or Gaussian decoder")
class VAE(GenerativeModel):
    config_cls = VAEConfig
    samplers = ("vae",)
    reads_loss_config = True
    provides = ("reconstruction", "posterior")
    parts = {"decoder": decoder_part,
             "encoder": PartSpec(help="x (B, *shape) -> mu (B, k), L (B, k, k) (vae)",
                                 build=lambda model: _GaussianEncoderPart(model.net), inputs=("x",),
                                 outputs=("mu", "L"), feeds=encoder_feeds)}
    cfg: VAEConfig

    def build_net(self) -> VAENet:
        if self.cfg.likelihood == "bernoulli" and self.kind != "image":
            raise ValueError("model.likelihood 'bernoulli' needs data in [0, 1] (images); use 'gaussian' for 2-D toys")
        return VAENet(self.cfg, self.sample_shape, self.kind)

    def with_parts(self, parts: dict[str, Callable]) -> "VAE":
        """A copy whose decode/encode are the given 'decoder' ((B, k) -> x) and 'encoder' ((B, *shape) ->
        (mu, L)) implementations; a full L serves as the scale (vae_pass reparameterises with it)."""
        other = copy.copy(self)
        other.net = _PartsNet(parts["decoder"], parts.get("encoder"))
        return other

    def decode_data(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, k) -> E[x | z]; a Gaussian mean on images is clamped to the data range [0, 1] (samples, and what
        refinement re-encodes, stay in range)."""
        x = self.net.decode(z)
        return x.clamp(0, 1) if (self.kind == "image" and self.cfg.likelihood == "gaussian") else x

    def elbo_terms(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(recon_nll (B,), kl (B,), z (B, k)) for one reparameterised draw per image."""
        mu, scale = self.net.encode(x)
        z = reparameterize(mu, scale, eps)
        rec = reconstruction_nll(x, self.net.decode_raw(z), self.cfg.likelihood, self.cfg.obs_sigma)
        return rec, kl_standard_normal(mu, scale), z

    training_logs = {"loss": MetricDef("", False), "recon_nll": MetricDef("nats", False),
                     "kl": MetricDef("nats", None), "beta_t": MetricDef("", None), "neg_elbo": MetricDef("nats", False)}

    def training_loss(self, x, step, total_steps, loss_cfg, generator):
        rec, kl, _ = self.elbo_terms(x, self.randn((x.shape[0], self.cfg.latent_dim), generator))
        beta_t = kl_weight(loss_cfg.kl_schedule, loss_cfg.beta, step, total_steps)
        loss = negative_elbo(rec, kl, beta_t)
        return loss, {"loss": loss.item(), "recon_nll": rec.mean().item(), "kl": kl.mean().item(),
                      "beta_t": beta_t, "neg_elbo": (rec + kl).mean().item()}
