"""Tests for genlib.records: the record contract (layouts, metric catalogues, config keys, provenance), whose
catalogues are the producers' own declarations (the genlib.metrics registry, each family's training logs)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from genlib import records
from genlib.records import RecordError
from genlib.store import Metric, ResultsStore

TRAIN = {"name": "r", "seed": 3, "data": {"name": "moons", "seed": 0}, "model": {"family": "ddpm"},
         "train": {"steps": 300}}


def grid_train(seed: int = 3, steps: int = 300) -> dict:
    return {"train": {**TRAIN, "seed": seed, "train": {"steps": steps}}, "eval": None, "axes": {}, "profile": "quick"}


def test_importing_records_pulls_in_neither_torch_nor_pandas():
    code = "import sys, genlib.records; print(sorted(m for m in ('torch', 'pandas', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.replace("'", '"')) == []


def test_quality_catalogue_is_the_metric_registry(monkeypatch):
    from genlib.metrics import METRICS
    from genlib.metrics.base import MetricSpec

    registered = {name: (METRICS.get(name).unit, METRICS.get(name).higher_is_better) for name in METRICS.names()}
    for kind in ("eval", "floor"):
        assert {n: (d.unit, d.higher_is_better) for n, d in records.catalogue(kind).items()
                if n not in records.TIMING} == registered
    # a metric registered later is in the catalogue with its declared unit: records hold no copy
    monkeypatch.setitem(METRICS._items, "sharpness_v2", MetricSpec(name="sharpness_v2", unit="ratio",
                                                                   higher_is_better=True, kinds=("image",)))
    m = records.metric("eval", "sharpness_v2", 1.5)
    assert (m.unit, m.higher_is_better) == ("ratio", True)
    assert records.check_metric("floor", m) is m


def test_train_catalogue_is_the_family_declaration():
    from genlib.models import MODELS
    from genlib.train import LOOP_LOGS

    for family in MODELS.names():
        assert records.catalogue("train", family) == {**MODELS.get(family).training_logs, **LOOP_LOGS}
    vae = records.catalogue("train", "vae")
    assert vae["kl"] == records.MetricDef("nats", None) and vae["train_steps_per_s"].unit == "steps/s"
    ae_train = {**grid_train(), "train": {**TRAIN, "model": {"family": "ae"}}}
    kl = Metric("kl", 1.0, unit="nats", higher_is_better=None, split="train")
    records.build("train", run_key="k", config={**ae_train, "train": {**TRAIN, "model": {"family": "vae"}}},
                  device="cpu", metrics=[kl])
    with pytest.raises(RecordError, match=r"metric 'kl' is not in the catalogue of train records of model "
                                          r"family 'ae' \(known: .*recon_mse"):
        records.build("train", run_key="k", config=ae_train, device="cpu", metrics=[kl])
    with pytest.raises(RecordError, match=r"unknown model family 'aee'.*did you mean 'ae'"):
        records.metric("train", "loss", 1.0, family="aee")


def test_build_fills_units_and_refuses_unknown_metrics():
    m = records.metric("bench", "latency_ms_p50", 2.5, extra={"batch": 1})
    assert (m.unit, m.higher_is_better) == ("ms", False)
    with pytest.raises(RecordError, match=r"metric 'latency_p50' is not in the catalogue of bench records"):
        records.metric("bench", "latency_p50", 1.0)
    with pytest.raises(RecordError, match=r"metric 'swd' of a eval record has unit 'px'"):
        records.build("eval", run_key="k", config={**grid_train(), "eval": {"n": 10}}, device="cpu",
                      metrics=[Metric("swd", 0.1, unit="px", higher_is_better=False)])
    with pytest.raises(RecordError, match=r"unknown record kind 'timing'"):
        records.metric("timing", "x", 1.0)


def test_build_checks_the_config_layout():
    rec, metrics = records.build("train", run_key="k", config=grid_train(), device="cpu",
                                 metrics=[records.metric("train", "loss", 0.5, split="train")],
                                 prov={"git_commit": "abc", "versions": {"torch": "x"}, "machine": {"node": "n"}})
    assert (rec.device, rec.git_commit, rec.machine, rec.config_key) == ("cpu", "abc", {"node": "n"},
                                                                         records.config_key("train", grid_train()))
    with pytest.raises(RecordError, match=r"a train record's config must have keys \['axes', 'eval', 'profile', "
                                          r"'train'\].*got \['data', 'model', 'name', 'seed', 'train'\]"):
        records.build("train", run_key="k", config=TRAIN, device="cpu")


def test_config_key_ignores_the_seed_and_nothing_else():
    assert records.config_key("train", grid_train(0)) == records.config_key("train", grid_train(2))
    assert records.config_key("train", grid_train(0, 300)) != records.config_key("train", grid_train(0, 400))
    other_data_seed = grid_train(0)
    other_data_seed["train"] = {**other_data_seed["train"], "data": {"name": "moons", "seed": 1}}
    assert records.config_key("train", other_data_seed) != records.config_key("train", grid_train(0))
    assert records.config_key("train", grid_train()) != records.config_key("eval", grid_train())
    # exports and benchmarks name their training by run key: the parent's config key stands in for it
    export = {"export": {"part": "sampler", "seed": 0}, "part": "sampler", "run_key": "seed0key"}
    same = records.config_key("export", export, "ck1")
    assert same == records.config_key("export", {**export, "run_key": "seed1key",
                                                 "export": {"part": "sampler", "seed": 1}}, "ck1")
    assert same != records.config_key("export", export, "ck2")


def test_store_fills_config_key_of_children_from_their_parent(store):
    for seed in (0, 1):
        rec, _ = records.build("train", run_key=f"t{seed}", config=grid_train(seed), device="cpu", seed=seed)
        store.commit_run(rec)
        rec, _ = records.build("export", run_key=f"x{seed}", parent_key=f"t{seed}", device="cpu",
                               provider="CPUExecutionProvider",
                               config={"export": {"part": "decoder", "seed": seed}, "part": "decoder",
                                       "run_key": f"t{seed}"})
        assert rec.config_key is None  # looked up on commit
        store.commit_run(rec)
    runs = store.read_table("runs").set_index("run_key")["config_key"]
    assert runs["x0"] == runs["x1"] != runs["t0"] == runs["t1"]


def test_differing_keys_names_leaves_that_differ():
    a, b = grid_train(0, 300), grid_train(1, 400)
    assert records.differing_keys([a, b]) == ["train.train.steps"]
    assert records.differing_keys([a, grid_train(2, 300)]) == []
    assert records.differing_keys([{"x": {"y": 1}}, {"x": {"z": 1}}]) == ["x.y", "x.z"]


def test_provenance_is_plain_data_with_commit_versions_and_machine():
    import genlib.provenance

    prov = records.provenance()
    assert set(prov) == {"git_commit", "versions", "machine"}
    assert prov["versions"]["python"] and prov["machine"]["cpu_count"] >= 1
    assert json.loads(json.dumps(prov)) == prov
    assert records.provenance is genlib.provenance.provenance  # one implementation, re-exported
    prov["versions"]["python"] = "0"  # a caller's copy: the cached facts stay as they are
    assert genlib.provenance.provenance()["versions"]["python"] != "0"


def test_store_does_not_import_records():
    # records builds rows for the store; the store reads keys and layouts from genlib.record_layout
    import ast
    from pathlib import Path

    import genlib.store

    tree = ast.parse(Path(genlib.store.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {f"{n.module}.{a.name}" if n.module == "genlib" else n.module
                 for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert "genlib.records" not in imported and "genlib.record_layout" in imported


def test_accessors_read_the_documented_layout():
    bench = {"bench": {"backend": "ort_graph", "provider": "CPUExecutionProvider", "batch": 4, "threads": 1,
                       "precision": "fp32"}, "part": "sampler", "target": "sampler",
             "export": {"part": "sampler", "graph": "loop", "sample": {"sampler": "ddim", "steps": 5, "eta": 0.0}},
             "export_key": "e", "run_key": "r"}
    s = records.bench_settings(bench)
    assert (s["backend"], s["batch"], s["sampler"], s["steps"], s["part"]) == ("ort_graph", 4, "ddim", 5, "sampler")
    assert s["graph"] == "loop"
    floor = {"train": None, "eval": {"n": 5}, "data": {"name": "moons"}, "axes": {}, "profile": None}
    assert records.data_config(floor) == {"name": "moons"}
    assert records.data_config(grid_train()) == {"name": "moons", "seed": 0}
    assert records.run_config(floor) is None and records.eval_config(floor) == {"n": 5}


def test_a_flat_export_config_is_nested_once_and_only_once():
    flat = {"part": "sampler", "sampler": "ddim", "steps": 20, "eta": 0.0, "precision": "fp32", "seed": 0}
    nested = records.upgrade_export_config(flat)
    assert nested == {"part": "sampler", "precision": "fp32", "seed": 0,
                      "sample": {"sampler": "ddim", "steps": 20, "eta": 0.0}}
    assert records.upgrade_export_config(nested) == nested
    bench = records.upgrade_v1_config("bench", {"bench": {}, "export": flat, "machine": {"cpu": "x"}})
    assert bench == {"bench": {}, "export": nested}
    assert records.upgrade_v1_config("export", {"export": flat, "part": "sampler", "run_key": "r"})["export"] == nested


def test_an_eval_setting_left_out_at_its_default_reads_as_the_default():
    from genlib.records import MISSING, setting_at

    cell = {"eval": {"sampler": "ddim", "steps": 5}, "train": {"steps": 10}}
    assert setting_at(cell, "eval.precision") == "fp32"  # left out of records (and run keys) while fp32
    assert setting_at({**cell, "eval": {**cell["eval"], "precision": "fp16"}}, "eval.precision") == "fp16"
    assert setting_at(cell, "eval.steps") == 5 and setting_at(cell, "train.steps") == 10
    assert setting_at(cell, "eval.nope") is MISSING and setting_at({"train": {}}, "eval.precision") is MISSING
