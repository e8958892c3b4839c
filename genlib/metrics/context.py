"""What one evaluation computes once and shares between metrics: samples, reference, features, posteriors.

An `EvalContext` holds the dataset, an optional trained model, the generated (or given) samples and a
seeded reference subset of one split, all at the same n. Expensive intermediates (samples from the model,
extractor features, the k-NN pass, q(z|x) on the evaluation set, IWAE bounds per k) are computed lazily and
cached, so asking for eight image metrics extracts features once. It computes no metric itself.
"""
from __future__ import annotations

import zlib
from functools import cached_property
from typing import Any

import numpy as np
import torch

from genlib.config import to_dict
from genlib.data import Dataset
from genlib.metrics import latent
from genlib.metrics.base import MetricError, MetricsConfig
from genlib.metrics.features import FeatureExtractor, get_extractor


class EvalContext:
    """Inputs and cached intermediates of one `evaluate` call. Images are data-space [0, 1] (N, C, H, W)."""

    def __init__(self, *, dataset: Dataset, model: Any | None, samples: np.ndarray | None, sample_cfg: Any | None,
                 cfg: MetricsConfig, n: int, seed: int, reference: str, progress: bool = False) -> None:
        if n < 1:
            raise MetricError(f"n must be >= 1, got {n}")
        if reference not in ("test", "train"):
            raise MetricError(f"reference must be 'test' or 'train', got {reference!r}")
        self.dataset, self.model, self.cfg, self.seed = dataset, model, cfg, seed
        self.sample_cfg = sample_cfg
        self.reference_split = reference
        self.progress = progress
        pool = dataset.x_test if reference == "test" else dataset.x_train
        self.n_requested = n
        self.n = min(n, len(pool))  # samples and reference are compared at the same n
        index = np.sort(np.random.default_rng([seed, 1]).choice(len(pool), size=self.n, replace=False))
        self.reference = pool[index]  # (n, *sample_shape)
        self._given = None if samples is None else self._check_samples(samples)

    # -- inputs --------------------------------------------------------------------------------------
    def _check_samples(self, samples: np.ndarray | torch.Tensor) -> np.ndarray:
        if isinstance(samples, torch.Tensor):
            samples = samples.detach().cpu().numpy()
        x = np.asarray(samples, dtype=np.float32)
        shape = self.dataset.sample_shape
        if x.ndim != 1 + len(shape) or x.shape[1:] != shape:
            raise MetricError(f"samples must have shape (N, {', '.join(map(str, shape))}) like dataset "
                              f"'{self.dataset.name}', got {x.shape}")
        if not np.isfinite(x).all():
            raise MetricError(f"samples contain {int((~np.isfinite(x)).sum())} NaN or infinite values")
        if self.dataset.kind == "image" and len(x) and (x.min() < -1e-6 or x.max() > 1 + 1e-6):
            raise MetricError(f"image samples must be in data space [0, 1], got values in [{x.min():.3g}, "
                              f"{x.max():.3g}]; map [-1, 1] model-space output with genlib.data.from_symmetric")
        if len(x) > self.n:  # compare at the same n as the reference: a seeded subset
            x = x[np.sort(np.random.default_rng([self.seed, 2]).choice(len(x), size=self.n, replace=False))]
        return x

    @cached_property
    def samples(self) -> np.ndarray:
        """(n, *sample_shape) float32: the given samples, or n fresh draws from the model."""
        if self._given is not None:
            return self._given
        if self.model is None:
            raise MetricError("sample metrics need samples or a trained model to draw them from")
        from genlib.train import generate  # lazy: genlib.train imports every model family

        return self._check_samples(generate(self.model, self.n, self.sample_cfg, seed=self.seed))

    def cached(self, key: str, compute):
        """compute() once per context under `key` (e.g. precision and recall share one k-NN pass)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    @cached_property
    def _memo(self) -> dict[str, Any]:
        return {}

    def generator(self, name: str) -> torch.Generator:
        """A CPU generator for metric `name`, seeded by (seed, name): values do not depend on which other
        metrics were requested alongside."""
        return torch.Generator().manual_seed(int(np.random.SeedSequence(
            [self.seed, zlib.crc32(name.encode())]).generate_state(1)[0]))

    def sample_extra(self) -> dict[str, Any]:
        extra = {"n": len(self.samples), "n_reference": self.n, "reference": self.reference_split, "seed": self.seed,
                 "samples_from": "arrays" if self._given is not None else "model"}
        if self.sample_cfg is not None:  # given with arrays too: how the caller drew them
            extra["sample"] = to_dict(self.sample_cfg)
        elif self._given is None:
            from genlib.models import SampleConfig

            extra["sample"] = to_dict(SampleConfig())  # what generate() used
        if self.n < self.n_requested:
            extra["n_requested"] = self.n_requested
        return extra

    def model_extra(self) -> dict[str, Any]:
        extra = {"n": self.n, "split": self.reference_split, "seed": self.seed}
        if self.n < self.n_requested:
            extra["n_requested"] = self.n_requested
        return extra

    def require_min(self, name: str, count: int) -> None:
        if count < self.cfg.min_samples:
            raise MetricError(f"metric '{name}' needs at least {self.cfg.min_samples} samples per set "
                              f"(min_samples), got {count}; raise n or use a larger split")

    # -- feature space -------------------------------------------------------------------------------
    @cached_property
    def extractor(self) -> FeatureExtractor:
        return get_extractor(self.dataset, self.cfg.extractor, progress=self.progress)

    @cached_property
    def _features(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {}

    def features(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        """(features (n, feature_dim), logits (n, n_classes)) of 'samples' or 'reference'."""
        if which not in self._features:
            x = self.samples if which == "samples" else self.reference
            self._features[which] = self.extractor.features_and_logits(x)
        return self._features[which]

    # -- model quantities ----------------------------------------------------------------------------
    @cached_property
    def model_x(self) -> torch.Tensor:
        """The reference subset in model space (what the network reads), float32 CPU."""
        return self.model.to_model_space(torch.from_numpy(np.array(self.reference, dtype=np.float32)))

    @cached_property
    def reconstructions(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, x_hat) in data space for the reference subset: x_hat = decode(encode(x)) (the posterior mean for a VAE)."""
        dev = self.model.device
        with torch.no_grad():
            x_hat = torch.cat([self.model.to_data_space(self.model.net(b.to(dev))).cpu()
                               for b in self.model_x.split(1024)])
        return np.asarray(self.reference, dtype=np.float64), x_hat.double().numpy()

    @cached_property
    def posterior(self) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) over the reference subset: mu (n, k), scale (n, k) or (n, k, k), float64."""
        return latent.posterior(self.model, self.model_x)

    @cached_property
    def _iwae(self) -> dict[int, np.ndarray]:
        return {}

    def iwae(self, k: int) -> np.ndarray:
        """Per-sample L_k (n,) nats, cached per k."""
        if k not in self._iwae:
            self._iwae[k] = latent.iwae_bound(self.model, self.model_x, k, generator=self.generator(f"iwae@{k}"),
                                              progress=self.progress)
        return self._iwae[k]


__all__ = ["EvalContext"]
