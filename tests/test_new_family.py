"""A new model family touches its own file and its test: a toy family registered here, and nowhere else.

`toy_gauss` is one Gaussian with a learned mean and diagonal scale (maximum likelihood), sampled by its own
sampler x = mu + scale * z and exposing one export part (`decoder`, z -> x). With no edit outside this
file it trains, samples (library and `genbench sample`), evaluates (`genlib.metrics.evaluate`), plans in a
grid, exports to ONNX behind the parity gate and is timed by the bench suite.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pytest
import torch
import torch.nn as nn

from genlib.config import ConfigError
from genlib.data import DataConfig, load_dataset
from genlib.models import MODELS, SAMPLERS, GenerativeModel, ModelConfig, PartSpec, SampleConfig, SamplerSpec
from genlib.train import generate, load_run, load_run_config, train

FAMILY = "toy_gauss"
DATA = {"name": "8gaussians", "n_train": 2000, "n_test": 1000}


# ------------------------------------------------------------------------------ the family (its "file")
class GaussNet(nn.Module):
    """x = mu + exp(log_scale) * z for z (B, D) ~ N(0, I): the whole network is two vectors (D,)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.mu + self.log_scale.exp() * z

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decode(z)


class DecodePart(nn.Module):
    def __init__(self, net: GaussNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net.decode(z)


@dataclass(frozen=True, kw_only=True)
class GaussConfig(ModelConfig):
    family: Literal["toy_gauss"] = FAMILY


def run_gauss(model: "GaussFamily", n: int, cfg: SampleConfig, generator: torch.Generator) -> torch.Tensor:
    z = model.randn((n, model.dim), generator)
    return model.net.decode(z).reshape(n, *model.sample_shape)


class GaussFamily(GenerativeModel):
    config_cls = GaussConfig
    samplers = (FAMILY,)
    parts = {"decoder": PartSpec(help="z (B, D) -> x = mu + scale * z", build=lambda model: DecodePart(model.net),
                                 inputs=("z",), outputs=("x",),
                                 feeds=lambda model, b, generator, held_out: {
                                     "z": torch.randn((b, model.dim), generator=generator)})}

    @property
    def dim(self) -> int:
        return math.prod(self.sample_shape)

    def build_net(self) -> GaussNet:
        return GaussNet(self.dim)

    def training_loss(self, x, step, total_steps, loss_cfg, generator):
        x = x.reshape(x.shape[0], -1)
        # Gaussian NLL per sample (nats), up to the constant D/2 log(2 pi)
        nll = (self.net.log_scale + 0.5 * ((x - self.net.mu) / self.net.log_scale.exp()) ** 2).sum(1).mean()
        return nll, {"loss": nll.item()}


@pytest.fixture(scope="module", autouse=True)
def registered():
    """Register the family and its sampler for this module only (other tests list the registries)."""
    SAMPLERS.register(FAMILY, help="x = mu + scale * z, z ~ N(0, I)")(
        SamplerSpec(name=FAMILY, run=run_gauss, net_parts=("decoder",)))
    MODELS.register(FAMILY, help="one Gaussian, learned mean and diagonal scale")(GaussFamily)
    yield
    for registry in (MODELS, SAMPLERS):  # no public unregister: a family is registered for the process
        registry._items.pop(FAMILY)
        registry._help.pop(FAMILY)


@pytest.fixture(scope="module")
def run_dir(registered, tmp_path_factory):
    cfg = load_run_config({"name": "gauss", "model": {"family": FAMILY}, "data": DATA,
                           "train": {"steps": 400, "batch_size": 2000, "lr": 0.05, "device": "cpu", "log_every": 100}})
    out = tmp_path_factory.mktemp("gauss") / "run"
    train(cfg, out, progress=False)
    return out


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(DataConfig(**DATA))


# ------------------------------------------------------------------------------------------- tests
def test_trains_to_the_maximum_likelihood_gaussian(run_dir, dataset):
    run = load_run(run_dir, "cpu")
    x = np.asarray(dataset.x_train, dtype=np.float64)
    assert run.config.model == GaussConfig() and isinstance(run.model, GaussFamily)
    np.testing.assert_allclose(run.model.net.mu.detach().numpy(), x.mean(0), atol=0.1)
    np.testing.assert_allclose(run.model.net.log_scale.exp().detach().numpy(), x.std(0), rtol=0.05)


def test_samples_through_its_own_sampler(run_dir):
    run = load_run(run_dir, "cpu")
    x = generate(run.model, 4000, SampleConfig(), seed=3)
    assert x.shape == (4000, 2)
    assert torch.equal(x, generate(run.model, 4000, SampleConfig(sampler=FAMILY), seed=3))  # auto = its own
    scale = run.model.net.log_scale.exp().detach()
    np.testing.assert_allclose(x.std(0).numpy(), scale.numpy(), rtol=0.05)
    with pytest.raises(ConfigError, match=f"sampler '{FAMILY}' does not use steps \\(it uses: no settings\\)"):
        generate(run.model, 2, SampleConfig(steps=5))
    with pytest.raises(ConfigError, match=f"sampler 'ddim' does not apply to model family '{FAMILY}'"):
        generate(run.model, 2, SampleConfig(sampler="ddim"))


def test_genbench_sample_and_models_list_it(run_dir, tmp_path, capsys):
    from genlib.cli import main

    assert main(["sample", "--run", str(run_dir), "--n", "50", "--out", str(tmp_path / "s.npz")]) == 0
    with np.load(tmp_path / "s.npz") as f:
        assert f["x"].shape == (50, 2)
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert f"{FAMILY:<15}" in out and f"samplers: {FAMILY}" in out and "x = mu + scale * z" in out


def test_evaluates_better_than_its_untrained_start(run_dir, dataset):
    from genlib.metrics import evaluate

    run = load_run(run_dir, "cpu")
    start = GaussFamily(GaussConfig(), (2,), "toy")  # mu = 0, scale = 1: a standard normal
    [trained] = evaluate(["swd"], dataset=dataset, model=run.model, n=1000, seed=0)
    [untrained] = evaluate(["swd"], dataset=dataset, model=start, n=1000, seed=0)
    assert trained.name == "swd" and trained.higher_is_better is False
    assert trained.value < 0.6 * untrained.value


def test_plans_in_a_grid():
    from ablations.plan import check_eval_applies, resolve_eval
    from ablations.spec import GridError

    cfg = load_run_config({"model": {"family": FAMILY}, "data": DATA})
    check_eval_applies(cfg, resolve_eval({"n": 100, "metrics": ["swd"]}))
    with pytest.raises(GridError, match=f"sampler '{FAMILY}' does not use passes"):
        check_eval_applies(cfg, resolve_eval({"passes": 1}))


def test_exports_its_part_to_onnx_with_parity_and_is_timed(run_dir, tmp_path):
    from bench.export import ExportConfig, export_part
    from bench.suite import BenchConfig, run_benchmarks, targets_for_run
    from bench.timing import TimingConfig

    run = load_run(run_dir, "cpu")
    result = export_part(run, ExportConfig(part="decoder", parity_batches=(2, 9)), tmp_path / "gauss.onnx")
    assert result.valid and result.parity.max_abs_err <= 1e-5
    assert result.info["run"]["family"] == FAMILY and [i["name"] for i in result.info["inputs"]] == ["z"]

    targets = targets_for_run(run, None, ExportConfig(parity_batches=(2, 9)), tmp_path / "onnx")  # the family's parts
    assert [t.part for t in targets] == ["decoder"]
    cfg = BenchConfig(batches=(1, 8), threads=(1,), backends=("torch", "ort"),
                      timing=TimingConfig(warmup_rounds=1, min_rounds=3, target_s=0.0))
    rows = run_benchmarks(targets, cfg, progress=False)
    assert sorted((r.backend, r.batch, r.status) for r in rows) == [
        ("ort", 1, "ok"), ("ort", 8, "ok"), ("torch", 1, "ok"), ("torch", 8, "ok")]
    for r in rows:
        assert r.timing.rounds >= 3 and r.timing.p50_ms > 0 and r.run_key == run.config.run_key
        if r.backend == "ort":
            assert r.parity["valid"] is True and r.provider == "CPUExecutionProvider"
