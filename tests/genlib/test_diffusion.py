"""Tests for genlib.diffusion: q(x_t | x0) by Monte Carlo, the posterior q(x_{t-1} | x_t, x0) against its
formula and brute-force Gaussian conditioning, the linear/cosine schedules, respacing and the naive
chain's training pairs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genlib.config import ConfigError, from_dict
from genlib.diffusion import NOISE_SCHEDULES, NoiseSchedule, NoiseScheduleConfig

pytestmark = pytest.mark.usefixtures("single_thread")

D = 3  # data dimension of the Monte Carlo tests
N_MC = 200_000


@pytest.fixture(scope="module")
def schedule() -> NoiseSchedule:
    return NoiseSchedule.from_config(NoiseScheduleConfig(T=1000))


def x0_batch(n: int) -> torch.Tensor:
    return torch.tensor([1.5, -0.7, 0.2], dtype=torch.float64).expand(n, D)


def assert_gaussian_moments(samples: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> None:
    """Per-dimension sample mean/variance within 5 standard errors of (mean, var)."""
    n = samples.shape[0]
    se_mean = (var / n).sqrt()
    se_var = var * math.sqrt(2.0 / (n - 1))
    assert ((samples.mean(0) - mean).abs() < 5 * se_mean).all(), (samples.mean(0), mean)
    assert ((samples.var(0) - var).abs() < 5 * se_var).all(), (samples.var(0), var)


# ---------------------------------------------------------------- the forward process

@pytest.mark.parametrize("t", [0, 10, 250, 999])
def test_q_sample_moments_match_eq4(schedule, t, generator):
    x0 = x0_batch(N_MC)
    eps = torch.randn(N_MC, D, generator=generator, dtype=torch.float64)
    tt = torch.full((N_MC,), t)
    x_t = schedule.q_sample(x0, tt, eps)
    ab = float(np.prod(1 - schedule.betas.numpy()[: t + 1]))  # alpha_bar_t from the betas directly
    assert_gaussian_moments(x_t, math.sqrt(ab) * x0[0], torch.full((D,), 1 - ab, dtype=torch.float64))
    mean, var = schedule.q_mean_var(x0[:2], tt[:2])
    torch.testing.assert_close(mean, math.sqrt(ab) * x0[:2])
    torch.testing.assert_close(var, torch.full((2, D), 1 - ab, dtype=torch.float64))


def test_x0_and_eps_conversions_invert_q_sample(schedule, generator):
    x0 = torch.randn(64, D, generator=generator, dtype=torch.float64)
    eps = torch.randn(64, D, generator=generator, dtype=torch.float64)
    t = torch.randint(0, schedule.T, (64,), generator=generator)
    x_t = schedule.q_sample(x0, t, eps)
    torch.testing.assert_close(schedule.x0_from_eps(x_t, t, eps), x0)
    torch.testing.assert_close(schedule.eps_from_x0(x_t, t, x0), eps)


def test_per_sample_timesteps_broadcast_over_images(schedule):
    x0 = torch.ones(2, 1, 4, 4)
    t = torch.tensor([0, 999])
    x_t = schedule.q_sample(x0, t, torch.zeros_like(x0))
    assert x_t.dtype == torch.float32
    torch.testing.assert_close(x_t[:, 0, 0, 0], schedule.alpha_bar[t].sqrt().float())


# ---------------------------------------------------------------- the posterior q(x_{t-1} | x_t, x0)

@pytest.mark.parametrize("t", [1, 5, 500, 999])
def test_posterior_matches_its_formula(schedule, t, generator):
    betas = schedule.betas.numpy()
    ab = np.cumprod(1 - betas)
    ab_t, ab_prev, beta_t = ab[t], ab[t - 1], betas[t]
    x0 = torch.randn(4, D, generator=generator, dtype=torch.float64)
    x_t = torch.randn(4, D, generator=generator, dtype=torch.float64)
    mean, var = schedule.posterior_mean_var(x0, x_t, torch.full((4,), t))
    # Ho et al. eq. 7
    exp_mean = (math.sqrt(ab_prev) * beta_t / (1 - ab_t)) * x0 + (math.sqrt(1 - beta_t) * (1 - ab_prev) / (1 - ab_t)) * x_t
    exp_var = (1 - ab_prev) / (1 - ab_t) * beta_t
    torch.testing.assert_close(mean, exp_mean)
    assert var.shape == (4, 1)
    torch.testing.assert_close(var, torch.full((4, 1), exp_var, dtype=torch.float64))


def gaussian_condition(mean: np.ndarray, cov: np.ndarray, idx_a: slice, idx_b: slice, b: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of a | b for a joint Gaussian N(mean, cov) (Schur complement)."""
    s_ab = cov[idx_a, idx_b]
    s_bb_inv = np.linalg.inv(cov[idx_b, idx_b])
    return mean[idx_a] + s_ab @ s_bb_inv @ (b - mean[idx_b]), cov[idx_a, idx_a] - s_ab @ s_bb_inv @ s_ab.T


