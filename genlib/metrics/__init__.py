"""Quality metrics: a registry of named metrics, each with its unit and direction, and one entry point.

`evaluate(names, dataset=..., model=..., samples=...)` returns `genlib.store.Metric` records; `evaluate_run`
and `evaluate_floor` wrap it for a run directory and for the data-versus-data reference. Submodules hold
the maths (samples: FD/KID/PRDC; image: MSE/PSNR/SSIM/sharpness; latent: ELBO/IWAE/latent health; toy:
SWD/MMD/energy) and the feature extractor (features); `catalog` registers every metric in `METRICS`.
"""
from __future__ import annotations

import sys
import types
from typing import Any

from genlib import lazy

# Loaded on first use (PEP 562), so that `genbench --help` imports no torch or pandas.
_EXPORTS = {
    "METRICS": "genlib.metrics.base",
    "MetricError": "genlib.metrics.base",
    "MetricSpec": "genlib.metrics.base",
    "MetricsConfig": "genlib.metrics.base",
    "DEFAULT_N": "genlib.metrics.evaluate",
    "default_metrics": "genlib.metrics.evaluate",
    "evaluate": "genlib.metrics.evaluate",
    "evaluate_floor": "genlib.metrics.evaluate",
    "evaluate_run": "genlib.metrics.evaluate",
    "ExtractorConfig": "genlib.metrics.features",
    "ExtractorError": "genlib.metrics.features",
    "get_extractor": "genlib.metrics.features",
    "sliced_wasserstein": "genlib.metrics.toy",
}

__all__ = ["DEFAULT_N", "METRICS", "ExtractorConfig", "ExtractorError", "MetricError", "MetricSpec",
           "MetricsConfig", "default_metrics", "evaluate", "evaluate_floor", "evaluate_run",
           "get_extractor", "sliced_wasserstein"]

# every export first imports genlib.metrics.evaluate, which registers every metric (catalog)
__getattr__, __dir__ = lazy.lazy_exports(globals(), _EXPORTS, __all__, first="genlib.metrics.evaluate")


class _Package(types.ModuleType):
    """Keeps `genlib.metrics.evaluate` the function: importing the submodule of the same name binds the
    module to the package attribute, which an eager `from ... import evaluate` used to overwrite."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType) and hasattr(value, name):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
