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
    grid["eval"]["metrics"] = ["nll_true"]  # needs a closed-form density, which moons lacks: every evaluation fails
    grid_file.write_text(yaml.safe_dump(grid))
    db = tmp_path / "results.db"
    code = main(["grid", "run", str(grid_file), "--store", str(db), "--executor", "serial", "--no-progress",
                 "--max-failures", "2"])
    assert code == 1
    assert "stopped early after 2 failures" in capsys.readouterr().err
    assert main(["grid", "status", str(grid_file), "--store", str(db), "--failed"]) == 0
    out = capsys.readouterr().out
    assert out.count("failed ") >= 2 and "needs the true density in closed form" in out


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


# -- --set: one override for every cell of a study --------------------------------------------------
def _configs(db):
    runs = store_runs(db)
    return {kind: [json.loads(c) for c in runs.loc[runs["kind"] == kind, "config_json"]]
            for kind in ("train", "eval", "floor")}


def test_set_applies_to_every_cell_its_config_and_run_key(grid_file, tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "blobs.npz", x=rng.normal(size=(600, 2)).astype(np.float32))
    monkeypatch.chdir(tmp_path)  # a relative path: stored absolute, so the run does not depend on the cwd
    db = tmp_path / "results.db"
    assert main(["grid", "run", str(grid_file), "--store", str(db), "--executor", "serial", "--no-progress",
                 "--set", "data.name=npz:blobs.npz", "--set", "eval.n=100", "--set", "train.steps=20"]) == 0
    capsys.readouterr()
    configs = _configs(db)
    absolute = f"npz:{tmp_path / 'blobs.npz'}"
    assert len(configs["train"]) == 2 and len(configs["eval"]) == 4 and len(configs["floor"]) == 2
    assert {c["train"]["data"]["name"] for c in configs["train"] + configs["eval"]} == {absolute}
    assert {c["data"]["name"] for c in configs["floor"]} == {absolute}
    assert {c["train"]["train"]["steps"] for c in configs["train"]} == {20}
    assert {c["eval"]["n"] for c in configs["eval"]} == {100}
    # Without the --set the same grid plans other run keys: none of its cells counts as done.
    assert main(["grid", "plan", str(grid_file), "--store", str(db), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)[0]["status"]
    assert {r["kind"]: r["done"] for r in status} == {"train": 0, "eval": 0, "floor": 0}
    assert main(["grid", "plan", str(grid_file), "--store", str(db), "--json", "--set", "data.name=npz:blobs.npz",
                 "--set", "eval.n=100", "--set", "train.steps=20"]) == 0
    status = json.loads(capsys.readouterr().out)[0]["status"]
    assert {r["kind"]: r["done"] for r in status} == {"train": 2, "eval": 4, "floor": 2}


def test_replacing_the_npz_reruns_every_cell_that_read_it(tmp_path, capsys):
    grid = tiny_grid(seeds=[0], axes={"train.lr": [0.001]}, eval={"n": 100, "metrics": ["swd"]},
                     floor={"metrics": ["swd"]})
    grid_file = tmp_path / "toy.yaml"
    grid_file.write_text(yaml.safe_dump(grid, sort_keys=False))
    data = tmp_path / "blobs.npz"
    np.savez(data, x=np.random.default_rng(0).normal(size=(300, 2)).astype(np.float32))
    db = tmp_path / "results.db"
    args = ["grid", "run", str(grid_file), "--store", str(db), "--executor", "serial", "--no-progress",
            "--set", f"data.name=npz:{data}", "--set", "eval.n=100", "--set", "train.steps=5"]
    assert main(args) == 0
    assert "3 cells done and 0 failed" in capsys.readouterr().out
    first = {c["train"]["data"]["fingerprint"] for c in _configs(db)["train"]}
    np.savez(data, x=np.random.default_rng(1).normal(size=(300, 2)).astype(np.float32) + 5)  # same path
    assert main(args) == 0
    assert "3 cells done and 0 failed in this run (0 were already done" in capsys.readouterr().out
    configs = _configs(db)
    second = {c["train"]["data"]["fingerprint"] for c in configs["train"]} - first
    assert len(first) == 1 and len(second) == 1 and len(configs["train"]) == 2 and len(configs["floor"]) == 2
    assert {c["data"]["fingerprint"] for c in configs["floor"]} == first | second
    from reports.build import provenance_blocks
    from reports.load import open_store

    items = provenance_blocks(open_store(db))[1].items
    line = next(i for i in items if i.startswith("Data files (content fingerprints): "))
    assert f"`npz:{data}`" in line and all(f"`{f}`" in line for f in first | second) and "several contents" in line


def _write_idx_images(path, images):
    header = (0x803).to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in images.shape)
    path.write_bytes(header + images.astype(np.uint8).tobytes())


