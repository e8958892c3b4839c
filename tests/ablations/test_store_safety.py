"""One lock per real store (a symlink is no way around it, artifacts stay beside the real file), and a grid
edited and rerun into the same store (train.steps 300 -> 400 in the issue; 30 -> 40 here) is never pooled:
the report shows two rows naming train.steps and `grid status` says the study holds two configurations."""
from __future__ import annotations

import pytest
from grid_helpers import ToyEvaluation, tiny_grid

from ablations import GridRunError, parse_grid, plan_grid, run_plan
from ablations.driver import artifacts_dir_for, plan_status, store_lock, store_status
from genlib.store import ResultsStore


def _grid(steps: int) -> dict:
    grid = tiny_grid(axes={"eval.steps": [2]}, seeds=[0, 1, 2])
    grid["base"]["train"]["steps"] = steps
    return grid


def _run(grid: dict, store_path):
    return run_plan(plan_grid(parse_grid(grid)), store_path, executor="serial", threads=1, progress=False,
                    evaluation=ToyEvaluation())


def test_a_second_driver_through_a_symlink_is_refused(tmp_path):
    real = tmp_path / "real" / "results.db"
    real.parent.mkdir()
    ResultsStore(real).close()
    link = tmp_path / "elsewhere" / "link.db"
    link.parent.mkdir()
    link.symlink_to(real)
    with store_lock(real):
        with pytest.raises(GridRunError, match=r"another grid run is writing '.*real/results.db' \(reached through "
                                               r"'.*elsewhere/link.db'\)"):
            with store_lock(link):
                pass
    with store_lock(link):  # through the link first, then the real path is the one refused
        with pytest.raises(GridRunError, match=r"another grid run is writing '.*real/results.db' \(lock"):
            with store_lock(real):
                pass
    assert not (link.parent / "link.db.lock").exists()


def test_a_grid_run_through_a_symlink_keeps_artifacts_beside_the_real_store(tmp_path):
    from reports.load import open_store
    real = tmp_path / "real" / "results.db"
    real.parent.mkdir()
    link = tmp_path / "elsewhere" / "link.db"
    link.parent.mkdir()
    ResultsStore(real).close()
    link.symlink_to(real)
    assert _run(_grid(30), link).complete
    assert artifacts_dir_for(real).is_dir() and not artifacts_dir_for(link).exists()
    data = open_store(link)
    paths = [p for p in data.runs["artifact_path"] if isinstance(p, str)]
    assert paths and all(data.artifact_dir(p) is not None for p in paths)  # resolved beside the real file


def test_an_edited_grid_rerun_into_one_store_is_never_pooled(tmp_path, capsys):
    from genlib.cli import main
    from reports.load import open_store
    from reports.tables import study_tables
    db = tmp_path / "results.db"
    assert _run(_grid(30), db).complete
    assert _run(_grid(40), db).complete  # only train.steps changed, same study
    [table] = study_tables(open_store(db), "tiny")
    assert [r["configuration"] for r in table.rows] == ["train.steps=30", "train.steps=40"]
    assert [r["seeds"] for r in table.rows] == [3, 3] and all(r["swd"].n == 3 for r in table.rows)
    assert any("differ in train.steps" in note for note in table.notes)
    with ResultsStore(db, readonly=True) as store:
        status = {(r["study"], r["kind"]): r for r in store_status(store)}
        planned = plan_status([plan_grid(parse_grid(_grid(40)))], store)
    for kind in ("train", "eval"):
        assert (status[("tiny", kind)]["configs"], status[("tiny", kind)]["differs"]) == (2, "train.steps")
    assert {(r["kind"], r["configs"], r["differs"]) for r in planned} >= {("train", 2, "train.steps"),
                                                                         ("eval", 2, "train.steps")}
    assert status[("tiny", "floor")]["configs"] == 1  # the floor does not depend on training
    capsys.readouterr()
    before = db.read_bytes()
    assert main(["grid", "status", "--store", str(db)]) == 0
    out = capsys.readouterr().out
    assert "tiny (eval): 2 configurations share a cell's settings, differing in train.steps" in out
    assert db.read_bytes() == before  # status opens the store read-only


def test_a_second_driver_through_a_hard_link_is_refused(tmp_path):
    import os

    real = tmp_path / "real" / "results.db"
    real.parent.mkdir()
    ResultsStore(real).close()
    link = tmp_path / "elsewhere" / "hard.db"
    link.parent.mkdir()
    os.link(real, link)  # another name, the same inode: SQLite would keep two -wal files for one database
    with store_lock(real):
        with pytest.raises(GridRunError, match=r"another grid run is writing '.*elsewhere/hard.db' under another "
                                               r"name \(a hard link or bind mount of the same file: device \d+, inode"):
            with store_lock(link):
                pass
    with store_lock(link):
        with pytest.raises(GridRunError, match="under another name"):
            with store_lock(real):
                pass
    with store_lock(real):  # released on exit: the next run takes it
        pass
