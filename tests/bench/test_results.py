"""Benchmark and export rows record where they actually ran: the provider an ONNX Runtime session reports
(not the one asked for) and the device that provider runs on; every row passes the record contract."""
from __future__ import annotations

import copy

import pytest

import bench.backends as backends
from genlib.models import SampleConfig

from bench.export import ExportConfig
from bench.results import bench_record, export_record
from bench.suite import BenchConfig, BenchRow, targets_for_run
from bench.timing import TimingConfig, time_call

QUICK = TimingConfig(warmup_rounds=1, min_rounds=3, target_s=0.0)


class FellBackToCPU:
    """A session asked for CUDA that runs on the CPU provider (what ORT does when CUDA cannot load)."""

    def __init__(self, session) -> None:
        self._session = session

    def get_providers(self):
        return ["CPUExecutionProvider"]

    def __getattr__(self, name):
        return getattr(self._session, name)


@pytest.fixture(scope="module")
def ddpm_targets(runs, tmp_path_factory):
    base = ExportConfig(sample=SampleConfig(steps=5), parity_batches=(2, 9))
    parts = ["denoiser", "sampler"]
    return targets_for_run(runs("ddpm"), parts, base, tmp_path_factory.mktemp("ddpm_onnx_results"))


def test_ort_net_loop_records_the_provider_that_ran_not_the_one_asked(ddpm_targets, monkeypatch):
    real = backends.ort_session
    asked = []

    def fake_session(path, provider, threads, cuda_graph=False):
        asked.append(provider)
        return FellBackToCPU(real(path, "cpu", threads))

    monkeypatch.setattr(backends, "ort_session", fake_session)
    sampler = next(t for t in ddpm_targets if t.part == "sampler")
    prepared = backends.BACKENDS.get("ort_net_loop").prepare(sampler, 2, 1, provider="cuda")
    try:
        assert set(asked) == {"cuda"}
        assert (prepared.provider, prepared.device) == ("CPUExecutionProvider", "cpu")
        timing = time_call(prepared.call, prepared.sync, batch=2, cfg=QUICK)
    finally:
        prepared.close()
    row = BenchRow(target="sampler", part="sampler", backend="ort_net_loop", provider=prepared.provider,
                   device=prepared.device, batch=2, threads=1, precision="fp32", timing=timing, parity=None,
                   status="ok", export_config={"part": "sampler", "sample": {"sampler": "ddim", "steps": 5}}, export_key="k",
                   run_key=sampler.run.config.run_key)
    rec, metrics = bench_record(row, BenchConfig(batches=(2,), threads=(1,), timing=QUICK))
    assert (rec.provider, rec.device) == ("CPUExecutionProvider", "cpu")
    assert rec.config["bench"]["provider"] == "CPUExecutionProvider" and "machine" not in rec.config
    assert rec.machine["cpu_count"] >= 1 and {m.name for m in metrics} >= {"latency_ms_p50", "throughput_per_s"}


@pytest.mark.parametrize("provider, device", [("CUDAExecutionProvider", "cuda"), ("CPUExecutionProvider", "cpu")])
def test_export_rows_record_where_parity_ran(ddpm_targets, provider, device):
    info = copy.deepcopy(next(t for t in ddpm_targets if t.part == "denoiser").info.sidecar)
    assert info["parity"]["provider"] == "CPUExecutionProvider"  # what the real check ran on here
    info["parity"]["provider"] = provider
    rec, metrics = export_record(info)
    assert (rec.device, rec.provider, rec.kind, rec.status) == (device, provider, "export", "done")
    assert {m.name for m in metrics} >= {"export_time_s", "node_count", "file_size_bytes", "parity_max_abs_err"}
