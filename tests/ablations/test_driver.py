"""The driver: every cell recorded once with the record contract, resume, failures, retries, the lock."""
from __future__ import annotations

import json
import shutil

import pytest
from grid_helpers import RAISE_N, TRACE_ENV, DIE_N, ToyEvaluation

from ablations import GridRunError, parse_grid, plan_grid, plan_status, run_plan
from ablations.driver import artifacts_dir_for, store_lock
from genlib.store import ResultsStore
from genlib.train import load_run


def _run(grid, store_path, **kw):
    kw.setdefault("executor", "serial")
    kw.setdefault("threads", 1)
    kw.setdefault("progress", False)
    kw.setdefault("evaluation", ToyEvaluation())
    return run_plan(plan_grid(parse_grid(grid)), store_path, **kw)


def _trace_lines(path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def trace(tmp_path, monkeypatch):
    path = tmp_path / "trace.txt"
    monkeypatch.setenv(TRACE_ENV, str(path))
    return path


def test_grid_records_every_cell_once_with_the_record_contract(tmp_path, tiny, trace):
    db = tmp_path / "results.db"
    plan = plan_grid(parse_grid(tiny))
    summary = _run(tiny, db)
    assert summary.complete and summary.done == len(plan.cells) == 18
    with ResultsStore(db) as store:
        runs = store.read_table("runs").set_index("run_key")
        metrics = store.read_table("metrics")
    study = runs[runs["kind"] == "study"]  # the study's definition (its claims), for reports
    assert len(study) == 1 and json.loads(study.iloc[0]["config_json"]) == plan.spec.record_config()
    runs = runs[runs["kind"] != "study"]
    assert sorted(runs.index) == sorted(c.key for c in plan.cells)
    assert set(runs["status"]) == {"done"} and set(runs["study"]) == {"tiny"}
    assert runs["kind"].value_counts().to_dict() == {"eval": 12, "train": 4, "floor": 2}
    art = artifacts_dir_for(db)
    for cell in plan.train_cells:
        row = runs.loc[cell.key]
        config = json.loads(row["config_json"])
        assert config == {"train": cell.config, "eval": None, "axes": {"train.lr": cell.config["train"]["lr"]},
                          "profile": "quick"}
        assert row["seed"] == cell.seed and row["git_commit"] and json.loads(row["versions_json"])["torch"]
        loaded = load_run(db.parent / row["artifact_path"])  # the checkpoint reloads from its directory alone
        assert loaded.config.run_key == cell.key
    for cell in plan.eval_cells:
        row = runs.loc[cell.key]
        assert row["parent_key"] == cell.parent and runs.loc[cell.parent, "kind"] == "train"
        config = json.loads(row["config_json"])
        assert set(config) == {"train", "eval", "axes", "profile", "sampler_info"}
        assert config["eval"]["steps"] == config["axes"]["eval.steps"] and config["eval"]["n"] == 64
        # the registry entry's own account of the setting: S, with null resolved to T
        assert config["sampler_info"]["steps"] == (config["eval"]["steps"] or config["train"]["model"]["noise"]["T"])
        assert (db.parent / row["artifact_path"] / "samples.npy").is_file()
    by_run = metrics.groupby("run_key")["name"].apply(set).to_dict()
    assert all(by_run[c.key] == {"swd", "energy"} for c in plan.eval_cells)
    assert all(by_run[c.key] == {"loss"} for c in plan.train_cells)  # final training logs, split 'train'
    assert all(by_run[c.key] == {"swd"} for c in plan.floor_cells)
    assert not [p for p in art.iterdir() if p.name.startswith(".")]  # no temporary directories left
    assert len(_trace_lines(trace)) == 12 + 2


def test_second_run_executes_nothing(tmp_path, tiny, trace):
    db = tmp_path / "results.db"
    _run(tiny, db)
    before = _trace_lines(trace)
    inodes = {p.name: (p / "model.pt").stat().st_ino for p in artifacts_dir_for(db).iterdir() if (p / "model.pt").exists()}
    summary = _run(tiny, db)
    assert summary.done == 0 and summary.already_done == 18 and summary.complete
    assert _trace_lines(trace) == before
    assert inodes == {p.name: (p / "model.pt").stat().st_ino
                      for p in artifacts_dir_for(db).iterdir() if (p / "model.pt").exists()}
    # A new inference-time value reuses the checkpoints: only the new evaluations run.
    tiny["axes"]["eval.steps"] = [2, 5, None, 3]
    summary = _run(tiny, db)
    assert summary.done == 4 and summary.already_done == 18
    assert len(_trace_lines(trace)) == len(before) + 4


def test_failed_cells_are_recorded_and_retried_alone(tmp_path, tiny, trace):
    db = tmp_path / "results.db"
    tiny["axes"] = {"eval.n": [64, RAISE_N]}
    summary = _run(tiny, db)
    assert summary.failed == 2 and summary.done == 2 + 2 + 4 and not summary.complete  # floors: per n and seed
    with ResultsStore(db) as store:
        runs = store.read_table("runs")
        failed = runs[runs["status"] == "failed"]
        assert len(failed) == 2
        assert all("ValueError: this cell raises on purpose" in e and "Traceback" in e for e in failed["error"])
        assert store.read_table("metrics")["run_key"].isin(failed["run_key"]).sum() == 0
        rows = {(r["kind"], r["done"], r["failed"], r["pending"]) for r in plan_status([plan_grid(parse_grid(tiny))], store)}
    assert rows == {("train", 2, 0, 0), ("eval", 2, 2, 0), ("floor", 4, 0, 0)}
    n_lines = len(_trace_lines(trace))
    assert _run(tiny, db).failed == 0 and len(_trace_lines(trace)) == n_lines  # failed cells are not rerun...
    summary = _run(tiny, db, retry_failed=True)  # ...unless asked, and then only they are
    assert summary.failed == 2 and summary.done == 0
    assert len(_trace_lines(trace)) == n_lines + 2


def test_diverged_training_fails_with_its_evaluations(tmp_path, tiny):
    db = tmp_path / "results.db"
    tiny["axes"] = {"train.lr": [0.001, 1.0e6], "eval.steps": [2, None]}
    tiny["base"]["train"]["grad_clip"] = None
    tiny["seeds"] = [0]
    summary = _run(tiny, db)
    assert summary.failed == 1 and summary.not_run == 2 and summary.done == 1 + 2 + 1
    with ResultsStore(db) as store:
        runs = store.read_table("runs")
    bad = runs[(runs["kind"] == "train") & (runs["status"] == "failed")].iloc[0]
    assert "TrainingDivergedError: loss became" in bad["error"]
    children = runs[runs["parent_key"] == bad["run_key"]]
    assert len(children) == 2 and set(children["status"]) == {"failed"}
    assert all("not run: its training" in e for e in children["error"])


def test_max_failures_stops_early_and_leaves_the_rest_pending(tmp_path, tiny):
    db = tmp_path / "results.db"
    tiny["axes"] = {"eval.n": [RAISE_N, 64]}
    summary = _run(tiny, db, max_failures=1)
    assert summary.stopped_early and summary.failed == 1
    with ResultsStore(db) as store:
        status = plan_status([plan_grid(parse_grid(tiny))], store)
    pending = sum(r["pending"] for r in status)
    assert pending > 0 and sum(r["running"] for r in status) == 0
    summary = _run(tiny, db)  # the rest runs on the next call; the failure is kept
    assert summary.skipped_failed == 1 and summary.failed == 1 and summary.done == pending - 1


def test_dead_worker_is_a_failed_cell_and_the_pool_continues(tmp_path, tiny):
    db = tmp_path / "results.db"
    tiny["axes"] = {"eval.n": [64, DIE_N]}
    tiny["seeds"] = [0]
    summary = _run(tiny, db, executor="local", workers=2)
    assert summary.failed == 1 and summary.done == 1 + 1 + 2  # training, evaluation, floors at n=64 and n=13
    with ResultsStore(db) as store:
        runs = store.read_table("runs")
    error = runs.loc[runs["status"] == "failed", "error"].iloc[0]
    assert "died with exit code 3" in error


def test_a_second_driver_on_the_same_store_is_refused(tmp_path, tiny):
    db = tmp_path / "results.db"
    with store_lock(db):
        with pytest.raises(GridRunError, match="another grid run is writing"):
            _run(tiny, db)


def test_missing_checkpoint_is_trained_again_when_needed(tmp_path, tiny, trace):
    db = tmp_path / "results.db"
    tiny["seeds"] = [0]
    tiny["axes"] = {"eval.steps": [2]}
    _run(tiny, db)
    art = artifacts_dir_for(db)
    key = plan_grid(parse_grid(tiny)).train_cells[0].key
    shutil.rmtree(art / key)
    tiny["axes"] = {"eval.steps": [2, 5]}
    messages = []
    summary = _run(tiny, db, log=messages.append)
    assert summary.done == 2 and any("missing" in m for m in messages)
    assert (art / key / "model.pt").is_file()


def test_interrupted_partial_artifacts_are_cleaned(tmp_path, tiny):
    db = tmp_path / "results.db"
    art = artifacts_dir_for(db)
    (art / ".tmp-deadbeef-1-x").mkdir(parents=True)
    (art / ".tmp-deadbeef-1-x" / "model.pt").write_bytes(b"")  # a zero-byte file from a crash
    tiny["seeds"] = [0]
    _run(tiny, db)
    assert not (art / ".tmp-deadbeef-1-x").exists()


def test_floor_false_records_no_reference_rows(tmp_path, tiny):
    db = tmp_path / "results.db"
    tiny["floor"] = False
    tiny["seeds"] = [0]
    assert _run(tiny, db).done == 2 + 6
    with ResultsStore(db) as store:
        assert set(store.read_table("runs")["kind"]) == {"train", "eval", "study"}


def test_a_malformed_fault_variable_fails_fast(tmp_path, tiny, monkeypatch):
    monkeypatch.setenv("GENBENCH_FAULT", "mid_comit")
    with pytest.raises(ValueError, match="unknown fault point 'mid_comit'"):
        _run(tiny, tmp_path / "results.db")
    assert not (tmp_path / "results.db").exists()  # nothing was written


def test_ctrl_c_during_a_serial_cell_is_an_interruption_even_when_the_cell_turns_it_into_another_error():
    """Clean-up code inside a cell can turn KeyboardInterrupt into another exception; the serial executor must
    still report an interruption, never a failed cell."""
    import os
    import signal

    from ablations.executors import make_executor

    def cell(_):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10_000):  # the Python-level handler runs between bytecodes
                pass
        except KeyboardInterrupt:
            raise TypeError("expected str, bytes or os.PathLike object, not BufferedWriter") from None
        return "finished"

    def failing(_):
        raise ValueError("a real failure of the cell")

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a shell in the background ignores it
    try:
        pool = make_executor("serial", 1)
        pool.submit("a", failing, None)
        (outcome,) = pool.wait()
        assert not outcome.ok and "a real failure" in outcome.error
        pool.submit("b", cell, None)
        with pytest.raises(KeyboardInterrupt):
            pool.wait()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the executor put it back
    finally:
        signal.signal(signal.SIGINT, previous)
