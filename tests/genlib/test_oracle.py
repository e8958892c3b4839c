"""Tests for the `oracle` family: its eps is -sqrt(1 - alpha_bar) grad log q(x_t) (autograd on the mixture
density) and E[eps | x_t] (Monte Carlo on the dataset's own draws); with it, DDPM and DDIM at S = T reach the
data-versus-data SWD floor and are measurably worse at S = 2 and 5; it trains in zero steps into a normal
run directory and refuses data that is not a known Gaussian mixture."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genlib.cli import main
from genlib.config import ConfigError
from genlib.data import EIGHT_GAUSSIANS_MU, EIGHT_GAUSSIANS_SIGMA, load_dataset
from genlib.metrics.toy import sliced_wasserstein
from genlib.models import MODELS, SampleConfig
from genlib.models.oracle import GAUSSIAN_MIXTURES, Oracle
from genlib.samplers import sample_ddim, sample_ddpm
from genlib.train import generate, load_run, load_run_config, train

pytestmark = pytest.mark.usefixtures("single_thread")

# T = 1000 is the steps study's T; the oracle costs O(S n K), about 1 s for one 2,000-sample run at S = T.
T = 1000
N = 2000  # samples per set: the >= 2,000 the toys are evaluated on
FLOOR_SEEDS = range(10)


def oracle_config(name: str = "8gaussians", T: int = T, **model):
    return load_run_config({"name": "oracle", "data": {"name": name}, "model": {"family": "oracle",
                            "noise": {"T": T}, **model}, "train": {"device": "cpu"}})


@pytest.fixture(scope="module")
def oracle() -> Oracle:
    return train(oracle_config(), progress=False).model


@pytest.fixture(scope="module")
def data():
    return load_dataset("8gaussians")


@pytest.fixture(scope="module")
def floor(data) -> tuple[float, float]:
    """(mean, std) of SWD between two independent N-draw data sets over FLOOR_SEEDS: the data-versus-data floor.
    Measured: 0.108 +- 0.036 (max 0.159 over 10 seeds)."""
    swd = [sliced_wasserstein(data.heldout(N, s), data.heldout(N, 100 + s)) for s in FLOOR_SEEDS]
    return float(np.mean(swd)), float(np.std(swd, ddof=1))


def log_q_t(x: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    """log q(x_t) for 8gaussians, written independently of the oracle: torch.distributions over genlib.data's
    centres and std, each component convolved with the forward noise (eq. 4)."""
    means = torch.as_tensor(EIGHT_GAUSSIANS_MU, dtype=torch.float64) * math.sqrt(alpha_bar)
    std = math.sqrt(alpha_bar * EIGHT_GAUSSIANS_SIGMA**2 + 1 - alpha_bar)
    comp = torch.distributions.Independent(torch.distributions.Normal(means, std), 1)
    mix = torch.distributions.Categorical(logits=torch.zeros(8, dtype=torch.float64))
    return torch.distributions.MixtureSameFamily(mix, comp).log_prob(x)


def swd_of(samples: torch.Tensor, data, seed: int) -> float:
    return sliced_wasserstein(samples, data.heldout(N, 1000 + seed))


def run_sampler(oracle: Oracle, sampler: str, steps: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x_T = torch.randn(N, 2, generator=gen)
    if sampler == "ddpm":
        return sample_ddpm(oracle.net, x_T, oracle.schedule, steps, variance="small", generator=gen)
    return sample_ddim(oracle.net, x_T, oracle.schedule, steps, eta=0.0, generator=gen)


# ---------------------------------------------------------------- the closed form

def test_registered_mixture_is_the_datasets_exact_density(data):
    mix = GAUSSIAN_MIXTURES.get("8gaussians")()
    x = torch.as_tensor(data.heldout(500, 7), dtype=torch.float64) * 1.5
    np.testing.assert_allclose(log_q_t(x, 1.0).numpy(), data.log_density(x.numpy()), rtol=1e-12, atol=1e-12)
    # and the mixture the oracle holds has the training draws' moments (20,000 draws: SE of the mean ~0.014)
    mean = mix.weights @ mix.means
    cov = (mix.weights[:, None, None] * (np.einsum("ki,kj->kij", mix.means, mix.means)
                                         + mix.stds[:, None, None] ** 2 * np.eye(2))).sum(0) - np.outer(mean, mean)
    np.testing.assert_allclose(data.x_train.mean(0), mean, atol=0.05)
    np.testing.assert_allclose(np.cov(data.x_train.T), cov, atol=0.06)


@pytest.mark.parametrize("t", [0, 10, 150, 400, 999])
def test_oracle_eps_is_minus_sqrt_one_minus_alpha_bar_times_the_score(oracle, t):
    ab = float(oracle.schedule.alpha_bar[t])
    gen = torch.Generator().manual_seed(t)
    # points near the modes, between them and far out, at the scale of x_t at this t
    x = (torch.randn(64, 2, generator=gen, dtype=torch.float64) * 2.5).requires_grad_(True)
    (score,) = torch.autograd.grad(log_q_t(x, ab).sum(), x)
    expected = -math.sqrt(1 - ab) * score
    got = oracle.net(x.detach(), torch.full((64,), t))
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    # float32 in, float32 out, same values to float32 precision
    torch.testing.assert_close(oracle.net(x.detach().float(), torch.full((64,), t)), expected.float(),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("t", [100, 300, 600])
def test_oracle_eps_is_the_posterior_mean_of_the_noise(oracle, data, t):
    """E[eps | x_t] by self-normalised importance sampling over 200,000 draws of the dataset's own sampler:
    x0 ~ data, weights N(x_t; sqrt(abar) x0, (1 - abar) I), eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar).
    The x_t are typical draws of q(x_t); agreement within 5 Monte Carlo standard errors."""
    ab = float(oracle.schedule.alpha_bar[t])
    gen = torch.Generator().manual_seed(t)
    x_t = (math.sqrt(ab) * torch.as_tensor(data.heldout(6, 12), dtype=torch.float64)
           + math.sqrt(1 - ab) * torch.randn(6, 2, generator=gen, dtype=torch.float64))
    x0 = torch.as_tensor(data.heldout(200_000, 11), dtype=torch.float64)  # (M, 2)
    eps = (x_t[:, None, :] - math.sqrt(ab) * x0[None]) / math.sqrt(1 - ab)  # (6, M, 2)
    w = torch.softmax(-(eps**2).sum(-1) / 2, dim=1)  # (6, M): N(x_t; sqrt(abar) x0, (1 - abar) I), normalised
    mc = (w[:, :, None] * eps).sum(1)
    se = ((w**2)[:, :, None] * (eps - mc[:, None]) ** 2).sum(1).sqrt()  # delta-method SE of the ratio estimate
    assert (1.0 / (w**2).sum(1) > 1000).all()  # enough effective draws for the SE to mean something
    err = (oracle.net(x_t, torch.full((6,), t)) - mc).abs()
    assert (err < 5 * se + 1e-6).all() and (se < 0.05).all(), (err, se)


# ---------------------------------------------------------------- samplers against the floor

@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_oracle_at_s_equal_t_reaches_the_data_floor(oracle, data, floor, sampler):
    """DDPM (small variance) and DDIM (eta 0) at S = T = 1000 with the exact eps: SWD to held-out data is within
    the floor's spread. Measured: DDPM 0.047 / 0.094, DDIM 0.110 / 0.075 (seeds 0, 1) vs floor 0.108 +- 0.036."""
    mean, std = floor
    for seed in (0, 1):
        swd = swd_of(run_sampler(oracle, sampler, T, seed), data, seed)
        assert swd < mean + 3 * std, (sampler, seed, swd, mean, std)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_oracle_at_few_steps_shows_the_samplers_own_error(oracle, data, floor, sampler):
    """The exact eps leaves only discretisation error. Measured at seed 0: S = 2 gives SWD 2.00 (DDPM) / 2.00
    (DDIM), S = 5 gives 0.385 / 0.328, S = T gives 0.047 / 0.110, against the floor 0.108 +- 0.036."""
    mean, std = floor
    at = {s: swd_of(run_sampler(oracle, sampler, s, 0), data, 0) for s in (2, 5, T)}
    assert at[2] > 10 * mean, at  # two steps put every sample near the mixture's mean: no modes at all
    assert at[5] > mean + 3 * std and at[5] > 2 * at[T], at
    assert at[2] > at[5] > at[T], at


