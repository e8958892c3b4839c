"""Contract tests for every registered model family on image-shaped (1, 8, 8) and 2-D toy data:
build, forward shapes, a finite differentiable training loss, generation shape/range/determinism,
config round trips, run keys, and errors that name the misuse."""
from __future__ import annotations

import pytest
import torch
import yaml

from genlib.config import ConfigError, config_hash, from_dict, to_dict
from genlib.models import MODELS, SAMPLERS, GenerativeModel, ModelConfig, SampleConfig, build_model, samplers_of
from genlib.train import LossConfig, RunConfig

pytestmark = pytest.mark.usefixtures("single_thread")

IMAGE = ((1, 8, 8), "image")
TOY = ((2,), "toy")
_SMALL_DIFFUSION = {"hidden": [32, 32], "channels": 8, "time_dim": 16, "noise": {"T": 20, "scaled": False}}

# family -> [(case id, model config dict, data)]: every family on every data kind it supports, every arch.
CASES: dict[str, list[tuple[str, dict, tuple]]] = {
    "ae": [
        ("ae-mlp-image", {"arch": "mlp", "latent_dim": 4, "hidden": [32, 16]}, IMAGE),
        ("ae-conv-image", {"arch": "conv", "latent_dim": 4, "hidden": [32, 16], "channels": 8}, IMAGE),
        ("ae-mlp-toy", {"arch": "mlp", "latent_dim": 2, "hidden": [32, 16]}, TOY),
    ],
    "vae": [
        ("vae-mlp-bernoulli-diag-image", {"latent_dim": 4, "hidden": [32, 16]}, IMAGE),
        ("vae-conv-bernoulli-full-image", {"arch": "conv", "latent_dim": 4, "hidden": [32, 16], "channels": 8,
                                           "covariance": "full"}, IMAGE),
        ("vae-mlp-gaussian-diag-image", {"latent_dim": 4, "hidden": [32, 16], "likelihood": "gaussian"}, IMAGE),
        ("vae-mlp-gaussian-diag-toy", {"latent_dim": 2, "hidden": [32, 16], "likelihood": "gaussian"}, TOY),
        ("vae-mlp-gaussian-full-toy", {"latent_dim": 2, "hidden": [32, 16], "likelihood": "gaussian",
                                       "covariance": "full"}, TOY),
    ],
    "ddpm": [
        ("ddpm-mlp-image", {"arch": "mlp", **_SMALL_DIFFUSION}, IMAGE),
        ("ddpm-unet-image", {"arch": "unet", **_SMALL_DIFFUSION}, IMAGE),
        ("ddpm-mlp-toy", {"arch": "mlp", **_SMALL_DIFFUSION, "noise": {"T": 20, "kind": "cosine"}}, TOY),
    ],
    "denoiser_chain": [
        ("chain-mlp-image", {"arch": "mlp", **_SMALL_DIFFUSION}, IMAGE),
        ("chain-unet-image", {"arch": "unet", **_SMALL_DIFFUSION}, IMAGE),
        ("chain-mlp-toy", {"arch": "mlp", **_SMALL_DIFFUSION}, TOY),
        ("chain-step_eps-mlp-toy", {"arch": "mlp", "parameterization": "step_eps", **_SMALL_DIFFUSION}, TOY),
    ],
}
ALL = [pytest.param(family, cfg, data, id=cid) for family, rows in CASES.items() for cid, cfg, data in rows]


def make(family: str, cfg: dict, data: tuple, seed: int = 0) -> GenerativeModel:
    torch.manual_seed(seed)
    model_cfg = from_dict(ModelConfig, {"family": family, **cfg})
    return build_model(model_cfg, *data)


def batch(data: tuple, n: int = 6, seed: int = 0) -> torch.Tensor:
    shape, kind = data
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=gen) if kind == "image" else torch.randn(n, *shape, generator=gen) * 2


