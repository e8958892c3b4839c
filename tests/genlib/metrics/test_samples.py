"""Feature-space sample metrics against known answers: FD closed form, KID unbiasedness, PRDC on matched sets.

Pixel-space figures on digits (898 training vs 899 test images) pin the k-NN metrics to published-style
orientation values: precision/recall ~0.91/0.90, and the mean-image generator's 1.00 / 0.00 / 0.01.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from genlib.data import load_dataset
from genlib.metrics.samples import (class_histogram_entropy, density_coverage, expected_coverage, frechet_distance,
                                    frechet_distance_gaussians, gaussian_stats, kid, kid_standard_error,
                                    kid_subset_size, knn_radii, prdc, precision_recall)

pytestmark = pytest.mark.usefixtures("single_thread")


def _fd_scipy(mu1, s1, mu2, s2) -> float:
    """The reference FID formula with scipy's sqrtm (pytorch-fid's computation)."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def _random_gaussian(rng, d):
    a = rng.normal(size=(d, d))
    return rng.normal(size=d), a @ a.T / d + 0.1 * np.eye(d)


# ---------------------------------------------------------------- Frechet distance

def test_frechet_closed_form_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    (mu1, s1), (mu2, s2) = _random_gaussian(rng, 6), _random_gaussian(rng, 6)
    assert frechet_distance_gaussians(mu1, s1, mu2, s2) == pytest.approx(_fd_scipy(mu1, s1, mu2, s2), rel=1e-8)
    assert frechet_distance_gaussians(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_of_gaussian_samples_converges_to_closed_form():
    rng = np.random.default_rng(1)
    (mu1, s1), (mu2, s2) = _random_gaussian(rng, 4), _random_gaussian(rng, 4)
    exact = frechet_distance_gaussians(mu1, s1, mu2, s2)
    errors = []
    for n in (500, 5_000, 100_000):
        x = rng.multivariate_normal(mu1, s1, size=n)
        y = rng.multivariate_normal(mu2, s2, size=n)
        errors.append(abs(frechet_distance(x, y) - exact))
    assert errors[-1] < 0.02 * exact
    assert errors[-1] < errors[0]


def test_frechet_of_identical_sets_is_zero_and_of_the_same_distribution_small():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2000, 8))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(x, rng.normal(size=(2000, 8))) < 0.05
    assert frechet_distance(x, rng.normal(size=(2000, 8)) + 1.0) == pytest.approx(8.0, rel=0.05)  # ||mu||^2 = 8


def test_gaussian_stats_is_the_unbiased_covariance():
    x = np.random.default_rng(3).normal(size=(50, 3))
    mu, sigma = gaussian_stats(x)
    np.testing.assert_allclose(mu, x.mean(0))
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False))


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # blank border pixels: singular covariances
def test_pixel_frechet_on_digits_is_in_the_orientation_range():
    ds = load_dataset("digits")
    train, test = ds.x_train.reshape(len(ds.x_train), -1), ds.x_test.reshape(len(ds.x_test), -1)
    value = frechet_distance(train, test)
    reference = _fd_scipy(*gaussian_stats(train), *gaussian_stats(test))
    assert value == pytest.approx(reference, rel=1e-6)
    assert 0.04 < value < 0.1  # orientation: 0.064 (split-dependent: 0.057-0.078 over seeds)


# ---------------------------------------------------------------- KID

def _mmd2_unbiased_direct(x, y):
    d = x.shape[1]
    kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
    n, m = len(x), len(y)
    return ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * kxy.mean())


def test_kid_subsets_hold_half_the_samples_and_match_the_direct_unbiased_mmd():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(60, 5)), rng.normal(0.3, 1.0, size=(60, 5))
    assert kid_subset_size(60, 60, 1000) == 30 and kid_subset_size(60, 80, 20) == 20 and kid_subset_size(4, 9, 9) == 2
    value, std = kid(x, y, subsets=1, subset_size=1000, seed=7)
    draw = np.random.default_rng(7)  # the subsets kid draws: x's, then y's, without replacement
    ix, iy = draw.choice(60, size=30, replace=False), draw.choice(60, size=30, replace=False)
    assert value == pytest.approx(_mmd2_unbiased_direct(x[ix], y[iy]), rel=1e-10)
    assert std == 0.0
    # Every pair is equally likely in a random subset, so the subset mean is unbiased for the full-sample value.
    value, std = kid(x, y, subsets=2000, subset_size=1000)
    assert abs(value - _mmd2_unbiased_direct(x, y)) < 4 * std / np.sqrt(2000)