# ---------------------------------------------------------------- a family like any other

def test_trains_in_zero_steps_into_a_run_directory_that_reloads(tmp_path):
    res = train(oracle_config(T=50), tmp_path / "run", progress=False)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.yaml", "history.csv", "meta.json",
                                                                    "model.pt"]
    assert res.history == [] and res.meta["n_params"] == 0 and res.meta["train_steps_per_s"] == 0
    assert res.meta["steps_run"] == 0 and res.config.train.steps > 0  # what ran, not what the config asked
    loaded = load_run(tmp_path / "run", device="cpu")
    assert loaded.config == res.config
    torch.testing.assert_close(loaded.model.net.means, torch.as_tensor(EIGHT_GAUSSIANS_MU, dtype=torch.float64))
    for cfg in (SampleConfig(), SampleConfig(sampler="ddim", steps=10), SampleConfig(sampler="ddpm", steps=5)):
        a = generate(loaded.model, 64, cfg, seed=3)
        assert a.shape == (64, 2) and torch.isfinite(a).all()
        assert torch.equal(a, generate(res.model, 64, cfg, seed=3)), cfg
        assert not torch.equal(a, generate(loaded.model, 64, cfg, seed=4)), cfg
    with pytest.raises(RuntimeError, match="no weights to train"):
        res.model.training_loss(torch.zeros(4, 2), 0, 1, None, torch.Generator())