def test_every_registered_family_has_contract_cases():
    # The oracle has no network to train and models only Gaussian-mixture toys: tests/genlib/test_oracle.py.
    assert sorted(CASES) == [f for f in MODELS.names() if f != "oracle"]
    for family in CASES:
        kinds = {data[1] for _, _, data in CASES[family]}
        assert "image" in kinds, family
        for name in MODELS.get(family).samplers:
            assert name in SAMPLERS, (family, name)


@pytest.mark.parametrize("family,cfg,data", ALL)
def test_build_and_forward_shapes(family, cfg, data):
    model = make(family, cfg, data)
    shape, kind = data
    assert isinstance(model, MODELS.get(family))
    assert model.cfg.family == family and model.sample_shape == shape and model.kind == kind
    assert sum(p.numel() for p in model.net.parameters()) > 0
    x = model.to_model_space(batch(data))
    with torch.no_grad():
        if family in ("ddpm", "denoiser_chain"):
            out = model.net(x, torch.tensor([0, 5, 19, 3, 7, 1]))
            assert out.shape == (6, *shape)
            torch.testing.assert_close(model.to_data_space(model.to_model_space(batch(data))), batch(data))
        elif family == "vae":
            mu, scale = model.net.encode(x)
            k = model.cfg.latent_dim
            assert mu.shape == (6, k)
            assert scale.shape == ((6, k, k) if model.cfg.covariance == "full" else (6, k))
            assert model.net.decode(mu).shape == (6, *shape)
            assert model.net.decode_raw(mu).shape == (6, *shape)
        else:
            assert model.net.encode(x).shape == (6, model.cfg.latent_dim)
            assert model.net(x).shape == (6, *shape)


@pytest.mark.parametrize("family,cfg,data", ALL)
def test_training_loss_is_a_finite_scalar_that_backpropagates(family, cfg, data):
    model = make(family, cfg, data)
    x = model.to_model_space(batch(data, n=16))
    loss, logs = model.training_loss(x, 0, 10, LossConfig(), torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert logs["loss"] == pytest.approx(loss.item())
    assert all(isinstance(v, float) for v in logs.values())
    loss.backward()
    grads = {n: p.grad for n, p in model.net.named_parameters()}
    missing = [n for n, g in grads.items() if g is None]
    # the U-Net's deepest up-path conv is only used when sizes differ; everything else must learn
    assert not [n for n in missing if not n.startswith("upconv.0.")], missing
    assert any(g is not None and g.abs().sum() > 0 for g in grads.values())
    if family == "vae":
        assert {"recon_nll", "kl", "beta_t", "neg_elbo"} <= set(logs)
        assert logs["neg_elbo"] == pytest.approx(logs["recon_nll"] + logs["kl"], rel=1e-5)


@pytest.mark.parametrize("family,cfg,data", ALL)
def test_generate_shape_range_and_determinism(family, cfg, data):
    model = make(family, cfg, data)
    model.net.eval()
    shape, kind = data
    for sample_cfg in samplers_for(family):
        a = model.generate(5, sample_cfg, torch.Generator().manual_seed(3))
        b = model.generate(5, sample_cfg, torch.Generator().manual_seed(3))
        c = model.generate(5, sample_cfg, torch.Generator().manual_seed(4))
        assert a.shape == (5, *shape) and torch.isfinite(a).all(), sample_cfg
        if kind == "image":
            assert a.min() >= 0 and a.max() <= 1, (sample_cfg, a.min(), a.max())
        assert torch.equal(a, b), sample_cfg
        # An untrained chain, or an untrained VAE's mean refinement, maps every draw to one point, so seeds
        # are told apart only where the last step still injects the seed's noise.
        if family != "denoiser_chain" and not (sample_cfg.passes and sample_cfg.reencode == "mean"):
            assert not torch.equal(a, c), sample_cfg


def samplers_for(family: str) -> list[SampleConfig]:
    return {
        "ae": [SampleConfig(), SampleConfig(sampler="ae", prior="fitted")],
        "vae": [SampleConfig(), SampleConfig(passes=2), SampleConfig(passes=1, reencode="sample")],
        "ddpm": [SampleConfig(), SampleConfig(sampler="ddpm", steps=5, variance="large"),
                 SampleConfig(sampler="ddim", steps=5, eta=0.5), SampleConfig(sampler="ddim", clip_x0=False)],
        "denoiser_chain": [SampleConfig(), SampleConfig(sampler="chain")],
    }[family]


@pytest.mark.parametrize("family,cfg,data", ALL)
def test_config_round_trip_and_run_key(family, cfg, data):
    model = make(family, cfg, data)
    plain = to_dict(model.cfg)
    assert plain["family"] == family
    back = from_dict(ModelConfig, plain)
    assert back == model.cfg and type(back) is type(model.cfg)
    via_yaml = from_dict(ModelConfig, yaml.safe_load(yaml.safe_dump(plain)))
    assert via_yaml == model.cfg
    run = RunConfig(model=model.cfg)
    assert run.run_key == RunConfig(model=back).run_key == config_hash(to_dict(run))
    assert len(run.run_key) == 12 and int(run.run_key, 16) >= 0
    other = from_dict(ModelConfig, {**plain, "hidden": [33, 16]})
    assert RunConfig(model=other).run_key != run.run_key


@pytest.mark.parametrize("family,cfg,data", ALL)
def test_same_seed_builds_identical_networks(family, cfg, data):
    a, b = make(family, cfg, data, seed=7), make(family, cfg, data, seed=7)
    for (name, p), (_, q) in zip(a.net.state_dict().items(), b.net.state_dict().items()):
        assert torch.equal(p, q), name
    c = make(family, cfg, data, seed=8)
    assert any(not torch.equal(p, q) for p, q in zip(a.net.parameters(), c.net.parameters()))


# ---------------------------------------------------------------- family-specific behaviour

def test_ae_fitted_prior_uses_the_training_codes():
    model = make("ae", CASES["ae"][2][1], TOY)
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(0)) * 3 + 5
    model.finish_training(x)
    with torch.no_grad():
        codes = model.net.encode(x).double()
    torch.testing.assert_close(model.net.code_mean.double(), codes.mean(0), rtol=1e-4, atol=1e-5)
    chol = model.net.code_chol.double()
    torch.testing.assert_close(chol @ chol.T, torch.cov(codes.T), rtol=1e-3, atol=1e-4)
    # the fitted buffers travel with the weights
    assert {"code_mean", "code_chol"} <= set(model.net.state_dict())


