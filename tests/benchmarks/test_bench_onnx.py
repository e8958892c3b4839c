"""ONNX Runtime vs torch timings for the default networks (pytest-benchmark; `tox -e bench`).

Each network is trained briefly (speed does not depend on quality), exported behind the parity gate
and timed per backend with pytest-benchmark (JSON via --benchmark-json). `test_speedups_in_one_run`
times all backends side by side with bench.timing and records the ratios the project targets:
ORT CPU vs torch eager for the default decoder and denoiser (>= 2x at batch 1, >= 1.5x at 256) and the
whole DDIM-50 graph for a 2-D MLP denoiser (>= 5x the torch loop, >= 1.3x the per-step ORT loop, batch 1).
Ratios are printed and stored in extra_info (and in the results store named by GENBENCH_BENCH_STORE);
they are not asserted, because wall time on a shared machine is not a unit-test property.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from genlib.models import SampleConfig
from genlib.store import ResultsStore
from genlib.train import load_run, load_run_config, train

from bench.backends import BACKENDS, BackendUnavailable
from bench.parts import ExportConfig
from bench.results import store_bench_rows
from bench.suite import BenchConfig, run_benchmarks, speed_table, targets_for_run
from bench.timing import TimingConfig

# Default architectures (genlib's defaults), plus the conv decoder and small U-Net for orientation.
NETWORKS = {
    "mlp_decoder": ({"model": {"family": "vae"}, "data": {"name": "digits"}}, "decoder"),
    "mlp_denoiser": ({"model": {"family": "ddpm"}, "data": {"name": "digits"}}, "denoiser"),
    "conv_decoder": ({"model": {"family": "vae", "arch": "conv"}, "data": {"name": "digits"}}, "decoder"),
    "unet_denoiser": ({"model": {"family": "ddpm", "arch": "unet"}, "data": {"name": "digits"}}, "denoiser"),
    "ddim50_2d": ({"model": {"family": "ddpm"}, "data": {"name": "8gaussians"}}, "sampler"),
}
PART_BACKENDS = ("torch", "ort")
SAMPLER_BACKENDS = ("torch_loop", "ort_net_loop", "ort_step_loop", "ort_graph", "peer")
BATCHES = (1, 16, 256)
THREADS = 1  # per-backend benchmarks; the side-by-side test also sweeps threads


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_nets")
    out = {}
    for name, (spec, part) in NETWORKS.items():
        cfg = load_run_config({**spec, "train": {"steps": 50, "device": "cpu", "log_every": 25}})
        train(cfg, root / name, progress=False)
        run = load_run(root / name, "cpu")
        [target] = targets_for_run(run, [part], ExportConfig(sample=SampleConfig(steps=50)), root / f"{name}_onnx")
        assert target.info.valid, f"{name}: export failed parity: {target.info.sidecar['parity']['reason']}"
        target.label = name
        out[name] = target
    return out


def _cells():
    for name, (_, part) in NETWORKS.items():
        for backend in (SAMPLER_BACKENDS if part == "sampler" else PART_BACKENDS):
            for batch in BATCHES:
                yield pytest.param(name, backend, batch, id=f"{name}-{backend}-b{batch}")


@pytest.mark.parametrize("name,backend,batch", list(_cells()))
def test_latency(benchmark, targets, name, backend, batch):
    target = targets[name]
    spec = BACKENDS.get(backend)
    kwargs = {"provider": "cpu"} if spec.uses_provider else {}
    try:
        prepared = spec.prepare(target, batch, THREADS, **kwargs)
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    benchmark.group = f"{name} b{batch}"
    benchmark.extra_info.update({"backend": backend, "provider": prepared.provider, "batch": batch,
                                 "threads": THREADS, "part": target.part,
                                 "parity_valid": prepared.parity.valid if prepared.parity else None})

    def call():
        prepared.call()
        prepared.sync()

    try:
        benchmark.pedantic(call, rounds=max(10, 200 // batch), warmup_rounds=5, iterations=1)
    finally:
        prepared.close()


def test_speedups_in_one_run(benchmark, targets):
    """All backends side by side in one process; prints the table and keeps the ratios."""
    cfg = BenchConfig(batches=BATCHES, threads=(1, 2), backends=PART_BACKENDS + SAMPLER_BACKENDS,
                      timing=TimingConfig(warmup_rounds=10, min_rounds=30, target_s=1.0))
    rows = run_benchmarks(list(targets.values()), cfg, progress=False)
    table = speed_table(rows)
    print("\n" + table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    ratios = {}
    for rec in table.to_dict("records"):
        for col, v in rec.items():
            if str(col).startswith("x ") and v == v:
                ratios[f"{rec['target']} b{rec['batch']} t{rec['threads']} {col}"] = round(float(v), 3)
    benchmark.extra_info["speedups"] = ratios
    benchmark.extra_info["rows"] = len(rows)
    store_path = os.environ.get("GENBENCH_BENCH_STORE")
    if store_path:
        with ResultsStore(Path(store_path)) as store:
            store_bench_rows(store, rows, cfg, study="tests/benchmarks")
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    assert all(r.status in ("ok", "skipped") for r in rows)