def test_replacing_an_idx_file_in_its_folder_plans_new_keys(tmp_path, capsys):
    from ablations.plan import plan_grid
    from ablations.spec import load_grid

    folder = tmp_path / "mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    _write_idx_images(folder / "t10k-images-idx3-ubyte", rng.integers(0, 256, size=(40, 8, 8)))
    grid = tiny_grid(seeds=[0])
    grid["base"]["data"] = {"name": f"idx:{folder}"}
    grid["base"]["model"] = {"family": "ae", "latent_dim": 2, "hidden": [8]}
    grid["eval"] = {"n": 8, "metrics": ["mse"]}
    grid["axes"] = {"train.lr": [0.001, 0.002]}
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    keys = lambda: sorted(c.key for c in plan_grid(load_grid(path)).cells)  # noqa: E731
    before = keys()
    assert keys() == before  # unchanged data: the same keys, so a resumed grid reuses its results
    _write_idx_images(folder / "t10k-images-idx3-ubyte", rng.integers(0, 256, size=(40, 8, 8)))
    after = keys()
    assert not set(before) & set(after)


@pytest.mark.parametrize("override,needle", [
    ("train.stpes=5", "did you mean 'train.steps'"),
    ("eval.stpes=5", "did you mean 'eval.steps'"),
    ("trian.steps=5", "did you mean 'train'"),
    ("eval.steps=3", "study 'tiny' varies 'eval.steps'"),
    ("seed=3", "--set seed: a study runs every seed of its profile"),
    ("train.steps", "must look like key.path=value"),
])
def test_set_errors_name_the_key_before_any_work(grid_file, tmp_path, capsys, override, needle):
    db = tmp_path / "results.db"
    assert main(["grid", "run", str(grid_file), "--store", str(db), "--executor", "serial", "--no-progress",
                 "--set", override]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not db.exists() and not (tmp_path / "results.artifacts").exists()


def test_claims_and_demo_pass_set_to_the_grid(monkeypatch, tmp_path):
    import ablations.main_job as main_job

    calls = []
    monkeypatch.setattr(main_job, "_call", lambda argv, allow=(0,): calls.append(argv) or 0)
    monkeypatch.setattr("ablations.analytic.record_analytic", lambda store: None)
    monkeypatch.setattr("reports.build_claims", lambda store, out: {"md": out / "claims.md"})
    _write_idx(tmp_path / "x")
    data = f"data.name=idx:{tmp_path / 'x'}"
    assert main(["claims", "--out", str(tmp_path / "c"), "--store", str(tmp_path / "r.db"), "--studies", "beta",
                 "--set", data, "--set", "train.steps=9"]) == 0
    argv = calls[0]
    assert argv[:3] == ["grid", "run", "beta"]
    assert argv[-4:] == ["--set", data, "--set", "train.steps=9"]


@pytest.mark.parametrize("command", ["claims", "demo"])
def test_claims_and_demo_name_themselves_in_set_errors_and_create_nothing(command, tmp_path, capsys):
    store = tmp_path / "r.db"
    args = [command, "--out", str(tmp_path / "o"), "--studies", "beta", "--set", "train.stpes=9"]
    assert main(args + (["--store", str(store)] if command == "claims" else [])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"genbench {command}: error: grid '") and "did you mean 'train.steps'" \
        in err[0] and "cell beta[" in err[0]
    assert not store.exists() and not (tmp_path / "o" / "results.db").exists()


def test_plan_refuses_metrics_that_do_not_fit_the_data_or_n(capsys):
    assert main(["grid", "plan", "refinement", "--set", "data.name=moons"]) == 2
    err = capsys.readouterr().err
    assert "refinement.yaml': cell refinement[" in err and "metric 'precision' applies to image data; data 'moons' " \
        "is toy data" in err
    assert main(["grid", "plan", "beta", "--set", "eval.n=50"]) == 2
    assert "metric 'fd' needs at least 100 samples per set (metrics.min_samples); eval.n is 50" in capsys.readouterr().err


def test_set_on_a_key_that_blocks_vary_is_refused(capsys):
    assert main(["grid", "plan", "baselines", "--set", "data.name=moons"]) == 2
    err = capsys.readouterr().err
    assert "--set 'data.name': study 'baselines' varies it across its blocks (digits: data.name=digits, moons: " \
        "data.name=moons" in err
    assert main(["grid", "plan", "baselines", "--set", "train.lr=0.002"]) == 0  # a key no block fixes applies


def _write_idx(folder, n: int = 300, size: int = 8, seed: int = 0) -> None:
    """A tiny MNIST-format dataset: IDX images (magic 0x803) and labels (0x801), a class-dependent bar."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    x = rng.integers(0, 40, size=(n, size, size))
    for i, k in enumerate(y):
        x[i, k % size, :] = 200 + rng.integers(0, 55)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train-images-idx3-ubyte").write_bytes(
        np.array([0x803, n, size, size], ">u4").tobytes() + x.astype(np.uint8).tobytes())
    (folder / "train-labels-idx1-ubyte").write_bytes(np.array([0x801, n], ">u4").tobytes() + y.astype(np.uint8).tobytes())


def test_bundled_study_runs_on_generated_idx_files(tmp_path, monkeypatch, capsys):
    """The quick refinement study on IDX files, with the scoring stubbed out (the slow test below scores)."""
    import ablations.driver
    from grid_helpers import TrivialEvaluation

    monkeypatch.setattr(ablations.driver, "MetricsEvaluation", TrivialEvaluation)
    _write_idx(tmp_path / "mine")
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "X.db"
    overrides = ["--set", "data.name=idx:mine", "--set", "train.steps=20", "--set", "eval.n=100"]
    assert main(["grid", "plan", "refinement", *overrides, "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)[0]
    assert main(["grid", "run", "refinement", *overrides, "--store", str(db), "--executor", "serial",
                 "--no-progress"]) == 0
    assert f"{planned['cells']} cells done and 0 failed" in capsys.readouterr().out
    configs = _configs(db)
    absolute = f"idx:{tmp_path / 'mine'}"
    assert [len(configs[k]) for k in ("train", "eval", "floor")] == [planned["trainings"], planned["evaluations"],
                                                                      planned["floors"]]
    assert {c["train"]["data"]["name"] for c in configs["train"] + configs["eval"]} == {absolute}
    assert {c["data"]["name"] for c in configs["floor"]} == {absolute}
    assert {c["train"]["train"]["steps"] for c in configs["train"]} == {20}


@pytest.mark.slow
def test_bundled_study_on_your_own_idx_data(tmp_path, monkeypatch, capsys):
    """`genbench grid run refinement --set data.name=idx:PATH`: the bundled study on a folder of IDX files."""
    _write_idx(tmp_path / "mine")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path / "cache"))
    db = tmp_path / "X.db"
    assert main(["grid", "run", "refinement", "--set", "data.name=idx:mine", "--set", "train.steps=50",
                 "--set", "eval.n=100", "--store", str(db), "--workers", "2", "--no-progress"]) == 0
    configs = _configs(db)
    absolute = f"idx:{tmp_path / 'mine'}"
    assert configs["train"] and {c["train"]["data"]["name"] for c in configs["train"] + configs["eval"]} == {absolute}
    assert {c["data"]["name"] for c in configs["floor"]} == {absolute}
    assert main(["report", "--store", str(db), "--out", str(tmp_path / "report"), "--format", "md"]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "refinement" in report and absolute.split(":", 1)[1] in report
    rows = [line for line in report.splitlines() if line.startswith("| 6a |")]  # the study's primary claim
    assert rows and any(v in rows[0] for v in ("supported", "contradicted", "no effect", "inconclusive")), rows


@pytest.mark.parametrize("status", [70, 130])
def test_a_crash_inside_claims_or_demo_keeps_its_exit_status(monkeypatch, status):
    import ablations.main_job as main_job
    import genlib.cli

    monkeypatch.setattr(genlib.cli, "main", lambda argv: status)
    with pytest.raises(SystemExit) as exc:
        main_job._call(["grid", "run", "beta"])
    assert exc.value.code == status
    monkeypatch.setattr(genlib.cli, "main", lambda argv: 2)  # a usage error stays a one-line error
    with pytest.raises(genlib.cli.UserError, match="failed with exit status 2"):
        main_job._call(["grid", "run", "beta"])


def test_plan_refuses_a_cuda_timing_provider_on_a_machine_without_it(tmp_path, capsys, monkeypatch):
    import bench.runtime

    monkeypatch.setattr(bench.runtime, "cuda_provider_usable", lambda: (False, "no NVIDIA device is present"))
    grid = tiny_grid(seeds=[0], timing={"where": {"eval.steps": [2]}, "providers": ["cuda"]})
    path = tmp_path / "timed.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    assert main(["grid", "run", str(path), "--store", str(tmp_path / "r.db"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"grid '{path}': study 'tiny': timing.providers lists 'cuda', which is not usable on this machine (no " \
           "NVIDIA device is present); its 2 timed cells would fail" in err
    assert not (tmp_path / "r.db").exists()


def test_ray_executor_without_ray_is_refused_before_the_store_exists(grid_file, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    db = tmp_path / "r.db"
    assert main(["grid", "run", str(grid_file), "--store", str(db), "--executor", "ray", "--no-progress"]) == 2
    assert "genbench grid run: error: --executor ray needs Ray, which is not installed" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy.yaml"]
