"""Per-image quality numbers: reconstruction error (MSE, PSNR, SSIM), sharpness and high-frequency energy.

PSNR = 10 log10(data_range^2 / MSE) and SSIM (Wang et al. 2004) follow scikit-image with `data_range` always
given explicitly (images live in [0, 1]); sharpness is the variance of skimage.filters.laplace's response
(Pech-Pacheco et al. 2000), which pixel noise inflates; `hf_energy` is the power spectrum's energy at high
spatial frequencies after a median filter that removes such noise first. Inputs are arrays (N, C, H, W);
outputs are per-image arrays (N,). Means, spreads and references are the caller's.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.metrics import structural_similarity
from skimage.restoration.uft import laplacian


def _check_images(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 4:
        raise ValueError(f"{name} must be images of shape (N, C, H, W), got {x.shape}")
    return x


def _check_pair(x: np.ndarray, x_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, x_hat = np.asarray(x, dtype=np.float64), np.asarray(x_hat, dtype=np.float64)
    if x.shape != x_hat.shape:
        raise ValueError(f"reconstructions {x_hat.shape} must match the originals {x.shape}")
    return x, x_hat


def mse_per_sample(x: np.ndarray, x_hat: np.ndarray) -> np.ndarray:
    """Mean squared error per sample over all its elements, (N,)."""
    x, x_hat = _check_pair(x, x_hat)
    return ((x - x_hat) ** 2).reshape(len(x), -1).mean(1)


def psnr_per_image(x: np.ndarray, x_hat: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """PSNR in dB per image, (N,): 10 log10(data_range^2 / MSE_i); inf for a perfect reconstruction."""
    mse = mse_per_sample(x, x_hat)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range**2 / mse)


def ssim_win_size(height: int, width: int) -> int:
    """scikit-image's default 7x7 window, shrunk to the largest odd size that fits smaller images."""
    side = min(7, height, width)
    if side < 3:
        raise ValueError(f"SSIM needs images of at least 3x3 pixels, got {height}x{width}")
    return side if side % 2 else side - 1


def ssim_per_image(x: np.ndarray, x_hat: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Mean SSIM per image, (N,), via skimage.metrics.structural_similarity (uniform window, channels averaged)."""
    x, x_hat = _check_pair(_check_images(x, "images"), x_hat)
    win = ssim_win_size(*x.shape[2:])
    if x.shape[1] == 1:
        return np.array([structural_similarity(a[0], b[0], data_range=data_range, win_size=win)
                         for a, b in zip(x, x_hat)])
    return np.array([structural_similarity(a, b, data_range=data_range, win_size=win, channel_axis=0)
                     for a, b in zip(x, x_hat)])


_LAPLACE_3x3 = laplacian(2, (3, 3))[1]  # the kernel skimage.filters.laplace(image, ksize=3) convolves with


def laplacian_variance(x: np.ndarray) -> np.ndarray:
    """Variance of the Laplacian per image, averaged over channels, (N,).

    Equal to skimage.filters.laplace(image[c]).var() per channel: the (1, 1, 3, 3) kernel convolves only
    within each image and channel, with the same reflect borders.
    """
    x = _check_images(x, "images")
    response = ndimage.convolve(x, _LAPLACE_3x3[None, None], mode="reflect")
    return response.reshape(*x.shape[:2], -1).var(axis=2).mean(axis=1)


def hf_energy(x: np.ndarray, *, cutoff: float = 0.25, median_size: int = 3) -> np.ndarray:
    """Energy per pixel at spatial frequencies |f| >= cutoff (cycles/pixel) after a median filter, (N,).

    Each image and channel is median-filtered (median_size x median_size window, reflect borders), its
    power spectrum |FFT|^2 / (H W)^2 summed over the radial band sqrt(fx^2 + fy^2) >= cutoff (Nyquist is
    0.5 along an axis), and channels averaged: by Parseval, the variance the image keeps through an ideal
    high-pass filter, in squared intensity units. Blur removes this energy; independent pixel noise would
    add it, but the median filter removes most of that noise first (median_size 1 skips the filter).
    Fine detail at low contrast also scores low: it measures the energy of edges, not their shape alone.
    """
    x = _check_images(x, "images")
    if median_size > 1:
        x = ndimage.median_filter(x, size=(1, 1, median_size, median_size), mode="reflect")
    height, width = x.shape[2:]
    radius = np.hypot(np.fft.fftfreq(height)[:, None], np.fft.fftfreq(width)[None, :])  # (H, W), cycles/pixel
    power = np.abs(np.fft.fft2(x)) ** 2 / float(height * width) ** 2  # (N, C, H, W)
    return power[..., radius >= cutoff].sum(-1).mean(axis=1)


__all__ = ["hf_energy", "laplacian_variance", "mse_per_sample", "psnr_per_image", "ssim_per_image", "ssim_win_size"]