@pytest.mark.parametrize("t", [1, 37, 999])
def test_posterior_equals_brute_force_conditioning_of_the_joint(schedule, t, generator):
    """Build the joint of (x_{t-1}, x_t) given x0 as a linear map of independent noises, condition on x_t."""
    betas = schedule.betas.numpy()
    ab_prev = np.prod(1 - betas[:t])
    x0 = np.array([1.5, -0.7, 0.2])
    x_t = np.array([0.3, 0.1, -2.0])
    eye = np.eye(D)
    # x_{t-1} = sqrt(ab_prev) x0 + sqrt(1 - ab_prev) e1;  x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) e2
    a_prev = np.hstack([math.sqrt(1 - ab_prev) * eye, 0 * eye])
    a_t = math.sqrt(1 - betas[t]) * a_prev + np.hstack([0 * eye, math.sqrt(betas[t]) * eye])
    a = np.vstack([a_prev, a_t])  # (2D, 2D) map from (e1, e2)
    mean = np.concatenate([math.sqrt(ab_prev) * x0, math.sqrt(ab_prev * (1 - betas[t])) * x0])
    cond_mean, cond_cov = gaussian_condition(mean, a @ a.T, slice(0, D), slice(D, 2 * D), x_t)
    got_mean, got_var = schedule.posterior_mean_var(torch.tensor(x0)[None], torch.tensor(x_t)[None],
                                                    torch.tensor([t]))
    np.testing.assert_allclose(got_mean[0].numpy(), cond_mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got_var.item() * eye, cond_cov, rtol=1e-9, atol=1e-12)


def test_posterior_regression_on_sampled_pairs(schedule, generator):
    """Sampled (x_{t-1}, x_t) pairs: the least-squares regression of x_{t-1} on x_t recovers the posterior
    coefficient of x_t, its intercept the x0 term, and the residual variance beta_tilde_t."""
    t = 200
    x0 = x0_batch(N_MC)
    tt = torch.full((N_MC,), t)
    x_prev, x_t = schedule.chain_pair(x0, tt, torch.randn(N_MC, D, generator=generator, dtype=torch.float64),
                                      torch.randn(N_MC, D, generator=generator, dtype=torch.float64))
    for j in range(D):
        design = torch.stack([torch.ones(N_MC, dtype=torch.float64), x_t[:, j]], 1)
        coef = torch.linalg.lstsq(design, x_prev[:, j:j + 1]).solution[:, 0]
        resid_var = (x_prev[:, j] - design @ coef).var().item()
        mean_at_zero, var = schedule.posterior_mean_var(x0[:1], torch.zeros(1, D, dtype=torch.float64), tt[:1])
        assert coef[1].item() == pytest.approx(schedule.posterior_coef_xt[t].item(), abs=5e-3)
        assert coef[0].item() == pytest.approx(mean_at_zero[0, j].item(), abs=5e-3)
        assert resid_var == pytest.approx(var.item(), rel=2e-2)


def test_posterior_at_t0_is_x0(schedule, generator):
    x0 = torch.randn(3, D, generator=generator, dtype=torch.float64)
    x_t = torch.randn(3, D, generator=generator, dtype=torch.float64)
    mean, var = schedule.posterior_mean_var(x0, x_t, torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(mean, x0)
    assert (var == 0).all()


# ---------------------------------------------------------------- schedules

def test_linear_T1000_ends_near_4e_5():
    s = NoiseSchedule.from_config(NoiseScheduleConfig(kind="linear", T=1000))
    assert s.alpha_bar[-1].item() == pytest.approx(4.04e-5, rel=0.01)
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)


def test_linear_T100_unscaled_stays_far_from_noise_and_scaled_does_not():
    unscaled = NoiseSchedule.from_config(NoiseScheduleConfig(kind="linear", T=100, scaled=False))
    scaled = NoiseSchedule.from_config(NoiseScheduleConfig(kind="linear", T=100, scaled=True))
    assert unscaled.alpha_bar[-1].item() == pytest.approx(0.36, abs=0.01)
    assert 1e-5 < scaled.alpha_bar[-1].item() < 1e-4
    assert scaled.betas[0].item() == pytest.approx(1e-3) and scaled.betas[-1].item() == pytest.approx(0.2)


def test_scaled_linear_below_T50_is_refused_saying_why():
    with pytest.raises(ValueError, match=r"^the scaled linear schedule needs T >= 50 \(beta_end 0.02\), got T=10: "
                                         r"the 1000/T rescaling makes the last beta 0.02 \* 1000 / 10 = 2, above 0.4 "
                                         r"and clipped at max_beta 0.999, so the schedule is no longer linear; "
                                         r"use scaled: false or T >= 50$"):
        NoiseScheduleConfig(kind="linear", T=10, scaled=True)
    with pytest.raises(ValueError, match=r"needs T >= 50 .*got T=49: .* = 0.408, above 0.4, so one step keeps only "
                                         r"sqrt\(1 - beta\) = 77% of the signal; use scaled: false or T >= 50$"):
        NoiseScheduleConfig(T=49)
    with pytest.raises(ValueError, match=r"needs T >= 25 \(beta_end 0.01\), got T=24"):
        NoiseScheduleConfig(T=24, beta_end=0.01)
    # The boundary and the alternatives the message names are accepted, and none of them clips a beta.
    for cfg in (NoiseScheduleConfig(T=50), NoiseScheduleConfig(T=10, scaled=False),
                NoiseScheduleConfig(T=25, beta_end=0.01), NoiseScheduleConfig(kind="cosine", T=10, scaled=True)):
        betas = NoiseSchedule.from_config(cfg).betas
        assert betas.max().item() <= 0.4 + 1e-12 or cfg.kind == "cosine", cfg
    assert NoiseSchedule.from_config(NoiseScheduleConfig(T=50)).betas[-1].item() == pytest.approx(0.4)


