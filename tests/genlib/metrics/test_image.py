"""Per-image metrics agree with scikit-image on fixed arrays, and blur lowers the Laplacian variance."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.filters import laplace
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from genlib.data import load_dataset
from genlib.metrics.image import laplacian_variance, mse_per_sample, psnr_per_image, ssim_per_image, ssim_win_size


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
