"""`genbench grid plan|run|status|list` end to end, with the default evaluation (genlib.metrics)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from grid_helpers import tiny_grid

from genlib.cli import main
from genlib.store import ResultsStore


def store_runs(db):
    with ResultsStore(db) as store:
        return store.read_table("runs")


@pytest.fixture
def grid_file(tmp_path):
    grid = tiny_grid(seeds=[0, 1])
    grid["axes"] = {"eval.steps": [2, None]}
    grid["eval"] = {"n": 128, "metrics": ["swd"]}
    grid["floor"] = {"metrics": ["swd"]}
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def test_plan_prints_trainings_and_evaluations_before_running(grid_file, capsys, tmp_path):
    assert main(["grid", "plan", str(grid_file)]) == 0
    out = capsys.readouterr().out
    assert "study tiny" in out and "trainings:       2" in out and "evaluations:     4" in out
    assert "inference axes: eval.steps" in out
    assert main(["grid", "plan", str(grid_file), "--no-share", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)[0]
    assert summary["trainings"] == 4 and summary["evaluations"] == 4
    assert not (tmp_path / "toy.artifacts").exists()  # planning runs nothing


def test_run_then_status_with_the_default_metrics(grid_file, tmp_path, capsys):
    db = tmp_path / "results.db"
    args = ["grid", "run", str(grid_file), "--store", str(db), "--executor", "serial", "--threads", "1",
            "--no-progress"]
    assert main(args) == 0
    assert "8 cells done and 0 failed" in capsys.readouterr().out
    with ResultsStore(db) as store:
        results = store.read_table("results")
    swd = results[(results["name"] == "swd") & (results["kind"] == "eval")]
    assert len(swd) == 4 and swd["higher_is_better"].eq(0).all() and swd["value"].gt(0).all()
    runs = store_runs(db)
    for path in runs.loc[runs["kind"] == "eval", "artifact_path"]:  # the kept preview of each evaluation
        preview = np.load(db.parent / path / "samples.npy", allow_pickle=False)
        assert preview.shape == (64, 2) and np.isfinite(preview).all()
    floors = results[results["kind"] == "floor"]
    assert len(floors) == 2 and (floors["value"] < swd["value"].min()).all()  # data beats a 30-step model
    assert main(args) == 0  # resuming a finished grid runs nothing
    assert "0 cells done and 0 failed in this run (8 were already done" in capsys.readouterr().out
    assert main(["grid", "status", str(grid_file), "--store", str(db)]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "eval" in out
    assert main(["grid", "status", "--store", str(db), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["status"]
    assert {(r["kind"], r["done"]) for r in rows} == {("train", 2), ("eval", 4), ("floor", 2)}


def test_run_exit_code_and_failures_listing(grid_file, tmp_path, capsys):
    grid = yaml.safe_load(grid_file.read_text())
    grid["eval"]["metrics"] = ["fd"]  # an image metric on 2-D toy data: every evaluation fails
    grid_file.write_text(yaml.safe_dump(grid))
    db = tmp_path / "results.db"
    code = main(["grid", "run", str(grid_file), "--store", str(db), "--executor", "serial", "--no-progress",
                 "--max-failures", "2"])
    assert code == 1
    assert "stopped early after 2 failures" in capsys.readouterr().err
    assert main(["grid", "status", str(grid_file), "--store", str(db), "--failed"]) == 0
    out = capsys.readouterr().out
    assert out.count("failed ") >= 2 and "applies to image data" in out


def test_user_errors_are_one_line_with_a_suggestion(capsys, tmp_path):
    assert main(["grid", "plan", "betta"]) == 2
    err = capsys.readouterr().err
    assert "grid 'betta' is neither a file nor a bundled study; did you mean 'beta'?" in err
    assert main(["grid", "run", "beta", "--store", str(tmp_path / "r.db"), "--executor", "rayy"]) == 2
    assert "unknown executor 'rayy'; did you mean 'ray'?" in capsys.readouterr().err
    assert main(["grid", "status", "--store", str(tmp_path / "missing.db")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_list_shows_the_bundled_studies(capsys):
    assert main(["grid", "list"]) == 0
    out = capsys.readouterr().out
    for study in ("beta", "warmup", "refinement", "steps", "baselines"):
        assert study in out
    assert "claim 3: KL dominating (large beta) collapses the posterior" in out
    assert "primary:   active_units lower at loss.beta=64 than at loss.beta=1, margin 1" in out