@pytest.mark.parametrize("T", [50, 1000])
def test_cosine_alpha_bar_follows_cos2_and_betas_are_clipped(T):
    cfg = NoiseScheduleConfig(kind="cosine", T=T)
    s = NoiseSchedule.from_config(cfg)

    def f(t):  # Nichol & Dhariwal eq. 17
        return math.cos((t / T + cfg.cosine_s) / (1 + cfg.cosine_s) * math.pi / 2) ** 2

    expected = np.array([f(t + 1) / f(0) for t in range(T)])
    unclipped = s.betas.numpy() < cfg.max_beta
    np.testing.assert_allclose(s.alpha_bar.numpy()[unclipped], expected[unclipped], rtol=1e-9)
    assert s.betas.max().item() == pytest.approx(cfg.max_beta)  # the last step would be beta = 1
    assert not unclipped[-1] and unclipped[:-1].all()
    tight = NoiseSchedule.from_config(NoiseScheduleConfig(kind="cosine", T=T, max_beta=0.5))
    assert tight.betas.max().item() == pytest.approx(0.5)


def test_schedule_registry_and_config_errors():
    assert set(NOISE_SCHEDULES.names()) == {"linear", "cosine"}
    with pytest.raises(ValueError, match="T must be >= 1"):
        NoiseScheduleConfig(T=0)
    with pytest.raises(ValueError, match="beta_start <= beta_end"):
        NoiseScheduleConfig(beta_start=0.1, beta_end=0.01)
    with pytest.raises(ConfigError, match=r"'kind' must be one of 'linear', 'cosine'.*did you mean 'cosine'"):
        from_dict(NoiseScheduleConfig, {"kind": "cosin"})
    with pytest.raises(ValueError, match=r"betas must be .* in \(0, 1\)"):
        NoiseSchedule(np.array([0.1, 1.0]))


# ---------------------------------------------------------------- respacing

@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [1, 10, 100, 333])
def test_respaced_preserves_alpha_bar_on_chosen_timesteps(kind, steps):
    s = NoiseSchedule.from_config(NoiseScheduleConfig(kind=kind, T=1000))
    r, ts = s.respaced(steps)
    assert r.T == len(ts) == steps
    assert ts[0] == 0 and ts[-1] == 999 or steps == 1
    assert (ts[1:] > ts[:-1]).all()
    torch.testing.assert_close(r.alpha_bar, s.alpha_bar[ts], rtol=1e-5, atol=1e-12)


def test_respaced_with_all_steps_is_the_identity(schedule):
    r, ts = schedule.respaced(schedule.T)
    assert torch.equal(ts, torch.arange(schedule.T))
    torch.testing.assert_close(r.betas, schedule.betas)
    torch.testing.assert_close(r.posterior_variance, schedule.posterior_variance)


@pytest.mark.parametrize("steps", [0, 1001])
def test_respaced_rejects_out_of_range_steps(schedule, steps):
    with pytest.raises(ValueError, match=r"sampling steps must be in 1..T=1000, got " + str(steps)):
        schedule.respaced(steps)


# ---------------------------------------------------------------- the naive chain's pairs

@pytest.mark.parametrize("t", [0, 1, 300, 999])
def test_chain_pair_marginals_are_the_forward_process(schedule, t, generator):
    x0 = x0_batch(N_MC)
    tt = torch.full((N_MC,), t)
    x_prev, x_t = schedule.chain_pair(x0, tt, torch.randn(N_MC, D, generator=generator, dtype=torch.float64),
                                      torch.randn(N_MC, D, generator=generator, dtype=torch.float64))
    mean_t, var_t = schedule.q_mean_var(x0[:1], tt[:1])
    assert_gaussian_moments(x_t, mean_t[0], var_t[0])
    if t == 0:
        torch.testing.assert_close(x_prev, x0)
    else:
        mean_prev, var_prev = schedule.q_mean_var(x0[:1], tt[:1] - 1)
        assert_gaussian_moments(x_prev, mean_prev[0], var_prev[0])


def test_chain_prev_from_step_eps_inverts_the_forward_step(schedule, generator):
    x0, eps_prev, eps_step = (torch.randn(32, D, generator=generator, dtype=torch.float64) for _ in range(3))
    t = torch.randint(0, schedule.T, (32,), generator=generator)
    x_prev, x_t = schedule.chain_pair(x0, t, eps_prev, eps_step)
    torch.testing.assert_close(schedule.chain_prev_from_step_eps(x_t, t, eps_step), x_prev)
