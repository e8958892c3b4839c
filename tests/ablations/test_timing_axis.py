"""Timing as a grid axis: the `timing` section attaches to matching evaluation cells (their config and run key),
a timed grid stores quality and latency under one run key with exports cached, timed cells run last and
alone, and the Pareto table is built from those rows."""
from __future__ import annotations

import json

import numpy as np
import pytest

import ablations.driver as driver
from ablations import GridError, parse_grid, plan_grid, run_plan
from ablations.cells import EXPORTS_DIR
from ablations.driver import artifacts_dir_for, training_cost
from genlib.store import Metric, ResultsStore
from grid_helpers import DrawEvaluation  # importable by name in spawned workers (a test module is not)

TIMING = {"where": {"eval.steps": [2, 5]}, "backends": ["ort_graph", "torch_loop"], "providers": ["cpu"],
          "batches": [1, 8], "threads": [1], "target_s": 0.0, "min_rounds": 1, "warmup_rounds": 0}


def timed_grid(**changes) -> dict:
    """A 2-D toy DDPM: 2 checkpoints (seeds), S in {2, 5, T} x n in {32, 48}; S in {2, 5} timed (8 cells)."""
    grid = {
        "study": "timed",
        "base": {"data": {"name": "moons", "n_train": 1000, "n_test": 500},
                 "model": {"family": "ddpm", "hidden": [16, 16], "time_dim": 8, "noise": {"T": 10, "scaled": False}},
                 "train": {"steps": 50, "batch_size": 64, "log_every": 10, "device": "cpu"}},
        "eval": {"sampler": "ddim", "metrics": ["swd"]},
        "axes": {"eval.steps": [2, 5, None], "eval.n": [32, 48]},
        "seeds": [0, 1],
        "floor": False,
        "timing": TIMING,
    }
    grid.update(changes)
    return grid


# -- spec and plan ------------------------------------------------------------------------------------------
def test_timing_attaches_to_matching_cells_and_is_part_of_their_key():
    plan = plan_grid(parse_grid(timed_grid()))
    untimed = plan_grid(parse_grid({k: v for k, v in timed_grid().items() if k != "timing"}))
    timed = [c for c in plan.eval_cells if c.timed]
    assert len(plan.eval_cells) == 12 and len(timed) == 8 and plan.summary()["timed"] == 8
    assert {c.eval_config["steps"] for c in timed} == {2, 5}
    assert all(c.eval_config["timing"] == {k: v for k, v in TIMING.items() if k != "where"} for c in timed)
    assert all("timing" not in c.eval_config for c in plan.eval_cells if not c.timed)
    keys, plain = {c.key for c in plan.eval_cells}, {c.key for c in untimed.eval_cells}
    assert len(keys & plain) == 4  # the untouched S = T cells keep their keys; timed cells get new ones
    assert {c.key for c in plan.train_cells} == {c.key for c in untimed.train_cells}  # timing never retrains


def test_profile_overrides_the_timing_section():
    grid = timed_grid(profiles={"quick": {"timing": {**TIMING, "where": {"eval.steps": 5, "eval.n": 32}}},
                                "full": {"timing": False}})
    assert plan_grid(parse_grid(grid, profile="quick")).summary()["timed"] == 2
    assert plan_grid(parse_grid(grid, profile="full")).summary()["timed"] == 0


def test_timing_where_may_list_rules_and_each_must_match():
    # a cell matching any rule is timed: (S = 2, n = 32) and (S = 5, n = 48)
    rules = [{"eval.steps": 2, "eval.n": 32}, {"eval.steps": 5, "eval.n": 48}]
    plan = plan_grid(parse_grid(timed_grid(timing={**TIMING, "where": rules})))
    assert sorted((c.eval_config["steps"], c.eval_config["n"]) for c in plan.timed_cells) == [(2, 32)] * 2 + [(5, 48)] * 2
    # a rule that times nothing is an error naming it, even when another rule times cells
    dead = [{"eval.steps": 2}, {"eval.steps": 7}]
    with pytest.raises(GridError, match=r"timing.where\[1\] \{'eval.steps': 7\} matches no evaluation cell"):
        plan_grid(parse_grid(timed_grid(timing={**TIMING, "where": dead})))
    with pytest.raises(GridError, match=r"timing.where\[1\] key 'eval.stepz' is neither an axis nor a config key"):
        plan_grid(parse_grid(timed_grid(timing={**TIMING, "where": [{"eval.steps": 2}, {"eval.stepz": 2}]})))
    with pytest.raises(GridError, match="'timing'.where: say which evaluation cells to time"):
        parse_grid(timed_grid(timing={**TIMING, "where": []}))