def _poly3_kernels(x, y):
    d = x.shape[1]
    return (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3


def _mmd2_from_kernels(kxx, kyy, kxy):
    n, m = len(kxx), len(kyy)
    return ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * kxy.mean())


def _bootstrap_std(x, y, rng, draws: int = 200) -> float:
    """Std of the full-sample unbiased MMD^2 over bootstrap resamples of x and y (with replacement)."""
    kxx, kyy, kxy = _poly3_kernels(x, y)
    values = []
    for _ in range(draws):
        i, j = rng.integers(0, len(x), len(x)), rng.integers(0, len(y), len(y))
        values.append(_mmd2_from_kernels(kxx[np.ix_(i, i)], kyy[np.ix_(j, j)], kxy[np.ix_(i, j)]))
    return float(np.std(values, ddof=1))


def test_kid_std_is_a_standard_error_close_to_the_bootstrap_and_the_true_spread():
    """Known case: x ~ N(0, I_8), y ~ N(0.3, I_8), 300 each. The std over half-size subsets estimates the
    standard error of the full-sample estimate; compare it with a bootstrap of the same data and with the
    true spread over 200 independent data sets. (Subsets of the whole set gave std ~1e-16.)"""
    n, d = 300, 8
    rng = np.random.default_rng(0)

    def draw():
        return rng.normal(size=(n, d)), rng.normal(0.3, 1.0, size=(n, d))

    true_sd = float(np.std([_mmd2_from_kernels(*_poly3_kernels(*draw())) for _ in range(200)], ddof=1))
    to_bootstrap, to_truth = [], []
    for k in range(8):
        x, y = draw()
        _, std = kid(x, y, subsets=100, subset_size=1000, seed=k)
        assert std > 0.1 * true_sd
        to_bootstrap.append(std / _bootstrap_std(x, y, rng))
        to_truth.append(std / true_sd)
    print(f"\nKID std / bootstrap std: {np.round(to_bootstrap, 3)}; / true sd {true_sd:.4f}: {np.round(to_truth, 3)}")
    # Each ratio carries the noise of 100 subsets (~7%), 200 resamples (~5%) and of the data set's own
    # spread (~10%): measured 0.87-1.15, so [0.7, 1.4] is > 3 sd. Their mean over 8 data sets has sd ~0.03.
    assert all(0.7 < r < 1.4 for r in to_bootstrap + to_truth), (to_bootstrap, to_truth)
    assert 0.85 < np.mean(to_bootstrap) < 1.15 and 0.85 < np.mean(to_truth) < 1.15


def test_kid_standard_error_rescales_smaller_subsets_to_the_full_sample():
    """Subsets of 100 of 400: their spread is that of a 100-sample estimate; sqrt(m / (n - m)) rescales it
    to the standard error at n = 400 (delete-d jackknife), checked against 100 independent data sets. It
    errs on the safe side (measured 1.1-1.2x): the U-statistic's 1/m^2 variance term is scaled as if 1/m."""
    n, m, d = 400, 100, 8
    rng = np.random.default_rng(1)

    def draw():
        return rng.normal(size=(n, d)), rng.normal(0.3, 1.0, size=(n, d))

    true_sd = float(np.std([_mmd2_from_kernels(*_poly3_kernels(*draw())) for _ in range(100)], ddof=1))
    ses = [kid_standard_error(kid(*draw(), subsets=100, subset_size=m, seed=k)[1], n, m) for k in range(5)]
    assert kid_standard_error(2.0, 100, 50) == 2.0
    print(f"\nKID jackknife standard error / true sd at n = {n}, m = {m}: {np.round(np.array(ses) / true_sd, 3)}")
    assert 0.8 < np.mean(ses) / true_sd < 1.4, (ses, true_sd)
    with pytest.raises(ValueError, match=r"subset size must be in 1..n-1, got m=10 with n=10"):
        kid_standard_error(1.0, 10, 10)


