"""Plugins: a user's package registers a model family, sampler, dataset, metric and timing backend from outside.

tests/plugins/example is pip-installed into a folder outside genbench's tree, and `genbench` (in fresh
processes, as a user runs it) finds it through its `genbench.plugins` entry point: the family trains,
samples, runs in a grid (spawned workers), exports to ONNX and is timed, with no file of genbench edited.
The same module, only on PYTHONPATH, loads with `--plugin`; a broken plugin is one line naming it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from genlib import cli

PLUGIN_SRC = Path(__file__).resolve().parent / "plugins" / "example"
MODULE = "genbench_example_plugin"
BLOB_MEAN, BLOB_STD = (1.0, -2.0), (0.5, 0.25)  # the plugin's dataset `blob`
RUN_CONFIG = {"name": "blob", "model": {"family": "blob_gauss"}, "data": {"name": "blob", "n_train": 2000, "n_test": 1000},
              "train": {"steps": 200, "batch_size": 2000, "lr": 0.05, "log_every": 50, "device": "cpu"}}
GRID = {"study": "blob_plugin", "base": {k: v for k, v in RUN_CONFIG.items() if k != "name"},
        "eval": {"n": 500, "metrics": ["mean_shift", "swd"]}, "seeds": [0]}

# A module of the user's own beside the grid file: a metric that is twice the plugin's mean_shift.
EXTRA_METRIC = """
from genlib.metrics.base import register_metric


@register_metric("extra_shift", unit="data units", higher_is_better=False, kinds=("toy",))
def extra_shift(ctx):
    \"\"\"Twice the distance between the sample mean and the reference mean.\"\"\"
    return 2 * float(((ctx.samples.mean(0) - ctx.reference.mean(0)) ** 2).sum() ** 0.5), {}
