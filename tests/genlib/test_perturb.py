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


def test_real_kinds_parse_and_refuse():
    assert parse_perturb("precision:int8_dynamic").precision == "int8_dynamic"
    assert parse_perturb("step:500").step == 500 and parse_perturb("step:0500").spec == "step:500"
    assert parse_perturb("step:500").real and not parse_perturb("scale:0.1").real
    with pytest.raises(ValueError, match=r"precision 'int8' did you mean 'int8_static'.*not a precision below fp32"
                                         r"|precision 'int8'.*not a precision below fp32"):
        parse_perturb("precision:int8")
    with pytest.raises(ValueError, match="not a precision below fp32"):
        parse_perturb("precision:fp32")
    for bad in ("step:0", "step:-3", "step:1.5", "step:"):
        with pytest.raises(ValueError, match=r"needs a training step N >= 1"):
            parse_perturb(bad)


def test_weights_saved_at_a_step_are_that_shorter_training(tmp_path):
    """The weights train.save_at keeps at step 40 of a 120-step training equal, tensor for tensor, the final
    weights of the same training stopped at 40 steps (same seed, same batches, same EMA warm-up), and they are
    only sampled under the name 'step:40'."""
    from genlib.checkpoint import CheckpointError
    from genlib.perturb import PerturbationNotRealised
    from genlib.train import load_run

    base = {"model": {"family": "ddpm", "hidden": [16, 16], "time_dim": 8, "noise": {"T": 50}},
            "data": {"name": "moons", "n_train": 500, "n_test": 200}, "seed": 5}
    long = train(load_run_config({**base, "train": {"steps": 120, "batch_size": 32, "ema_decay": 0.9,
                                                    "save_at": [40, 80], "device": "cpu"}}), tmp_path / "long",
                 progress=False)
    short = train(load_run_config({**base, "train": {"steps": 40, "batch_size": 32, "ema_decay": 0.9,
                                                     "device": "cpu"}}), tmp_path / "short", progress=False)
    assert long.meta["saved_at"] == [40, 80] and "model.step40.pt" in long.meta["files"]
    early = load_run(tmp_path / "long", "cpu", at_step=40)
    final = load_run(tmp_path / "long", "cpu")
    for (name, a), b, c in zip(early.model.net.state_dict().items(), short.model.net.state_dict().values(),
                               final.model.net.state_dict().values()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, c) for a, c in zip(early.model.net.state_dict().values(),
                                                      final.model.net.state_dict().values()))
    cfg = SampleConfig(sampler="ddim", steps=5)
    assert torch.equal(generate(early.model, 64, SampleConfig(sampler="ddim", steps=5, perturb="step:40"), seed=1),
                       generate(short.model, 64, cfg, seed=1))
    with pytest.raises(PerturbationNotRealised):
        generate(early.model, 4, cfg)
    with pytest.raises(CheckpointError, match=r"saved no weights at step 50 \(its train.save_at: \[40, 80\]\)"):
        load_run(tmp_path / "long", "cpu", at_step=50)


@pytest.mark.parametrize("save_at, message", [([0], "each step must be an integer in 1..99"),
                                              ([100], "each step must be an integer in 1..99"),
                                              ([50, 20], "increasing steps without repeats"),
                                              ([20, 20], "increasing steps without repeats")])
def test_save_at_is_checked_when_read(save_at, message):
    with pytest.raises(ConfigError, match=message):
        load_run_config({"model": {"family": "ddpm"}, "train": {"steps": 100, "save_at": save_at}})
    # left out of run keys while empty: older runs keep their keys
    assert "save_at" not in to_dict(load_run_config({"model": {"family": "ddpm"}}))["train"]
