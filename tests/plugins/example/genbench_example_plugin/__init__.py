"""An example genbench plugin: importing it registers one of each kind of entry genbench looks up by name.

- model family and sampler `blob_gauss`: one Gaussian with a learned mean and diagonal scale (maximum
  likelihood), sampled as x = mu + scale * z, exporting one part (`decoder`, z (B, 2) -> x (B, 2));
- dataset `blob`: a 2-D Gaussian with mean BLOB_MEAN and standard deviations BLOB_STD;
- metric `mean_shift`: the Euclidean distance between the sample mean and the reference mean.
Its timing backend lives in `genbench_example_plugin.timing`, loaded only where it is used
(`genbench bench ... --plugin genbench_example_plugin.timing`), so commands that time nothing do not pay
for importing ONNX Runtime. It imports only genbench's public registries and contracts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn as nn

from genlib.data import DATASETS, DataConfig, Dataset
from genlib.metrics.base import register_metric
from genlib.models import MODELS, SAMPLERS, GenerativeModel, ModelConfig, PartSpec, SampleConfig, SamplerSpec

FAMILY = "blob_gauss"
BLOB_MEAN = (1.0, -2.0)
BLOB_STD = (0.5, 0.25)


# ------------------------------------------------------------------------------------------ dataset
def _load_blob(cfg: DataConfig) -> Dataset:
    """A 2-D Gaussian blob: mean (1, -2), standard deviations (0.5, 0.25)."""

    def draw(n: int, stream: tuple[int, ...]) -> np.ndarray:
        z = np.random.default_rng([cfg.seed, *stream]).standard_normal((n, 2))
        return (np.asarray(BLOB_MEAN) + np.asarray(BLOB_STD) * z).astype(np.float32)  # (n, 2)

    # separate streams for training, test and held-out draws, as genbench's own toys
    return Dataset(name="blob", kind="toy", x_train=draw(cfg.n_train, (0,)), x_test=draw(cfg.n_test, (1,)),
                   _draw=lambda n, seed: draw(n, (2, seed)))


DATASETS.register("blob")(_load_blob)


# ------------------------------------------------------------------------------------------- family
class GaussNet(nn.Module):
    """x = mu + exp(log_scale) * z for z (B, D) ~ N(0, I): the whole network is two vectors (D,)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.mu + self.log_scale.exp() * z


@dataclass(frozen=True, kw_only=True)
class BlobGaussConfig(ModelConfig):
    family: Literal["blob_gauss"] = FAMILY


def sample_blob_gauss(model: "BlobGauss", n: int, cfg: SampleConfig, generator: torch.Generator) -> torch.Tensor:
    z = model.randn((n, model.dim), generator)  # (n, D)
    return model.net(z).reshape(n, *model.sample_shape)


SAMPLERS.register(FAMILY, help="x = mu + scale * z, z ~ N(0, I)")(
    SamplerSpec(name=FAMILY, run=sample_blob_gauss, net_parts=("decoder",)))


@MODELS.register(FAMILY, help="one Gaussian, learned mean and diagonal scale")
class BlobGauss(GenerativeModel):
    config_cls = BlobGaussConfig
    samplers = (FAMILY,)
    parts = {"decoder": PartSpec(help="z (B, D) -> x = mu + scale * z", build=lambda model: model.net,
                                 inputs=("z",), outputs=("x",),
                                 feeds=lambda model, b, generator, held_out: {
                                     "z": torch.randn((b, model.dim), generator=generator)})}

    @property
    def dim(self) -> int:
        return int(np.prod(self.sample_shape))

    def build_net(self) -> GaussNet:
        return GaussNet(self.dim)

    def training_loss(self, x, step, total_steps, loss_cfg, generator):
        x = x.reshape(x.shape[0], -1)  # (B, D)
        # Gaussian negative log-likelihood per sample (nats), up to the constant D/2 log(2 pi)
        nll = (self.net.log_scale + 0.5 * ((x - self.net.mu) / self.net.log_scale.exp()) ** 2).sum(1).mean()
        return nll, {"loss": nll.item()}


# ------------------------------------------------------------------------------------------- metric
@register_metric("mean_shift", unit="data units", higher_is_better=False, kinds=("toy",))
def mean_shift(ctx):
    """Euclidean distance between the sample mean and the reference mean."""
    ctx.require_min("mean_shift", min(len(ctx.samples), len(ctx.reference)))
    shift = np.linalg.norm(ctx.samples.mean(0) - ctx.reference.mean(0))
    return float(shift), ctx.sample_extra()
