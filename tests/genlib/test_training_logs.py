"""A family declares its training logs beside its loss, and that declaration is all a grid needs to record them.

`toy_nll` (registered here, nowhere else) is one Gaussian with a learned mean and diagonal scale that logs its
negative log-likelihood `nll` (nats) beside the loss: a quantity no shipped family logs. It runs through
`genbench grid run` with no edit outside this file, and the store keeps `nll` with the unit and direction the
family declared. A family that logs a name it did not declare stops at its first step, naming it.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from typing import Literal

import pytest
import torch
import torch.nn as nn
import yaml

from genlib.cli import main
from genlib.models import MODELS, SAMPLERS, GenerativeModel, ModelConfig, SampleConfig, SamplerSpec
from genlib.records import MetricDef
from genlib.store import ResultsStore
from genlib.train import load_run_config, train

FAMILY = "toy_nll"
UNDECLARED = "toy_nll_undeclared"
LOG_2PI = math.log(2 * math.pi)


class GaussNet(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(dim))  # (D,)
        self.log_scale = nn.Parameter(torch.zeros(dim))  # (D,)


@dataclass(frozen=True, kw_only=True)
class NLLConfig(ModelConfig):
    family: Literal["toy_nll"] = FAMILY


@dataclass(frozen=True, kw_only=True)
class UndeclaredConfig(ModelConfig):
    family: Literal["toy_nll_undeclared"] = UNDECLARED


def run_gauss(model: "NLLFamily", n: int, cfg: SampleConfig, generator: torch.Generator) -> torch.Tensor:
    z = model.randn((n, math.prod(model.sample_shape)), generator)
    return (model.net.mu + model.net.log_scale.exp() * z).reshape(n, *model.sample_shape)


class NLLFamily(GenerativeModel):
    config_cls = NLLConfig
    samplers = (FAMILY,)
    training_logs = {"loss": MetricDef("nats", False), "nll": MetricDef("nats", False)}

    def build_net(self) -> GaussNet:
        return GaussNet(math.prod(self.sample_shape))

    def training_loss(self, x, step, total_steps, loss_cfg, generator):
        x = x.reshape(x.shape[0], -1)
        # Gaussian NLL per sample (nats): sum over D of log sigma + (x - mu)^2 / (2 sigma^2) + log(2 pi) / 2
        z = (x - self.net.mu) / self.net.log_scale.exp()
        nll = (self.net.log_scale + 0.5 * z ** 2 + 0.5 * LOG_2PI).sum(1).mean()
        return nll, {"loss": nll.item(), "nll": nll.item()}


class UndeclaredFamily(NLLFamily):
    """Logs `nll` like toy_nll but declares only the loss."""

    config_cls = UndeclaredConfig
    training_logs = {"loss": MetricDef("nats", False)}


@pytest.fixture(scope="module", autouse=True)
def registered():
    SAMPLERS.register(FAMILY, help="x = mu + scale * z, z ~ N(0, I)")(SamplerSpec(name=FAMILY, run=run_gauss))
    MODELS.register(FAMILY, help="one Gaussian that logs its NLL")(NLLFamily)
    MODELS.register(UNDECLARED, help="logs its NLL without declaring it")(UndeclaredFamily)
    yield
    for registry, name in ((MODELS, FAMILY), (MODELS, UNDECLARED), (SAMPLERS, FAMILY)):
        registry._items.pop(name)  # no public unregister: a family is registered for the process
        registry._help.pop(name)


def _grid(tmp_path, family: str):
    grid = {"study": f"{family}_logs",
            "base": {"data": {"name": "8gaussians", "n_train": 1000, "n_test": 500}, "model": {"family": family},
                     "train": {"steps": 40, "batch_size": 500, "lr": 0.05, "device": "cpu", "log_every": 20}},
            "eval": {"n": 200, "metrics": ["swd"]}, "floor": False, "seeds": [0], "profiles": {"quick": {}}}
    path = tmp_path / f"{family}.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def _run_grid(tmp_path, family: str) -> tuple[int, dict, list[dict]]:
    db = tmp_path / f"{family}.db"
    code = main(["grid", "run", str(_grid(tmp_path, family)), "--store", str(db), "--executor", "serial",
                 "--threads", "1", "--no-progress"])
    with ResultsStore(db) as store:
        runs = store.read_table("runs")
        metrics = store.read_table("metrics")
    [train_row] = runs[runs["kind"] == "train"].to_dict("records")
    return code, train_row, metrics[metrics["run_key"] == train_row["run_key"]].to_dict("records")


def test_a_new_training_log_is_recorded_with_its_declared_unit_and_direction(tmp_path):
    code, row, metrics = _run_grid(tmp_path, FAMILY)
    assert code == 0 and row["status"] == "done", row["error"]
    by_name = {m["name"]: m for m in metrics}
    assert set(by_name) == {"loss", "nll"}  # the last logged window
    nll = by_name["nll"]
    assert (nll["unit"], nll["higher_is_better"], nll["split"]) == ("nats", 0, "train")
    assert json.loads(nll["extra_json"])["step"] == 40
    # the value is the run's last logged window (its history.csv beside the checkpoint), lower than the first
    with open(tmp_path / row["artifact_path"] / "history.csv") as fh:  # relative to the store's folder
        history = list(csv.DictReader(fh))
    assert [int(h["step"]) for h in history] == [20, 40]
    assert nll["value"] == pytest.approx(float(history[-1]["nll"]), rel=1e-12)
    assert nll["value"] < float(history[0]["nll"])


def test_a_log_the_family_does_not_declare_stops_training_naming_it(tmp_path):
    code, row, metrics = _run_grid(tmp_path, UNDECLARED)
    assert code == 1 and row["status"] == "failed" and metrics == []
    assert (f"model family '{UNDECLARED}' logs nll from training_loss without declaring it in its training_logs "
            "(declared: loss)") in row["error"]
    cfg = load_run_config({"model": {"family": UNDECLARED}, "data": {"name": "8gaussians", "n_train": 100},
                           "train": {"steps": 5, "batch_size": 50, "device": "cpu"}})
    with pytest.raises(ValueError, match="logs nll from training_loss without declaring it"):
        train(cfg, progress=False)
