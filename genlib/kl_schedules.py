"""KL-weight schedules beta(step) for VAE training, as pure functions of the optimisation step.

`constant` is the plain beta-VAE; `recon_first` and `linear` let reconstruction dominate first
(KL annealing, Bowman et al. 2016); `kl_first` is the reverse ordering; `cyclical` repeats the
linear ramp M times (Fu et al. 2019). This module does not touch tensors or the optimiser.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from genlib.registry import Registry

KL_SCHEDULES: Registry[Callable[["KLScheduleConfig", float, int, int], float]] = Registry("kl schedule")


@dataclass(frozen=True, kw_only=True)
class KLScheduleConfig:
    kind: Literal["constant", "recon_first", "linear", "kl_first", "cyclical"] = "constant"
    # W: steps of the warm-up phase (recon_first: beta 0 for W steps; linear: 0 -> beta over W steps;
    # kl_first: beta * kl_first_factor for W steps, then beta). None means a quarter of training.
    warmup_steps: int | None = None
    # kl_first: how much heavier the KL is weighted during its early phase.
    kl_first_factor: float = 10.0
    # cyclical (Fu et al. 2019): M cycles over training; in each, ramp 0 -> beta over fraction R, then hold.
    cycles: int = 4
    ramp: float = 0.5

    def __post_init__(self) -> None:
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ValueError(f"kl_schedule.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.cycles < 1:
            raise ValueError(f"kl_schedule.cycles must be >= 1, got {self.cycles}")
        if not 0 < self.ramp <= 1:
            raise ValueError(f"kl_schedule.ramp must be in (0, 1], got {self.ramp}")
        if self.kl_first_factor <= 0:
            raise ValueError(f"kl_schedule.kl_first_factor must be > 0, got {self.kl_first_factor}")


def _warmup(cfg: KLScheduleConfig, total_steps: int) -> int:
    return cfg.warmup_steps if cfg.warmup_steps is not None else max(1, total_steps // 4)


@KL_SCHEDULES.register("constant", help="beta at every step")
def constant(cfg: KLScheduleConfig, beta: float, step: int, total_steps: int) -> float:
    return beta


@KL_SCHEDULES.register("recon_first", help="0 for the first W steps, then beta")
def recon_first(cfg: KLScheduleConfig, beta: float, step: int, total_steps: int) -> float:
    return 0.0 if step < _warmup(cfg, total_steps) else beta


@KL_SCHEDULES.register("linear", help="0 -> beta linearly over W steps, then beta")
def linear(cfg: KLScheduleConfig, beta: float, step: int, total_steps: int) -> float:
    w = _warmup(cfg, total_steps)
    return beta * min(1.0, step / w) if w > 0 else beta


@KL_SCHEDULES.register("kl_first", help="beta * factor for the first W steps, then beta (the reverse ordering)")
def kl_first(cfg: KLScheduleConfig, beta: float, step: int, total_steps: int) -> float:
    return beta * cfg.kl_first_factor if step < _warmup(cfg, total_steps) else beta


@KL_SCHEDULES.register("cyclical", help="M cycles of a 0 -> beta ramp over fraction R (Fu et al. 2019)")
def cyclical(cfg: KLScheduleConfig, beta: float, step: int, total_steps: int) -> float:
    period = max(1.0, total_steps / cfg.cycles)
    phase = (step % period) / period  # tau in [0, 1) within the current cycle
    return beta * min(1.0, phase / cfg.ramp)


def kl_weight(cfg: KLScheduleConfig, beta: float, step: int, total_steps: int) -> float:
    """beta(step) under schedule `cfg` for a run of `total_steps` steps with target weight `beta`."""
    return KL_SCHEDULES.get(cfg.kind)(cfg, beta, step, total_steps)
