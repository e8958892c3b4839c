"""Timing a grid cell's own sampler: the export is the cell's sampler, cached by export key, gated on parity,
timed per setting, and `draw` reproduces the torch sampler's samples through the exported graph."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

import bench.grid_timing as gt
from bench.grid_timing import TimingSettings, TimingSettingsError, export_config_for, time_eval_cell
from genlib import records
from genlib.models import SampleConfig
from genlib.samplers import resolve_x0_clip
from genlib.train import generate

FAST = {"backends": ["torch_loop", "ort_graph"], "batches": [1, 4], "threads": [1], "target_s": 0.0,
        "min_rounds": 1, "warmup_rounds": 0}


def _resolved(run, **kw) -> SampleConfig:
    from genlib.data import load_dataset
    return resolve_x0_clip(SampleConfig(**kw), run.model, load_dataset(run.config.data).x_train)


@pytest.fixture
def count_exports(monkeypatch):
    import bench.export

    calls: list = []
    real = bench.export.export_part

    def counting(run, cfg, out, **kw):
        calls.append(cfg)
        return real(run, cfg, out, **kw)

    monkeypatch.setattr(bench.export, "export_part", counting)
    return calls


@pytest.mark.parametrize("run_name, settings", [
    ("ddpm", {"sampler": "ddpm", "steps": 5}),  # noise at every step but the last
    ("ddpm", {"sampler": "ddim", "steps": 4, "eta": 0.5}),
    ("ddpm", {"sampler": "ddim", "steps": 3}),  # deterministic: no noise input
    ("chain", {}),
    ("vae", {"passes": 2, "reencode": "sample"}),  # the prior draw, then one draw per pass
])
def test_draw_through_the_graph_reproduces_the_torch_sampler(runs, tmp_path, run_name, settings):
    run = runs(run_name)
    sample_cfg = _resolved(run, **settings)
    timed = time_eval_cell(run, sample_cfg, FAST, exports_dir=tmp_path, seed=5)
    assert timed.parity_valid and timed.draw is not None
    assert timed.drawn_by == "ort_graph/CPUExecutionProvider" and timed.provider == "CPUExecutionProvider"
    onnx_samples = timed.draw(37)  # the cell's seed by default
    torch_samples = generate(run.model, 37, sample_cfg, seed=5).numpy()
    assert onnx_samples.shape == torch_samples.shape and onnx_samples.dtype == np.float32
    np.testing.assert_allclose(onnx_samples, torch_samples, atol=2e-4, rtol=1e-3)
    other = timed.draw(37, seed=6)
    assert np.abs(other - onnx_samples).max() > 1e-3  # another seed is another draw


def test_workers_asking_for_one_graph_at_once_export_it_once(runs, tmp_path, count_exports):
    """The export cache is single-flight per key: four threads preparing the same timed cell's graph at once
    (as a grid's preparations of two cells sharing a graph may) export it once; the others wait and reuse it."""
    from concurrent.futures import ThreadPoolExecutor

    from bench.grid_timing import prepare_export

    run = runs("ddpm")
    cell = _resolved(run, sampler="ddim", steps=4)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: prepare_export(run, cell, FAST, exports_dir=tmp_path), range(4)))
    assert len(count_exports) == 1 and sum(c.fresh for c in got) == 1
    assert len({c.path for c in got}) == 1 and got[0].path.is_file()
    timed = time_eval_cell(run, cell, FAST, exports_dir=tmp_path)  # the cell then only loads it
    assert len(count_exports) == 1 and timed.exports == 0


def test_export_config_is_the_cells_sampler(runs):
    run = runs("ddpm")  # T = 100
    cfg = export_config_for(run, _resolved(run))  # 'auto' is the family's first sampler; S None means T
    assert (cfg.sample.sampler, cfg.sample.steps) == ("ddpm", 100)
    cell = _resolved(run, sampler="ddim", steps=7, eta=0.3)
    cfg = export_config_for(run, cell)
    assert (cfg.sample.sampler, cfg.sample.steps, cfg.sample.eta, cfg.sample.clip_x0) == ("ddim", 7, 0.3, True)
    assert cfg.sample.clip_low is not None and len(cfg.sample.clip_low) == 2  # the box the cell resolved, as numbers
    assert cfg.sample == cell  # the cell's own SampleConfig, embedded


def test_exports_are_cached_by_checkpoint_and_sampler_settings(runs, tmp_path, count_exports):
    run = runs("ddpm")
    s5 = _resolved(run, sampler="ddim", steps=5)
    first = time_eval_cell(run, s5, FAST, exports_dir=tmp_path)
    again = time_eval_cell(run, s5, {**FAST, "batches": [2]}, exports_dir=tmp_path, seed=3)
    assert len(count_exports) == 1 and (first.exports, again.exports) == (1, 0)
    assert again.export_path == first.export_path == tmp_path / f"{first.export_key}.onnx"
    assert {m.extra["export"] for m in first.metrics} == {"new"} and {m.extra["export"] for m in again.metrics} == {"cached"}
    time_eval_cell(run, _resolved(run, sampler="ddim", steps=6), FAST, exports_dir=tmp_path)
    assert len(count_exports) == 2  # other sampler settings: another graph
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]  # temporary folders renamed away
    side = json.loads((tmp_path / f"{first.export_key}.onnx.json").read_text())
    assert side["path"] == str(first.export_path.resolve()) and side["step_graph"] == f"{first.export_key}.step.onnx"
    side["export_key"] = "someone-else"  # a file whose sidecar key differs is never reused
    (tmp_path / f"{first.export_key}.onnx.json").write_text(json.dumps(side))
    time_eval_cell(run, s5, FAST, exports_dir=tmp_path)
    assert len(count_exports) == 3


