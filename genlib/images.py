"""Writing samples to disk: image grids and 2-D scatter plots as PNG, arrays as .npz.

Headless (matplotlib's Agg backend). Images are expected in data space [0, 1], shape (N, C, H, W);
2-D toy samples as (N, 2). Files are written atomically.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from genlib.checkpoint import atomic_write


def image_grid(x: np.ndarray, ncols: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile images (N, C, H, W) in [0, 1] into one (rows*(H+pad)-pad, cols*(W+pad)-pad[, 3]) array."""
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
    if x.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {x.shape}")
    n, c, h, w = x.shape
    ncols = ncols or int(math.ceil(math.sqrt(n)))
    nrows = int(math.ceil(n / ncols))
    grid = np.ones((c, nrows * (h + pad) - pad, ncols * (w + pad) - pad), dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, ncols)
        grid[:, r * (h + pad): r * (h + pad) + h, col * (w + pad): col * (w + pad) + w] = x[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def save_samples(x: np.ndarray, path: str | Path, title: str | None = None, scale: int = 4) -> Path:
    """Save samples to `path`: `.npz` (array `x`), or `.png` (a grid for images, a scatter plot for 2-D points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    x = np.asarray(x)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return atomic_write(path, lambda p: np.savez_compressed(open(p, "wb"), x=x))
    if suffix != ".png":
        raise ValueError(f"output '{path}' must end in .npz or .png")
    if x.ndim == 4:
        grid = image_grid(x)
        big = np.kron(grid, np.ones((scale, scale) + ((1,) if grid.ndim == 3 else ()), dtype=grid.dtype))
        return atomic_write(path, lambda p: plt.imsave(p, big, cmap="gray", vmin=0.0, vmax=1.0, format="png"))
    if x.ndim == 2 and x.shape[1] == 2:
        fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5)
        ax.set_aspect("equal")
        if title:
            ax.set_title(title, fontsize=9)
        try:
            return atomic_write(path, lambda p: fig.savefig(p, format="png", bbox_inches="tight"))
        finally:
            plt.close(fig)
    raise ValueError(f"cannot draw samples of shape {x.shape} as PNG (expected (N, C, H, W) images or (N, 2) points)")
