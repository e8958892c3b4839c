"""The timing harness with a fake clock: rounds, warm-up, sync, statistics (no wall time involved)."""
from __future__ import annotations

import numpy as np
import pytest

from bench.timing import TimingConfig, summarize, time_call


class FakeClock:
    """A clock that advances only when the timed call runs, by scripted durations (seconds)."""

    def __init__(self, durations):
        self.now = 0.0
        self.durations = list(durations)
        self.calls = 0
        self.syncs = 0

    def __call__(self) -> float:
        return self.now

    def call(self):
        self.now += self.durations[self.calls % len(self.durations)]
        self.calls += 1

    def sync(self):
        self.now += 0.001  # device work finishing: must be inside the timed region
        self.syncs += 1


def test_percentiles_and_throughput_from_a_fake_clock():
    clock = FakeClock([0.009 + 0.001 * (k % 10) for k in range(10)])  # 9..18 ms, plus 1 ms sync
    cfg = TimingConfig(warmup_rounds=0, min_rounds=100, target_s=0.0, max_rounds=100)
    t = time_call(clock.call, clock.sync, batch=16, cfg=cfg, clock=clock)
    expected = np.array([10.0 + (k % 10) for k in range(100)])  # ms, sync included
    assert t.rounds == 100
    assert t.p50_ms == pytest.approx(np.percentile(expected, 50))
    assert t.p90_ms == pytest.approx(np.percentile(expected, 90))
    assert t.p99_ms == pytest.approx(np.percentile(expected, 99))
    assert t.mean_ms == pytest.approx(expected.mean())
    assert t.std_ms == pytest.approx(expected.std(ddof=1))
    assert t.min_ms == pytest.approx(10.0)
    assert t.throughput_per_s == pytest.approx(16 * 1000 / t.p50_ms)


def test_warmup_rounds_run_but_are_not_timed():
    # The first 5 calls are slow (warm-up: compilation, allocation); they must not reach the statistics.
    clock = FakeClock([1.0] * 5 + [0.002] * 1000)
    cfg = TimingConfig(warmup_rounds=5, min_rounds=20, target_s=0.0)
    t = time_call(clock.call, clock.sync, cfg=cfg, clock=clock)
    assert clock.calls == 25 and clock.syncs == 25
    assert t.rounds == 20
    assert t.p99_ms == pytest.approx(3.0)  # 2 ms call + 1 ms sync


def test_rounds_continue_until_the_time_budget_is_spent():
    clock = FakeClock([0.01])  # 11 ms per round with sync
    cfg = TimingConfig(warmup_rounds=0, min_rounds=5, target_s=0.5, max_rounds=10_000)
    t = time_call(clock.call, clock.sync, cfg=cfg, clock=clock)
    assert t.rounds == int(np.ceil(0.5 / 0.011))
    capped = time_call(clock.call, clock.sync, cfg=TimingConfig(warmup_rounds=0, min_rounds=5, target_s=100.0,
                                                                 max_rounds=7), clock=clock)
    assert capped.rounds == 7


def test_min_rounds_win_over_a_spent_budget():
    clock = FakeClock([10.0])  # each round alone exceeds the budget
    t = time_call(clock.call, cfg=TimingConfig(warmup_rounds=0, min_rounds=12, target_s=1.0), clock=clock)
    assert t.rounds == 12


def test_memory_callable_is_sampled_after_the_rounds():
    clock = FakeClock([0.001])
    seen = []

    def memory():
        seen.append(clock.calls)
        return 123.5

    t = time_call(clock.call, cfg=TimingConfig(warmup_rounds=2, min_rounds=3, target_s=0.0), clock=clock, memory=memory)
    assert seen == [5] and t.peak_memory_mb == 123.5


def test_summary_drops_raw_samples_and_validation_errors():
    t = summarize([0.001, 0.002, 0.003], batch=1)
    assert "samples_ms" not in t.summary() and t.summary()["p50_ms"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="no timing samples"):
        summarize([], batch=1)
    with pytest.raises(ValueError, match="min_rounds"):
        TimingConfig(min_rounds=0)
    with pytest.raises(ValueError, match="warmup_rounds"):
        TimingConfig(warmup_rounds=-1)
