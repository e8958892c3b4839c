"""Tests for genlib.store: the results ledger's schema, writes (upserts, all-or-nothing transactions),
reads as DataFrames, non-finite values, WAL mode, and refusal of newer or foreign database files."""
from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import sys
from pathlib import Path

import pandas as pd
import pytest

from genlib.store import SCHEMA_VERSION, Metric, ResultsStore, RunRecord, StoreError

RUNS_COLUMNS = ["run_key", "kind", "study", "name", "parent_key", "status", "config_json", "seed", "git_commit",
                "versions_json", "device", "provider", "artifact_path", "error", "created_at", "finished_at",
                "config_key", "machine_json"]
METRICS_COLUMNS = ["run_key", "name", "split", "value", "unit", "higher_is_better", "extra_json"]
# the module docstring: metrics joined with their run's kind, study, name, status, seed, device, provider
RESULTS_COLUMNS = {"run_key", "kind", "study", "run_name", "status", "seed", "device", "provider", "config_key", "name",
                   "split", "value", "unit", "higher_is_better", "extra_json"}


def record(key: str = "abc123", **kw) -> RunRecord:
    base = dict(run_key=key, kind="train", config={"model": {"family": "vae"}, "seed": 1}, study="beta",
                name="vae-b1", seed=1, git_commit="deadbeef", versions={"torch": "2.x"}, device="cpu",
                provider=None, artifact_path="runs/abc123")
    return RunRecord(**{**base, **kw})


METRICS = [Metric("sliced_wasserstein", 0.25, unit="", higher_is_better=False, split="test", extra={"n": 1000}),
           Metric("train_wall_s", 12.5, unit="s", higher_is_better=None),
           Metric("accuracy", 0.9, unit="", higher_is_better=True, split="test")]


def test_new_store_has_schema_version_and_wal(tmp_path):
    path = tmp_path / "sub" / "r.db"
    with ResultsStore(path):
        pass
    assert path.is_file()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # WAL is persistent in the file
    conn.close()


def test_empty_tables_have_the_documented_columns(store):
    assert list(store.read_table("runs").columns) == RUNS_COLUMNS
    assert list(store.read_table("metrics").columns) == METRICS_COLUMNS
    results = store.read_table()
    assert RESULTS_COLUMNS <= set(results.columns) and len(results) == 0


def test_commit_run_and_read_back(store):
    store.commit_run(record(), METRICS)
    runs = store.read_table("runs")
    assert isinstance(runs, pd.DataFrame) and len(runs) == 1
    row = runs.iloc[0]
    assert (row.run_key, row.kind, row.study, row.status, row.seed) == ("abc123", "train", "beta", "done", 1)
    assert row.created_at and row.finished_at  # 'done' runs get a finish time
    metrics = store.read_table("metrics").set_index("name")
    assert metrics.loc["sliced_wasserstein", "value"] == pytest.approx(0.25)
    assert metrics.loc["sliced_wasserstein", "higher_is_better"] == 0
    assert metrics.loc["accuracy", "higher_is_better"] == 1
    assert pd.isna(metrics.loc["train_wall_s", "higher_is_better"])
    assert metrics.loc["train_wall_s", "unit"] == "s" and metrics.loc["train_wall_s", "split"] == ""
    results = store.read_table("results")
    assert len(results) == 3 and set(results.run_name) == {"vae-b1"} and set(results.study) == {"beta"}
    run = store.get_run("abc123")
    assert run["config"] == {"model": {"family": "vae"}, "seed": 1} and run["versions"] == {"torch": "2.x"}
    assert store.get_run("nope") is None


def test_upsert_replaces_the_run_and_its_metrics(store):
    store.commit_run(record(status="running"), METRICS[:1])
    first = store.get_run("abc123")
    assert first["status"] == "running" and first["finished_at"] is None
    store.commit_run(record(status="done", name="renamed", device="cuda"),
                     [Metric("sliced_wasserstein", 0.125, higher_is_better=False, split="test")])
    runs = store.read_table("runs")
    assert len(runs) == 1
    again = store.get_run("abc123")
    assert (again["status"], again["name"], again["device"]) == ("done", "renamed", "cuda")
    assert again["created_at"] == first["created_at"]  # creation time survives an upsert
    metrics = store.read_table("metrics")
    assert len(metrics) == 1 and metrics.value.iloc[0] == pytest.approx(0.125)
    store.add_metrics("abc123", [Metric("sliced_wasserstein", 0.5, split="train")])  # another split: a new row
    assert len(store.read_table("metrics")) == 2


