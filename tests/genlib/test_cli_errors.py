"""Expected failures of the core commands: one line naming the path or value, exit status 2, no traceback,
and before the work starts where the failure can be checked first (outputs, stores, devices, sampler
settings, hyper-parameters). Plus the files a run writes honour the umask."""
from __future__ import annotations

import importlib
import os
import sqlite3

import pytest
import torch

import genlib.train
from genlib.cli import main
from genlib.store import ResultsStore, StoreError

TINY = ["--set", "train.steps=30", "--set", "train.log_every=10", "--set", "train.device=cpu", "--quiet"]
# the tiny trained VAE run `vae_run` is a fixture of tests/genlib/conftest.py


@pytest.fixture(scope="module")
def ddpm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ddpm"
    assert main(["train", "ddpm_8gaussians", "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if a command starts training: the check under test must come first."""
    def forbidden(*args, **kwargs):
        raise AssertionError("training started before the check")

    monkeypatch.setattr(genlib.train, "train", forbidden)


@pytest.fixture
def no_evaluation(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("metrics were computed before the check")

    module = importlib.import_module("genlib.metrics.evaluate")  # the module: the package attribute is the function
    monkeypatch.setattr(module, "evaluate", forbidden)
    monkeypatch.setattr(module, "evaluate_floor", forbidden)


def one_line_error(capsys, needle: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], err
    return lines[0]


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("not a directory\n")
    return path


# -- output paths ----------------------------------------------------------------------------------
def test_train_out_under_a_file_fails_before_training(a_file, capsys, no_training):
    assert main(["train", "vae_digits", "--out", str(a_file / "run"), *TINY]) == 2
    one_line_error(capsys, f"'{a_file}' is a file, not a directory")


def test_train_out_naming_an_existing_file_fails_before_training(a_file, capsys, no_training):
    assert main(["train", "vae_digits", "--out", str(a_file), *TINY]) == 2
    one_line_error(capsys, f"--out '{a_file}' is an existing file; expected a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_train_out_in_a_read_only_folder_fails_before_training(tmp_path, capsys, no_training):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    assert main(["train", "vae_digits", "--out", str(folder / "run"), *TINY]) == 2
    one_line_error(capsys, "is not writable")


def test_sample_out_naming_a_directory(vae_run, tmp_path, capsys):
    out = tmp_path / "grid.png"
    out.mkdir()
    assert main(["sample", "--run", str(vae_run), "--n", "4", "--out", str(out)]) == 2
    one_line_error(capsys, f"--out '{out}' is an existing directory; expected a file name")


def test_export_out_under_a_file_fails_before_exporting(vae_run, a_file, capsys, monkeypatch):
    import bench.export

    monkeypatch.setattr(bench.export, "export_part", lambda *a, **k: pytest.fail("exported before the check"))
    assert main(["export", "--run", str(vae_run), "--part", "decoder", "--out", str(a_file / "d.onnx")]) == 2
    one_line_error(capsys, "is a file, not a directory")


def test_report_out_naming_an_existing_file(tmp_path, a_file, capsys):
    db = tmp_path / "r.db"
    ResultsStore(db).close()
    assert main(["report", "--store", str(db), "--out", str(a_file)]) == 2
    one_line_error(capsys, f"--out '{a_file}' is an existing file; expected a directory")


# -- stores ----------------------------------------------------------------------------------------
def _foreign_sqlite(path):
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE contacts (name TEXT)")
    return path


def test_train_store_that_is_not_a_results_store_fails_before_training(tmp_path, capsys, no_training):
    db = _foreign_sqlite(tmp_path / "other.db")
    assert main(["train", "vae_digits", "--out", str(tmp_path / "run"), "--store", str(db), *TINY]) == 2
    one_line_error(capsys, "not a genbench results store")
    assert not (tmp_path / "run").exists()


def test_train_store_naming_a_directory_fails_before_training(tmp_path, capsys, no_training):
    assert main(["train", "vae_digits", "--out", str(tmp_path / "run"), "--store", str(tmp_path), *TINY]) == 2
    one_line_error(capsys, f"--store '{tmp_path}' is an existing directory")


def test_eval_bad_store_fails_before_computing(vae_run, tmp_path, capsys, no_evaluation):
    db = _foreign_sqlite(tmp_path / "other.db")
    assert main(["eval", "--run", str(vae_run), "--metrics", "mse", "--n", "50", "--store", str(db)]) == 2
    one_line_error(capsys, "not a genbench results store")


def test_eval_prints_what_it_computed_when_the_store_write_fails(vae_run, tmp_path, capsys, monkeypatch):
    def refuse(self, record, metrics=()):
        raise StoreError(f"results store '{self.path}': database or disk is full")

    monkeypatch.setattr(ResultsStore, "commit_run", refuse)
    db = tmp_path / "r.db"
    assert main(["eval", "--run", str(vae_run), "--metrics", "mse", "--n", "50", "--store", str(db)]) == 2
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].split()[:2] == ["metric", "value"]
    assert any(line.startswith("mse ") for line in captured.out.splitlines())
    assert "database or disk is full" in captured.err and "Traceback" not in captured.err


# -- devices, sampler settings, hyper-parameters ----------------------------------------------------
def test_sample_on_an_unknown_device(vae_run, tmp_path, capsys):
    assert main(["sample", "--run", str(vae_run), "--out", str(tmp_path / "a.png"), "--device", "tpu"]) == 2
    one_line_error(capsys, "--device 'tpu' is not available here (not a torch device type)")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_train_on_cuda_without_cuda_fails_before_training(tmp_path, capsys, no_training):
    assert main(["train", "vae_digits", "--out", str(tmp_path / "run"), *TINY, "--set", "train.device=cuda"]) == 2
    one_line_error(capsys, "train.device 'cuda' is not available here")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_eval_on_cuda_without_cuda(vae_run, capsys, no_evaluation):
    assert main(["eval", "--run", str(vae_run), "--device", "cuda"]) == 2
    one_line_error(capsys, "--device 'cuda' is not available here")


def test_eval_sampler_steps_beyond_T_fail_before_computing(ddpm_run, capsys, no_evaluation):
    assert main(["eval", "--run", str(ddpm_run), "--metrics", "swd", "--set", "sample.steps=500"]) == 2
    line = one_line_error(capsys, "T=100")
    assert "500" in line and "sample" in line


def test_eval_sampler_of_another_family_fails_before_computing(vae_run, capsys, no_evaluation):
    assert main(["eval", "--run", str(vae_run), "--set", "sample.sampler=ddim"]) == 2
    one_line_error(capsys, "does not apply to model family 'vae'")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_learning_rate_is_refused(tmp_path, capsys, value, no_training):
    assert main(["train", "vae_digits", "--out", str(tmp_path / "run"), *TINY, "--set", f"train.lr={value}"]) == 2
    one_line_error(capsys, "lr must be a finite number")


# -- file modes ------------------------------------------------------------------------------------
def test_run_files_honour_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        assert main(["train", "vae_digits", "--out", str(tmp_path / "run"), *TINY]) == 0
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert modes and set(modes.values()) == {0o640}, modes


# -- data paths ------------------------------------------------------------------------------------
def test_a_relative_data_path_is_stored_absolute(tmp_path, monkeypatch):
    import numpy as np
    import yaml

    from genlib.train import load_run

    monkeypatch.chdir(tmp_path)
    np.savez("points.npz", x=np.random.default_rng(0).normal(size=(400, 2)).astype(np.float32))
    assert main(["train", "ddpm_8gaussians", "--out", "run", *TINY, "--set", "data.name=npz:points.npz"]) == 0
    stored = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]["name"]
    assert stored == f"npz:{tmp_path / 'points.npz'}"
    monkeypatch.chdir(tmp_path.parent)  # the run reloads, and keeps its run key, from anywhere
    assert load_run(tmp_path / "run").config.data.name == stored
