"""The core `genbench` subcommands end to end: train -> sample round trip, listings, named errors, --help."""
from __future__ import annotations

import numpy as np
import pytest

from genlib.cli import main
from genlib.store import ResultsStore

TINY = ["--set", "train.steps=30", "--set", "train.log_every=10", "--set", "train.device=cpu", "--quiet"]
# the tiny trained VAE run `vae_run` is a fixture of tests/genlib/conftest.py


def test_train_writes_a_reloadable_run_and_records_it(tmp_path, capsys):
    out, db = tmp_path / "run", tmp_path / "results.db"
    assert main(["train", "ddpm_8gaussians", "--out", str(out), "--store", str(db), *TINY]) == 0
    assert {p.name for p in out.iterdir()} == {"config.yaml", "model.pt", "history.csv", "meta.json"}
    assert "run directory" in capsys.readouterr().out
    with ResultsStore(db) as store:
        runs = store.read_table("runs")
        metrics = store.read_table("metrics")
    assert list(runs["kind"]) == ["train"] and runs["status"].iloc[0] == "done"
    assert "loss" in set(metrics[metrics["split"] == "train"]["name"])


def test_sample_npz_round_trip_is_seeded(vae_run, tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    for path in (a, b):
        assert main(["sample", "--run", str(vae_run), "--n", "10", "--passes", "1", "--out", str(path)]) == 0
    xa, xb = np.load(a, allow_pickle=False)["x"], np.load(b, allow_pickle=False)["x"]
    assert xa.shape == (10, 1, 8, 8) and np.array_equal(xa, xb)
    assert 0.0 <= xa.min() and xa.max() <= 1.0


def test_sample_png_grid(vae_run, tmp_path):
    out = tmp_path / "grid.png"
    assert main(["sample", "--run", str(vae_run), "--n", "16", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv,needle", [
    (["train", "vae_digits", "--out", "{tmp}/x", "--set", "model.latnt_dim=3"], "did you mean 'model.latent_dim'"),
    (["train", "vae_digts", "--out", "{tmp}/x"], "did you mean 'vae_digits'"),
    (["train", "vae_digits", "--out", "{tmp}/x", "--set", "data.name=idx:{tmp}/missing"], "missing"),
    (["sample", "--run", "{tmp}/nope", "--out", "{tmp}/a.png"], "does not exist"),
    (["sample", "--run", "{run}", "--out", "{tmp}/a.png", "--sampler", "ddim"], "does not apply to model family 'vae'"),
    (["sample", "--run", "{run}", "--out", "{tmp}/a.jpg"], "must end in .npz or .png"),
])
def test_user_errors_are_one_line_with_exit_2(vae_run, tmp_path, capsys, argv, needle):
    argv = [a.format(tmp=tmp_path, run=vae_run) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_corrupt_checkpoint_is_named(vae_run, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.yaml").write_text((vae_run / "config.yaml").read_text())
    (bad / "model.pt").write_bytes((vae_run / "model.pt").read_bytes()[:200])
    assert main(["sample", "--run", str(bad), "--out", str(tmp_path / "a.png")]) == 2
    assert str(bad / "model.pt") in capsys.readouterr().err


def test_listings(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("ae", "vae", "denoiser_chain", "ddpm", "vae_digits"):
        assert name in out
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("digits", "8gaussians", "idx:PATH", "npz:PATH"):
        assert name in out


@pytest.mark.parametrize("command", ["train", "sample", "datasets", "models", "demo"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: genbench " + command in capsys.readouterr().out


def test_sample_start_from_data_beats_the_prior_on_an_unscaled_short_schedule(tmp_path, capsys):
    """`--start data` starts the chain from q(x_T | x0): with the exact denoiser of 8gaussians and the unscaled
    T = 100 schedule (alpha_bar_T ~ 0.36), DDIM samples from it are far closer to the data than from N(0, I)."""
    from genlib.data import load_dataset
    from genlib.metrics.toy import sliced_wasserstein

    run = tmp_path / "oracle"
    assert main(["train", "oracle_8gaussians", "--out", str(run), "--set", "model.noise.T=100",
                 "--set", "model.noise.scaled=false", "--quiet"]) == 0
    swd = {}
    held_out = load_dataset(load_run_config_data(run)).x_test
    for start in ("prior", "data"):
        out = tmp_path / f"{start}.npz"
        assert main(["sample", "--run", str(run), "--n", "2000", "--sampler", "ddim", "--start", start,
                     "--out", str(out)]) == 0
        swd[start] = float(sliced_wasserstein(np.load(out, allow_pickle=False)["x"], held_out, seed=0))
    assert swd["prior"] > 2 * swd["data"], swd
    with pytest.raises(SystemExit) as exc:
        main(["sample", "--run", str(run), "--n", "4", "--sampler", "ddim", "--start", "nowhere",
              "--out", str(tmp_path / "x.npz")])
    assert exc.value.code == 2 and "invalid choice: 'nowhere'" in capsys.readouterr().err


def load_run_config_data(run):
    from genlib.train import load_run_config
    return load_run_config(run / "config.yaml").data