def test_timing_section_errors_name_the_study_and_key():
    with pytest.raises(GridError, match=r"study 'timed': timing.where \{'eval.steps': \[50\]\} matches no evaluation"):
        plan_grid(parse_grid(timed_grid(timing={**TIMING, "where": {"eval.steps": [50]}})))
    with pytest.raises(GridError, match="timing.where key 'model.noise.TT' is neither an axis nor a config key"):
        plan_grid(parse_grid(timed_grid(timing={**TIMING, "where": {"model.noise.TT": 10}})))
    with pytest.raises(GridError, match=r"'timing'.backends: .*did you mean 'ort_graph'"):
        parse_grid(timed_grid(timing={**TIMING, "backends": ["ort_grph"]}))
    with pytest.raises(GridError, match="'timing'.where: say which evaluation cells to time"):
        parse_grid(timed_grid(timing={k: v for k, v in TIMING.items() if k != "where"}))
    with pytest.raises(GridError, match="'timing'.*unknown key 'batch'"):
        parse_grid(timed_grid(timing={**TIMING, "batch": [1]}))


def test_longer_trainings_cost_more():
    plan = plan_grid(parse_grid(timed_grid(axes={"train.steps": [50, 100], "model.hidden": [[16, 16], [32, 32]]},
                                           timing=False)))
    cost = {(c.config["train"]["steps"], tuple(c.config["model"]["hidden"])): training_cost(c)
            for c in plan.train_cells}
    assert cost[(100, (32, 32))] > cost[(50, (32, 32))] > cost[(50, (16, 16))] > 0
    assert cost[(100, (16, 16))] == 2 * cost[(50, (16, 16))]
    assert training_cost(plan.eval_cells[0]) == 0.0


# -- a timed grid end to end --------------------------------------------------------------------------------
class _Recording:
    """The real executor, with every submit and completion recorded in the driver process."""

    def __init__(self, inner, events: list) -> None:
        self.inner, self.events, self.workers = inner, events, inner.workers

    def submit(self, task_id, fn, arg, **options):
        self.events.append(("start", task_id))
        self.inner.submit(task_id, fn, arg, **options)

    def __getattr__(self, name):  # share, unshare, check_resources
        return getattr(self.inner, name)

    def wait(self, timeout=None):
        out = self.inner.wait(timeout)
        self.events.extend(("end", o.task_id) for o in out)
        return out

    @property
    def in_flight(self):
        return self.inner.in_flight

    def shutdown(self, *, kill=False):
        self.inner.shutdown(kill=kill)


@pytest.fixture(scope="module")
def timed_store(tmp_path_factory):
    """The timed grid run on two local workers; (store path, plan, executor events)."""
    mp = pytest.MonkeyPatch()
    events: list = []
    real = driver.make_executor
    mp.setattr(driver, "make_executor", lambda *a, **kw: _Recording(real(*a, **kw), events))
    try:
        db = tmp_path_factory.mktemp("timed") / "results.db"
        plan = plan_grid(parse_grid(timed_grid()))
        summary = run_plan(plan, db, executor="local", workers=2, threads=1, progress=False,
                           evaluation=DrawEvaluation())
    finally:
        mp.undo()
    assert summary.complete, summary.failures
    return db, plan, events


def _rows(db):
    with ResultsStore(db) as store:
        runs = store.read_table("runs").set_index("run_key")
        metrics = store.read_table("metrics")
    metrics["extra"] = [json.loads(e) if isinstance(e, str) and e else {} for e in metrics["extra_json"]]
    return runs, metrics