"""


def genbench(*args: str, path: list[Path], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`genbench ARGS` in a fresh interpreter (what the console script runs) with `path` on PYTHONPATH and no
    plugins requested through the environment."""
    environ = {k: v for k, v in os.environ.items() if k != "GENBENCH_PLUGINS"}
    environ["PYTHONPATH"] = os.pathsep.join([*map(str, path), *filter(None, [os.environ.get("PYTHONPATH")])])
    environ.update(env or {})
    return subprocess.run([sys.executable, "-c", "import sys; from genlib.cli import main; sys.exit(main())", *args],
                          cwd=cwd, env=environ, capture_output=True, text=True, timeout=300)


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The example plugin pip-installed (wheel built offline by setuptools) into a folder outside the tree."""
    pytest.importorskip("setuptools", reason="building the example plugin needs setuptools in this environment")
    root = tmp_path_factory.mktemp("plugin")
    shutil.copytree(PLUGIN_SRC, root / "src")  # the build writes build/ and *.egg-info beside its sources
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                           "--quiet", "--target", str(root / "site"), str(root / "src")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (root / "site" / MODULE / "__init__.py").is_file()
    return root / "site"


@pytest.fixture(scope="module")
def run_dir(site, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("work")
    (work / "blob.yaml").write_text(yaml.safe_dump(RUN_CONFIG))
    out = ok(genbench("train", "blob.yaml", "--out", "run", "--quiet", path=[site], cwd=work))
    assert "trained blob_gauss 'blob'" in out and "on blob" in out
    return work / "run"


# ------------------------------------------------------------------------------- installed (entry point)
def test_installed_plugin_trains_and_samples_its_family(run_dir, site):
    ok(genbench("sample", "--run", "run", "--n", "4000", "--out", "s.npz", path=[site], cwd=run_dir.parent))
    with np.load(run_dir.parent / "s.npz") as f:
        x = f["x"]
    assert x.shape == (4000, 2)  # maximum likelihood recovers the blob the plugin's dataset draws from
    np.testing.assert_allclose(x.mean(0), BLOB_MEAN, atol=0.05)
    np.testing.assert_allclose(x.std(0), BLOB_STD, rtol=0.08)


def test_models_names_the_plugin_of_its_entries_only(site, tmp_path):
    out = ok(genbench("models", path=[site], cwd=tmp_path))
    assert "one Gaussian, learned mean and diagonal scale (plugin: example)" in out  # the family
    assert "x = mu + scale * z, z ~ N(0, I) [settings: none] (plugin: example)" in out  # its sampler
    assert out.count("(plugin") == 2  # the shipped families and samplers, imported on the way, are genbench's


def test_installed_plugin_runs_in_a_grid_and_plugin_option_reaches_the_workers(site, tmp_path):
    # Cells reach the spawned workers as plain dicts: a worker resolves 'blob_gauss', 'blob' and 'mean_shift'
    # only if it found the installed plugin, and 'extra_shift' only if GENBENCH_PLUGINS (set by --plugin,
    # after the subcommand here) reached it.
    (tmp_path / "extra_metric.py").write_text(EXTRA_METRIC)
    grid = GRID | {"eval": {"n": 500, "metrics": ["mean_shift", "extra_shift", "swd"]}}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    out = ok(genbench("grid", "run", "grid.yaml", "--store", "r.db", "--workers", "1", "--threads", "1",
                      "--no-progress", "--plugin", "extra_metric", path=[site, tmp_path], cwd=tmp_path))
    assert "3 cells done and 0 failed" in out  # train, eval, and the data-versus-data floor
    results = _results(tmp_path / "r.db")
    evals = results[results["kind"] == "eval"].set_index("name")
    assert set(evals.index) == {"mean_shift", "extra_shift", "swd"}
    assert evals.loc["mean_shift", "unit"] == "data units" and evals.loc["mean_shift", "higher_is_better"] == 0
    assert 0 <= evals.loc["mean_shift", "value"] < 0.1  # the fitted Gaussian's mean is the data's
    assert evals.loc["extra_shift", "value"] == pytest.approx(2 * evals.loc["mean_shift", "value"], rel=1e-4)


def test_installed_plugin_exports_and_is_timed_on_its_own_backend(run_dir, site):
    work = run_dir.parent
    out = ok(genbench("export", "--run", "run", "--part", "decoder", "--out", "decoder.onnx", "--parity-batches", "2,9",
                      path=[site], cwd=work))
    assert "parity valid" in out and (work / "decoder.onnx").is_file()
    # the plugin's timing backend is a module of its own, loaded for this command with --plugin
    ok(genbench("bench", "--run", "run", "--parts", "decoder", "--backends", "torch,ort,torch_no_grad",
                "--batch", "1,8", "--threads", "1", "--providers", "cpu", "--warmup", "1", "--min-rounds", "3",
                "--target-s", "0", "--no-progress", "--csv", "bench.csv", "--plugin", f"{MODULE}.timing",
                path=[site], cwd=work))
    import pandas as pd

    rows = pd.read_csv(work / "bench.csv")
    assert sorted(zip(rows["backend"], rows["batch"], rows["status"])) == [
        ("ort", 1, "ok"), ("ort", 8, "ok"), ("torch", 1, "ok"), ("torch", 8, "ok"),
        ("torch_no_grad", 1, "ok"), ("torch_no_grad", 8, "ok")]
    assert (rows["p50_ms"] > 0).all()


def _results(db: Path):
    from genlib.store import ResultsStore

    with ResultsStore(db) as store:
        return store.read_table("results")


# ------------------------------------------------------------------------------------ --plugin MODULE
def test_plugin_option_loads_a_module_on_the_path(tmp_path):
    # PLUGIN_SRC holds the module but no installed distribution, so no entry point: only the option loads it
    out = ok(genbench("--plugin", MODULE, "datasets", path=[PLUGIN_SRC], cwd=tmp_path))
    assert f"mean (1, -2), standard deviations (0.5, 0.25). (plugin: {MODULE})" in out
    assert out.count("(plugin") == 1  # genbench's own datasets name no plugin


def test_plugin_options_at_every_level_are_collected_in_order():
    args = cli.build_parser().parse_args(["--plugin", "a", "grid", "--plugin", "b", "run", "g.yaml", "--store", "s.db",
                                          "--plugin", "c", "--plugin", "d"])
    assert cli.requested_plugins(args) == ["a", "b", "c", "d"]
    assert cli.requested_plugins(cli.build_parser().parse_args(["models"])) == []


# ---------------------------------------------------------------------------------------- broken ones
def _broken_distribution(site: Path) -> None:
    """An installed distribution whose entry point names a module that fails to import."""
    site.mkdir(parents=True)
    (site / "broken_plugin.py").write_text("import genbench_no_such_dependency\n")
    info = site / "broken_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[genbench.plugins]\nbroken = broken_plugin\n")


def test_a_broken_installed_plugin_is_one_line_naming_it_and_its_entry_point(tmp_path):
    _broken_distribution(tmp_path / "site")
    proc = genbench("datasets", path=[tmp_path / "site"], cwd=tmp_path)
    assert proc.returncode == cli.EXIT_USAGE and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        "genbench datasets: error: plugin 'broken' (entry point genbench.plugins: broken = broken_plugin "
        "(broken-plugin 1.0)) failed to load: ModuleNotFoundError: No module named 'genbench_no_such_dependency'")
    assert ok(genbench("--help", path=[tmp_path / "site"], cwd=tmp_path)).startswith("usage: genbench")  # lazy


def test_a_plugin_module_that_is_not_on_the_path_is_one_line(tmp_path):
    proc = genbench("train", "vae_digits", "--out", "run", "--plugin", "my_missing_plugin", path=[], cwd=tmp_path)
    assert proc.returncode == cli.EXIT_USAGE and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        "genbench train: error: plugin 'my_missing_plugin' (--plugin / GENBENCH_PLUGINS) failed to load: "
        "ModuleNotFoundError: No module named 'my_missing_plugin' (is its directory on PYTHONPATH?)")
    assert not (tmp_path / "run").exists()  # refused before any work


def test_help_imports_no_plugin(site, tmp_path):
    proc = genbench("--help", path=[site], cwd=tmp_path)  # stays fast: nothing heavy, no plugin imported
    probe = ("import sys, genlib.cli\ntry:\n    genlib.cli.main(['train', '--help'])\nexcept SystemExit:\n    pass\n"
             f"print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', {MODULE!r})))")
    env = {**os.environ, "PYTHONPATH": str(site)}
    probed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert ok(proc).startswith("usage: genbench") and probed.stdout.strip().splitlines()[-1] == "[]", probed.stderr


# ------------------------------------------------------------------------------------------- ray workers
def test_ray_tasks_get_the_requested_plugins_in_their_runtime_env(monkeypatch):
    from ablations.executors import _with_plugins

    monkeypatch.delenv("GENBENCH_PLUGINS", raising=False)
    assert _with_plugins(None) is None and _with_plugins({"working_dir": "."}) == {"working_dir": "."}
    monkeypatch.setenv("GENBENCH_PLUGINS", "mine, other")
    assert _with_plugins(None) == {"env_vars": {"GENBENCH_PLUGINS": "mine,other"}}
    assert _with_plugins({"working_dir": ".", "env_vars": {"A": "1"}}) == {
        "working_dir": ".", "env_vars": {"GENBENCH_PLUGINS": "mine,other", "A": "1"}}
