"""Where the reverse chain starts (SampleConfig.start): x_T ~ q(x_T | x0) from held-out data against its closed
form; with the exact eps (oracle, 8gaussians) on the unscaled T = 100 schedule (alpha_bar_T = 0.36), starting from
q(x_T | x0) reaches the data-versus-data floor where starting from N(0, I) does not; samplers that do not read
`start`, and sampler exports, refuse it."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genlib.config import ConfigError
from genlib.data import load_dataset
from genlib.diffusion import NoiseSchedule, NoiseScheduleConfig
from genlib.metrics.toy import sliced_wasserstein
from genlib.models import SampleConfig, build_model, resolve_sampler
from genlib.samplers import start_from_data
from genlib.train import generate, load_run, load_run_config, train

pytestmark = pytest.mark.usefixtures("single_thread")

N = 2000  # samples per set, as the toys are evaluated
UNSCALED_T100 = NoiseScheduleConfig(T=100, scaled=False)


def test_start_from_data_has_the_moments_of_q_x_T_given_x0():
    """Two held-out points drawn with equal chance, and per draw x_T - sqrt(ab) x0 ~ N(0, (1 - ab) I) (eq. 4 at
    t = T): Monte Carlo moments against the closed form."""
    schedule = NoiseSchedule.from_config(UNSCALED_T100)
    ab = float(schedule.alpha_bar[-1])
    assert ab == pytest.approx(0.3636, abs=1e-4)
    x_test = torch.tensor([[50.0, -10.0], [-50.0, 30.0]])
    x_T = start_from_data(x_test, 200_000, schedule, torch.Generator().manual_seed(0))
    assert x_T.shape == (200_000, 2) and x_T.dtype == torch.float32
    # the centre each draw came from is the nearer of the two scaled points (about 80 noise stds apart)
    scaled = math.sqrt(ab) * x_test
    nearest = torch.cdist(x_T, scaled).argmin(1)
    resid = x_T - scaled[nearest]
    assert resid.mean(0).numpy() == pytest.approx([0.0, 0.0], abs=0.01)  # SE 0.002
    assert resid.var(0).numpy() == pytest.approx([1 - ab, 1 - ab], rel=0.02)  # SE 0.3%
    assert nearest.float().mean().item() == pytest.approx(0.5, abs=0.01)  # SE 0.001


def test_start_from_data_is_reproducible_under_a_seed():
    schedule = NoiseSchedule.from_config(UNSCALED_T100)
    x_test = torch.randn(50, 2, generator=torch.Generator().manual_seed(1))
    a, b, c = (start_from_data(x_test, 64, schedule, torch.Generator().manual_seed(s)) for s in (3, 3, 4))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.fixture(scope="module")
def oracle_t100():
    cfg = load_run_config({"name": "oracle", "data": {"name": "8gaussians"},
                           "model": {"family": "oracle", "noise": {"T": 100, "scaled": False}},
                           "train": {"device": "cpu"}})
    return train(cfg, progress=False).model


def test_data_start_reaches_the_floor_and_the_prior_start_does_not(oracle_t100):
    """One checkpoint (the exact eps), only the start changed; DDIM eta 0 at S = T carries its start to the end.
    Measured (seeds 0, 1, 2): start=data SWD 0.076 / 0.078 / 0.072, start=prior 0.252 / 0.233 / 0.256, against
    the floor 0.108 +- 0.036 (10 pairs of independent 2,000-point data sets). DDPM ancestral steps, which add
    fresh noise at each step, forgive most of the mismatch: data 0.052 / 0.090 / 0.098, prior 0.094 / 0.101 / 0.114."""
    data = load_dataset("8gaussians")
    floor = [sliced_wasserstein(data.heldout(N, s), data.heldout(N, 100 + s)) for s in range(10)]
    bound = float(np.mean(floor) + 3 * np.std(floor, ddof=1))

    def swd(start: str, seed: int, sampler: str = "ddim") -> float:
        samples = generate(oracle_t100, N, SampleConfig(sampler=sampler, start=start), seed=seed).numpy()
        return sliced_wasserstein(samples, data.heldout(N, 1000 + seed))

    for seed in (0, 1, 2):
        at_data, at_prior = swd("data", seed), swd("prior", seed)
        assert at_data < bound, (seed, at_data, bound)
        assert at_prior > bound and at_prior > 2.5 * at_data, (seed, at_prior, at_data, bound)
        assert swd("data", seed, "ddpm") < bound


def test_the_start_is_drawn_from_the_bound_datas_test_split(oracle_t100):
    x_test = oracle_t100.held_out_x0()
    assert torch.equal(x_test, torch.tensor(np.array(load_dataset("8gaussians").x_test)))


def test_an_unbound_model_refuses_the_data_start():
    cfg = load_run_config({"name": "d", "data": {"name": "moons"},
                           "model": {"family": "ddpm", "hidden": [8], "time_dim": 4, "noise": {"T": 10, "scaled": False}}})
    model = build_model(cfg.model, (2,), "toy")
    with pytest.raises(ConfigError, match="start: data needs the model's data"):
        generate(model, 4, SampleConfig(sampler="ddpm", start="data"))
    model.bind_data(cfg.data)
    assert generate(model, 4, SampleConfig(sampler="ddpm", start="data")).shape == (4, 2)


@pytest.mark.parametrize("family,sampler", [("denoiser_chain", "chain"), ("vae", "vae")])
def test_samplers_that_do_not_read_start_refuse_it(family, sampler):
    model = {"family": family, "hidden": [8]} if family != "vae" else {"family": family}
    cfg = load_run_config({"name": "x", "data": {"name": "moons"}, "model": model})
    resolve_sampler(cfg.model, SampleConfig(sampler=sampler))  # the default start is fine
    with pytest.raises(ConfigError, match=f"^sampler '{sampler}' does not use start "):
        resolve_sampler(cfg.model, SampleConfig(sampler=sampler, start="data"))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_ddpm_and_ddim_read_start(sampler):
    cfg = load_run_config({"name": "x", "data": {"name": "moons"}, "model": {"family": "ddpm", "hidden": [8]}})
    assert "start" in resolve_sampler(cfg.model, SampleConfig(sampler=sampler, start="data")).settings


def test_a_sampler_export_refuses_the_data_start():
    from bench.parts import ExportConfig

    with pytest.raises(ValueError, match="start='data' is not exported: the sampler graph takes x_T as an input"):
        ExportConfig(part="sampler", sample=SampleConfig(sampler="ddim", start="data"))
    assert ExportConfig(part="sampler", sample=SampleConfig(sampler="ddim")).sample.start == "prior"


def test_a_reloaded_run_starts_from_its_own_data(tmp_path):
    """load_run binds the run's data, so a grid cell or `genbench sample` can start from q(x_T | x0)."""
    cfg = load_run_config({"name": "d", "data": {"name": "moons", "n_train": 200, "n_test": 100},
                           "model": {"family": "ddpm", "hidden": [8], "time_dim": 4, "noise": {"T": 10, "scaled": False}},
                           "train": {"steps": 2, "batch_size": 16, "device": "cpu"}})
    run_dir = train(cfg, tmp_path / "run", progress=False).run_dir
    loaded = load_run(run_dir)
    assert loaded.model.held_out_x0().shape == (100, 2)
    a, b = (generate(loaded.model, 8, SampleConfig(sampler="ddim", start=s), seed=0) for s in ("data", "prior"))
    assert a.shape == b.shape == (8, 2) and not torch.equal(a, b)
