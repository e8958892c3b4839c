"""Safe run directories and the checks around a training: an existing run is replaced only on request
and only whole, weights never run under another config's run key, run configs with duplicate keys or
non-finite numbers are refused, and a loss that explodes while still finite stops the run."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

import genlib.train as train_module
from genlib.checkpoint import CheckpointError, load_weights
from genlib.cli import main
from genlib.config import ConfigError
from genlib.train import LOSS_EXPLOSION_FACTOR, TrainingDivergedError, load_run, load_run_config, train

pytestmark = pytest.mark.usefixtures("single_thread")

TOY_DATA = {"name": "8gaussians", "n_train": 256, "n_test": 64}
VAE = {"family": "vae", "hidden": [16, 16], "latent_dim": 2, "likelihood": "gaussian"}
DDPM = {"family": "ddpm", "hidden": [16, 16], "time_dim": 8, "noise": {"T": 100}}


def config(tiny_train: dict, model: dict | None = None, **overrides):
    return load_run_config({"name": "run", "data": TOY_DATA, "model": model or VAE}, {**tiny_train, **overrides})


def write_config(path, tiny_train: dict, **overrides) -> str:
    data = {"name": "run", "data": TOY_DATA, "model": VAE}
    for key, value in {**tiny_train, **overrides}.items():
        section, name = key.split(".")
        data.setdefault(section, {})[name] = value
    path.write_text(yaml.safe_dump(data))
    return str(path)


def snapshot(run_dir) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir())}


def siblings(tmp_path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir())


@pytest.fixture
def old_run(tiny_train, tmp_path):
    """A finished run in tmp_path/run (seed 0) and its run key."""
    cfg = config(tiny_train)
    train(cfg, tmp_path / "run", progress=False)
    return tmp_path / "run", cfg.run_key


def refuse_training(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("trained although the run directory was refused")
    monkeypatch.setattr(train_module, "_train", fail)


# ---------------------------------------------------------------- overwrite

def test_an_existing_run_is_refused_before_training(old_run, tiny_train, monkeypatch):
    run_dir, old_key = old_run
    before = snapshot(run_dir)
    refuse_training(monkeypatch)
    with pytest.raises(CheckpointError, match=rf"^run directory '{run_dir}' already holds a run; pass --overwrite "
                                              r"to replace it$"):
        train(config(tiny_train, seed=1), run_dir, progress=False)
    assert snapshot(run_dir) == before


def test_overwrite_replaces_the_run_whole(old_run, tiny_train, tmp_path):
    run_dir, old_key = old_run  # (a file genbench did not write is refused: see the test of the user's own files)
    new_cfg = config(tiny_train, seed=1)
    result = train(new_cfg, run_dir, progress=False, overwrite=True)
    assert result.run_dir == run_dir and new_cfg.run_key != old_key
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml", "history.csv", "meta.json", "model.pt"]
    assert load_weights(run_dir / "model.pt")["run_key"] == new_cfg.run_key
    assert load_run(run_dir, device="cpu").config == new_cfg
    assert siblings(tmp_path) == ["run"]  # no temporary or trash directory is left


def test_cli_refuses_an_existing_run_and_overwrites_on_request(old_run, tiny_train, tmp_path, capsys):
    run_dir, old_key = old_run
    cfg_path = write_config(tmp_path / "new.yaml", tiny_train, **{"train.lr": 0.002})
    assert main(["train", cfg_path, "--out", str(run_dir), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"genbench train: error: run directory '{run_dir}' already holds a run; pass --overwrite to "
                   f"replace it"]
    assert load_weights(run_dir / "model.pt")["run_key"] == old_key
    assert main(["train", cfg_path, "--out", str(run_dir), "--quiet", "--overwrite"]) == 0
    new_key = load_run_config(cfg_path).run_key
    assert new_key != old_key and load_weights(run_dir / "model.pt")["run_key"] == new_key


def test_a_file_or_a_foreign_directory_is_never_replaced(tiny_train, tmp_path, monkeypatch):
    refuse_training(monkeypatch)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    with pytest.raises(CheckpointError, match=rf"^run directory '{a_file}' is an existing file; choose another --out$"):
        train(config(tiny_train), a_file, progress=False, overwrite=True)
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(CheckpointError, match=rf"^'{folder}' is a non-empty directory that is not a genbench run"):
        train(config(tiny_train), folder, progress=False, overwrite=True)
    assert a_file.read_text() == "keep me" and (folder / "cat.jpg").read_bytes() == b"meow"


def test_an_empty_directory_is_a_valid_target(tiny_train, tmp_path):
    (tmp_path / "run").mkdir()
    result = train(config(tiny_train), tmp_path / "run", progress=False)
    assert (result.run_dir / "model.pt").is_file() and siblings(tmp_path) == ["run"]


def test_an_unwritable_parent_is_named_before_training(tiny_train, tmp_path, monkeypatch):
    refuse_training(monkeypatch)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(CheckpointError, match=rf"^cannot write run directory '{blocker / 'run'}': "):
        train(config(tiny_train), blocker / "run", progress=False)


# ---------------------------------------------------------------- crashes never mix two runs

def test_a_crash_while_writing_leaves_the_old_run_intact(old_run, tiny_train, tmp_path, monkeypatch):
    run_dir, old_key = old_run
    before = snapshot(run_dir)
    real_write = train_module.atomic_write_text
    written = []

    def crash_after_config(path, text):
        if written:  # config.yaml went through; the disk "fails" on the next file
            raise OSError(28, "No space left on device")
        written.append(real_write(path, text))
        return written[-1]

    monkeypatch.setattr(train_module, "atomic_write_text", crash_after_config)
    new_cfg = config(tiny_train, **{"train.lr": 0.002})
    with pytest.raises(OSError, match="No space left"):
        train(new_cfg, run_dir, progress=False, overwrite=True)
    assert written and written[0].name == "config.yaml" and written[0].parent != run_dir
    assert snapshot(run_dir) == before  # not one file of the new run reached the old directory
    loaded = load_run(run_dir, device="cpu")
    assert loaded.config.run_key == old_key == load_weights(run_dir / "model.pt")["run_key"] != new_cfg.run_key
    assert siblings(tmp_path) == ["run"]


def test_a_killed_run_leaves_only_a_sibling_that_the_next_run_cleans(old_run, tiny_train, tmp_path):
    run_dir, old_key = old_run
    pid = dead_pid()
    stale = tmp_path / f"run.tmp-{pid}-0123abcd"
    stale.mkdir()
    (stale / "config.yaml").write_text("half of a killed run")
    trash = tmp_path / f"run.trash-{pid}-0123abcd"
    trash.mkdir()
    live = tmp_path / f"run.tmp-{os.getppid()}-4567cdef"  # a live process may still be writing this one
    live.mkdir()
    assert load_run(run_dir, device="cpu").config.run_key == old_key  # the old run is untouched by the kill
    train(config(tiny_train, seed=3), run_dir, progress=False, overwrite=True)
    assert siblings(tmp_path) == ["run", live.name]


def dead_pid() -> int:
    """The pid of a process that has exited: leftovers named after it are stale."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)


