"""Crash injection: kill the grid driver at named fault points, by SIGKILL at random times, by SIGINT and
SIGTERM; resume; then every cell is recorded exactly once, committed cells were never executed again, no
partial artifact was taken as done, and the final tables equal an uninterrupted run with the same seeds.
"""
from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from grid_helpers import TRACE_ENV, ToyEvaluation, tiny_grid

from ablations import parse_grid, plan_grid, run_plan
from ablations.driver import artifacts_dir_for
from ablations.faults import FAULT_ENV, FAULT_EXIT_CODE

DRIVER = Path(__file__).resolve().parent / "grid_driver.py"
PLAN = plan_grid(parse_grid(tiny_grid()))
KEYS = {c.key for c in PLAN.cells}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> pd.DataFrame:
    """The uninterrupted run's metrics, in process (same code path, same seeds, one thread per cell)."""
    db = tmp_path_factory.mktemp("reference") / "results.db"
    run_plan(PLAN, db, executor="serial", threads=1, evaluation=ToyEvaluation(), progress=False)
    return _metrics(db)


def _metrics(db: Path) -> pd.DataFrame:
    with sqlite3.connect(db) as conn:
        df = pd.read_sql_query("SELECT run_key, name, split, value, unit FROM metrics", conn)
    return df.sort_values(["run_key", "name", "split"]).reset_index(drop=True)


def _runs(db: Path) -> pd.DataFrame:
    if not db.exists():
        return pd.DataFrame(columns=["run_key", "status", "kind", "artifact_path"])
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        # Cells only: the grid also records each study's definition (kind "study"), which is not a cell.
        return pd.read_sql_query("SELECT run_key, status, kind, artifact_path FROM runs WHERE kind != 'study'", conn)


