"""Side-by-side benchmark runs: every backend produces a row, invalid exports are never valid timings,
and rows reach the results store joinable with the training run."""
from __future__ import annotations

import json
from dataclasses import replace

import onnx
import pytest
from onnx import numpy_helper

from genlib.models import SampleConfig
from genlib.store import ResultsStore

from bench.backends import BACKENDS
from bench.parts import ExportConfig
from bench.results import store_bench_rows, store_export
from bench.suite import BenchConfig, run_benchmarks, speed_table, target_for_onnx, targets_for_run
from bench.timing import TimingConfig

QUICK = TimingConfig(warmup_rounds=1, min_rounds=3, target_s=0.0)
SAMPLER_BACKENDS = ("torch_loop", "ort_net_loop", "ort_step_loop", "ort_graph")


@pytest.fixture(scope="module")
def ddpm_targets(runs, tmp_path_factory):
    base = ExportConfig(sample=SampleConfig(steps=10), parity_batches=(2, 9))
    return targets_for_run(runs("ddpm"), ["denoiser", "sampler"], base, tmp_path_factory.mktemp("ddpm_onnx"))


def test_every_backend_is_timed_side_by_side(ddpm_targets):
    cfg = BenchConfig(batches=(1, 4), threads=(1,), backends=("torch", "ort") + SAMPLER_BACKENDS, timing=QUICK)
    rows = run_benchmarks(ddpm_targets, cfg, progress=False)
    got = {(r.part, r.backend, r.batch) for r in rows if r.status == "ok"}
    expected = {("denoiser", b, n) for b in ("torch", "ort") for n in (1, 4)}
    expected |= {("sampler", b, n) for b in SAMPLER_BACKENDS for n in (1, 4)}
    assert got == expected
    for r in rows:
        assert r.timing.rounds >= 3 and r.timing.p50_ms > 0
        if r.backend in ("ort", "ort_graph", "ort_step_loop", "ort_net_loop"):
            assert r.provider == "CPUExecutionProvider" and r.parity["valid"] is True
        else:
            assert r.provider == "torch:cpu" and r.parity is None
    table = speed_table(rows)
    assert {"torch", "ort/cpu", "x ort/cpu", "torch_loop", "ort_graph/cpu", "x ort_graph/cpu"} <= set(table.columns)
    sampler = table[table.target == "sampler"].iloc[0]
    assert sampler["x ort_graph/cpu"] == pytest.approx(sampler["torch_loop"] / sampler["ort_graph/cpu"])


def test_rows_reach_the_store_joinable_with_the_training_run(ddpm_targets, runs, tmp_path):
    cfg = BenchConfig(batches=(2,), threads=(1,), backends=("torch", "ort_graph"), timing=QUICK)
    rows = run_benchmarks(ddpm_targets, cfg, progress=False)
    with ResultsStore(tmp_path / "r.db") as store:
        assert store_bench_rows(store, rows, cfg, study="s1") == 2
        for t in ddpm_targets:
            store_export(store, t.info.sidecar, study="s1")
        res = store.read_table("results")
        runs_df = store.read_table("runs")
    run_key = runs("ddpm").config.run_key
    bench = runs_df[runs_df.kind == "bench"]
    assert set(bench.parent_key) == {run_key} and set(bench.status) == {"done"}
    assert set(bench.provider) == {"torch:cpu", "CPUExecutionProvider"}
    assert bench.git_commit.notna().all() and bench.versions_json.str.contains("onnxruntime").all()
    p50 = res[(res.kind == "bench") & (res.name == "latency_ms_p50")]
    assert set(p50.unit) == {"ms"} and set(p50.higher_is_better) == {0}
    extra = [json.loads(e) for e in p50.extra_json]
    assert {(e["backend"], e["batch"], e["threads"], e["part"]) for e in extra} == {
        ("torch", 2, 1, "denoiser"), ("ort_graph", 2, 1, "sampler")}
    assert {e["parity"] for e in extra} == {"n/a", "valid"}
    thr = res[res.name == "throughput_per_s"]
    assert set(thr.higher_is_better) == {1}
    exports = runs_df[runs_df.kind == "export"]
    assert len(exports) == 2 and set(exports.parent_key) == {run_key}
    parity = res[(res.kind == "export") & (res.name == "parity_max_abs_err")]
    assert all(json.loads(e)["valid"] is True for e in parity.extra_json)