def test_commit_is_all_or_nothing(store):
    bad = METRICS + [Metric("broken", "not a number")]  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.commit_run(record(), bad)
    assert len(store.read_table("runs")) == 0 and len(store.read_table("metrics")) == 0
    with pytest.raises(StoreError, match="run status must be one of"):
        store.commit_run(record(status="finished"), METRICS)  # type: ignore[arg-type]
    assert len(store.read_table("runs")) == 0
    # an exception inside an explicit transaction rolls back everything written in it
    with pytest.raises(RuntimeError, match="boom"):
        with store.transaction() as cur:
            store._upsert_run(cur, record("k2"))
            store._insert_metrics(cur, "k2", METRICS)
            raise RuntimeError("boom")
    assert len(store.read_table("runs")) == 0 and len(store.read_table("metrics")) == 0
    store.commit_run(record(), METRICS)  # the store is still usable
    assert len(store.read_table("metrics")) == 3


def test_non_finite_metrics_are_stored_as_null_with_a_note(store):
    store.commit_run(record(), [Metric("nll", math.nan, unit="nats"), Metric("fid", math.inf, extra={"n": 5}),
                                Metric("neg", -math.inf)])
    m = store.read_table("metrics").set_index("name")
    assert m.value.isna().all()
    assert json.loads(m.loc["nll", "extra_json"]) == {"nonfinite": "nan"}
    assert json.loads(m.loc["fid", "extra_json"]) == {"n": 5, "nonfinite": "inf"}
    assert json.loads(m.loc["neg", "extra_json"]) == {"nonfinite": "-inf"}


def test_status_updates_and_counts(store):
    store.commit_run(record("a", status="pending"))
    store.commit_run(record("b", status="pending"))
    store.commit_run(record("c", study="other"))
    store.set_status("a", "failed", error="Traceback ...")
    assert store.status_counts("beta") == {"failed": 1, "pending": 1}
    assert store.status_counts() == {"failed": 1, "pending": 1, "done": 1}
    assert store.get_run("a")["error"] == "Traceback ..." and store.get_run("a")["finished_at"]
    with pytest.raises(StoreError, match="no run 'zzz'"):
        store.set_status("zzz", "done")
    with pytest.raises(StoreError, match="run status must be one of"):
        store.set_status("a", "exploded")
    with pytest.raises(StoreError, match="no run 'zzz'"):
        store.add_metrics("zzz", METRICS)


def test_unknown_table_is_refused(store):
    with pytest.raises(StoreError, match="unknown table 'sqlite_master'; expected one of runs, metrics, results"):
        store.read_table("sqlite_master")


def test_two_handles_see_each_others_commits(tmp_path):
    path = tmp_path / "r.db"
    with ResultsStore(path) as writer, ResultsStore(path) as reader:
        writer.commit_run(record(), METRICS)
        assert len(reader.read_table("results")) == 3
    with ResultsStore(path, create=False) as reopened:  # reopening keeps the data
        assert len(reopened.read_table("runs")) == 1


def test_missing_store_without_create(tmp_path):
    with pytest.raises(StoreError, match=r"results store '.*missing.db' does not exist"):
        ResultsStore(tmp_path / "missing.db", create=False)


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "r.db"
    ResultsStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=rf"results store '.*r.db' has schema version {SCHEMA_VERSION + 1}, newer "
                                         rf"than this genbench reads \({SCHEMA_VERSION}\); upgrade genbench"):
        ResultsStore(path)


@pytest.mark.parametrize("readonly", [False, True])
def test_foreign_sqlite_file_is_refused_and_left_alone(tmp_path, readonly):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match=r"'.*other.db' is a SQLite database but not a genbench results store "
                                         r"\(user_version 0, tables: customers\)"):
        ResultsStore(path, readonly=readonly)
    assert path.read_bytes() == before  # not even the header (journal mode) was rewritten
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


def test_foreign_file_with_a_user_version_is_refused(tmp_path):
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE runs (id INTEGER)")
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match=r"not a genbench results store \(user_version 1, tables: runs\)"):
        ResultsStore(path)
    assert path.read_bytes() == before


def test_a_file_that_is_not_sqlite_is_refused(tmp_path):
    path = tmp_path / "notes.db"
    path.write_bytes(b"this is plainly not a database file, just some text that goes on for a while" * 20)
    with pytest.raises(StoreError, match=r"'.*notes.db' is not a SQLite results store"):
        ResultsStore(path)


# -- schema v1 -> v2 ---------------------------------------------------------------------------------------------
def _v1(tmp_path, **kw):
    if str(Path(__file__).parent) not in sys.path:
        sys.path.insert(0, str(Path(__file__).parent))  # the v1 fixture module beside this file
    from v1_store import write_v1_store
    path = tmp_path / "r.db"
    keys = write_v1_store(path, **kw)
    return path, keys


