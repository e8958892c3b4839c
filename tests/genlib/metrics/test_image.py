"""Per-image metrics agree with scikit-image on fixed arrays; blur lowers the Laplacian variance and the
high-frequency energy, and pixel noise, which inflates the former, does not inflate the latter."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from skimage.filters import laplace
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from genlib.data import DataConfig, load_dataset
from genlib.metrics.image import (hf_energy, laplacian_variance, mse_per_sample, psnr_per_image, ssim_per_image,
                                  ssim_win_size)

REPO = Path(__file__).resolve().parents[3]
MNIST = Path(os.environ.get("GENBENCH_MNIST") or REPO.parent / "shared" / "data" / "mnist")


def _pair(shape, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random(shape)
    return x, np.clip(x + 0.1 * rng.normal(size=shape), 0, 1)


def test_psnr_known_answer_and_scikit_image_agreement():
    x = np.zeros((1, 1, 8, 8))
    assert psnr_per_image(x, x + 0.1, data_range=1.0)[0] == pytest.approx(20.0)  # MSE 0.01 -> 20 dB
    a, b = _pair((4, 3, 16, 16))
    expected = [peak_signal_noise_ratio(ai, bi, data_range=1.0) for ai, bi in zip(a, b)]
    np.testing.assert_allclose(psnr_per_image(a, b, data_range=1.0), expected, rtol=1e-12)
    assert np.isinf(psnr_per_image(a, a)).all()


@pytest.mark.parametrize("shape", [(3, 1, 8, 8), (3, 3, 16, 12), (2, 1, 5, 5)])
def test_ssim_matches_scikit_image(shape):
    a, b = _pair(shape, seed=1)
    win = ssim_win_size(*shape[2:])
    if shape[1] == 1:
        expected = [structural_similarity(ai[0], bi[0], data_range=1.0, win_size=win) for ai, bi in zip(a, b)]
    else:
        expected = [structural_similarity(ai, bi, data_range=1.0, win_size=win, channel_axis=0)
                    for ai, bi in zip(a, b)]
    np.testing.assert_allclose(ssim_per_image(a, b, data_range=1.0), expected, rtol=1e-12)
    np.testing.assert_allclose(ssim_per_image(a, a), 1.0)


def test_ssim_window_shrinks_to_fit_and_rejects_tiny_images():
    assert [ssim_win_size(h, h) for h in (28, 8, 7, 6, 5, 3)] == [7, 7, 7, 5, 5, 3]
    with pytest.raises(ValueError, match="at least 3x3"):
        ssim_win_size(2, 8)


def test_mse_per_sample_and_shape_check():
    a = np.zeros((2, 1, 2, 2))
    b = a.copy()
    b[1] = 0.5
    np.testing.assert_allclose(mse_per_sample(a, b), [0.0, 0.25])
    with pytest.raises(ValueError, match="must match"):
        mse_per_sample(a, b[:, :, :1])


def test_laplacian_variance_matches_skimage_per_image_and_channel():
    a, _ = _pair((3, 2, 9, 11), seed=2)
    expected = [np.mean([laplace(img[c], ksize=3).var() for c in range(2)]) for img in a]
    np.testing.assert_allclose(laplacian_variance(a), expected, rtol=1e-12)


def test_blur_lowers_sharpness_on_digits():
    x = load_dataset("digits").x_test
    blurred = ndimage.gaussian_filter(x, sigma=(0, 0, 0.8, 0.8))
    assert laplacian_variance(blurred).mean() < 0.5 * laplacian_variance(x).mean()


def test_hf_energy_is_the_high_pass_variance_by_parseval():
    rng = np.random.default_rng(3)
    x = rng.random((4, 2, 8, 6))
    # cutoff 0 keeps every frequency (DC included): the mean squared pixel value, averaged over channels
    np.testing.assert_allclose(hf_energy(x, cutoff=1e-9, median_size=1) + (x.mean((2, 3)) ** 2).mean(1),
                               (x**2).mean((2, 3)).mean(1), rtol=1e-12)
    # a pure cosine at 0.25 cycles/pixel along the width is all high-frequency energy, 0.5 * amplitude^2
    wave = np.cos(2 * np.pi * 0.25 * np.arange(8))[None, None, None, :].repeat(8, axis=2)
    assert hf_energy(0.3 * wave, cutoff=0.25, median_size=1)[0] == pytest.approx(0.5 * 0.3**2)
    assert hf_energy(0.3 * wave, cutoff=0.26, median_size=1)[0] == pytest.approx(0.0, abs=1e-20)
    assert hf_energy(np.full((2, 1, 8, 8), 0.7))[0] == pytest.approx(0.0, abs=1e-20)


def _blur_and_noise_ratios(train: np.ndarray, reference: np.ndarray) -> dict[str, dict[str, float]]:
    """hf_energy and Laplacian variance of transformed training images, each over the clean test split's."""
    rng = np.random.default_rng(0)

    def blur(x):
        return ndimage.uniform_filter(x, size=(1, 1, 3, 3), mode="reflect")  # 3x3 box blur

    def noise(x, std):
        return np.clip(x + rng.normal(0.0, std, x.shape), 0.0, 1.0)  # samples live in [0, 1]

    cases = {"clean": train, "blur": blur(train), "noise_0.1": noise(train, 0.1), "noise_0.2": noise(train, 0.2),
             "blur_noise_0.1": noise(blur(train), 0.1), "blur_noise_0.2": noise(blur(train), 0.2)}
    ref_hf, ref_lap = hf_energy(reference).mean(), laplacian_variance(reference).mean()
    return {k: {"hf": float(hf_energy(v).mean() / ref_hf), "laplacian": float(laplacian_variance(v).mean() / ref_lap)}
            for k, v in cases.items()}


