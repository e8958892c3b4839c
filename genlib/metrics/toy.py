"""Distances between 2-D (or any low-dimensional) sample sets: sliced Wasserstein, MMD, energy distance.

Sliced Wasserstein distance (Bonneel et al. 2015): the mean over random unit directions of the 1-D
Wasserstein-p distance between the projected sets, computed exactly by sorting. MMD (RBF kernel, median
heuristic) and energy distance are U-statistics over pairwise distances, summed in blocks (O(block * N)
memory). Vectorised in torch; the true-density NLL lives with the data (Dataset.log_density).
"""
from __future__ import annotations

import numpy as np
import torch


def _float64(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, ...) -> (N, D) float64 tensor; numpy input is copied (dataset arrays are read-only)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().flatten(1)
    return torch.from_numpy(np.array(x, dtype=np.float64)).flatten(1)


def sliced_wasserstein(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, n_projections: int = 256,
                       p: int = 2, seed: int = 0) -> float:
    """SW_p between samples x (N, D) and y (M, D), in the data's units.

    Unequal set sizes are handled by comparing quantiles at a common grid of max(N, M) levels.
    """
    x, y = _float64(x), _float64(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"sample dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    gen = torch.Generator().manual_seed(seed)
    dirs = torch.randn(x.shape[1], n_projections, generator=gen, dtype=torch.float64)
    dirs /= dirs.norm(dim=0, keepdim=True)
    px, _ = torch.sort(x @ dirs, dim=0)  # (N, P)
    py, _ = torch.sort(y @ dirs, dim=0)  # (M, P)
    n = max(px.shape[0], py.shape[0])
    levels = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    qx = px[(levels * px.shape[0]).long().clamp(max=px.shape[0] - 1)]
    qy = py[(levels * py.shape[0]).long().clamp(max=py.shape[0] - 1)]
    return float(((qx - qy).abs() ** p).mean(0).mean() ** (1.0 / p))


def _pair(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _float64(x), _float64(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"sample dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    if min(len(x), len(y)) < 2:
        raise ValueError(f"need at least 2 samples in each set, got {len(x)} and {len(y)}")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError("samples contain NaN or infinite values")
    return x, y


_BLOCK = 2048


def _pair_sum(a: torch.Tensor, b: torch.Tensor, f) -> torch.Tensor:
    """sum_{i, j} f(||a_i - b_j||), in row blocks; exact distances (0 on a diagonal), no matmul expansion."""
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, len(a), _BLOCK):
        total += f(torch.cdist(a[start:start + _BLOCK], b, compute_mode="donot_use_mm_for_euclid_dist")).sum()
    return total


def median_bandwidth(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, max_points: int = 2000,
                     seed: int = 0) -> float:
    """The median heuristic (Gretton et al. 2012): median pairwise distance in the pooled sample.

    Uses at most `max_points` pooled points (a seeded subset) so it stays O(max_points^2).
    """
    x, y = _pair(x, y)
    pooled = torch.cat([x, y])
    if len(pooled) > max_points:
        gen = torch.Generator().manual_seed(seed)
        pooled = pooled[torch.randperm(len(pooled), generator=gen)[:max_points]]
    d = torch.cdist(pooled, pooled, compute_mode="donot_use_mm_for_euclid_dist")
    iu = torch.triu_indices(len(pooled), len(pooled), offset=1)
    return float(d[iu[0], iu[1]].median())


def mmd_rbf(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, bandwidth: float | None = None,
            seed: int = 0) -> tuple[float, float]:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3) with k(a, b) = exp(-||a - b||^2 / (2 sigma^2)).

    sigma = `bandwidth`, or the median heuristic when None. Returns (MMD^2_u, sigma); MMD^2_u is
    centred on 0 for samples from one distribution (it can be slightly negative).
    """
    x, y = _pair(x, y)
    sigma = median_bandwidth(x, y, seed=seed) if bandwidth is None else float(bandwidth)
    if not sigma > 0:
        raise ValueError(f"MMD bandwidth must be > 0, got {sigma} (are all samples identical?)")
    gamma = 1.0 / (2 * sigma**2)
    n, m = len(x), len(y)

    def rbf(d: torch.Tensor) -> torch.Tensor:
        return torch.exp(-gamma * d * d)

    # k(a, a) = 1 on the diagonals, removed for the U-statistics
    value = ((_pair_sum(x, x, rbf) - n) / (n * (n - 1)) + (_pair_sum(y, y, rbf) - m) / (m * (m - 1))
             - 2.0 * _pair_sum(x, y, rbf) / (n * m))
    return float(value), sigma


def energy_distance(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, unbiased: bool = True) -> float:
    """Squared energy distance (Szekely & Rizzo 2013): 2 E||X - Y|| - E||X - X'|| - E||Y - Y'||.

    unbiased: within-set means over i != j (U-statistics, centred on 0 for one distribution); otherwise
    over all pairs (V-statistics: the square of scipy.stats.energy_distance in 1-D).
    """
    x, y = _pair(x, y)
    n, m = len(x), len(y)
    dxx, dyy = _pair_sum(x, x, lambda d: d), _pair_sum(y, y, lambda d: d)
    exx = dxx / (n * (n - 1)) if unbiased else dxx / (n * n)
    eyy = dyy / (m * (m - 1)) if unbiased else dyy / (m * m)
    return float(2.0 * _pair_sum(x, y, lambda d: d) / (n * m) - exx - eyy)