def test_quality_and_latency_share_the_run_key_of_a_timed_cell(timed_store):
    db, plan, _ = timed_store
    runs, metrics = _rows(db)
    for cell in plan.eval_cells:
        mine = metrics[metrics["run_key"] == cell.key]
        names = set(mine["name"])
        (swd,) = mine[mine["name"] == "swd"]["extra"]
        if not cell.timed:
            assert names == {"swd"} and not isinstance(runs.loc[cell.key, "provider"], str)
            assert "samples_drawn_by" not in swd
            continue
        assert {"swd", "latency_ms_p50", "latency_ms_p90", "throughput_per_s", "parity_max_abs_err"} <= names
        assert swd["samples_drawn_by"] == "ort_graph/CPUExecutionProvider"  # quality samples came from the graph
        p50 = mine[mine["name"] == "latency_ms_p50"]
        assert sorted(p50["split"]) == sorted(f"{b}/{p}/b{n}/t1" for b, p in (
            ("ort_graph", "CPUExecutionProvider"), ("torch_loop", "torch:cpu")) for n in (1, 8))
        assert (p50["value"] > 0).all()
        row = runs.loc[cell.key]
        assert (row["provider"], row["device"]) == ("CPUExecutionProvider", "cpu")
        assert json.loads(row["config_json"])["eval"]["timing"] == cell.eval_config["timing"]


def test_each_graph_is_exported_once_and_reused(timed_store):
    db, plan, _ = timed_store
    _, metrics = _rows(db)
    parity = metrics[metrics["name"] == "parity_max_abs_err"]
    uses = [e["export"] for e in parity["extra"]]
    graphs = {(c.parent, c.eval_config["steps"]) for c in plan.timed_cells}  # (checkpoint, sampler settings)
    # each graph was exported ahead of the timed phase, beside other cells (the preparation of its cells): the
    # timed cells, which run alone, only loaded it
    assert len(uses) == 8 and set(uses) == {"cached"} and len(graphs) == 4
    exports = artifacts_dir_for(db) / EXPORTS_DIR
    files = sorted(p.name for p in exports.glob("*.onnx") if not p.name.endswith(".step.onnx"))
    assert files == sorted({f"{e['export_key']}.onnx" for e in parity["extra"]}) and len(files) == 4
    assert not [p for p in exports.iterdir() if p.name.startswith(".tmp-")]


def test_timed_cells_run_last_and_alone(timed_store):
    _, plan, events = timed_store
    timed = {c.key for c in plan.timed_cells}
    in_flight: set[str] = set()
    started: list[str] = []
    for what, key in events:
        if what == "start":
            assert not (in_flight & timed), f"{key} started while a timed cell ran"
            assert key not in timed or not in_flight, f"timed cell {key} started beside {in_flight}"
            in_flight.add(key)
            started.append(key)
        else:
            in_flight.discard(key)
    first_timed = min(started.index(k) for k in timed)
    assert set(started[first_timed:]) == timed  # every other cell was handed out before
    # each timed cell's graph was prepared (exported) before the timed phase, beside other cells
    prepared = [k for k in started if k.startswith("prepare:")]
    assert sorted(prepared) == sorted(f"prepare:{k}" for k in timed)
    assert max(started.index(k) for k in prepared) < first_timed


def test_pareto_rows_come_from_the_timed_rows_of_one_configuration(timed_store):
    from reports.load import open_store
    from reports.pareto import pareto_report

    db, plan, _ = timed_store
    runs, metrics = _rows(db)
    (table,), (figure,) = pareto_report(open_store(db))
    assert table.name == "pareto-timed-moons" and figure.png.startswith(b"\x89PNG")
    assert len(table.rows) == 4 * 2 * 2  # (S, n) configurations x backends x batches
    for row in table.rows:
        keys = row["run_keys"].split()
        assert len(keys) == 2 and len(set(runs.loc[keys, "config_key"])) == 1  # one configuration, both seeds
        split = f"{row['backend']}/{row['provider']}/b{row['batch']}/t{row['threads']}"
        mine = metrics[metrics["run_key"].isin(keys)]
        p50 = mine[(mine["name"] == "latency_ms_p50") & (mine["split"] == split)]["value"]
        swd = mine[mine["name"] == "swd"]["value"]
        assert row["latency"].mean == pytest.approx(np.mean(p50)) and row["quality"].mean == pytest.approx(np.mean(swd))
    assert any(r["front"] == "yes" for r in table.rows)