# Noise may not raise hf_energy above the clean data's level by more than this (relative). The
# train-versus-test floor already differs from 1 by ~1% on digits; 5% leaves room for that and for a
# different noise draw, while the Laplacian variance overshoots it fivefold (1.27 at std 0.2).
NOISE_TOLERANCE = 0.05


def _check_blur_and_noise(r: dict[str, dict[str, float]]) -> None:
    assert abs(r["clean"]["hf"] - 1.0) < 0.03, r
    assert r["blur"]["hf"] < 0.3, r  # a 3x3 blur removes most of the fine detail
    for key in ("noise_0.1", "noise_0.2"):
        assert r[key]["hf"] <= r["clean"]["hf"] * (1 + NOISE_TOLERANCE), (key, r)
    for key in ("blur_noise_0.1", "blur_noise_0.2"):  # noise does not make a blurred image look sharp
        assert r[key]["hf"] < 0.5, (key, r)
    # the Laplacian variance, by contrast, rates noisy digits sharper than the data
    assert r["noise_0.2"]["laplacian"] > r["clean"]["laplacian"] * (1 + NOISE_TOLERANCE), r


def test_blur_lowers_hf_energy_and_noise_does_not_raise_it_on_digits():
    """Digits 8x8, training split transformed vs the clean test split. Measured: clean 1.005, 3x3 blur
    0.151, noise std 0.1 / 0.2: 0.839 / 0.784, blur + noise 0.1 / 0.2: 0.207 / 0.341 (Laplacian
    variance: 0.996, 0.060, 1.053 / 1.270, 0.256 / 0.763)."""
    ds = load_dataset("digits")
    r = _blur_and_noise_ratios(np.asarray(ds.x_train, np.float64), np.asarray(ds.x_test, np.float64))
    print("\ndigits, relative to the test split:", {k: {m: round(v, 3) for m, v in d.items()} for k, d in r.items()})
    _check_blur_and_noise(r)


@pytest.mark.mnist
def test_blur_lowers_hf_energy_and_noise_does_not_raise_it_on_mnist():
    """MNIST 28x28 (the t10k IDX files: 5,000 images vs 5,000). Measured: clean 0.996, 3x3 blur 0.070,
    noise std 0.1 / 0.2: 0.787 / 0.723, blur + noise 0.1 / 0.2: 0.159 / 0.325 (Laplacian variance: 0.994,
    0.120, 1.403 / 2.646, 0.726 / 2.362)."""
    if not MNIST.is_dir():
        pytest.skip(f"MNIST IDX files not found at {MNIST} (set GENBENCH_MNIST to a directory of IDX files)")
    ds = load_dataset(DataConfig(name=f"idx:{MNIST}", test_fraction=0.5))
    r = _blur_and_noise_ratios(np.asarray(ds.x_train, np.float64), np.asarray(ds.x_test, np.float64))
    print("\nMNIST, relative to the test split:", {k: {m: round(v, 3) for m, v in d.items()} for k, d in r.items()})
    _check_blur_and_noise(r)


@pytest.mark.parametrize(("bad", "message"), [
    ({"hf_cutoff": 0.0}, r"hf_cutoff must be in \(0, 0.5\) cycles/pixel, got 0.0"),
    ({"hf_cutoff": 0.5}, r"hf_cutoff must be in \(0, 0.5\)"),
    ({"hf_median_size": 0}, r"hf_median_size must be >= 1, got 0"),
])
def test_hf_settings_are_validated(bad, message):
    from genlib.metrics import MetricsConfig

    with pytest.raises(ValueError, match=message):
        MetricsConfig(**bad)
