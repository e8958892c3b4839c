"""torch.compile is timed for every batch size and thread count of a sweep, not only the first one.

A tiny module wrapped as a bench target: the sweep must give one `ok` row per (batch, threads), each
timed on the compiled module (compile time recorded apart), with outputs equal to eager torch.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from bench.backends import BACKENDS, Target, clear_sessions
from bench.suite import BenchConfig, run_benchmarks
from bench.timing import TimingConfig, time_call

QUICK = TimingConfig(warmup_rounds=1, min_rounds=3, target_s=0.0)


class TinyDenoiser(torch.nn.Module):
    """(x_t (B, 2), t (B,)) -> (B, 2); like the parts bench wraps, it has no __len__."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.cat([x_t, t.float()[:, None]], dim=1))


def _target(module: torch.nn.Module) -> Target:
    def feeds(b: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        return {"x_t": torch.randn(b, 2, generator=g), "t": torch.randint(0, 10, (b,), generator=g)}

    part_graph = SimpleNamespace(module=module, graph_inputs=["x_t", "t"], make_feeds=feeds)
    info = SimpleNamespace(sidecar=None, details={}, inputs=[])
    return Target(part="denoiser", onnx_path=Path("tiny.onnx"), info=info, part_graph=part_graph,
                  run=SimpleNamespace(model=SimpleNamespace(net=module)))


def _inductor_skip_reason() -> str | None:
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        return "inductor needs a C compiler (gcc or cc) on PATH to compile for the CPU"
    return None


@pytest.mark.skipif(_inductor_skip_reason() is not None, reason=str(_inductor_skip_reason()))
def test_torch_compile_times_every_batch_and_thread_count():
    torch.manual_seed(0)
    module = TinyDenoiser().eval()
    target = _target(module)
    cfg = BenchConfig(batches=(1, 5), threads=(1, 2), backends=("torch_compile",), timing=QUICK)
    old_threads = torch.get_num_threads()
    rows = run_benchmarks([target], cfg, progress=False)
    assert torch.get_num_threads() == old_threads  # each cell restores the thread count it changed
    assert [(r.batch, r.threads, r.status, r.reason) for r in rows] == [
        (1, 1, "ok", ""), (1, 2, "ok", ""), (5, 1, "ok", ""), (5, 2, "ok", "")]
    for r in rows:
        assert r.provider == "torch_compile:cpu" and r.timing.rounds >= 3 and r.timing.p50_ms > 0
        assert r.timing.throughput_per_s == pytest.approx(r.batch * 1000.0 / r.timing.p50_ms)
        assert r.notes["compile_s"] > 0


@pytest.mark.skipif(_inductor_skip_reason() is not None, reason=str(_inductor_skip_reason()))
def test_torch_compile_call_matches_eager_and_is_timed_on_a_fake_clock():
    torch.manual_seed(0)
    module = TinyDenoiser().eval()
    target = _target(module)
    spec = BACKENDS.get("torch_compile")
    ticks = iter(range(1000))
    clock = lambda: next(ticks) * 0.002  # noqa: E731  (every call to the clock advances 2 ms)
    try:
        for batch in (1, 5):
            prepared = spec.prepare(target, batch, 1)
            feeds = target.feeds(batch)
            with torch.inference_mode():
                expected = module(feeds["x_t"], feeds["t"])
            assert torch.allclose(prepared.call(), expected, atol=1e-6)
            timing = time_call(prepared.call, prepared.sync, batch=batch, cfg=QUICK, clock=clock)
            prepared.close()
            assert timing.p50_ms == pytest.approx(2.0) and timing.rounds == 3
    finally:
        clear_sessions()
