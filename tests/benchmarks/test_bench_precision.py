"""Export time and latency per precision (pytest-benchmark; `tox -e bench`): fp32, fp16, int8_dynamic and
int8_static for the default decoder, denoiser and the whole DDIM-50 sampler at batch 1 and 256, on ONNX Runtime's
CPU provider. Speed-ups over fp32 are printed and stored in extra_info with the CPU features that decide them
(AVX-512, VNNI, AMX, F16C: genlib.provenance.machine_info); they are measured, never asserted: int8 and fp16 are
not always faster on a CPU."""
from __future__ import annotations

import pytest

from genlib.models import SampleConfig
from genlib.provenance import machine_info
from genlib.train import load_run, load_run_config, train

from bench.backends import BACKENDS
from bench.export import export_part
from bench.parts import ExportConfig
from bench.suite import export_for_bench


NETWORKS = {
    "mlp_decoder": ({"model": {"family": "vae"}, "data": {"name": "digits"}}, "decoder"),
    "mlp_denoiser": ({"model": {"family": "ddpm"}, "data": {"name": "digits"}}, "denoiser"),
    "ddim50_2d": ({"model": {"family": "ddpm"}, "data": {"name": "8gaussians"}}, "sampler"),
}
PRECISIONS = ("fp32", "fp16", "int8_dynamic", "int8_static")
BATCHES = (1, 256)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("precision_nets")
    out = {}
    for name, (spec, _) in NETWORKS.items():
        train(load_run_config({**spec, "train": {"steps": 50, "device": "cpu", "log_every": 25}}), root / name,
              progress=False)
        out[name] = load_run(root / name, "cpu")
    return out, root


@pytest.fixture(scope="module")
def targets(runs):
    loaded, root = runs
    return {(name, p): export_for_bench(loaded[name], ExportConfig(part=part, precision=p,
                                                                   sample=SampleConfig(steps=50)), root / "onnx")
            for name, (_, part) in NETWORKS.items() for p in PRECISIONS}


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", list(NETWORKS))
def test_export_time(benchmark, runs, tmp_path, name, precision):
    loaded, _ = runs
    part = NETWORKS[name][1]
    cfg = ExportConfig(part=part, precision=precision, sample=SampleConfig(steps=50))
    benchmark.group = f"export {name}"
    benchmark.extra_info.update({"precision": precision, "part": part})
    benchmark.pedantic(lambda: export_part(loaded[name], cfg, tmp_path / f"{name}-{precision}.onnx"), rounds=1,
                       iterations=1)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", list(NETWORKS))
def test_latency_per_precision(benchmark, targets, name, precision, batch):
    target = targets[(name, precision)]
    backend = "ort_graph" if target.is_sampler else "ort"
    prepared = BACKENDS.get(backend).prepare(target, batch, 1, provider="cpu")
    benchmark.group = f"{name} b{batch}"
    benchmark.extra_info.update({"precision": precision, "batch": batch, "provider": prepared.provider,
                                 "cpu_features": machine_info().get("cpu_features")})
    benchmark(prepared.call)


def test_speedups_over_fp32_in_one_run(targets):
    """p50 of each precision against fp32, timed back to back here; printed, stored, never asserted."""
    from bench.timing import TimingConfig, time_call

    ratios = {}
    for name in NETWORKS:
        for batch in BATCHES:
            p50 = {}
            for precision in PRECISIONS:
                target = targets[(name, precision)]
                backend = "ort_graph" if target.is_sampler else "ort"
                prepared = BACKENDS.get(backend).prepare(target, batch, 1, provider="cpu")
                p50[precision] = time_call(prepared.call, prepared.sync, batch=batch,
                                           cfg=TimingConfig(target_s=0.5)).p50_ms
            for precision in PRECISIONS[1:]:
                ratios[f"{name} b{batch} {precision}"] = p50["fp32"] / p50[precision]
    print("speed-up over fp32 (above 1: faster), CPU features", machine_info().get("cpu_features"))
    for key, value in ratios.items():
        print(f"  {key}: {value:.2f}x")
