"""Quality metrics (see submodules)."""
from genlib.metrics.toy import sliced_wasserstein

__all__ = ["sliced_wasserstein"]
