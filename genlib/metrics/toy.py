"""Distances between 2-D (or any low-dimensional) sample sets.

Sliced Wasserstein distance (Bonneel et al. 2015): the mean over random unit directions of the 1-D
Wasserstein-p distance between the projected sets, computed exactly by sorting. Vectorised in torch.
"""
from __future__ import annotations

import numpy as np
import torch


def sliced_wasserstein(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, n_projections: int = 256,
                       p: int = 2, seed: int = 0) -> float:
    """SW_p between samples x (N, D) and y (M, D), in the data's units.

    Unequal set sizes are handled by comparing quantiles at a common grid of max(N, M) levels.
    """
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64).flatten(1)
    y = torch.as_tensor(np.asarray(y), dtype=torch.float64).flatten(1)
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