def test_invalid_export_is_never_a_valid_timing(ddpm_targets, tmp_path):
    src = next(t for t in ddpm_targets if t.part == "denoiser")
    model = onnx.load(src.onnx_path)
    w = next(i for i in model.graph.initializer if i.name.endswith("weight"))
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) + 0.5, w.name))
    bad_path = tmp_path / src.onnx_path.name
    onnx.save(model, bad_path)
    bad = replace(src, onnx_path=bad_path, parity_cache={}, siblings={})
    cfg = BenchConfig(batches=(1,), threads=(1,), backends=("ort",), timing=QUICK)
    [row] = run_benchmarks([bad], cfg, progress=False)
    assert row.status == "skipped" and row.timing is None and "failed parity" in row.reason
    [forced] = run_benchmarks([replace(bad, parity_cache={})], replace(cfg, allow_invalid=True), progress=False)
    assert forced.status == "invalid" and forced.timing is not None and not forced.valid
    assert speed_table([forced]).empty
    with ResultsStore(tmp_path / "r.db") as store:
        store_bench_rows(store, [forced], cfg)
        run = store.read_table("runs").iloc[0]
    assert run.status == "failed" and "parity" in run.error


def test_bare_onnx_file_gets_only_onnx_runtime_backends(ddpm_targets):
    sampler = next(t for t in ddpm_targets if t.part == "sampler")
    target = target_for_onnx(sampler.onnx_path)
    assert target.step_path == sampler.step_path
    rows = run_benchmarks([target], BenchConfig(batches=(3,), threads=(1,), timing=QUICK), progress=False)
    assert {r.backend for r in rows if r.status == "ok"} == {"ort_graph", "ort_step_loop"}
    assert all(r.parity["valid"] is True for r in rows if r.status == "ok")  # from the sidecar


def _diffusers_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("diffusers") is not None


@pytest.mark.skipif(_diffusers_installed(), reason="diffusers is installed; the skip path needs it absent")
def test_peer_backend_skips_with_the_install_hint(ddpm_targets):
    cfg = BenchConfig(batches=(1,), threads=(1,), backends=("peer",), timing=QUICK)
    [row] = run_benchmarks([t for t in ddpm_targets if t.part == "sampler"], cfg, progress=False)
    assert row.status == "skipped" and "pip install" in row.reason


@pytest.mark.skipif(not _diffusers_installed(), reason="diffusers not installed (optional benchmark dependency)")
def test_peer_ddim_drives_the_same_network(ddpm_targets):
    cfg = BenchConfig(batches=(2,), threads=(1,), backends=("peer",), timing=QUICK)
    [row] = run_benchmarks([t for t in ddpm_targets if t.part == "sampler"], cfg, progress=False)
    assert row.status == "ok" and row.timing.p50_ms > 0
    assert row.notes["max_abs_diff_vs_genlib"] < 10  # same network, differently spaced steps


def test_bench_config_errors():
    with pytest.raises(Exception, match="did you mean 'ort_graph'"):
        BenchConfig(backends=("ort_grap",))
    with pytest.raises(ValueError, match="batches"):
        BenchConfig(batches=(0,))
    assert BenchConfig().thread_counts()[0] == 1
    assert set(BACKENDS.names()) >= {"torch", "torch_compile", "ort", "torch_loop", "ort_graph", "peer"}


@pytest.mark.slow
def test_torch_compile_backend_runs_or_says_why(ddpm_targets):
    cfg = BenchConfig(batches=(2,), threads=(1,), backends=("torch_compile",), timing=QUICK)
    [row] = run_benchmarks([t for t in ddpm_targets if t.part == "denoiser"], cfg, progress=False)
    assert row.status == "ok" or (row.status == "skipped" and "torch.compile failed" in row.reason)
    if row.status == "ok":
        assert row.notes["compile_s"] > 0


def test_progress_in_a_log_is_not_one_line_per_cell(ddpm_targets, capsys):
    """In a log (stderr not a terminal) the bar prints on its own schedule, never a frame per cell stuck at 0/N."""
    cfg = BenchConfig(batches=(1, 2), threads=(1,), backends=("torch", "ort"), timing=QUICK)
    run_benchmarks([t for t in ddpm_targets if t.part == "denoiser"], cfg, progress=True)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("bench")]
    assert len(lines) <= 2, lines
    assert sum("0/4" in ln for ln in lines) <= 1
