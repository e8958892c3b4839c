"""What `genbench eval --set` can change: metric settings, how samples are drawn, and the data split.

Kept apart from genlib.metrics.cli so that building the command line imports no torch: the CLI loads
this module only when a command runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from genlib.data import DataConfig
from genlib.metrics.base import MetricsConfig
from genlib.models import SampleConfig


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """What `--set` can change: metric settings, how samples are drawn, and (for --data) the data split."""

    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    data: DataConfig = field(default_factory=DataConfig)


__all__ = ["EvalConfig"]