def test_a_failure_between_the_two_renames_puts_the_old_run_back(old_run, tiny_train, tmp_path, monkeypatch):
    import genlib.checkpoint as checkpoint

    run_dir, old_key = old_run
    before = snapshot(run_dir)
    real_replace = checkpoint.os.replace

    def fail_on_publish(src, dst):
        if str(dst) == str(run_dir) and ".tmp-" in str(src):
            raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", fail_on_publish)
    with pytest.raises(OSError, match="Input/output error"):
        train(config(tiny_train, seed=2), run_dir, progress=False, overwrite=True)
    assert snapshot(run_dir) == before and siblings(tmp_path) == ["run"]
    assert load_run(run_dir, device="cpu").config.run_key == old_key


def test_a_run_killed_between_the_two_renames_is_restored_by_the_next_run(old_run, tiny_train, tmp_path):
    run_dir, old_key = old_run
    before = snapshot(run_dir)
    pid = dead_pid()
    run_dir.rename(tmp_path / f"run.trash-{pid}-89abcdef")  # the old run, renamed away
    (tmp_path / f"run.tmp-{pid}-01234567").mkdir()  # the new run, not yet renamed into place
    with pytest.raises(CheckpointError, match="already holds a run"):
        train(config(tiny_train, seed=2), run_dir, progress=False)
    assert snapshot(run_dir) == before and siblings(tmp_path) == ["run"]
    assert load_run(run_dir, device="cpu").config.run_key == old_key


# ---------------------------------------------------------------- run keys

@pytest.mark.parametrize("model, key, value", [(DDPM, "model.noise.T", 1000), (VAE, "loss.beta", 4.0),
                                               (VAE, "train.steps", 40)])
