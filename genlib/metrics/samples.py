"""Distances between two sample sets in a feature space: Frechet distance, KID, precision/recall, density/coverage.

Frechet distance (Heusel et al. 2017) between Gaussians fitted to the two sets; KID (Binkowski et al. 2018):
the unbiased MMD^2 with the cubic polynomial kernel averaged over random subsets of at most half the samples
(their spread gives its standard error); improved precision and recall (Kynkaanniemi et al. 2019, k = 3)
and density and coverage (Naeem et al. 2020, k = 5) from k-NN balls;
the entropy of a predicted-class histogram (mode coverage). Pure functions of arrays (N, D), vectorised in
torch float64 and blocked so memory stays O(block * N). Which feature space to use is the caller's business.
"""
from __future__ import annotations

import math

import numpy as np
import torch

BLOCK = 2048  # rows of a distance/kernel matrix held at once


def _as_features(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    """(N, D) float64 tensor; validated in numpy (no intra-op thread hand-offs for a cheap check)."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be features of shape (N, D), got {a.shape}")
    a = np.array(a, dtype=np.float64)  # a private copy: inputs may be read-only dataset arrays
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return torch.from_numpy(a)


def _check_pair(x: torch.Tensor, y: torch.Tensor, min_n: int = 2) -> None:
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    if min(len(x), len(y)) < min_n:
        raise ValueError(f"need at least {min_n} samples in each set, got {len(x)} and {len(y)}")


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||a_i - b_j||^2 for a (N, D), b (M, D) -> (N, M), clamped at 0 (float64 keeps the expansion exact enough)."""
    d2 = torch.addmm((b * b).sum(1)[None], a, b.T, alpha=-2.0)  # ||b||^2 - 2 a.b, one (N, M) buffer
    return d2.add_((a * a).sum(1, keepdim=True)).clamp_min_(0.0)


# ---------------------------------------------------------------- Frechet distance

def gaussian_stats(x: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features x (N, D), float64."""
    t = _as_features(x, "features")
    mu = t.mean(0)
    centred = t - mu
    return mu.numpy(), (centred.T @ centred / max(1, len(t) - 1)).numpy()


def frechet_distance_gaussians(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Dowson & Landau 1982), in squared feature units.

    tr (S1 S2)^(1/2) = sum sqrt(eig(S1^(1/2) S2 S1^(1/2))): a symmetric PSD eigenproblem, so no complex
    sqrtm and no rank assumption (a singular covariance from few samples is fine).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    lam, vec = np.linalg.eigh((s1 + s1.T) / 2)
    root1 = (vec * np.sqrt(np.clip(lam, 0.0, None))) @ vec.T  # S1^(1/2)
    inner = root1 @ s2 @ root1
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)).sum()
    value = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)
    return max(value, 0.0)


def frechet_distance(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to x (N, D) and y (M, D)."""
    tx, ty = _as_features(x, "x"), _as_features(y, "y")
    _check_pair(tx, ty)
    return frechet_distance_gaussians(*gaussian_stats(tx), *gaussian_stats(ty))


# ---------------------------------------------------------------- KID

def _subset_indicators(n: int, m: int, subsets: int, rng: np.random.Generator) -> torch.Tensor:
    """(subsets, n) float64 0/1 rows, each with m ones at indices drawn without replacement."""
    ind = np.zeros((subsets, n))
    for s in range(subsets):
        ind[s, rng.choice(n, size=m, replace=False)] = 1.0
    return torch.from_numpy(ind)


def _poly3(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """k(x, y) = (x.y / D + 1)^3 for rows of a (N, D) and b (M, D) -> (N, M), computed in place."""
    k = torch.mm(a, b.T).div_(a.shape[1]).add_(1.0)
    return k.mul_(k * k)


def _subset_kernel_sums(a: torch.Tensor, ia: torch.Tensor, b: torch.Tensor, ib: torch.Tensor) -> torch.Tensor:
    """For every subset s: sum_{i in A_s, j in B_s} k(a_i, b_j), shape (subsets,), without forming (N, M) at once."""
    total = torch.zeros(ia.shape[0], dtype=torch.float64)
    for start in range(0, len(a), BLOCK):
        k_block = _poly3(a[start:start + BLOCK], b)  # (B, M)
        total += (ia[:, start:start + BLOCK].T * (k_block @ ib.T)).sum(0)
    return total


def kid_subset_size(n_x: int, n_y: int, subset_size: int) -> int:
    """Samples per KID subset: min(subset_size, min(n_x, n_y) // 2), at least 2. Half the samples at most,
    so subsets differ (subsets of the whole set would all be the same set, with std 0)."""
    return max(2, min(subset_size, min(n_x, n_y) // 2))


def kid(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, *, subsets: int = 100,
        subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: (mean, std) over `subsets` random subsets of the unbiased MMD^2 estimate

        MMD^2_u = sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (m (m - 1))
                  - 2 sum_{i, j} k(x_i, y_j) / m^2,    k(x, y) = (x.y / D + 1)^3,

    with m = kid_subset_size(N, M, subset_size) samples drawn without replacement from each set: at most
    half of the smaller set. Centred on 0 when x and y come from the same distribution (it can be negative).
    The std is the spread of MMD^2_u at subset size m; with m = n / 2 it is the half-sampling (delete-d
    jackknife, d = n / 2; Shao & Wu 1989) estimate of the standard error of the full-sample estimate, and
    `kid_standard_error` rescales it for other m. For equal distributions (a degenerate U-statistic) it
    errs on the large side, as the bootstrap does.
    """
    tx, ty = _as_features(x, "x"), _as_features(y, "y")
    _check_pair(tx, ty, min_n=4)
    if subsets < 1:
        raise ValueError(f"kid: subsets must be >= 1, got {subsets}")
    m = kid_subset_size(len(tx), len(ty), subset_size)
    rng = np.random.default_rng(seed)
    ix = _subset_indicators(len(tx), m, subsets, rng)
    iy = _subset_indicators(len(ty), m, subsets, rng)
    diag_x = ix @ ((tx.pow(2).sum(1) / tx.shape[1] + 1.0) ** 3)  # sum_{i in S} k(x_i, x_i)
    diag_y = iy @ ((ty.pow(2).sum(1) / ty.shape[1] + 1.0) ** 3)
    within_x = _subset_kernel_sums(tx, ix, tx, ix) - diag_x
    within_y = _subset_kernel_sums(ty, iy, ty, iy) - diag_y
    cross = _subset_kernel_sums(tx, ix, ty, iy)
    mmd2 = (within_x + within_y) / (m * (m - 1)) - 2.0 * cross / (m * m)
    return float(mmd2.mean()), float(mmd2.std(unbiased=True)) if subsets > 1 else 0.0


def kid_standard_error(std: float, n: int, m: int) -> float:
    """Delete-d jackknife standard error from the std of a statistic over subsets of m of n samples:
    std * sqrt(m / (n - m)) (Shao & Wu 1989, d = n - m); equal to std at m = n / 2."""
    if not 0 < m < n:
        raise ValueError(f"subset size must be in 1..n-1, got m={m} with n={n}")
    return std * math.sqrt(m / (n - m))


# ---------------------------------------------------------------- k-NN balls: precision/recall, density/coverage

def knn_radii(x: torch.Tensor, k: int | tuple[int, ...]) -> torch.Tensor | dict[int, torch.Tensor]:
    """Squared distance from each x_i (N, D) to its k-th nearest other sample, shape (N,).

    A tuple of k gives {k: radii} from one pass.
    """
    ks = (k,) if isinstance(k, int) else tuple(k)
    k_max = max(ks)
    if min(ks) < 1 or k_max >= len(x):
        raise ValueError(f"k-NN radius: need 1 <= k < N, got k={k} with N={len(x)}")
    rows = []
    for start in range(0, len(x), BLOCK):
        d2 = squared_distances(x[start:start + BLOCK], x)
        # position 0 of the k+1 smallest is the sample itself (distance 0), so index k is the k-th neighbour
        rows.append(d2.topk(k_max + 1, dim=1, largest=False).values)
    smallest = torch.cat(rows)
    radii = {kk: smallest[:, kk] for kk in ks}
    return radii[k] if isinstance(k, int) else radii


def prdc(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, *, pr_k: int = 3,
         dc_k: int = 5) -> dict[str, float]:
    """Precision, recall (Kynkaanniemi et al. 2019, eq. 1-2; k = pr_k) and density, coverage (Naeem et al.
    2020, eq. 3-4; k = dc_k) from one pass over the real-fake distances. real (N, D), fake (M, D).

    precision: share of fake samples inside the k-NN ball of at least one real sample (closed balls);
    recall: share of real samples inside the k-NN ball of at least one fake sample (closed balls);
    density = (1 / (k M)) sum_j sum_i 1[fake_j in B(real_i, NND_k(real_i))]  (about 1 for matching sets);
    coverage = (1 / N) sum_i 1[exists j: fake_j in B(real_i, NND_k(real_i))]. Density and coverage use
    open balls, as in Naeem et al.'s reference code.
    """
    r, f = _as_features(real, "real"), _as_features(fake, "fake")
    _check_pair(r, f, min_n=max(pr_k, dc_k) + 1)
    real_radii = knn_radii(r, (pr_k, dc_k))
    r_pr, r_dc = real_radii[pr_k], real_radii[dc_k]
    f_pr = knn_radii(f, pr_k)
    in_real_ball = torch.zeros(len(f), dtype=torch.bool)  # precision, per fake sample
    density_hits = torch.zeros(len(f), dtype=torch.float64)
    recall_hit, covered = [], []
    for start in range(0, len(r), BLOCK):
        d2 = squared_distances(r[start:start + BLOCK], f)  # (B real, M fake)
        in_real_ball |= (d2 <= r_pr[start:start + BLOCK, None]).any(0)
        density_hits += (d2 < r_dc[start:start + BLOCK, None]).sum(0)
        recall_hit.append((d2 <= f_pr[None]).any(1))
        covered.append(d2.min(1).values < r_dc[start:start + BLOCK])
    return {"precision": float(in_real_ball.double().mean()),
            "recall": float(torch.cat(recall_hit).double().mean()),
            "density": float(density_hits.sum() / (dc_k * len(f))),
            "coverage": float(torch.cat(covered).double().mean())}


def precision_recall(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall with k-NN manifolds (see `prdc`)."""
    out = prdc(real, fake, pr_k=k, dc_k=k)
    return out["precision"], out["recall"]


def density_coverage(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, k: int = 5) -> tuple[float, float]:
    """Density and coverage with k-NN balls around real samples (see `prdc`)."""
    out = prdc(real, fake, pr_k=k, dc_k=k)
    return out["density"], out["coverage"]


def expected_coverage(n_real: int, n_fake: int, k: int) -> float:
    """E[coverage] for two sets from the same distribution (Naeem et al. 2020, sec. 3.2):
    1 - prod_{i=1..k} (N - i) / (N + M - i)."""
    return 1.0 - math.prod((n_real - i) / (n_real + n_fake - i) for i in range(1, k + 1))


# ---------------------------------------------------------------- mode coverage

def class_histogram_entropy(predicted: np.ndarray, n_classes: int) -> tuple[float, np.ndarray]:
    """Entropy in nats of the histogram of predicted class indices (N,), and the counts (n_classes,).

    log(n_classes) for perfectly balanced predictions, 0 when every sample lands in one class.
    """
    counts = np.bincount(np.asarray(predicted, dtype=np.int64), minlength=n_classes)
    p = counts / max(1, counts.sum())
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum()), counts


__all__ = ["class_histogram_entropy", "density_coverage", "expected_coverage", "frechet_distance",
           "frechet_distance_gaussians", "gaussian_stats", "kid", "kid_standard_error", "kid_subset_size",
           "knn_radii", "prdc", "precision_recall", "squared_distances"]