def test_timing_metrics_name_the_setting_that_ran_and_fit_the_record_contract(runs, tmp_path):
    run = runs("ddpm")
    timed = time_eval_cell(run, _resolved(run, sampler="ddpm", steps=3), {**FAST, "backends": ["ort_graph",
                           "torch_loop", "ort_step_loop"]}, exports_dir=tmp_path)
    p50 = [m for m in timed.metrics if m.name == "latency_ms_p50"]
    assert sorted(m.split for m in p50) == sorted(
        f"{b}/{p}/b{n}/t1" for b, p in (("ort_graph", "CPUExecutionProvider"), ("ort_step_loop", "CPUExecutionProvider"),
                                        ("torch_loop", "torch:cpu")) for n in (1, 4))
    for m in p50:
        backend, provider, batch, threads = m.split.split("/")
        assert (m.extra["backend"], m.extra["provider"], f"b{m.extra['batch']}", f"t{m.extra['threads']}") == (
            backend, provider, batch, threads)
        assert m.value > 0 and m.extra["export_key"] == timed.export_key
    (parity,) = [m for m in timed.metrics if m.name == "parity_max_abs_err"]
    assert parity.split == "export" and parity.extra["valid"] is True and parity.value <= parity.extra["tolerance"]
    config = {"train": {}, "eval": {}, "axes": {}, "profile": None}
    records.build("eval", run_key="k", config=config, device=timed.device, provider=timed.provider,
                  metrics=timed.metrics)  # every metric is in the eval catalogue with its unit


def test_failed_parity_times_only_torch_and_draws_nothing(runs, tmp_path):
    run = runs("ddpm")
    sample_cfg = _resolved(run, sampler="ddim", steps=4)
    first = time_eval_cell(run, sample_cfg, FAST, exports_dir=tmp_path)
    side_path = tmp_path / f"{first.export_key}.onnx.json"
    side = json.loads(side_path.read_text())
    side["parity"] = {**side["parity"], "valid": False, "reason": "max abs error 1 exceeds tolerance 0.001"}
    side_path.write_text(json.dumps(side))  # as an export over tolerance is stored
    timed = time_eval_cell(run, sample_cfg, FAST, exports_dir=tmp_path)
    assert timed.draw is None and timed.provider is None and timed.drawn_by == "torch_loop/torch:cpu"
    assert {m.extra["backend"] for m in timed.metrics if m.name == "latency_ms_p50"} == {"torch_loop"}
    (parity,) = [m for m in timed.metrics if m.name == "parity_max_abs_err"]
    assert parity.extra["valid"] is False and any(s.startswith("ort_graph/") for s in parity.extra["skipped"])


def test_timing_settings_are_checked_with_the_backend_registry():
    with pytest.raises(TimingSettingsError, match="did you mean 'ort_graph'"):
        TimingSettings.from_dict({"backends": ["ort_grap"]})
    with pytest.raises(TimingSettingsError, match="'ort' times network parts, not a cell's sampler"):
        TimingSettings.from_dict({"backends": ["ort"]})
    with pytest.raises(TimingSettingsError, match="unknown execution provider 'gpu'"):
        TimingSettings.from_dict({"providers": ["gpu"]})
    with pytest.raises(TimingSettingsError, match="unknown key 'batch'.*did you mean 'batches'"):
        TimingSettings.from_dict({"batch": [1]})
    with pytest.raises(TimingSettingsError, match="batches: needs integers >= 1"):
        TimingSettings.from_dict({"batches": [0]})
    settings = TimingSettings.from_dict({"backends": "ort_graph", "batches": [1, 256]})
    assert settings.backends == ("ort_graph",) and TimingSettings.from_dict(settings.to_dict()) == settings
    assert replace(settings, target_s=0.5).bench_config().timing.target_s == 0.5


def test_a_timed_cell_builds_its_graph_once_and_resolves_the_clip_box_once(runs, tmp_path, monkeypatch):
    """Per export: one PartGraph (the export's own is handed to the timing target) and the clip box read from
    the training data once (when the cell resolves it); a cached export builds its graph once too."""
    import bench.export
    import bench.parts
    import genlib.samplers

    run = runs("ddpm")
    sample_cfg = _resolved(run, sampler="ddim", steps=4)
    counts = {"build_part": 0, "x0_clip_bounds": 0}

    def spy(module, name):
        real = getattr(module, name)

        def counted(*args, **kwargs):
            counts[name] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)

    spy(bench.export, "build_part")
    spy(gt, "build_part")
    spy(genlib.samplers, "x0_clip_bounds")
    time_eval_cell(run, sample_cfg, FAST, exports_dir=tmp_path)
    assert counts == {"build_part": 1, "x0_clip_bounds": 0}  # the cell's box is already numbers
    time_eval_cell(run, sample_cfg, FAST, exports_dir=tmp_path)  # from the cache: built once for timing
    assert counts == {"build_part": 2, "x0_clip_bounds": 0}


def test_a_killed_exports_temporary_folder_is_removed_by_the_next_export(runs, tmp_path):
    from bench.export import export_key

    run = runs("ddpm")
    sample = _resolved(run, sampler="ddim", steps=3)
    cfg = export_config_for(run, sample)
    key = export_key(run, cfg)
    dead = tmp_path / f".tmp-{key}-999999999-deadbeef"  # no process has this pid
    dead.mkdir(parents=True)
    (dead / "half.onnx").write_bytes(b"partial")
    time_eval_cell(run, sample, FAST, exports_dir=tmp_path)
    assert not dead.exists() and (tmp_path / f"{key}.onnx").is_file()
