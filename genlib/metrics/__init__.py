"""Quality metrics: a registry of named metrics, each with its unit and direction, and one entry point.

`evaluate(names, dataset=..., model=..., samples=...)` returns `genlib.store.Metric` records; `evaluate_run`
and `evaluate_floor` wrap it for a run directory and for the data-versus-data reference. Submodules hold
the maths (samples: FD/KID/PRDC; image: MSE/PSNR/SSIM/sharpness; latent: ELBO/IWAE/latent health; toy:
SWD/MMD/energy) and the feature extractor (features); `catalog` registers every metric in `METRICS`.
"""
from genlib.metrics.base import METRICS, MetricError, MetricSpec, MetricsConfig
from genlib.metrics.evaluate import DEFAULT_N, default_metrics, evaluate, evaluate_floor, evaluate_run
from genlib.metrics.features import ExtractorConfig, ExtractorError, get_extractor
from genlib.metrics.toy import sliced_wasserstein

__all__ = ["DEFAULT_N", "METRICS", "ExtractorConfig", "ExtractorError", "MetricError", "MetricSpec", "MetricsConfig",
           "default_metrics", "evaluate", "evaluate_floor", "evaluate_run", "get_extractor", "sliced_wasserstein"]
