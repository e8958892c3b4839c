"""The metric registry: each metric declares its unit, direction, the data kinds and model families it applies to.

A `MetricSpec` is what `METRICS` stores: a name, its unit, whether higher is better (None: neither, e.g. a
ratio whose target is 1), the kinds of data it applies to, what it needs ("samples" compared against a
reference split, or the trained "model" itself) and the function that computes it from an evaluation
context. `MetricsConfig` holds every setting a number depends on; each is recorded in the metric's `extra`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

from genlib.metrics.features import ExtractorConfig
from genlib.registry import Registry

if TYPE_CHECKING:
    from genlib.metrics.evaluate import EvalContext

Needs = Literal["samples", "model"]


class MetricError(ValueError):
    """A metric cannot be computed for this input (wrong data kind, model family, too few samples, ...)."""


@dataclass(frozen=True)
class MetricSpec:
    name: str
    unit: str
    higher_is_better: bool | None
    kinds: tuple[str, ...]  # ("image",), ("toy",) or both
    needs: Needs = "samples"
    # model metrics: the families that have what the metric needs (None: any family), as names or as a capability
    # that families declare (GenerativeModel.provides, e.g. "reconstruction"), looked up when used, so a family
    # registered later (a plugin's) counts
    families_declared: tuple[str, ...] | str | None = None
    # what the dataset must provide: "labels" (the feature extractor is a classifier), "density" (closed form)
    uses: tuple[str, ...] = ()
    why: str = ""  # what the metric needs from a model, quoted when a family lacks it
    description: str = ""
    compute: Callable[["EvalContext"], tuple[float, dict[str, Any]]] | None = field(
        default=None, repr=False, compare=False)

    @property
    def families(self) -> tuple[str, ...] | None:
        if isinstance(self.families_declared, str):
            from genlib.models import families_providing

            return families_providing(self.families_declared)
        return self.families_declared


METRICS: Registry[MetricSpec] = Registry("metric")
ORDER: list[str] = []  # registration order: the order defaults and listings use


def register_metric(name: str, *, unit: str, higher_is_better: bool | None, kinds: tuple[str, ...],
                    needs: Needs = "samples", families: tuple[str, ...] | str | None = None, uses: tuple[str, ...] = (),
                    why: str = ""):
    """Decorator: register `compute(ctx) -> (value, extra)` as metric `name`; its docstring's first line describes it."""

    def decorate(compute: Callable[["EvalContext"], tuple[float, dict[str, Any]]]):
        doc = (compute.__doc__ or "").strip().splitlines()
        spec = MetricSpec(name=name, unit=unit, higher_is_better=higher_is_better, kinds=tuple(kinds), needs=needs,
                          families_declared=families, uses=tuple(uses), why=why, description=doc[0] if doc else "",
                          compute=compute)
        METRICS.register(name, help=spec.description)(spec)
        ORDER.append(name)
        return compute

    return decorate


@dataclass(frozen=True, kw_only=True)
class MetricsConfig:
    """Every setting a metric value depends on (each lands in the metric's `extra`)."""

    iwae_k: int = 100  # importance samples of the IWAE bound (and of bits/dim, which uses it)
    elbo_draws: int = 10  # z ~ q(z|x) draws averaged in the reconstruction term of the negative ELBO
    active_threshold: float = 0.01  # Burda et al.: a unit is active when Cov_x(E_q[z_u|x]) exceeds this
    pr_k: int = 3  # improved precision/recall neighbourhood (Kynkaanniemi et al. 2019)
    dc_k: int = 5  # density/coverage neighbourhood (Naeem et al. 2020)
    kid_subsets: int = 100
    # Samples per KID subset, capped at half the smaller set so subsets differ and their spread is a standard error.
    kid_subset_size: int = 1000
    swd_projections: int = 256
    # hf_energy_ratio: the band |f| >= hf_cutoff cycles/pixel (upper half up to Nyquist 0.5), after a
    # hf_median_size x hf_median_size median filter that removes pixel noise (1: no filter).
    hf_cutoff: float = 0.25
    hf_median_size: int = 3
    # Fewer samples per set than this is an error: FD, KID and k-NN metrics are meaningless on a handful.
    min_samples: int = 100
    extractor: ExtractorConfig = field(default_factory=ExtractorConfig)

    def __post_init__(self) -> None:
        for name in ("iwae_k", "elbo_draws", "pr_k", "dc_k", "kid_subsets", "swd_projections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.hf_cutoff < 0.5:
            raise ValueError(f"hf_cutoff must be in (0, 0.5) cycles/pixel, got {self.hf_cutoff}")
        if self.hf_median_size < 1:
            raise ValueError(f"hf_median_size must be >= 1, got {self.hf_median_size}")
        if self.kid_subset_size < 2:
            raise ValueError(f"kid_subset_size must be >= 2, got {self.kid_subset_size}")
        if self.active_threshold < 0:
            raise ValueError(f"active_threshold must be >= 0, got {self.active_threshold}")
        if self.min_samples < max(self.pr_k, self.dc_k) + 1:
            raise ValueError(f"min_samples must exceed the k-NN sizes (pr_k={self.pr_k}, dc_k={self.dc_k}), "
                             f"got {self.min_samples}")


__all__ = ["METRICS", "ORDER", "MetricError", "MetricSpec", "MetricsConfig", "register_metric"]
