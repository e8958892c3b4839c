"""Controlled denoiser errors (genlib.perturb): their closed forms, the SampleConfig field and its checks, and the
exact oracle made measurably worse by a known error, through the same sampler programs every backend runs."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from genlib.config import ConfigError, to_dict
from genlib.data import load_dataset
from genlib.metrics.toy import sliced_wasserstein
from genlib.models import SampleConfig
from genlib.models.base import resolve_sampler
from genlib.models.vae import VAEConfig
from genlib.perturb import PerturbedDenoiser, Perturbation, parse_perturb, perturb_denoiser
from genlib.train import generate, load_run_config, train

pytestmark = pytest.mark.usefixtures("single_thread")


def _net(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.sin(x_t) + 0.01 * t[:, None]


def test_parse_and_refuse():
    assert parse_perturb("none") == Perturbation() and parse_perturb("scale:0.1") == Perturbation("scale", 0.1)
    assert parse_perturb("bias:-0.05").size == -0.05 and parse_perturb("field:0.2").spec == "field:0.2"
    with pytest.raises(ValueError, match="did you mean 'scale'"):
        parse_perturb("scal:0.1")
    for bad in ("scale", "bias:", "field:abc", "scale:nan"):
        with pytest.raises(ValueError, match="finite size"):
            parse_perturb(bad)
    with pytest.raises(ValueError, match="perturbation kind"):
        SampleConfig(perturb="noise:0.1")


def test_closed_forms():
    x, t = torch.randn(512, 2, generator=torch.Generator().manual_seed(0)), torch.randint(0, 100, (512,))
    eps = _net(x, t)
    assert torch.allclose(perturb_denoiser(_net, "scale:0.25", (2,))(x, t), 1.25 * eps)
    bias = perturb_denoiser(_net, "bias:0.1", (2,))(x, t) - eps
    assert torch.allclose(bias, bias[:1].expand_as(bias))  # one fixed direction for every sample
    assert bias.square().mean().sqrt().item() == pytest.approx(0.1, rel=1e-5)  # size d, unit RMS direction
    field = PerturbedDenoiser(_net, Perturbation("field", 1.0), (2,))
    f = field.field(x)
    assert 0.3 < f.square().mean().sqrt().item() < 3.0  # unit RMS in expectation over the random draw
    # smooth: a step of 1e-3 in x moves the field by O(1e-3), and it is a fixed function of x_t alone
    assert (field.field(x + 1e-3) - f).abs().max().item() < 0.05
    assert torch.equal(PerturbedDenoiser(_net, Perturbation("field", 1.0), (2,)).field(x), f)
    assert perturb_denoiser(_net, "none", (2,)) is _net


def test_the_setting_belongs_to_the_diffusion_samplers_and_stays_out_of_old_keys():
    assert "perturb" not in to_dict(SampleConfig())  # configs without it keep their run keys
    assert to_dict(SampleConfig(perturb="scale:0.1"))["perturb"] == "scale:0.1"
    with pytest.raises(ConfigError, match="perturb"):
        resolve_sampler(VAEConfig(latent_dim=2), SampleConfig(perturb="scale:0.1"))


@pytest.fixture(scope="module")
def oracle():
    cfg = load_run_config({"name": "oracle", "data": {"name": "8gaussians"},
                           "model": {"family": "oracle", "noise": {"T": 1000}}, "train": {"device": "cpu"}})
    return train(cfg, progress=False).model


def test_a_known_error_makes_the_exact_oracle_measurably_worse(oracle):
    """DDIM eta 0 at S = 100 on 8gaussians, 2,000 samples, seeds 0-2. Measured: SWD clean 0.111 / 0.075 / 0.114,
    with eps (1 + 0.2) 0.286 / 0.273 / 0.292 (+0.18 on average); with eta 1 the same error costs 0.01-0.03."""
    data = load_dataset("8gaussians")

    def swd(perturb: str, eta: float, seed: int) -> float:
        x = generate(oracle, 2000, SampleConfig(sampler="ddim", steps=100, eta=eta, perturb=perturb), seed=seed)
        return sliced_wasserstein(x, data.heldout(2000, 1000 + seed))

    cost = np.array([swd("scale:0.2", 0.0, s) - swd("none", 0.0, s) for s in range(3)])
    assert (cost > 0.1).all() and cost.mean() == pytest.approx(0.18, abs=0.05), cost
    cost_eta1 = np.array([swd("scale:0.2", 1.0, s) - swd("none", 1.0, s) for s in range(3)])
    assert (cost - cost_eta1 > 0.1).all(), (cost, cost_eta1)  # fresh noise at every step absorbs most of it