def test_kid_is_centred_on_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(5)
    same = np.array([kid(rng.normal(size=(200, 8)), rng.normal(size=(200, 8)), subsets=10, subset_size=100,
                         seed=i)[0] for i in range(40)])
    sem = same.std(ddof=1) / np.sqrt(len(same))
    assert abs(same.mean()) < 3 * sem  # unbiased: centred on 0 ...
    shifted = kid(rng.normal(size=(200, 8)), rng.normal(0.5, 1.0, size=(200, 8)), subsets=10, subset_size=100)[0]
    assert shifted > same.mean() + 10 * same.std()  # ... and clearly positive for different distributions


# ---------------------------------------------------------------- precision / recall / density / coverage

def test_knn_radii_match_a_brute_force_sort():
    x = np.random.default_rng(6).normal(size=(40, 3))
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    expected = np.sort(d2, axis=1)[:, 3]  # column 0 is the point itself
    import torch

    np.testing.assert_allclose(knn_radii(torch.from_numpy(x), 3).numpy(), expected, rtol=1e-9, atol=1e-12)


def test_prdc_of_identical_sets():
    x = np.random.default_rng(7).normal(size=(500, 16))
    out = prdc(x, x, pr_k=3, dc_k=5)
    # Every point sits at the centre of its own ball; exactly k points (itself and k-1 neighbours) lie
    # strictly inside each k-NN ball, so density is exactly 1 without ties.
    assert out == {"precision": 1.0, "recall": 1.0, "density": pytest.approx(1.0, abs=1e-12), "coverage": 1.0}


def test_density_and_coverage_match_their_expectations_for_one_distribution():
    rng = np.random.default_rng(8)
    real, fake = rng.normal(size=(1000, 8)), rng.normal(size=(1000, 8))
    density, coverage = density_coverage(real, fake, k=5)
    assert density == pytest.approx(1.0, abs=0.1)  # Naeem et al.: E[density] = 1
    assert coverage == pytest.approx(expected_coverage(1000, 1000, 5), abs=0.02)  # ~ 1 - 1/2^5
    assert expected_coverage(1000, 1000, 5) == pytest.approx(1 - 0.5**5, abs=0.002)


def test_precision_recall_separate_fidelity_from_diversity():
    rng = np.random.default_rng(9)
    real = rng.normal(size=(1000, 4))
    narrow = 0.3 * rng.normal(size=(1000, 4))  # inside the data, but only its core
    p_narrow, r_narrow = precision_recall(real, narrow, k=3)
    assert p_narrow > 0.95 and r_narrow < 0.6
    off = rng.normal(size=(1000, 4)) + 4.0  # diverse but elsewhere
    p_off, r_off = precision_recall(real, off, k=3)
    assert p_off < 0.1 and r_off < 0.1


def test_pixel_space_orientation_figures_on_digits():
    ds = load_dataset("digits")
    train, test = ds.x_train.reshape(len(ds.x_train), -1), ds.x_test.reshape(len(ds.x_test), -1)
    precision, recall = precision_recall(test, train, k=3)
    assert precision == pytest.approx(0.91, abs=0.03) and recall == pytest.approx(0.90, abs=0.03)
    mean_image = np.repeat(train.mean(0, keepdims=True), len(train), axis=0)
    out = prdc(test, mean_image, pr_k=3, dc_k=5)
    assert out["precision"] == 1.0 and out["recall"] == 0.0
    assert out["coverage"] == pytest.approx(0.01, abs=0.01)


def test_pair_checks_name_the_problem():
    x = np.zeros((10, 3))
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(x, np.zeros((10, 4)))
    with pytest.raises(ValueError, match="at least 6 samples"):
        prdc(x[:5], x[:5], pr_k=3, dc_k=5)
    with pytest.raises(ValueError, match="NaN"):
        kid(np.full((10, 3), np.nan), x)


# ---------------------------------------------------------------- mode coverage

def test_class_histogram_entropy_known_answers():
    balanced, counts = class_histogram_entropy(np.arange(1000) % 10, 10)
    assert balanced == pytest.approx(np.log(10)) and counts.tolist() == [100] * 10
    assert class_histogram_entropy(np.zeros(50, dtype=int), 10)[0] == 0.0
    two, _ = class_histogram_entropy(np.array([0, 1] * 50), 10)
    assert two == pytest.approx(np.log(2))
