"""The timing harness: warm up, then time enough rounds of `call(); sync()` for stable percentiles.

It takes plain callables and knows nothing of torch or ONNX Runtime: the caller supplies `call` (one
inference), `sync` (wait for the device; a no-op on CPU), optionally `memory` (peak memory in MB after
the rounds) and the clock (tests inject a fake one). Rounds continue until both `min_rounds` and the
time budget `target_s` are reached (or `max_rounds`), nanoGPT's "burn-in, then benchmark" with explicit
sync. Statistics: p50/p90/p99/mean/std/min in ms and throughput in samples per second at the p50.
"""
from __future__ import annotations

import math
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np


@dataclass(frozen=True, kw_only=True)
class TimingConfig:
    warmup_rounds: int = 10
    # Both must be reached: at least min_rounds, and at least target_s seconds of measured calls.
    min_rounds: int = 30
    target_s: float = 1.0
    max_rounds: int = 20_000

    def __post_init__(self) -> None:
        if self.warmup_rounds < 0:
            raise ValueError(f"warmup_rounds must be >= 0, got {self.warmup_rounds}")
        if not 1 <= self.min_rounds <= self.max_rounds:
            raise ValueError(f"need 1 <= min_rounds <= max_rounds, got {self.min_rounds}, {self.max_rounds}")
        if self.target_s < 0:
            raise ValueError(f"target_s must be >= 0, got {self.target_s}")


@dataclass(frozen=True, kw_only=True)
class Timing:
    """Latency statistics of one (call, batch) measurement; times in milliseconds."""

    batch: int
    rounds: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    throughput_per_s: float  # samples per second at the median latency
    peak_memory_mb: float | None = None
    samples_ms: tuple[float, ...] = field(default=(), repr=False)

    def summary(self) -> dict:
        out = asdict(self)
        out.pop("samples_ms")
        return out


def summarize(samples_s: list[float] | np.ndarray, batch: int, peak_memory_mb: float | None = None) -> Timing:
    """Statistics of per-call durations in seconds."""
    ms = np.asarray(samples_s, dtype=np.float64) * 1e3
    if ms.size == 0:
        raise ValueError("no timing samples")
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return Timing(batch=batch, rounds=int(ms.size), p50_ms=float(p50), p90_ms=float(p90), p99_ms=float(p99),
                  mean_ms=float(ms.mean()), std_ms=float(ms.std(ddof=1)) if ms.size > 1 else 0.0,
                  min_ms=float(ms.min()), throughput_per_s=batch * 1e3 / float(p50) if p50 > 0 else math.inf,
                  peak_memory_mb=peak_memory_mb, samples_ms=tuple(float(v) for v in ms))


def time_call(call: Callable[[], object], sync: Callable[[], object] = lambda: None, *, batch: int = 1,
              cfg: TimingConfig = TimingConfig(), clock: Callable[[], float] = time.perf_counter,
              memory: Callable[[], float | None] | None = None) -> Timing:
    """Time `call(); sync()` per round after `cfg.warmup_rounds` untimed rounds.

    batch: samples per call (for throughput). clock: seconds, monotonic. memory: called once after the
    rounds, returning peak memory in MB (or None).
    """
    for _ in range(cfg.warmup_rounds):
        call()
        sync()
    samples: list[float] = []
    spent = 0.0
    while len(samples) < cfg.max_rounds and (len(samples) < cfg.min_rounds or spent < cfg.target_s):
        start = clock()
        call()
        sync()
        dt = clock() - start
        samples.append(dt)
        spent += dt
    return summarize(samples, batch, memory() if memory is not None else None)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
