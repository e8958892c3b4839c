"""`genbench claims` and `genbench demo`: argument errors, and one study end to end into a claims report."""
from __future__ import annotations

import pytest

from genlib.cli import main
from genlib.store import ResultsStore


def test_unknown_study_is_a_one_line_error(tmp_path, capsys):
    assert main(["claims", "--out", str(tmp_path / "c"), "--store", str(tmp_path / "r.db"), "--studies", "beta,warmp"]) == 2
    err = capsys.readouterr().err
    assert "unknown studies warmp" in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["claims", "demo"])
def test_help_names_what_runs(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "--profile" in capsys.readouterr().out


@pytest.mark.slow
def test_claims_on_one_study_writes_verdicts_and_analytic_rows(tmp_path, capsys):
    db, out = tmp_path / "r.db", tmp_path / "claims"
    assert main(["claims", "--studies", "beta", "--store", str(db), "--out", str(out)]) == 0
    text = (out / "claims.md").read_text()
    assert "Claim 3" in text and "Claim 8: **supported**" in text
    with ResultsStore(db) as store:
        kinds = set(store.read_table("runs")["kind"])
    assert {"train", "eval", "analytic"} <= kinds
    assert str(out) in capsys.readouterr().out


def test_demo_times_the_network_a_study_trained(tmp_path):
    """The demo's speed table times the checkpoint a study trained (by block, method and seed), found through the
    store; a store without that training (the study left out) gives None, and the demo trains the default."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from grid_helpers import ToyEvaluation, tiny_grid

    from ablations import parse_grid, plan_grid, run_plan
    from ablations.main_job import study_checkpoint

    grid = tiny_grid(study="baselines", axes={"eval.steps": [2]}, seeds=[0, 1],
                     blocks={"digits": {"set": {"data.name": "moons"}}, "moons": {"set": {"data.name": "moons"}}},
                     variants={"method": {"ddpm": {"train.lr": 0.001}, "other": {"train.lr": 0.002}}})
    db = tmp_path / "r.db"
    plan = plan_grid(parse_grid(grid))
    assert run_plan(plan, db, executor="serial", threads=1, progress=False, evaluation=ToyEvaluation()).complete
    found = study_checkpoint(db, "baselines", block="digits", method="ddpm", seed=0)
    [cell] = [c for c in plan.train_cells if c.seed == 0 and c.axes.get("block") == "digits"
              and c.axes.get("method") == "ddpm"]
    assert found is not None and found.name == cell.key and (found / "model.pt").is_file()
    assert study_checkpoint(db, "baselines", block="digits", method="ddpm", seed=1).name != cell.key
    assert study_checkpoint(db, "baselines", block="digits", method="vae_diagonal", seed=0) is None
    assert study_checkpoint(db, "beta", block="digits", method="ddpm", seed=0) is None
    assert study_checkpoint(tmp_path / "absent.db", "baselines", block="digits", method="ddpm", seed=0) is None
