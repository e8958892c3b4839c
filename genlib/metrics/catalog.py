"""Every registered metric: one small function per name, computing (value, extra) from an EvalContext.

Groups: reconstruction (mse, psnr, ssim), likelihood (neg_elbo, iwae, bpd), latent health (kl, active_units,
mutual_info), image sample quality in the trained extractor's feature space (fd, kid, precision, recall,
density, coverage, class_entropy) plus pixel-space sharpness and hf_energy_ratio, and 2-D toy distances
(swd, mmd, energy, nll_true). The maths lives in the sibling modules; this file only wires inputs and records settings.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from genlib.metrics import image, latent, samples, toy
from genlib.metrics.base import MetricError, register_metric
from genlib.metrics.context import EvalContext

IMAGE, TOY, BOTH = ("image",), ("toy",), ("image", "toy")
# The capability a family's network must offer for these metrics (each family declares it: GenerativeModel.provides),
# resolved to families when a metric is used, so families registered later (plugins) count.
AUTOENCODERS = "reconstruction"
VAES = "posterior"
DATA_RANGE = 1.0  # images are compared in data space [0, 1]
NEEDS_DECODER = "it reconstructs through an encoder and decoder"
NEEDS_POSTERIOR = "it needs an encoder q(z|x) and a decoder likelihood p(x|z)"


def _mean_std(values: np.ndarray) -> tuple[float, dict[str, Any]]:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), {"std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                                  "sem": float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0}


# ---------------------------------------------------------------- reconstruction

@register_metric("mse", unit="sq. data units", higher_is_better=False, kinds=BOTH, needs="model",
                 families=AUTOENCODERS, why=NEEDS_DECODER)
def _mse(ctx: EvalContext):
    """Reconstruction mean squared error per sample (mean over samples; std in extra)."""
    x, x_hat = ctx.reconstructions
    value, extra = _mean_std(image.mse_per_sample(x, x_hat))
    return value, {**ctx.model_extra(), **extra}


@register_metric("psnr", unit="dB", higher_is_better=True, kinds=IMAGE, needs="model", families=AUTOENCODERS,
                 why=NEEDS_DECODER)
def _psnr(ctx: EvalContext):
    """Reconstruction PSNR per image, data_range 1 (mean over images; std in extra)."""
    x, x_hat = ctx.reconstructions
    value, extra = _mean_std(image.psnr_per_image(x, x_hat, data_range=DATA_RANGE))
    return value, {**ctx.model_extra(), **extra, "data_range": DATA_RANGE}


@register_metric("ssim", unit="", higher_is_better=True, kinds=IMAGE, needs="model", families=AUTOENCODERS,
                 why=NEEDS_DECODER)
def _ssim(ctx: EvalContext):
    """Reconstruction SSIM per image (scikit-image, data_range 1; mean over images, std in extra)."""
    x, x_hat = ctx.reconstructions
    value, extra = _mean_std(image.ssim_per_image(x, x_hat, data_range=DATA_RANGE))
    return value, {**ctx.model_extra(), **extra, "data_range": DATA_RANGE,
                   "win_size": image.ssim_win_size(*x.shape[2:])}


# ---------------------------------------------------------------- likelihood

@register_metric("neg_elbo", unit="nats", higher_is_better=False, kinds=BOTH, needs="model", families=VAES,
                 why=NEEDS_POSTERIOR)
def _neg_elbo(ctx: EvalContext):
    """Negative ELBO per sample, recon NLL (Monte Carlo) + KL (closed form), nats (beta = 1)."""
    values = latent.negative_elbo(ctx.model, ctx.model_x, draws=ctx.cfg.elbo_draws,
                                  generator=ctx.generator("neg_elbo"))
    value, extra = _mean_std(values)
    return value, {**ctx.model_extra(), **extra, "draws": ctx.cfg.elbo_draws,
                   "likelihood": ctx.model.cfg.likelihood}


@register_metric("iwae", unit="nats", higher_is_better=True, kinds=BOTH, needs="model", families=VAES,
                 why=NEEDS_POSTERIOR)
def _iwae(ctx: EvalContext):
    """Importance-weighted lower bound L_k on log p(x) (Burda et al. 2016), nats; grows with k."""
    value, extra = _mean_std(ctx.iwae(ctx.cfg.iwae_k))
    return value, {**ctx.model_extra(), **extra, "k": ctx.cfg.iwae_k, "likelihood": ctx.model.cfg.likelihood}


@register_metric("bpd", unit="bits/dim", higher_is_better=False, kinds=IMAGE, needs="model", families=VAES,
                 why=NEEDS_POSTERIOR)
def _bpd(ctx: EvalContext):
    """Bits per dimension, -L_k / (D ln 2) from the IWAE bound (an upper bound on the model's NLL)."""
    dim = ctx.dataset.dim
    value, extra = _mean_std(-ctx.iwae(ctx.cfg.iwae_k) / (dim * math.log(2)))
    likelihood = ctx.model.cfg.likelihood
    density = ("bernoulli: per-pixel cross-entropy of [0, 1] intensities" if likelihood == "bernoulli" else
               "gaussian: differential density on [0, 1] data, no dequantisation (can be negative)")
    return value, {**ctx.model_extra(), **extra, "k": ctx.cfg.iwae_k, "dim": dim, "density": density}


# ---------------------------------------------------------------- latent health

@register_metric("kl", unit="nats", higher_is_better=None, kinds=BOTH, needs="model", families=VAES,
                 why=NEEDS_POSTERIOR)
def _kl(ctx: EvalContext):
    """KL(q(z|x) || N(0, I)) per latent dimension; value is their sum, per-dimension values in extra."""
    per_dim = latent.kl_by_dimension(*ctx.posterior)
    return float(per_dim.sum()), {**ctx.model_extra(), "per_dim": [round(float(v), 6) for v in per_dim],
                                  "latent_dim": len(per_dim)}


@register_metric("active_units", unit="count", higher_is_better=True, kinds=BOTH, needs="model", families=VAES,
                 why=NEEDS_POSTERIOR)
def _active_units(ctx: EvalContext):
    """Active latent units (Burda et al. 2016): dimensions u with Cov_x(E_q[z_u | x]) > threshold."""
    count, activity = latent.active_units(ctx.posterior[0], ctx.cfg.active_threshold)
    return float(count), {**ctx.model_extra(), "threshold": ctx.cfg.active_threshold, "latent_dim": len(activity),
                          "activity": [round(float(v), 6) for v in activity]}


@register_metric("mutual_info", unit="nats", higher_is_better=True, kinds=BOTH, needs="model", families=VAES,
                 why=NEEDS_POSTERIOR)
def _mutual_info(ctx: EvalContext):
    """Mutual information I_q(x; z) under the aggregate posterior of the evaluation set (<= log n)."""
    mu, scale = ctx.posterior
    value = latent.mutual_information(mu, scale, generator=ctx.generator("mutual_info"))
    return value, {**ctx.model_extra(), "upper_bound": math.log(len(mu)), "estimator": "aggregate posterior, 1 draw"}


# ---------------------------------------------------------------- image samples, feature space

def _feature_pair(ctx: EvalContext, name: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    fake, _ = ctx.features("samples")
    real, _ = ctx.features("reference")
    ctx.require_min(name, min(len(fake), len(real)))
    return fake, real, {**ctx.sample_extra(), **ctx.extractor.describe()}


@register_metric("fd", unit="sq. feature units", higher_is_better=False, kinds=IMAGE, uses=("labels",))
def _fd(ctx: EvalContext):
    """Frechet distance between Gaussians fitted to sample and reference features (FID's formula)."""
    fake, real, extra = _feature_pair(ctx, "fd")
    return samples.frechet_distance(fake, real), extra


@register_metric("kid", unit="kernel units", higher_is_better=False, kinds=IMAGE, uses=("labels",))
def _kid(ctx: EvalContext):
    """Kernel distance: unbiased MMD^2, cubic polynomial kernel, mean over random half-size subsets (centred on 0)."""
    fake, real, extra = _feature_pair(ctx, "kid")
    value, std = samples.kid(fake, real, subsets=ctx.cfg.kid_subsets, subset_size=ctx.cfg.kid_subset_size,
                             seed=ctx.seed)
    m = samples.kid_subset_size(len(fake), len(real), ctx.cfg.kid_subset_size)
    return value, {**extra, "std": std, "sem": samples.kid_standard_error(std, min(len(fake), len(real)), m),
                   "subsets": ctx.cfg.kid_subsets, "subset_size": m, "kernel": "(x.y/d + 1)^3",
                   "std_over": "subsets of at most half the samples; sem: delete-d jackknife"}


def _prdc(ctx: EvalContext, real: np.ndarray, fake: np.ndarray) -> dict[str, float]:
    """Precision, recall, density and coverage share one k-NN pass per evaluation."""
    return ctx.cached("prdc", lambda: samples.prdc(real, fake, pr_k=ctx.cfg.pr_k, dc_k=ctx.cfg.dc_k))


@register_metric("precision", unit="fraction", higher_is_better=True, kinds=IMAGE, uses=("labels",))
def _precision(ctx: EvalContext):
    """Improved precision (Kynkaanniemi et al. 2019): share of samples on the reference k-NN manifold."""
    fake, real, extra = _feature_pair(ctx, "precision")
    return _prdc(ctx, real, fake)["precision"], {**extra, "k": ctx.cfg.pr_k}


@register_metric("recall", unit="fraction", higher_is_better=True, kinds=IMAGE, uses=("labels",))
def _recall(ctx: EvalContext):
    """Improved recall (Kynkaanniemi et al. 2019): share of reference images on the samples' k-NN manifold."""
    fake, real, extra = _feature_pair(ctx, "recall")
    return _prdc(ctx, real, fake)["recall"], {**extra, "k": ctx.cfg.pr_k}


@register_metric("density", unit="ratio", higher_is_better=True, kinds=IMAGE, uses=("labels",))
def _density(ctx: EvalContext):
    """Density (Naeem et al. 2020): mean count of reference k-NN balls holding a sample, over k (1 if matched)."""
    fake, real, extra = _feature_pair(ctx, "density")
    return _prdc(ctx, real, fake)["density"], {**extra, "k": ctx.cfg.dc_k}


@register_metric("coverage", unit="fraction", higher_is_better=True, kinds=IMAGE, uses=("labels",))
def _coverage(ctx: EvalContext):
    """Coverage (Naeem et al. 2020): share of reference k-NN balls that hold at least one sample."""
    fake, real, extra = _feature_pair(ctx, "coverage")
    value = _prdc(ctx, real, fake)["coverage"]
    return value, {**extra, "k": ctx.cfg.dc_k,
                   "expected_if_matched": round(samples.expected_coverage(len(real), len(fake), ctx.cfg.dc_k), 4)}


@register_metric("class_entropy", unit="nats", higher_is_better=True, kinds=IMAGE, uses=("labels",))
def _class_entropy(ctx: EvalContext):
    """Entropy of the extractor's predicted-class histogram over samples (mode coverage; log K at best)."""
    _, logits = ctx.features("samples")
    ctx.require_min("class_entropy", len(logits))
    k = ctx.extractor.n_classes
    value, counts = samples.class_histogram_entropy(logits.argmax(1), k)
    return value, {**ctx.sample_extra(), **ctx.extractor.describe(), "n_classes": k, "max": math.log(k),
                   "counts": counts.tolist(), "modes_covered": int((counts > 0.01 * counts.sum()).sum())}


@register_metric("sharpness", unit="ratio", higher_is_better=None, kinds=IMAGE)
def _sharpness(ctx: EvalContext):
    """Mean variance of the Laplacian of samples over the reference's (1 = as sharp as the data; noise inflates it)."""
    ctx.require_min("sharpness", len(ctx.samples))
    fake = float(image.laplacian_variance(ctx.samples).mean())
    real = float(image.laplacian_variance(ctx.reference).mean())
    if real <= 0:
        raise MetricError(f"sharpness: the reference images of '{ctx.dataset.name}' have zero Laplacian variance")
    return fake / real, {**ctx.sample_extra(), "samples_laplacian_var": fake, "reference_laplacian_var": real,
                         "target": 1.0}


@register_metric("hf_energy_ratio", unit="ratio", higher_is_better=None, kinds=IMAGE)
def _hf_energy_ratio(ctx: EvalContext):
    """High-frequency energy after a median filter, samples over reference (1 = the data's; blur lowers it)."""
    ctx.require_min("hf_energy_ratio", len(ctx.samples))
    settings = {"cutoff": ctx.cfg.hf_cutoff, "median_size": ctx.cfg.hf_median_size}
    fake = float(image.hf_energy(ctx.samples, **settings).mean())
    real = float(image.hf_energy(ctx.reference, **settings).mean())
    if real <= 0:
        raise MetricError(f"hf_energy_ratio: the reference images of '{ctx.dataset.name}' have no energy at "
                          f"frequencies >= {ctx.cfg.hf_cutoff} cycles/pixel after the median filter")
    return fake / real, {**ctx.sample_extra(), "samples_hf_energy": fake, "reference_hf_energy": real,
                         "cutoff_cycles_per_pixel": ctx.cfg.hf_cutoff, "median_size": ctx.cfg.hf_median_size,
                         "target": 1.0}


# ---------------------------------------------------------------- 2-D toys

def _toy_pair(ctx: EvalContext, name: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    ctx.require_min(name, min(len(ctx.samples), len(ctx.reference)))
    return ctx.samples, ctx.reference, ctx.sample_extra()


@register_metric("swd", unit="data units", higher_is_better=False, kinds=TOY)
def _swd(ctx: EvalContext):
    """Sliced Wasserstein-2 distance between samples and reference (random projections, exact 1-D W2)."""
    x, y, extra = _toy_pair(ctx, "swd")
    return toy.sliced_wasserstein(x, y, n_projections=ctx.cfg.swd_projections, seed=ctx.seed), {
        **extra, "n_projections": ctx.cfg.swd_projections, "p": 2}


@register_metric("mmd", unit="kernel units", higher_is_better=False, kinds=TOY)
def _mmd(ctx: EvalContext):
    """Unbiased MMD^2 with an RBF kernel, bandwidth by the median heuristic (centred on 0)."""
    x, y, extra = _toy_pair(ctx, "mmd")
    value, sigma = toy.mmd_rbf(x, y, seed=ctx.seed)
    return value, {**extra, "kernel": "rbf", "bandwidth": sigma}


@register_metric("energy", unit="data units", higher_is_better=False, kinds=TOY)
def _energy(ctx: EvalContext):
    """Squared energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| (U-statistics, centred on 0)."""
    x, y, extra = _toy_pair(ctx, "energy")
    return toy.energy_distance(x, y), {**extra, "estimator": "U-statistic"}


@register_metric("nll_true", unit="nats", higher_is_better=False, kinds=TOY, uses=("density",))
def _nll_true(ctx: EvalContext):
    """Mean negative log-density of samples under the true distribution (closed form; 8gaussians)."""
    ctx.require_min("nll_true", len(ctx.samples))
    log_p = ctx.dataset.log_density(ctx.samples)
    value, extra = _mean_std(-log_p)
    return value, {**ctx.sample_extra(), **extra}


__all__: list[str] = []