def test_v1_store_migrates_forward_in_place(tmp_path):
    from genlib import records
    path, keys = _v1(tmp_path, steps=(300, 400))
    with ResultsStore(path) as store:
        runs = store.read_table("runs").set_index("run_key")
        assert len(runs) == 6 + 6 + 3 + 3 + 3
        assert store.read_table("metrics")["run_key"].nunique() == len(runs)
        assert runs["config_key"].notna().all()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    conn.close()
    ck = runs["config_key"]
    # seeds of one configuration share a key; train.steps 300 and 400 do not
    assert ck["e300s0"] == ck["e300s1"] == ck["e300s2"] != ck["e400s0"] == ck["e400s2"]
    assert ck["t300s0"] == ck["t300s1"] != ck["t400s0"]
    # what the v1 producers wrote is rewritten into the contract's layouts
    cli_train = json.loads(runs.loc["clitrain", "config_json"])
    assert set(cli_train) == {"train", "eval", "axes", "profile"} and cli_train["train"]["seed"] == 7
    cli_eval = json.loads(runs.loc["clieval", "config_json"])
    assert cli_eval["train"] == cli_train["train"] and cli_eval["eval"]["n"] == 1000
    assert cli_eval["eval"]["sampler"] == "ddim"
    floor = json.loads(runs.loc["clifloor", "config_json"])
    assert floor["data"] == {"name": "moons"} and floor["train"] is None
    bench = json.loads(runs.loc["bench-b1", "config_json"])
    assert "machine" not in bench and json.loads(runs.loc["bench-b1", "machine_json"])["node"] == "box"
    # a benchmark's key follows its training's configuration, not its seed
    assert ck["bench-b1"] == records.config_key("bench", bench, ck["t300s0"])
    for key in ("clitrain",) + tuple(keys["eval"]):
        cfg = json.loads(runs.loc[key, "config_json"])
        records.check_layout(runs.loc[key, "kind"], cfg)


def test_v1_store_opened_read_only_is_migrated_in_memory_only(tmp_path):
    path, _ = _v1(tmp_path)
    before = path.read_bytes()
    with ResultsStore(path, readonly=True) as store:
        runs = store.read_table("runs")
        assert runs["config_key"].notna().all() and len(store.read_table()) > 0
        with pytest.raises(StoreError, match=r"results store '.*r.db' was opened read-only"):
            store.commit_run(record())
    assert path.read_bytes() == before
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()


def test_migration_is_one_transaction(tmp_path, monkeypatch):
    from genlib import record_layout
    path, _ = _v1(tmp_path)

    def broken(kind, config):
        raise RuntimeError("disk pulled out mid-migration")

    monkeypatch.setattr(record_layout, "upgrade_v1_config", broken)
    with pytest.raises(RuntimeError, match="mid-migration"):
        ResultsStore(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "config_key" not in {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
    conn.close()
    monkeypatch.undo()
    with ResultsStore(path) as store:
        assert store.read_table("runs")["config_key"].notna().all()


# -- read-only files, full disks --------------------------------------------------------------------------------
def test_read_only_open_of_a_current_store_never_writes(tmp_path):
    path = tmp_path / "r.db"
    with ResultsStore(path) as store:
        store.commit_run(record(), METRICS)
    before = path.read_bytes()
    with ResultsStore(path, readonly=True) as store:
        assert len(store.read_table()) == 3
    assert path.read_bytes() == before
    with pytest.raises(StoreError, match=r"results store '.*missing.db' does not exist"):
        ResultsStore(tmp_path / "missing.db", readonly=True)


def test_read_only_file_or_folder_is_a_one_line_error_for_writers(tmp_path, monkeypatch):
    import genlib.store as store_mod
    path = tmp_path / "r.db"
    with ResultsStore(path):
        pass
    real_access = os.access
    monkeypatch.setattr(store_mod.os, "access", lambda p, mode: Path(p) != path and real_access(p, mode))
    with pytest.raises(StoreError, match=r"^results store '.*r.db' is read-only; reports can read it"):
        ResultsStore(path)
    monkeypatch.setattr(store_mod.os, "access", lambda p, mode: Path(p) != tmp_path and real_access(p, mode))
    with pytest.raises(StoreError, match=r"^the folder of results store '.*r.db' is read-only"):
        ResultsStore(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_folder_really(tmp_path):
    path = tmp_path / "r.db"
    with ResultsStore(path) as store:
        store.commit_run(record(), METRICS)
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(StoreError, match=r"folder of results store .* is read-only"):
            ResultsStore(path)
        with ResultsStore(path, readonly=True) as store:
            assert len(store.read_table("runs")) == 1
    finally:
        tmp_path.chmod(0o755)


def test_full_disk_is_a_one_line_error_naming_the_store(tmp_path):
    path = tmp_path / "r.db"
    with ResultsStore(path) as store:
        store.commit_run(record("k0"), METRICS)
        pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
        store._conn.execute(f"PRAGMA max_page_count={pages + 1}")  # the medium is full after one more page
        big = [Metric(f"m{i}", float(i), extra={"pad": "x" * 2000}) for i in range(50)]
        with pytest.raises(StoreError) as info:
            store.commit_run(record("k1"), big)
        message = str(info.value)
        assert "\n" not in message and re.match(r"results store '.*r.db': database or disk is full \(free some "
                                                r"space or use another --store\)", message)
        assert store.get_run("k1") is None and store.get_run("k0") is not None  # all or nothing