def _start(db: Path, trace: Path, *args: str, fault: str | None = None) -> subprocess.Popen:
    env = {**os.environ, TRACE_ENV: str(trace)}
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.Popen([sys.executable, str(DRIVER), str(db), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_sigint_default)


def _sigint_default() -> None:
    """A shell running the tests in the background ignores SIGINT, and a child inherits that; the driver must
    receive Ctrl-C as a user's terminal sends it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _finish(proc: subprocess.Popen, timeout: float = 180) -> int:
    out, err = proc.communicate(timeout=timeout)
    proc.stdout_text, proc.stderr_text = out, err  # type: ignore[attr-defined]
    return proc.returncode


def _wait_for_done(db: Path, proc: subprocess.Popen, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"driver ended early with {proc.returncode}: {proc.stderr.read()}")
        try:
            if (_runs(db)["status"] == "done").sum() >= n:
                return
        except (sqlite3.OperationalError, pd.errors.DatabaseError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} cells committed after {timeout} s")


def _session_empty(sid: int, timeout: float = 10.0) -> bool:
    """True once no process of session `sid` is left (a worker not yet started up may need a moment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not subprocess.run(["pgrep", "-s", str(sid)], capture_output=True).stdout.strip():
            return True
        time.sleep(0.1)
    return False


def _executed(trace: Path) -> list[str]:
    """Cell keys of evaluations and seeds of floors executed by a run (written by ToyEvaluation)."""
    return trace.read_text().split("\n")[:-1] if trace.exists() else []


def _model_inodes(db: Path, keys: set[str]) -> dict[str, int]:
    art = artifacts_dir_for(db)
    return {k: (art / k / "model.pt").stat().st_ino for k in keys if (art / k / "model.pt").exists()}


def _check_after_crash(db: Path) -> dict[str, str]:
    """Invariants that hold right after any crash; returns {run_key: kind} of the committed-done cells."""
    if not db.exists():  # killed before the store was created
        return {}
    runs = _runs(db)
    assert runs["run_key"].is_unique and set(runs["run_key"]) <= KEYS
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        metric_keys = set(pd.read_sql_query("SELECT DISTINCT run_key FROM metrics", conn)["run_key"])
    done = runs[runs["status"] == "done"]
    assert metric_keys <= set(done["run_key"])  # a result is committed whole or not at all
    art = artifacts_dir_for(db)
    for _, row in done[done["kind"] == "train"].iterrows():
        path = db.parent / row["artifact_path"]
        assert path.parent == art and not path.name.startswith(".")
        assert (path / "model.pt").stat().st_size > 0  # a committed checkpoint is complete
    return dict(zip(done["run_key"], done["kind"]))


def _check_resumed(db: Path, reference: pd.DataFrame, committed: dict[str, str], trace: Path,
                   inodes: dict[str, int]) -> None:
    runs = _runs(db)
    assert sorted(runs["run_key"]) == sorted(KEYS) and set(runs["status"]) == {"done"}  # each cell once
    pd.testing.assert_frame_equal(_metrics(db), reference)  # same tables as the uninterrupted run
    executed = _executed(trace)
    again = [k for k, kind in committed.items() if kind == "eval" and f"eval {k}" in executed]
    assert not again, f"committed evaluations executed again: {again}"
    floors_done = {str(c.seed) for c in PLAN.floor_cells if c.key in committed}
    assert not [line for line in executed if line.startswith("floor") and line.split()[1] in floors_done]
    trains = {k for k, kind in committed.items() if kind == "train"}
    assert _model_inodes(db, trains) == {k: inodes[k] for k in trains}  # committed checkpoints untouched
    assert not [p for p in artifacts_dir_for(db).iterdir() if p.name.startswith(".")]


def test_named_fault_points_then_resume(tmp_path, reference):
    """Die after an artifact is in place, inside a commit, and after a commit; each time resume."""
    db = tmp_path / "results.db"
    committed: dict[str, str] = {}
    inodes: dict[str, int] = {}
    for i, fault in enumerate(["after_artifact:2", "mid_commit:3", "after_commit:4"]):
        proc = _start(db, tmp_path / f"trace{i}.txt", fault=fault)
        assert _finish(proc) == FAULT_EXIT_CODE, proc.stderr_text
        now = _check_after_crash(db)
        assert set(committed) <= set(now)  # nothing committed is ever lost
        if fault.startswith("after_artifact"):
            runs = _runs(db)
            published = {p.name for p in artifacts_dir_for(db).iterdir() if not p.name.startswith(".")}
            not_done = set(runs.loc[runs["status"] != "done", "run_key"])
            assert published & not_done, "the fault fired with a published but uncommitted artifact"
        if fault.startswith("mid_commit"):
            assert len(now) == len(committed) + 2  # the third commit of that run was rolled back
        # Evaluations committed before this run were not executed by it.
        assert not [k for k in committed if f"eval {k}" in _executed(tmp_path / f"trace{i}.txt")]
        committed = now
        inodes.update(_model_inodes(db, {k for k, kind in now.items() if kind == "train"}))
    proc = _start(db, tmp_path / "trace_final.txt")
    assert _finish(proc) == 0, proc.stderr_text
    _check_resumed(db, reference, committed, tmp_path / "trace_final.txt", inodes)


def test_sigkill_sigterm_sigint_with_a_worker_pool_then_resume(tmp_path, reference):
    """Kill the driver (its pool's workers must die with it), terminate it, interrupt it; resume each time."""
    db = tmp_path / "results.db"
    committed: dict[str, str] = {}
    inodes: dict[str, int] = {}
    for i, (sig, code, executor) in enumerate([(signal.SIGKILL, -signal.SIGKILL, "local"),
                                               (signal.SIGTERM, 143, "local"), (signal.SIGINT, 130, "serial")]):
        proc = _start(db, tmp_path / f"trace{i}.txt", "--executor", executor, "--workers", "2")
        # the serial stage is interrupted after its first cell, so that work is surely left when the signal lands
        _wait_for_done(db, proc, len(committed) + (1 if executor == "serial" else 2))
        os.kill(proc.pid, sig)
        assert _finish(proc) == code, proc.stderr_text
        # No worker outlives its driver (an orphan could publish behind the next run's back).
        assert _session_empty(proc.pid), "worker processes outlived the driver"
        now = _check_after_crash(db)
        assert set(committed) <= set(now)
        if sig != signal.SIGKILL:  # a clean interruption leaves nothing marked running, even rows a kill left
            assert "running" not in set(_runs(db)["status"])
        committed = now
        inodes.update(_model_inodes(db, {k for k, kind in now.items() if kind == "train"}))
    proc = _start(db, tmp_path / "trace_final.txt", "--executor", "local", "--workers", "2")
    assert _finish(proc) == 0, proc.stderr_text
    _check_resumed(db, reference, committed, tmp_path / "trace_final.txt", inodes)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_random_times_then_resume(tmp_path, reference, seed):
    """Repeated SIGKILLs at random moments (including start-up and mid-cell) until the grid completes."""
    rng = random.Random(seed)
    db = tmp_path / "results.db"
    committed: dict[str, str] = {}
    inodes: dict[str, int] = {}
    for i in range(6):
        proc = _start(db, tmp_path / f"trace{i}.txt", "--executor", rng.choice(["local", "serial"]),
                      "--workers", "2")
        time.sleep(rng.uniform(0.5, 8.0))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        _finish(proc)
        now = _check_after_crash(db)
        assert set(committed) <= set(now)
        assert not [k for k in committed if f"eval {k}" in _executed(tmp_path / f"trace{i}.txt")]
        committed = now
        inodes.update(_model_inodes(db, {k for k, kind in now.items() if kind == "train"}))
    proc = _start(db, tmp_path / "trace_final.txt", "--executor", "local", "--workers", "2")
    assert _finish(proc) == 0, proc.stderr_text
    assert json.loads(proc.stdout_text)["done"] == len(KEYS) - len(committed)
    _check_resumed(db, reference, committed, tmp_path / "trace_final.txt", inodes)
