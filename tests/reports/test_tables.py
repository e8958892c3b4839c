"""Study and speed tables built from the fixture store, checked against the rows they summarise."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from genlib.store import Metric, ResultsStore, RunRecord
from reports.load import open_store, setting_value
from reports.render import Num, Stat
from reports.tables import bench_frame, speed_table, study_tables


def _only(tables, name):
    return next(t for t in tables if t.name == name)


def test_beta_table_rows_columns_and_floor(store_data):
    (table,) = study_tables(store_data, "beta")
    assert table.title == "Study beta: digits"
    assert [c.key for c in table.columns] == ["loss.beta", "seeds", "mse", "kl", "active_units", "fd", "precision",
                                              "sharpness"]  # the grid's eval.metrics order
    assert [r["loss.beta"] for r in table.rows] == [0, 1, 64]  # numeric order; the failed beta=8 run is absent
    assert [r["seeds"] for r in table.rows] == [3, 3, 3]
    arrows = {c.key: c.arrow for c in table.columns}
    assert arrows["mse"] == "↓" and arrows["active_units"] == "↑" and arrows["kl"] == "" and arrows["sharpness"] == "→1.00"
    best = {c: [r["loss.beta"] for r in table.rows if r[c].best] for c in ("mse", "fd", "precision", "kl",
                                                                            "sharpness")}
    assert best == {"mse": [0], "fd": [1], "precision": [1], "kl": [], "sharpness": [0]}
    (floor,) = table.reference_rows
    assert floor["loss.beta"].startswith("floor") and "mse" not in floor and floor["fd"].n == 3
    assert any("failed" in n and "beta[loss.beta=8, seed=0]" in n for n in table.notes)


def test_table_cell_is_the_t_interval_of_the_stored_values(store_data):
    m = store_data.metrics
    rows = m[(m["study"] == "beta") & (m["kind"] == "eval") & (m["metric"] == "fd")]
    values = [v for v, cfg in zip(rows["value"], rows["config"]) if setting_value(cfg, "loss.beta") == 1]
    assert len(values) == 3
    (table,) = study_tables(store_data, "beta")
    cell = table.rows[1]["fd"]
    low, high = stats.t.interval(0.95, 2, loc=np.mean(values), scale=stats.sem(values))
    assert (cell.mean, cell.low, cell.high) == (pytest.approx(np.mean(values)), pytest.approx(low),
                                                pytest.approx(high))


def test_steps_table_hides_constant_axes_and_puts_training_axes_first(store_data):
    (table,) = study_tables(store_data, "steps")
    keys = [c.key for c in table.columns]
    assert keys[:5] == ["model.noise.T", "model.noise.scaled", "eval.steps", "sampler", "seeds"]
    assert "block" not in keys and "data.name" not in keys and "eval.metrics" not in keys
    assert len(table.rows) == 18
    # None (eval.steps null: S = T) sorts after the numbers within each T / schedule
    first = [r["eval.steps"] for r in table.rows if r["model.noise.T"] == 100 and r["model.noise.scaled"] is True]
    assert first == [5, 5, 50, 50, None, None]


def test_speed_table_parity_and_fastest(store_data):
    table = speed_table(store_data)
    rows = table.rows
    assert len(rows) == len(bench_frame(store_data)) == 33
    invalid = [r for r in rows if r["parity"] == "invalid"]
    assert len(invalid) == 3 and all(r["precision"] == "fp16" and not r["p50"].best for r in invalid)
    dec16 = [r for r in rows if r["part"] == "decoder" and r["batch"] == 16]
    fastest = [r["backend"] for r in dec16 if r["p50"].best]
    assert fastest == ["ort"]  # the fp16 export is faster but failed parity: not a valid winner
    assert {r["provider"] for r in rows} == {"CPUExecutionProvider", "torch:cpu"}
    assert any("failed" in n for n in table.notes)


def _bench_only_store(path, **config_extra) -> None:
    from genlib import records
    config = {"bench": {"backend": "ort", "provider": "CUDAExecutionProvider", "batch": 8, "threads": 2,
                        "precision": "fp32", "timing": {}, "cuda_graph": False},
              "part": "denoiser", "target": "denoiser", "export": {"part": "denoiser", "steps": None},
              "export_key": "e1", "run_key": "t1", **config_extra}
    with ResultsStore(path) as s:
        s.commit_run(*records.build("bench", run_key="b1", config=config, device="cpu",
                                    provider="CPUExecutionProvider", status="failed", error="export failed parity",
                                    metrics=[records.metric("bench", "latency_ms_p50", 2.0,
                                                            extra={"parity": "invalid", "steps": 50})]))


def test_bench_rows_are_read_from_the_record_contract(tmp_path):
    _bench_only_store(tmp_path / "r.db")
    df = bench_frame(open_store(tmp_path / "r.db"))
    row = df.iloc[0]
    # the provider that ran (the row's own column) wins over the one the config names
    assert (row["part"], row["backend"], row["provider"], row["batch"], row["threads"], row["steps"]) == \
        ("denoiser", "ort", "CPUExecutionProvider", 8, 2, 50)
    assert row["parity"] == "invalid" and row["p50"] == 2.0
    assert math.isnan(row["throughput"])


def test_bench_rows_of_another_layout_are_not_guessed(tmp_path):
    with ResultsStore(tmp_path / "r.db") as s:
        s.commit_run(RunRecord(run_key="b1", kind="bench", config={"backend_name": "ort", "part": "denoiser"}),
                     [Metric("peak_rss_mb", 5.0, "MB", False, extra={"backend": "ort"})])
    row = bench_frame(open_store(tmp_path / "r.db")).iloc[0]
    assert row["backend"] is None and math.isnan(row["peak_mb"])  # no alias names are read


def test_study_with_two_datasets_gets_one_table_each(tmp_path):
    with ResultsStore(tmp_path / "r.db") as s:
        for data, metric in (("digits", "fd"), ("moons", "swd")):
            for seed in (0, 1):
                for m in ("ae", "vae"):
                    cfg = {"train": {"data": {"name": data}, "model": {"family": m}}, "eval": {"metrics": [metric]},
                           "axes": {"block": data, "method": m}, "profile": "quick"}
                    s.commit_run(RunRecord(run_key=f"{data}{seed}{m}", kind="eval", study="base", seed=seed, config=cfg),
                                 [Metric(metric, 1.0 + seed + (m == "vae"), "u", False)])
    tables = study_tables(open_store(tmp_path / "r.db"), "base")
    assert [t.name for t in tables] == ["base-digits", "base-moons"]
    assert [[c.key for c in t.columns] for t in tables] == [["method", "seeds", "fd"], ["method", "seeds", "swd"]]
    assert isinstance(tables[0].rows[0]["fd"], Stat) and tables[0].rows[0]["fd"].mean == 1.5


def test_profiles_and_floor_sizes_are_kept_apart(tmp_path):
    """Quick and full runs of one study in one store: separate rows, and one floor row per sample size."""
    with ResultsStore(tmp_path / "r.db") as s:
        for profile, n, fd in (("quick", 500, 20.0), ("full", 898, 10.0)):
            for seed in (0, 1):
                for beta in (1, 4):
                    cfg = {"train": {"data": {"name": "digits"}}, "eval": {"n": n, "metrics": ["fd"]},
                           "axes": {"loss.beta": beta}, "profile": profile}
                    s.commit_run(RunRecord(run_key=f"{profile}{seed}{beta}", kind="eval", study="beta", seed=seed,
                                           config=cfg), [Metric("fd", fd + beta + seed, "u", False)])
                floor = {"train": None, "eval": {"n": n}, "data": {"name": "digits"}, "axes": {}, "profile": profile}
                s.commit_run(RunRecord(run_key=f"floor{profile}{seed}", kind="floor", study="beta", seed=seed,
                                       config=floor), [Metric("fd", n / 100 + seed, "u", False)])
    (table,) = study_tables(open_store(tmp_path / "r.db"), "beta")
    assert [(r["loss.beta"], r["profile"]) for r in table.rows] == [(1, "quick"), (1, "full"), (4, "quick"),
                                                                     (4, "full")]
    assert [r["fd"].mean for r in table.rows] == [21.5, 11.5, 24.5, 14.5]
    assert [r["loss.beta"] for r in table.reference_rows] == ["floor: data vs data (n=500)",
                                                              "floor: data vs data (n=898)"]
    assert [r["fd"].mean for r in table.reference_rows] == [5.5, pytest.approx(9.48)]
