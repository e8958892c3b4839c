"""Tests for genlib.samplers: DDPM/DDIM driven by the closed-form optimal denoiser of Gaussian data
reproduce its mean and covariance; determinism under seeds and explicit noise; numpy callables as
denoisers; the per-step plans and steps against the formulas; the x0 clip rule; VAE refinement passes
(with explicit noise); the AE's fitted-Gaussian prior."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from genlib.diffusion import NoiseSchedule, NoiseScheduleConfig
from genlib.samplers import (X0_CLIP_MARGIN, clip_box, ddim_plan, ddim_step, ddpm_plan, ddpm_step,
                             fit_gaussian, resolve_x0_clip, sample_ae, sample_chain, sample_ddim, sample_ddpm,
                             sample_vae, take, vae_pass, x0_clip_bounds)

pytestmark = pytest.mark.usefixtures("single_thread")

# Gaussian data x0 ~ N(M, C) in 2-D (correlated, not isotropic, not unit scale).
M = torch.tensor([1.0, -0.5], dtype=torch.float64)
C = torch.tensor([[0.5, 0.3], [0.3, 0.4]], dtype=torch.float64)
_LAM, _U = torch.linalg.eigh(C)
N_SAMPLES = 8000


@pytest.fixture(scope="module")
def schedule() -> NoiseSchedule:
    return NoiseSchedule.from_config(NoiseScheduleConfig(T=1000))


def optimal_eps(schedule: NoiseSchedule):
    """eps*(x_t, t) = sqrt(1 - abar) (abar C + (1 - abar) I)^-1 (x_t - sqrt(abar) M): E[eps | x_t] for
    x0 ~ N(M, C), evaluated in C's eigenbasis so each sample may carry its own t."""

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = schedule.alpha_bar[t].to(x_t)[:, None]  # (B, 1)
        resid = (x_t - ab.sqrt() * M.to(x_t)) @ _U.to(x_t)
        return (1 - ab).sqrt() * (resid / (ab * _LAM.to(x_t) + 1 - ab)) @ _U.T.to(x_t)

    return denoise


def assert_moments(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, n_se: float = 5.0) -> None:
    """Sample mean and covariance within n_se standard errors (Gaussian sampling error) of (mean, cov)."""
    n = x.shape[0]
    var = torch.diagonal(cov)
    se_mean = (var / n).sqrt()
    se_cov = ((var[:, None] * var[None, :] + cov**2) / n).sqrt()  # SE of a sample covariance entry
    err_mean = (x.mean(0) - mean).abs()
    err_cov = (torch.cov(x.T) - cov).abs()
    assert (err_mean < n_se * se_mean).all(), f"mean {x.mean(0)} vs {mean} (SE {se_mean})"
    assert (err_cov < n_se * se_cov).all(), f"cov {torch.cov(x.T)} vs {cov} (SE {se_cov})"


