"""`genbench eval`: the floor and a run from the command line, JSON output, the results store, user errors."""
from __future__ import annotations

import argparse
import json

import pytest

from genlib.cli import main
from genlib.config import to_dict
from genlib.metrics.cli import add_parser
from genlib.store import ResultsStore

pytestmark = pytest.mark.usefixtures("single_thread")


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="genbench")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_every_set_is_kept(capsys):
    # `--set a=1 --set b=2` applies both, as on train and grid run (the last one used to replace the others)
    from genlib.metrics.cli import _eval_config

    parser = argparse.ArgumentParser(prog="genbench")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", "--data", "moons", "--set", "metrics.iwae_k=7", "--set", "sample.steps=9",
                              "--set", "data.n_test=300"])
    assert args.overrides == ["metrics.iwae_k=7", "sample.steps=9", "data.n_test=300"]
    cfg, data_cfg = _eval_config(args)
    assert (cfg.settings.iwae_k, cfg.sample.steps, data_cfg.n_test, data_cfg.name) == (7, 9, 300, "moons")
    with pytest.raises(SystemExit):  # one KEY=VALUE per --set: a second value is an unrecognised argument
        parser.parse_args(["eval", "--data", "moons", "--set", "metrics.iwae_k=7", "sample.steps=9"])
    assert "unrecognized arguments: sample.steps=9" in capsys.readouterr().err


def test_list_shows_every_metric_with_its_direction(capsys):
    assert main(["eval", "--list"]) == 0
    out = capsys.readouterr().out
    assert "iwae" in out and "bits/dim" in out and "model (vae)" in out and "↓" in out


def test_floor_as_json(capsys):
    assert _run(["eval", "--data", "digits", "--metrics", "precision,recall,sharpness", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["precision", "recall", "sharpness"]
    assert rows[0]["higher_is_better"] is True and rows[0]["extra"]["k"] == 3 and rows[0]["extra"]["floor"] is True
    assert rows[2]["higher_is_better"] is None and rows[2]["unit"] == "ratio"


def test_toy_floor_defaults_to_2000_points_with_energy_and_mmd_beside_swd(tmp_path, capsys):
    db = tmp_path / "results.db"
    assert _run(["eval", "--data", "moons", "--json", "--store", str(db)]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert list(rows) == ["swd", "mmd", "energy"]
    assert all(r["extra"]["n"] == 2000 and r["extra"]["n_reference"] == 2000 for r in rows.values())
    with ResultsStore(db) as store:
        run = store.get_run(store.read_table("results")["run_key"].iloc[0])
    assert run["config"]["eval"]["n"] == 2000  # the resolved default is what the record keeps
    assert _run(["eval", "--data", "digits", "--metrics", "sharpness", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["extra"]["n_requested"] == 1000  # images keep 1000


def test_run_table_and_store(vae_run, tmp_path, capsys):
    db = tmp_path / "results.db"
    assert _run(["eval", "--run", str(vae_run.run_dir), "--metrics", "iwae,active_units,coverage", "--n", "200",
                 "--set", "metrics.iwae_k=5", "--set", "sample.passes=1", "--store", str(db)]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:2] == ["metric", "value"]
    assert "k=5" in table and "threshold=0.01" in table
    with ResultsStore(db) as store:
        results = store.read_table("results")
        run = store.get_run(results["run_key"].iloc[0])
    assert sorted(results["name"]) == ["active_units", "coverage", "iwae"]
    assert run["kind"] == "eval" and run["parent_key"] == vae_run.config.run_key
    assert run["config"]["eval"]["settings"]["iwae_k"] == 5 and run["config"]["eval"]["passes"] == 1
    assert run["config"]["train"] == to_dict(vae_run.config) and run["device"] == str(vae_run.model.device)


def test_user_errors_exit_2_with_one_line(vae_run, capsys):
    assert main(["eval", "--run", str(vae_run.run_dir), "--metrics", "psnr,precisoin"]) == 2
    assert "did you mean 'precision'" in capsys.readouterr().err
    assert main(["eval", "--data", "moons", "--metrics", "fd"]) == 2
    assert "'fd' applies to image data" in capsys.readouterr().err
    assert main(["eval", "--run", str(vae_run.run_dir), "--set", "metrics.iwae_kk=5"]) == 2
    assert "did you mean 'metrics.iwae_k'" in capsys.readouterr().err
    assert main(["eval", "--run", str(vae_run.run_dir), "--set", "data.name=moons"]) == 2
    assert "'data.*' settings apply to --data" in capsys.readouterr().err


def test_an_early_checkpoint_is_scored_and_recorded_and_a_precision_is_sent_to_grids(tmp_path, capsys):
    from genlib.train import load_run_config, train

    cfg = load_run_config({"model": {"family": "ddpm", "hidden": [16, 16], "time_dim": 8, "noise": {"T": 50}},
                           "data": {"name": "moons", "n_train": 500, "n_test": 300},
                           "train": {"steps": 60, "batch_size": 32, "save_at": [20], "device": "cpu"}})
    run = train(cfg, tmp_path / "run", progress=False).run_dir
    common = ["eval", "--run", str(run), "--metrics", "swd", "--n", "200", "--set", "sample.sampler=ddim",
              "--set", "sample.steps=5", "--json"]
    assert main(common) == 0
    clean = json.loads(capsys.readouterr().out)[0]["value"]
    assert main([*common, "--set", "sample.perturb=step:20", "--store", str(tmp_path / "r.db")]) == 0
    early = json.loads(capsys.readouterr().out)[0]["value"]
    assert early != clean  # the step-20 weights, not the final ones
    with ResultsStore(tmp_path / "r.db", readonly=True) as store:
        config = json.loads(store.read_table("runs").query("kind == 'eval'")["config_json"].iloc[0])
    assert "step:20" in json.dumps(config)  # the record names the weights it scored
    assert main([*common, "--set", "sample.perturb=step:30"]) == 2
    assert "saved no weights at step 30 (its train.save_at: [20])" in capsys.readouterr().err
    assert main([*common, "--set", "sample.perturb=precision:int8_dynamic"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sampled by grid cells" in err