def test_chain_generation_is_the_chain_sampler_from_seeded_noise():
    from genlib.samplers import sample_chain

    model = make("denoiser_chain", CASES["denoiser_chain"][0][1], IMAGE)
    model.net.eval()
    x_T = torch.randn((3, *IMAGE[0]), generator=torch.Generator().manual_seed(5))
    expected = model.to_data_space(sample_chain(model.net, x_T, 20))
    torch.testing.assert_close(model.generate(3, SampleConfig(), torch.Generator().manual_seed(5)), expected)


def test_chain_step_eps_parameterisation_inverts_the_forward_step():
    """With `step_eps` the network predicts the last step's noise; predict_prev turns it into x_{t-1}, so a
    network that outputs the true noise recovers x_{t-1} exactly."""
    model = make("denoiser_chain", CASES["denoiser_chain"][3][1], TOY)
    gen = torch.Generator().manual_seed(0)
    x0, eps_prev, eps_step = (torch.randn(8, 2, generator=gen) for _ in range(3))
    t = torch.randint(0, 20, (8,), generator=gen)
    x_prev, x_t = model.schedule.chain_pair(x0, t, eps_prev, eps_step)
    model.net = lambda x_t_, t_: eps_step  # an oracle network
    torch.testing.assert_close(model.predict_prev(x_t, t), x_prev, rtol=1e-4, atol=1e-5)


def test_vae_gaussian_images_are_clamped_to_the_data_range():
    model = make("vae", CASES["vae"][2][1], IMAGE)
    with torch.no_grad():
        model.net.decoder.net[-1].bias.fill_(2.0)  # decoder means far above 1
    out = model.generate(4, SampleConfig(passes=1), torch.Generator().manual_seed(0))
    assert out.max() == 1.0 and out.min() >= 0


