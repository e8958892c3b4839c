"""2-D toy distances against closed forms: RBF MMD between Gaussians, energy distance vs scipy, 8gaussians NLL."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from genlib.data import EIGHT_GAUSSIANS_SIGMA, load_dataset
from genlib.metrics.toy import energy_distance, median_bandwidth, mmd_rbf, sliced_wasserstein

pytestmark = pytest.mark.usefixtures("single_thread")


def _rbf_expectation(mu_a, var_a, mu_b, var_b, sigma, d):
    """E k(a, b) for a ~ N(mu_a, var_a I), b ~ N(mu_b, var_b I), k = exp(-|a-b|^2 / (2 sigma^2)), in d dims."""
    s = sigma**2 + var_a + var_b
    return (sigma**2 / s) ** (d / 2) * math.exp(-float(((mu_a - mu_b) ** 2).sum()) / (2 * s))


def test_mmd_matches_the_closed_form_between_gaussians():
    rng = np.random.default_rng(0)
    mu_a, mu_b, sigma = np.zeros(2), np.array([1.0, 0.5]), 1.5
    exact = (_rbf_expectation(mu_a, 1, mu_a, 1, sigma, 2) + _rbf_expectation(mu_b, 1, mu_b, 1, sigma, 2)
             - 2 * _rbf_expectation(mu_a, 1, mu_b, 1, sigma, 2))
    values = [mmd_rbf(rng.normal(size=(1500, 2)), mu_b + rng.normal(size=(1500, 2)), bandwidth=sigma)[0]
              for _ in range(5)]
    assert np.mean(values) == pytest.approx(exact, rel=0.05)


def test_mmd_is_centred_on_zero_for_one_distribution():
    rng = np.random.default_rng(1)
    values = np.array([mmd_rbf(rng.normal(size=(300, 2)), rng.normal(size=(300, 2)))[0] for _ in range(30)])
    assert abs(values.mean()) < 3 * values.std(ddof=1) / math.sqrt(len(values))


def test_median_bandwidth_known_answer():
    x = np.array([[0.0, 0.0], [3.0, 0.0]])
    y = np.array([[0.0, 4.0], [3.0, 4.0]])
    # pooled pairwise distances: 3, 4, 5, 5, 4, 3 -> median 4
    assert median_bandwidth(x, y) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        mmd_rbf(np.zeros((5, 2)), np.zeros((5, 2)))


def test_energy_distance_matches_scipy_in_1d_and_is_unbiased():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(400, 1)), rng.normal(0.5, 1.5, size=(300, 1))
    assert math.sqrt(energy_distance(x, y, unbiased=False)) == pytest.approx(
        scipy.stats.energy_distance(x[:, 0], y[:, 0]), rel=1e-10)
    same = np.array([energy_distance(rng.normal(size=(200, 2)), rng.normal(size=(200, 2))) for _ in range(30)])
    assert abs(same.mean()) < 3 * same.std(ddof=1) / math.sqrt(len(same))


def test_true_density_nll_of_8gaussians_samples_is_the_entropy():
    ds = load_dataset("8gaussians")
    x = ds.heldout(20000, seed=0)
    nll = -ds.log_density(x)
    # Well-separated components: H ~ log 8 + H(N(0, sigma^2 I_2)) = log 8 + 1 + log(2 pi sigma^2)
    entropy = math.log(8) + 1 + math.log(2 * math.pi * EIGHT_GAUSSIANS_SIGMA**2)
    assert nll.mean() == pytest.approx(entropy, abs=4 * nll.std() / math.sqrt(len(nll)) + 1e-3)
    collapsed = np.zeros((100, 2))  # every sample between the modes
    assert -ds.log_density(collapsed).mean() > nll.mean() + 5


def test_sliced_wasserstein_keeps_its_signature_and_scale():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1000, 2))
    assert sliced_wasserstein(x, x) == 0.0
    # a shift by c along a unit direction u projects to a 1-D shift c |u.theta|: SW_2^2 = c^2 E[(u.theta)^2] = c^2 / 2
    # (only the projections are random here: the shifted set is the same points moved)
    assert sliced_wasserstein(x, x + np.array([2.0, 0.0]), n_projections=1024, p=2, seed=1) == pytest.approx(
        math.sqrt(2.0), rel=0.04)
