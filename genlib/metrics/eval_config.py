"""One evaluation config, shared by a grid's `eval` section and `genbench eval`: how to sample, how many
samples, which metrics, their settings and the reference split. Loaded only when a command runs (it
imports torch through genlib.models), so building the command line stays light.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from genlib.config import ConfigError, from_dict, to_dict
from genlib.metrics.base import MetricsConfig
from genlib.models import SAMPLE_FIELDS, SampleConfig
from genlib.precisions import DEFAULT_PRECISION, PRECISIONS
from genlib.registry import suggest


@dataclass(frozen=True, kw_only=True)
class EvaluationConfig:
    """How a trained run is evaluated. In a grid file the section is flat (`eval: {sampler: ddim, steps: 50,
    n: 1000, metrics: [swd]}`: FLAT_FIELDS); on the command line `genbench eval` takes --n, --metrics and
    --reference, and `--set sample.<field>=...` / `metrics.<setting>=...` (CLI_SECTIONS)."""

    sample: SampleConfig = field(default_factory=SampleConfig)
    n: int = 1000
    metrics: tuple[str, ...] | None = None  # metric names; None: the defaults that apply to the family and data
    settings: MetricsConfig = field(default_factory=MetricsConfig)  # what each metric's value depends on
    reference: Literal["test", "train"] = "test"  # the data split samples are compared with
    # the precision of the exported graph a timed grid cell draws its samples through (genlib.precisions); an
    # untimed evaluation samples the torch network and takes fp32 only. Recorded only when not fp32.
    precision: str = DEFAULT_PRECISION

    FLAT_FIELDS: ClassVar[tuple[str, ...]] = SAMPLE_FIELDS + ("n", "metrics", "precision")
    # --set sections of `genbench eval`: the config field each one sets
    CLI_SECTIONS: ClassVar[dict[str, str]] = {"sample": "sample", "metrics": "settings"}

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    @classmethod
    def from_flat(cls, data: dict[str, Any], where: str = "eval") -> "EvaluationConfig":
        """From a grid's flat mapping of SampleConfig fields + n + metrics; unknown keys are ConfigErrors."""
        unknown = [k for k in data if k not in cls.FLAT_FIELDS]
        if unknown:
            raise ConfigError(f"unknown key '{where}.{unknown[0]}'{suggest(unknown[0], list(cls.FLAT_FIELDS))} "
                              f"(valid keys: {', '.join(cls.FLAT_FIELDS)})")
        sample = from_dict(SampleConfig, {k: data[k] for k in SAMPLE_FIELDS if k in data}, where)
        metrics = data.get("metrics")
        try:
            return cls(sample=sample, n=int(data.get("n", cls.n)), metrics=None if metrics is None else tuple(metrics),
                       precision=str(data.get("precision", cls.precision)))
        except ValueError as exc:
            raise ConfigError(f"'{where}': {exc}") from None

    @classmethod
    def from_sections(cls, data: dict[str, Any], **fields: Any) -> "EvaluationConfig":
        """From `genbench eval --set` sections ({"sample": {...}, "metrics": {...}}) plus plain fields."""
        unknown = [k for k in data if k not in cls.CLI_SECTIONS]
        if unknown:
            raise ConfigError(f"unknown key '{unknown[0]}'{suggest(unknown[0], list(cls.CLI_SECTIONS))} "
                              f"(valid keys here: {', '.join(cls.CLI_SECTIONS)})")
        try:
            return cls(sample=from_dict(SampleConfig, data.get("sample"), "sample"),
                       settings=from_dict(MetricsConfig, data.get("metrics"), "metrics"), **fields)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def to_flat(self) -> dict[str, Any]:
        """The grid's flat section: SampleConfig fields, n and the metric names."""
        out = {**to_dict(self.sample), "n": self.n, "metrics": None if self.metrics is None else list(self.metrics)}
        if self.precision != DEFAULT_PRECISION:  # left out, so keys of results from before precisions stay valid
            out["precision"] = self.precision
        return out

    def record(self) -> dict[str, Any]:
        """The `eval` layout of a record (genlib.records): the flat section plus the reference and settings."""
        return {**self.to_flat(), "reference": self.reference, "settings": to_dict(self.settings)}


__all__ = ["EvaluationConfig"]