def test_chain_and_ddpm_share_the_noise_process_and_network():
    ddpm = make("ddpm", CASES["ddpm"][0][1], IMAGE, seed=1)
    chain = make("denoiser_chain", CASES["denoiser_chain"][0][1], IMAGE, seed=1)
    assert torch.equal(ddpm.schedule.alpha_bar, chain.schedule.alpha_bar)
    assert [p.shape for p in ddpm.net.parameters()] == [p.shape for p in chain.net.parameters()]


# ---------------------------------------------------------------- misuse errors

@pytest.mark.parametrize("family", ["ddpm", "denoiser_chain"])
def test_unet_on_toy_data_names_the_problem(family):
    with pytest.raises(ValueError, match=r"arch 'unet' needs image data \(C, H, W\), got sample shape \(2,\); use 'mlp'"):
        make(family, {"arch": "unet"}, TOY)


@pytest.mark.parametrize("family", ["ae", "vae"])
def test_conv_on_toy_data_names_the_problem(family):
    extra = {"likelihood": "gaussian"} if family == "vae" else {}
    with pytest.raises(ValueError, match=r"arch 'conv' needs image data .* got sample shape \(2,\); use 'mlp'"):
        make(family, {"arch": "conv", **extra}, TOY)


def test_bernoulli_vae_on_toys_names_the_problem():
    with pytest.raises(ValueError, match=r"model.likelihood 'bernoulli' needs data in \[0, 1\].*use 'gaussian'"):
        make("vae", {"likelihood": "bernoulli"}, TOY)


@pytest.mark.parametrize("family,sampler", [("vae", "ddim"), ("ae", "vae"), ("ddpm", "chain"),
                                            ("denoiser_chain", "ddpm")])
def test_a_sampler_of_another_family_is_refused(family, sampler):
    cid, cfg, data = CASES[family][0]
    model = make(family, cfg, data)
    expected = ", ".join(samplers_of(family))  # its own, then the solvers that name it (ddpm: dpm_solver_2m, heun)
    assert samplers_of(family)[: len(MODELS.get(family).samplers)] == MODELS.get(family).samplers
    with pytest.raises(ConfigError, match=rf"sampler '{sampler}' does not apply to model family '{family}' "
                                          rf"\(use one of: {expected}\)"):
        model.generate(2, SampleConfig(sampler=sampler), torch.Generator().manual_seed(0))


@pytest.mark.parametrize("family,sample_cfg,ignored", [
    ("denoiser_chain", SampleConfig(steps=5), "steps"), ("ddpm", SampleConfig(eta=0.5), "eta"),
    ("ddpm", SampleConfig(sampler="ddim", variance="large"), "variance"), ("vae", SampleConfig(steps=3), "steps"),
    ("ae", SampleConfig(passes=1), "passes")])
def test_settings_a_sampler_would_ignore_are_refused(family, sample_cfg, ignored):
    cid, cfg, data = CASES[family][0]
    model = make(family, cfg, data)
    with pytest.raises(ConfigError, match=rf"sampler '\w+' does not use {ignored} \(it uses: "):
        model.generate(2, sample_cfg, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("bad,match", [
    ({"steps": 0}, "steps must be >= 1"), ({"eta": 1.5}, r"eta must be in \[0, 1\]"),
    ({"passes": -1}, "passes must be >= 0")])
def test_sample_config_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        SampleConfig(**bad)


@pytest.mark.parametrize("family,bad,match", [
    ("ae", {"latent_dim": 0}, "latent_dim must be >= 1"), ("vae", {"hidden": []}, "hidden must be a non-empty"),
    ("vae", {"obs_sigma": 0}, "obs_sigma must be > 0"), ("ddpm", {"channel_mult": [0]}, "channel_mult must be"),
    ("denoiser_chain", {"hidden": [8, 0]}, "hidden must be")])
def test_model_config_validation_names_the_field(family, bad, match):
    with pytest.raises(ConfigError, match=rf"'model': {match}"):
        from_dict(ModelConfig, {"family": family, **bad}, "model")