def test_cli_trains_and_samples_the_shipped_oracle_config(tmp_path, capsys):
    run_dir, out = tmp_path / "oracle", tmp_path / "x.npz"
    assert main(["train", "oracle_8gaussians", "--out", str(run_dir), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert ": no steps (the network has no trainable weights) on cpu" in printed and " steps in " not in printed
    assert main(["sample", "--run", str(run_dir), "--n", "500", "--sampler", "ddim", "--steps", "100",
                 "--out", str(out)]) == 0
    x = np.load(out, allow_pickle=False)["x"]
    assert x.shape == (500, 2)
    # every sample lands on a mode: within 5 std of its nearest centre
    dist = np.linalg.norm(x[:, None] - EIGHT_GAUSSIANS_MU[None], axis=-1).min(1)
    assert dist.max() < 5 * EIGHT_GAUSSIANS_SIGMA, dist.max()


@pytest.mark.parametrize("name", ["moons", "digits", "npz:/data/points.npz"])
def test_data_that_is_not_a_known_mixture_is_refused_by_name(name):
    expected = (f"model.family 'oracle' needs a dataset whose exact denoiser is known (one of: 8gaussians); "
                f"data.name '{name}' is not a known Gaussian mixture")
    with pytest.raises(ConfigError) as info:
        oracle_config(name)
    assert str(info.value) == expected


def test_cli_refusal_is_one_line_with_exit_2(tmp_path, capsys):
    assert main(["train", "oracle_8gaussians", "--out", str(tmp_path / "r"), "--set", "data.name=moons",
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data.name 'moons' is not a known Gaussian mixture" in err
    assert not (tmp_path / "r").exists()


def test_oracle_is_registered_with_the_diffusion_samplers():
    assert "oracle" in MODELS and MODELS.get("oracle").samplers == ("ddpm", "ddim")