def test_weights_under_an_edited_config_are_refused_naming_both_keys(model, key, value, tiny_train, tmp_path):
    cfg = config(tiny_train, model)
    train(cfg, tmp_path / "run", progress=False)
    cfg_path = tmp_path / "run" / "config.yaml"
    data = yaml.safe_load(cfg_path.read_text())
    section, *rest = key.split(".")
    node = data[section]
    for part in rest[:-1]:
        node = node[part]
    node[rest[-1]] = value  # the weight shapes still fit: only the run key tells the runs apart
    cfg_path.write_text(yaml.safe_dump(data))
    edited_key = load_run_config(cfg_path).run_key
    assert edited_key != cfg.run_key
    with pytest.raises(CheckpointError, match=rf"^'{tmp_path / 'run' / 'model.pt'}' was trained as run key "
                                              rf"{cfg.run_key} but '{cfg_path}' resolves to run key {edited_key} "):
        load_run(tmp_path / "run", device="cpu")


def test_sample_refuses_an_edited_config_in_one_line(old_run, tmp_path, capsys):
    run_dir, old_key = old_run
    cfg_path = run_dir / "config.yaml"
    cfg_path.write_text(cfg_path.read_text().replace("seed: 0", "seed: 7"))
    assert main(["sample", "--run", str(run_dir), "--n", "4", "--out", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"run key {old_key} but '{cfg_path}' resolves to run key" in err[0]
    assert not (tmp_path / "x.npz").exists()


# ---------------------------------------------------------------- run configs

def test_a_duplicate_key_in_a_run_config_is_refused_naming_key_and_line(tiny_train, tmp_path, capsys):
    path = tmp_path / "dup.yaml"
    path.write_text("name: run\ndata: {name: 8gaussians}\nmodel:\n  family: vae\n  latent_dim: 2\n"
                    "  latent_dim: 8\n")
    with pytest.raises(ConfigError, match=rf"^config file '{path}': duplicate key 'latent_dim' at line 6 "
                                          r"\(first at line 5\)"):
        load_run_config(path)
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 2
    assert "duplicate key 'latent_dim' at line 6" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match=r"override 'model.hidden=\{a: 1, a: 2\}': duplicate key 'a'"):
        load_run_config({"model": VAE}, ["model.hidden={a: 1, a: 2}"])


def test_yaml_merge_keys_may_still_be_overridden(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("defaults: &d {family: vae, latent_dim: 2, hidden: [8]}\n"
                    "name: run\ndata: {name: 8gaussians}\nmodel:\n  <<: *d\n  latent_dim: 3\n")
    data = yaml.safe_load(path.read_text())
    data.pop("defaults")
    assert load_run_config(data).model.latent_dim == 3


@pytest.mark.parametrize("override, key", [("train.lr=inf", "lr"), ("train.lr=.nan", "lr"), ("train.lr=-.inf", "lr"),
                                           ("train.grad_clip=inf", "grad_clip"), ("train.grad_clip=nan", "grad_clip")])
def test_non_finite_hyper_parameters_are_refused(override, key):
    with pytest.raises(ConfigError, match=rf"^'train': {key} must be a finite number"):
        load_run_config({"model": VAE}, [override])


# ---------------------------------------------------------------- exploding loss

def _scale_loss_from(monkeypatch, step_from: int, factor: float) -> None:
    from genlib.models.vae import VAE as VAEModel

    original = VAEModel.training_loss

    def scaled(self, x, step, total_steps, loss_cfg, generator):
        loss, logs = original(self, x, step, total_steps, loss_cfg, generator)
        if step >= step_from:
            loss, logs = loss * factor, {**logs, "loss": logs["loss"] * factor}
        return loss, logs

    monkeypatch.setattr(VAEModel, "training_loss", scaled)


def test_a_finite_loss_past_the_bound_stops_the_run(tiny_train, tmp_path, monkeypatch):
    _scale_loss_from(monkeypatch, 7, 1000 * LOSS_EXPLOSION_FACTOR)
    with pytest.raises(TrainingDivergedError, match=r"^loss became \S+ at step 7 of run 'run' \(vae\), past the "
                                                    r"divergence bound \S+ \(1e\+06 x the first step's loss\); "
                                                    r"last logged values: \{'step': 5, "):
        train(config(tiny_train), tmp_path / "run", progress=False)
    assert siblings(tmp_path) == []  # a diverged run leaves nothing behind


def test_a_loss_below_the_bound_is_not_stopped(tiny_train, monkeypatch):
    _scale_loss_from(monkeypatch, 7, LOSS_EXPLOSION_FACTOR / 100)
    result = train(config(tiny_train), progress=False)
    assert result.history[-1]["step"] == 20
    assert abs(result.history[-1]["loss"]) > 100 * abs(result.history[0]["loss"])  # far up, yet within the bound


@pytest.mark.parametrize("model", [DDPM, {"family": "ae", "hidden": [16, 16], "latent_dim": 2}])
def test_a_diverging_learning_rate_is_stopped_while_the_loss_is_finite(model, tiny_train):
    with pytest.raises(TrainingDivergedError, match=r"past the divergence bound"):
        train(config(tiny_train, model, **{"train.lr": 10.0}), progress=False)


# -- a full disk: one line naming the path, exit 2, nothing half-written ----------------------------------
def full_disk(monkeypatch):
    """Every data write through genlib.checkpoint.atomic_write fails as on a full file system (ENOSPC)."""
    import errno

    real = os.fsync

    def fsync(fd):
        if os.path.isfile(f"/proc/self/fd/{fd}") or not os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


def test_full_disk_during_train_is_one_line_and_keeps_the_old_run(old_run, tiny_train, tmp_path, monkeypatch,
                                                                   capsys):
    run_dir, key = old_run
    before = snapshot(run_dir)
    cfg_path = write_config(tmp_path / "c.yaml", tiny_train)
    full_disk(monkeypatch)
    code = main(["train", cfg_path, "--out", str(run_dir), "--overwrite", "--quiet", "--set", "seed=1"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "the disk is full" in err and "finished but was not saved" in err
    assert str(run_dir) in err and "run key" in err
    assert snapshot(run_dir) == before  # the previous run is untouched
    assert siblings(tmp_path) == ["c.yaml", "run"]  # no temporary directory or file left
    code = main(["train", cfg_path, "--out", str(tmp_path / "new"), "--quiet"])
    assert code == 2 and "disk is full" in capsys.readouterr().err and not (tmp_path / "new").exists()


def test_full_disk_during_sample_is_one_line_and_leaves_nothing(old_run, tmp_path, monkeypatch, capsys):
    run_dir, _ = old_run
    full_disk(monkeypatch)
    out = tmp_path / "x.npz"
    assert main(["sample", "--run", str(run_dir), "--n", "8", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"cannot write '{out}': the disk is full" in err
    assert siblings(tmp_path) == ["run"]


def test_a_killed_writer_leaves_a_temp_file_that_the_next_write_removes(tmp_path):
    from genlib.checkpoint import atomic_write_text

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".model.onnx.{int(dead.stdout)}-abcd1234.tmp"
    stale.write_bytes(b"half")
    alive = tmp_path / f".model.onnx.{os.getpid()}-0000ffff.tmp"  # a writer still running keeps its file
    alive.write_bytes(b"busy")
    atomic_write_text(tmp_path / "model.onnx", "done")
    assert siblings(tmp_path) == [alive.name, "model.onnx"]


def test_overwrite_refuses_a_run_directory_holding_the_users_own_files(old_run, tiny_train, tmp_path, capsys):
    run_dir, _ = old_run
    (run_dir / "notes.txt").write_text("my notes")
    (run_dir / "samples").mkdir()
    before = snapshot(run_dir / "samples") | {"notes.txt": b"my notes"}
    cfg_path = write_config(tmp_path / "c.yaml", tiny_train)
    assert main(["train", cfg_path, "--out", str(run_dir), "--quiet", "--overwrite", "--set", "seed=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"genbench train: error: run directory '{run_dir}' also holds 'notes.txt', which genbench did "
                   "not write (2 such entries); --overwrite replaces a whole run directory, so move them out first "
                   "or choose another --out"]
    assert (run_dir / "notes.txt").read_bytes() == b"my notes" and (run_dir / "samples").is_dir() and before
    (run_dir / "notes.txt").unlink()
    (run_dir / "samples").rmdir()
    assert main(["train", cfg_path, "--out", str(run_dir), "--quiet", "--overwrite", "--set", "seed=1"]) == 0


def test_a_refused_train_creates_no_store(old_run, tiny_train, tmp_path, capsys):
    run_dir, _ = old_run
    store = tmp_path / "new.db"
    cfg_path = write_config(tmp_path / "c.yaml", tiny_train)
    assert main(["train", cfg_path, "--out", str(run_dir), "--quiet", "--store", str(store)]) == 2
    assert "already holds a run" in capsys.readouterr().err and not store.exists()


@pytest.mark.slow  # an ONNX export: several seconds
def test_full_disk_during_export_is_one_line_and_leaves_nothing(tmp_path, tiny_train, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    run_dir = tmp_path / "run"
    train(config(tiny_train), run_dir, progress=False)
    out = tmp_path / "onnx" / "decoder.onnx"
    out.parent.mkdir()
    full_disk(monkeypatch)
    assert main(["export", "--run", str(run_dir), "--part", "decoder", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "the disk is full" in err and str(out.parent) in err, err
    assert sorted(p.name for p in out.parent.iterdir()) == []