def x_T(n: int = N_SAMPLES, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------- reproducing Gaussian data

# S where each sampler's discretisation bias on this data is well under the sampling error of
# N_SAMPLES draws (measured with 20,000 draws: covariance bias <= 0.01 for all of these). Reverse
# steps with the posterior variance (`small`, and DDIM eta = 1, which is the same step) under-disperse
# at coarse S because they drop c0^2 Var(x0 | x_t); see the coarse-step test below.
SAMPLER_CASES = {
    "ddpm_small_S1000": (lambda d, x, s, g: sample_ddpm(d, x, s, 1000, variance="small", generator=g)),
    "ddpm_large_S100": (lambda d, x, s, g: sample_ddpm(d, x, s, 100, variance="large", generator=g)),
    "ddim_eta0_S250": (lambda d, x, s, g: sample_ddim(d, x, s, 250, eta=0.0, generator=g)),
    "ddim_eta0.5_S500": (lambda d, x, s, g: sample_ddim(d, x, s, 500, eta=0.5, generator=g)),
    "ddim_eta1_S1000": (lambda d, x, s, g: sample_ddim(d, x, s, 1000, eta=1.0, generator=g)),
}


@pytest.mark.parametrize("case", list(SAMPLER_CASES))
def test_sampler_with_optimal_denoiser_reproduces_gaussian_data(case, schedule):
    out = SAMPLER_CASES[case](optimal_eps(schedule), x_T(), schedule, torch.Generator().manual_seed(1))
    assert out.shape == (N_SAMPLES, 2) and out.dtype == torch.float64
    assert_moments(out, M, C)


def test_coarse_steps_small_variance_under_disperses_large_does_not(schedule):
    """Ho et al. 2020 sec. 3.2: sigma^2 = beta_tilde is optimal for a point-mass x0 and sigma^2 = beta for
    x0 ~ N(0, I). With 20 coarse steps on data of covariance near I/2, the posterior variance loses a third
    of the spread while beta stays within 10%."""
    den = optimal_eps(schedule)
    small = sample_ddpm(den, x_T(), schedule, 20, variance="small", generator=torch.Generator().manual_seed(1))
    large = sample_ddpm(den, x_T(), schedule, 20, variance="large", generator=torch.Generator().manual_seed(1))
    ratio_small = torch.trace(torch.cov(small.T)) / torch.trace(C)
    ratio_large = torch.trace(torch.cov(large.T)) / torch.trace(C)
    assert ratio_small < 0.8, ratio_small
    assert abs(ratio_large - 1) < 0.1, ratio_large


def test_ddim_eta1_equals_ddpm_small_variance_given_the_same_noise(schedule):
    """With eta = 1, DDIM's step (eq. 12) is algebraically DDPM's posterior step with sigma^2 = beta_tilde."""
    steps, n = 50, 64
    noise = torch.randn(steps, n, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    den = optimal_eps(schedule)
    a = sample_ddim(den, x_T(n), schedule, steps, eta=1.0, noise=noise)
    b = sample_ddpm(den, x_T(n), schedule, steps, variance="small", noise=noise)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    for clip in (0.5, 2.0):  # clipping x0 keeps eps consistent, so the identity survives it
        torch.testing.assert_close(sample_ddim(den, x_T(n), schedule, steps, eta=1.0, noise=noise, clip_x0=clip),
                                   sample_ddpm(den, x_T(n), schedule, steps, noise=noise, clip_x0=clip))


def test_clip_x0_bounds_the_final_sample(schedule):
    out = sample_ddim(optimal_eps(schedule), x_T(500) * 3, schedule, 20, clip_x0=0.25)
    assert out.abs().max() <= 0.25 + 1e-9  # the last step returns x0_hat itself
    assert sample_ddim(optimal_eps(schedule), x_T(500) * 3, schedule, 20).abs().max() > 1.0


# ---------------------------------------------------------------- plans and steps

def test_ddim_plan_matches_eq_12_and_16(schedule):
    """The tables against the paper's formulas on the respaced alpha_bar, in float64."""
    S, eta = 7, 0.6
    plan = ddim_plan(schedule, S, eta, dtype=torch.float64)
    _, ts = schedule.respaced(S)
    ab = schedule.alpha_bar[ts]
    ab_prev = torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])
    sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).sqrt()
    assert plan.steps == S and torch.equal(plan.timesteps, ts) and plan.stochastic
    torch.testing.assert_close(plan.sqrt_alpha_bar, ab.sqrt(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(plan.coef_x0, ab_prev.sqrt(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(plan.coef_second, (1 - ab_prev - sigma**2).sqrt(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(plan.noise_std[1:], sigma[1:], rtol=1e-12, atol=1e-14)
    assert plan.noise_std[0] == 0  # the last step adds no noise
    assert not ddim_plan(schedule, S, 0.0).stochastic and (ddim_plan(schedule, S, 0.0).noise_std == 0).all()
    assert ddim_plan(schedule, S, eta).coef_x0.dtype == torch.float32  # export tables default to float32


def test_ddpm_step_is_the_posterior_mean_plus_sigma_noise(schedule):
    """ddpm_step at step i equals mu_tilde(x_t, x0_hat) + sigma z computed with genlib.diffusion directly."""
    S, n = 9, 5
    gen = torch.Generator().manual_seed(0)
    x, eps, z = (torch.randn(n, 2, generator=gen, dtype=torch.float64) for _ in range(3))
    sched, _ = schedule.respaced(S)
    for variance in ("small", "large"):
        plan = ddpm_plan(schedule, S, variance, dtype=torch.float64)
        for i in (S - 1, 3, 0):
            idx = torch.full((n,), i)
            mean, var = sched.posterior_mean_var(sched.x0_from_eps(x, idx, eps), x, idx)
            var = var if variance == "small" else sched.betas[i]
            want = mean + (var.sqrt() * z if i > 0 else 0)
            torch.testing.assert_close(ddpm_step(plan, i, x, eps, z), want, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(ddpm_step(plan, i, x, eps, None), mean, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("step,plan_of", [(ddim_step, lambda s: ddim_plan(s, 12, 0.5)),
                                          (ddpm_step, lambda s: ddpm_plan(s, 12, "large"))])
def test_steps_take_a_python_int_or_a_one_element_index_tensor(schedule, step, plan_of):
    """The torch loop indexes tables with an int, an exported graph with a (1,) int64 tensor: same values."""
    plan = plan_of(schedule)
    gen = torch.Generator().manual_seed(2)
    x, eps, z = (torch.randn(4, 1, 3, 3, generator=gen) for _ in range(3))
    box = clip_box((-0.5, 0.5), x)
    for i in range(plan.steps):
        assert take(plan.coef_x0, i).shape == () and take(plan.coef_x0, torch.tensor([i])).shape == (1,)
        assert torch.equal(step(plan, i, x, eps, z, box), step(plan, torch.tensor([i]), x, eps, z, box))


# ---------------------------------------------------------------- the x0 clip rule

class _ToyModel:
    """What the clip rule reads from a model: kind, sample shape and the model-space map."""

    kind, sample_shape = "toy", (2,)

    @staticmethod
    def to_model_space(x):
        return x


def test_clip_box_accepts_a_symmetric_bound_or_per_dimension_low_high():
    like = torch.zeros(3, 2, dtype=torch.float64)
    lo, hi = clip_box(2.0, like)
    assert lo.item() == -2.0 and hi.item() == 2.0 and lo.dtype == torch.float64
    lo, hi = clip_box(((-1.0, 0.0), (1.0, 5.0)), like)
    assert lo.tolist() == [-1.0, 0.0] and hi.tolist() == [1.0, 5.0]
    assert clip_box(None, like) is None
    with pytest.raises(ValueError, match="low <= high in every dimension"):
        clip_box(((0.0, 2.0), (1.0, 1.0)), like)


def test_x0_clip_bounds_images_keep_their_range_toys_get_the_bounding_box_plus_margin():
    class Image:
        kind, sample_shape = "image", (1, 4, 4)

        @staticmethod
        def to_model_space(x):
            return x * 2 - 1

    assert x0_clip_bounds(Image()) == ((-1.0,), (1.0,))
    x_train = np.array([[0.0, -2.0], [1.0, 2.0], [0.5, 0.0]], dtype=np.float32)
    low, high = x0_clip_bounds(_ToyModel(), x_train)
    m = X0_CLIP_MARGIN
    assert low == pytest.approx((0.0 - m * 1.0, -2.0 - m * 4.0)) and high == pytest.approx((1.0 + m, 2.0 + m * 4.0))
    assert x0_clip_bounds(_ToyModel()) is None  # a toy's box needs its data
    assert x0_clip_bounds(_ToyModel(), lambda: x_train) == (low, high)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_a_bad_denoiser_on_a_toy_at_two_steps_stays_inside_the_recorded_box(sampler):
    """issue: at S=2 the first step amplifies eps errors by 1/sqrt(alpha_bar); the box bounds the result."""
    from genlib.data import DataConfig, load_dataset
    from genlib.diffusion import NoiseScheduleConfig
    from genlib.metrics import evaluate
    from genlib.models import SampleConfig, build_model
    from genlib.models.ddpm import DDPMConfig
    from genlib.train import generate

    data = load_dataset(DataConfig(name="8gaussians", n_train=2000, n_test=500))
    model = build_model(DDPMConfig(hidden=(8,), time_dim=8, noise=NoiseScheduleConfig(T=100)), (2,), "toy")

    class Bad(torch.nn.Module):  # predicts eps = 50 everywhere
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(50.0))

        def forward(self, x_t, t):
            return self.scale * torch.ones_like(x_t)

    model.net = Bad()
    cfg = resolve_x0_clip(SampleConfig(sampler=sampler, steps=2), model, data.x_train)
    lo, hi = data.x_train.min(0), data.x_train.max(0)
    pad = X0_CLIP_MARGIN * (hi - lo)
    assert cfg.clip_low == pytest.approx(tuple(lo - pad), rel=1e-6) and cfg.clip_high == pytest.approx(tuple(hi + pad), rel=1e-6)
    x = generate(model, 500, cfg, seed=0).numpy()
    assert (x >= np.array(cfg.clip_low) - 1e-5).all() and (x <= np.array(cfg.clip_high) + 1e-5).all()
    unclipped = generate(model, 500, SampleConfig(sampler=sampler, steps=2, clip_x0=False), seed=0).numpy()
    assert np.abs(unclipped).max() > 10 * np.abs(hi).max()
    # evaluated through genlib.metrics, the result records the box it used as numbers
    (swd,) = evaluate(["swd"], dataset=data, model=model, sample_cfg=SampleConfig(sampler=sampler, steps=2), n=200)
    assert swd.extra["sample"]["clip_low"] == list(cfg.clip_low) and swd.extra["sample"]["clip_high"] == list(cfg.clip_high)
    # clip_x0 off, or a sampler that never clips: nothing is resolved
    assert resolve_x0_clip(SampleConfig(clip_x0=False), model, data.x_train).clip_low is None
    from genlib.models.vae import VAEConfig

    vae = build_model(VAEConfig(hidden=(8,), latent_dim=2, likelihood="gaussian"), (2,), "toy")
    assert resolve_x0_clip(SampleConfig(), vae, data.x_train) == SampleConfig()


# ---------------------------------------------------------------- determinism

@pytest.mark.parametrize("sampler", ["ddpm_small", "ddpm_large", "ddim_eta0.5"])
def test_seeded_generator_gives_identical_samples(sampler, schedule):
    kwargs = {"ddpm_small": {"variance": "small"}, "ddpm_large": {"variance": "large"},
              "ddim_eta0.5": {"eta": 0.5}}[sampler]
    fn = sample_ddim if sampler.startswith("ddim") else sample_ddpm
    den = optimal_eps(schedule)
    runs = [fn(den, x_T(32), schedule, 30, generator=torch.Generator().manual_seed(s), **kwargs) for s in (5, 5, 6)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.allclose(runs[0], runs[2])


@pytest.mark.parametrize("fn,kwargs", [(sample_ddpm, {}), (sample_ddpm, {"variance": "large"}),
                                       (sample_ddim, {"eta": 0.7})])
def test_explicit_noise_replaces_the_generator(fn, kwargs, schedule):
    """noise[i] is the draw used at step i (counting down from S-1 to 1). Drawing the same values from a
    seeded generator in that order reproduces a generator-driven run exactly; with `noise` given the
    generator is never touched."""
    steps, n = 25, 16
    den = optimal_eps(schedule)
    gen = torch.Generator().manual_seed(11)
    draws = [torch.randn(n, 2, generator=gen, dtype=torch.float64) for _ in range(steps - 1)]  # steps S-1..1
    noise = torch.zeros(steps, n, 2, dtype=torch.float64)
    for k, i in enumerate(reversed(range(1, steps))):
        noise[i] = draws[k]
    from_gen = fn(den, x_T(n), schedule, steps, generator=torch.Generator().manual_seed(11), **kwargs)
    unused = torch.Generator().manual_seed(99)
    state = unused.get_state()
    from_noise = fn(den, x_T(n), schedule, steps, noise=noise, generator=unused, **kwargs)
    torch.testing.assert_close(from_noise, from_gen, rtol=0, atol=0)
    assert torch.equal(unused.get_state(), state)
    other = fn(den, x_T(n), schedule, steps, noise=noise + 0.1, **kwargs)
    assert not torch.allclose(other, from_noise)


def test_ddim_eta0_is_deterministic_given_x_T(schedule):
    den = optimal_eps(schedule)
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    state = gen_a.get_state()
    a = sample_ddim(den, x_T(64), schedule, 40, eta=0.0, generator=gen_a)
    b = sample_ddim(den, x_T(64), schedule, 40, eta=0.0, generator=gen_b)
    assert torch.equal(a, b)
    assert torch.equal(gen_a.get_state(), state)  # no randomness consumed
    assert not torch.allclose(a, sample_ddim(den, x_T(64, seed=2), schedule, 40, eta=0.0))


# ---------------------------------------------------------------- numpy denoisers (ONNX Runtime style)

def test_samplers_accept_a_numpy_returning_callable(schedule):
    """A function from arrays to float32 arrays (what a wrapped ONNX Runtime session is) drops in."""
    den = optimal_eps(schedule)
    calls = []

    def session_like(x_t, t):
        x_np, t_np = np.asarray(x_t, dtype=np.float32), np.asarray(t, dtype=np.int64)
        calls.append(t_np[0])
        return den(torch.from_numpy(x_np).double(), torch.from_numpy(t_np)).numpy().astype(np.float32)

    x = x_T(128).float()
    noise = torch.randn(20, 128, 2, generator=torch.Generator().manual_seed(0))
    for fn, kw in ((sample_ddpm, {"noise": noise}), (sample_ddim, {"eta": 0.0}), (sample_ddim, {"eta": 1.0, "noise": noise})):
        calls.clear()
        got = fn(session_like, x, schedule, 20, **kw)
        ref = fn(lambda a, b: den(a.double(), b).float(), x, schedule, 20, **kw)
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float32 and got.shape == x.shape
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
        _, ts = schedule.respaced(20)
        assert calls == list(reversed(ts.tolist()))  # called with the ORIGINAL timesteps, high to low
    chain = sample_chain(lambda a, t: 0.5 * np.asarray(a), x, 10)
    torch.testing.assert_close(chain, x * 0.5**10)


def test_chain_runs_T_conditional_means_high_to_low():
    seen = []

    def predict_prev(x_t, t):
        seen.append(int(t[0]))
        assert t.shape == (x_t.shape[0],) and (t == t[0]).all()
        return x_t * 0.9 + 0.01 * t[:, None]

    x = torch.ones(4, 2)
    out = sample_chain(predict_prev, x, 5)
    assert seen == [4, 3, 2, 1, 0]
    expect = torch.ones(4, 2)
    for t in reversed(range(5)):
        expect = expect * 0.9 + 0.01 * t
    torch.testing.assert_close(out, expect)


# ---------------------------------------------------------------- VAE refinement

def test_sample_vae_returns_every_pass_and_identity_refinement_is_a_fixed_point(generator):
    z = torch.randn(10, 3, generator=generator)
    decode = lambda v: v * 1.0  # noqa: E731
    encode = lambda x: (x * 1.0, torch.full_like(x, 1e-3))  # noqa: E731
    for passes in (0, 1, 3):
        outs = sample_vae(decode, encode, z, passes=passes, return_passes=True)
        assert len(outs) == passes + 1
        for x in outs:
            torch.testing.assert_close(x, z)
    last = sample_vae(decode, encode, z, passes=2)
    torch.testing.assert_close(last, z)
    # `sample` re-encoding draws z = mu + scale * eps from the generator: reproducible, and close to mu
    a = sample_vae(decode, encode, z, passes=2, reencode="sample", generator=torch.Generator().manual_seed(0))
    b = sample_vae(decode, encode, z, passes=2, reencode="sample", generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.equal(a, z)
    assert (a - z).abs().max() < 0.02


def test_sample_vae_explicit_noise_replaces_the_generator(generator):
    """noise[p] is pass p's draw: the same values drawn from a seeded generator reproduce a generator run."""
    z = torch.randn(5, 3, generator=generator)
    decode, encode = (lambda v: 0.5 * v), (lambda x: (x + 1, torch.full_like(x, 0.3)))
    gen = torch.Generator().manual_seed(4)
    noise = torch.stack([torch.randn(5, 3, generator=gen) for _ in range(3)])
    from_gen = sample_vae(decode, encode, z, passes=3, reencode="sample", generator=torch.Generator().manual_seed(4))
    from_noise = sample_vae(decode, encode, z, passes=3, reencode="sample", noise=noise)
    assert torch.equal(from_gen, from_noise)
    x = decode(z)
    for p in range(3):
        x = decode(vae_pass(encode, x, "sample", noise[p]))  # one pass: mu + scale * noise
    torch.testing.assert_close(from_noise, x)
    with pytest.raises(ValueError, match=r"noise must have shape \(passes=2, B=5, k\)"):
        sample_vae(decode, encode, z, passes=2, reencode="sample", noise=noise)


def test_sample_vae_refinement_applies_encode_then_decode(generator):
    z = torch.randn(6, 2, generator=generator)
    outs = sample_vae(lambda v: v + 1, lambda x: (2 * x, torch.ones_like(x)), z, passes=2, return_passes=True)
    torch.testing.assert_close(outs[0], z + 1)
    torch.testing.assert_close(outs[1], 2 * (z + 1) + 1)
    torch.testing.assert_close(outs[2], 2 * (2 * (z + 1) + 1) + 1)


def test_sample_vae_errors():
    z = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="passes must be >= 0"):
        sample_vae(lambda v: v, None, z, passes=-1)
    with pytest.raises(ValueError, match="refinement passes need an encoder"):
        sample_vae(lambda v: v, None, z, passes=1)


# ---------------------------------------------------------------- AE prior

def test_fit_gaussian_recovers_moments(generator):
    n = 20_000
    chol = torch.linalg.cholesky(C)
    codes = M + torch.randn(n, 2, generator=generator, dtype=torch.float64) @ chol.T
    mean, l_fit = fit_gaussian(codes, jitter=0.0)
    # exactly the unbiased sample moments ...
    torch.testing.assert_close(mean, codes.mean(0))
    torch.testing.assert_close(l_fit @ l_fit.T, torch.cov(codes.T))
    assert (torch.triu(l_fit, 1) == 0).all() and (torch.diagonal(l_fit) > 0).all()
    # ... which are within sampling error of the truth
    assert_moments(M + torch.randn(n, 2, generator=generator, dtype=torch.float64) @ l_fit.T, M, C, n_se=7)
    # jitter keeps a degenerate code set factorisable
    _, l_deg = fit_gaussian(torch.ones(50, 3, dtype=torch.float64))
    assert torch.isfinite(l_deg).all()


def test_sample_ae_with_fitted_gaussian_reproduces_its_moments(generator):
    chol = torch.linalg.cholesky(C)
    eps = torch.randn(N_SAMPLES, 2, generator=generator, dtype=torch.float64)
    out = sample_ae(lambda z: z, eps, fitted=(M, chol))
    assert_moments(out, M, C)
    torch.testing.assert_close(sample_ae(lambda z: 3 * z, eps), 3 * eps)  # no fit: decode eps itself


def test_sampler_registry_names():
    from genlib.models import SAMPLERS  # the sampler specs (settings, run, step) over these functions

    assert set(SAMPLERS.names()) == {"ae", "vae", "chain", "ddpm", "ddim", "dpm_solver_2m", "heun"}
    assert "Song" in SAMPLERS.describe("ddim") and "Ho" in SAMPLERS.describe("ddpm")
    assert "Lu et al." in SAMPLERS.describe("dpm_solver_2m") and "Karras" in SAMPLERS.describe("heun")
    with pytest.raises(KeyError, match="did you mean 'ddim'"):
        SAMPLERS.get("dddim")
