"""Likelihood bounds and latent health on trained digits VAEs: IWAE grows with k, collapse shows as 0 active units."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genlib.data import load_dataset
from genlib.losses import kl_standard_normal
from genlib.metrics import latent

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def x_test():
    return load_dataset("digits").x_test[:400]


def test_iwae_bound_is_non_decreasing_in_k_and_above_the_elbo(vae_run, x_test):
    model = vae_run.model
    neg_elbo = latent.negative_elbo(model, x_test, draws=20, generator=torch.Generator().manual_seed(0))
    bounds = {k: latent.iwae_bound(model, x_test, k, generator=torch.Generator().manual_seed(k)) for k in (1, 10, 100)}
    # L_1 is an unbiased estimate of the ELBO: paired per-image differences are centred on 0
    diff = bounds[1] + neg_elbo
    assert abs(diff.mean()) < 4 * diff.std(ddof=1) / math.sqrt(len(diff))
    for k_small, k_big in ((1, 10), (10, 100)):
        gain = bounds[k_big] - bounds[k_small]
        assert gain.mean() > -3 * gain.std(ddof=1) / math.sqrt(len(gain))  # non-decreasing within MC error
    gain = bounds[100] - (-neg_elbo)
    assert gain.mean() > 5 * gain.std(ddof=1) / math.sqrt(len(gain))  # strictly above the ELBO for a real VAE


def test_iwae_chunking_does_not_change_the_estimate(vae_run, x_test, monkeypatch):
    model = vae_run.model
    whole = latent.iwae_bound(model, x_test[:50], 40, generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(latent, "MAX_DECODED", 50 * 64 * 7)  # 7 draws per chunk: 40 = 5 x 7 + 5
    chunked = latent.iwae_bound(model, x_test[:50], 40, generator=torch.Generator().manual_seed(3))
    np.testing.assert_allclose(chunked, whole, rtol=1e-5)


def test_huge_beta_collapses_every_unit_and_beta_one_keeps_several(vae_run, collapsed_vae, x_test):
    mu, scale = latent.posterior(collapsed_vae, x_test)
    count, activity = latent.active_units(mu, threshold=0.01)
    assert count == 0 and activity.max() < 0.01
    assert latent.kl_by_dimension(mu, scale).sum() < 0.05
    assert latent.mutual_information(mu, scale, generator=torch.Generator().manual_seed(0)) < 0.05

    mu, scale = latent.posterior(vae_run.model, x_test)
    assert latent.active_units(mu, threshold=0.01)[0] >= 3
    mi = latent.mutual_information(mu, scale, generator=torch.Generator().manual_seed(0))
    assert 0.5 < mi <= math.log(len(mu))


def test_kl_by_dimension_sums_to_the_closed_form_kl():
    rng = torch.Generator().manual_seed(0)
    mu, scale = torch.randn(100, 5, generator=rng, dtype=torch.float64), torch.rand(100, 5, generator=rng,
                                                                                    dtype=torch.float64) + 0.2
    assert latent.kl_by_dimension(mu, scale).sum() == pytest.approx(float(kl_standard_normal(mu, scale).mean()))


def test_active_units_known_answer():
    mu = torch.zeros(1000, 3, dtype=torch.float64)
    mu[:, 0] = torch.linspace(-1, 1, 1000, dtype=torch.float64)  # variance ~1/3
    mu[:, 1] = torch.linspace(-0.1, 0.1, 1000, dtype=torch.float64)  # variance ~0.0033: inactive at 0.01
    count, activity = latent.active_units(mu, threshold=0.01)
    assert count == 1
    np.testing.assert_allclose(activity, [1 / 3, 0.01 / 3, 0.0], rtol=0.01, atol=1e-12)


def test_mutual_information_of_a_known_gaussian_channel():
    # x ~ N(0, 1) in 1-D, q(z|x) = N(x, s^2): I(x; z) = 1/2 log(1 + 1/s^2)
    gen = torch.Generator().manual_seed(0)
    s = 0.5
    mu = torch.randn(3000, 1, generator=gen, dtype=torch.float64)
    mi = latent.mutual_information(mu, torch.full_like(mu, s), generator=gen)
    assert mi == pytest.approx(0.5 * math.log(1 + 1 / s**2), abs=0.05)


def test_full_covariance_log_q_matrix_matches_the_diagonal_case():
    gen = torch.Generator().manual_seed(1)
    mu = torch.randn(20, 3, generator=gen, dtype=torch.float64)
    std = torch.rand(20, 3, generator=gen, dtype=torch.float64) + 0.5
    z = torch.randn(15, 3, generator=gen, dtype=torch.float64)
    diag = latent._log_q_matrix(z, mu, std)
    full = latent._log_q_matrix(z, mu, torch.diag_embed(std))
    torch.testing.assert_close(full, diag)
