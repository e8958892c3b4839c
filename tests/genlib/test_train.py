"""Tests for genlib.train: reproducibility under a seed, divergence detection, run directories that
reload from disk alone (with refusal of corrupt or mismatched ones), and EMA weights."""
from __future__ import annotations

import csv
import shutil

import pytest
import torch
import yaml

from genlib.checkpoint import CheckpointError, load_weights
from genlib.config import to_dict
from genlib.data import DataConfig, load_dataset
from genlib.models import SampleConfig
from genlib.train import (RunConfig, TrainingDivergedError, generate, load_run, load_run_config,
                          train)

pytestmark = pytest.mark.usefixtures("single_thread")

TOY_DATA = {"name": "8gaussians", "n_train": 512, "n_test": 128}
MODELS = {
    "ae": ({"name": "digits"}, {"family": "ae", "hidden": [32, 16], "latent_dim": 4}),
    "vae": ({"name": "digits"}, {"family": "vae", "hidden": [32, 16], "latent_dim": 4}),
    "vae_full_toy": (TOY_DATA, {"family": "vae", "hidden": [32, 16], "latent_dim": 2, "likelihood": "gaussian",
                                "covariance": "full"}),
    "ddpm": (TOY_DATA, {"family": "ddpm", "hidden": [32, 32], "time_dim": 16, "noise": {"T": 20}}),
    "denoiser_chain": (TOY_DATA, {"family": "denoiser_chain", "hidden": [32, 32], "time_dim": 16,
                                  "noise": {"T": 20}}),
}


def config(which: str, tiny_train: dict, **overrides) -> RunConfig:
    data, model = MODELS[which]
    return load_run_config({"name": which, "data": data, "model": model}, {**tiny_train, **overrides})


def run(cfg: RunConfig, out_dir=None):
    return train(cfg, out_dir, progress=False)


# ---------------------------------------------------------------- reproducibility

@pytest.mark.parametrize("which", list(MODELS))
def test_same_seed_gives_identical_history_and_samples(which, tiny_train):
    a, b = run(config(which, tiny_train)), run(config(which, tiny_train))
    assert a.history == b.history
    assert [row["step"] for row in a.history] == [5, 10, 15, 20]
    for (name, p), q in zip(a.model.net.state_dict().items(), b.model.net.state_dict().values()):
        assert torch.equal(p, q), name
    assert torch.equal(generate(a.model, 16, seed=3), generate(b.model, 16, seed=3))
    assert not torch.equal(generate(a.model, 16, seed=3), generate(a.model, 16, seed=4)) or which == "denoiser_chain"


@pytest.mark.parametrize("which", ["vae", "ddpm"])
def test_different_seed_differs(which, tiny_train):
    a, b = run(config(which, tiny_train, seed=0)), run(config(which, tiny_train, seed=1))
    assert a.history != b.history
    assert not torch.equal(generate(a.model, 16, seed=3), generate(b.model, 16, seed=3))


def test_history_and_meta(tiny_train):
    res = run(config("vae", tiny_train))
    assert {"step", "loss", "recon_nll", "kl", "beta_t", "neg_elbo"} <= set(res.history[0])
    assert all(torch.isfinite(torch.tensor(v)) for row in res.history for v in row.values())
    meta = res.meta
    assert meta["run_key"] == res.config.run_key and meta["seed"] == 0 and meta["family"] == "vae"
    assert meta["final"] == res.history[-1] and meta["sample_shape"] == [1, 8, 8] and meta["kind"] == "image"
    assert meta["n_params"] == sum(p.numel() for p in res.model.net.parameters())
    assert {"device", "git_commit", "versions", "torch_threads"} <= set(meta)
    assert res.run_dir is None


def test_kl_schedule_reaches_the_logged_beta(tiny_train):
    res = run(config("vae", tiny_train, **{"loss.kl_schedule.kind": "recon_first",
                                           "loss.kl_schedule.warmup_steps": 10, "loss.beta": 2.0}))
    betas = [row["beta_t"] for row in res.history]  # windows of 5 steps: 0-4, 5-9, 10-14, 15-19
    assert betas == [0.0, 0.0, 2.0, 2.0]


# ---------------------------------------------------------------- divergence

def test_absurd_learning_rate_raises_naming_the_step(tiny_train):
    cfg = config("vae", tiny_train, **{"train.lr": 1e6, "train.grad_clip": None})
    with pytest.raises(TrainingDivergedError, match=r"loss became (nan|inf|-inf) at step \d+ of run 'vae' \(vae\).*"
                                                    r"Try a lower train.lr"):
        run(cfg)


def test_injected_nan_is_caught_at_its_step(tiny_train, monkeypatch, tmp_path):
    from genlib.models.ddpm import DDPM

    original = DDPM.training_loss

    def poisoned(self, x, step, total_steps, loss_cfg, generator):
        loss, logs = original(self, x, step, total_steps, loss_cfg, generator)
        return (loss * float("nan"), logs) if step == 7 else (loss, logs)

    monkeypatch.setattr(DDPM, "training_loss", poisoned)
    with pytest.raises(TrainingDivergedError, match=r"loss became nan at step 7 of run 'ddpm' \(ddpm\); "
                                                    r"last logged values: \{'step': 5, 'loss': "):
        run(config("ddpm", tiny_train), tmp_path / "run")
    assert not (tmp_path / "run" / "model.pt").exists()  # a diverged run leaves no finished checkpoint


# ---------------------------------------------------------------- run directories

@pytest.mark.parametrize("which", list(MODELS))
def test_run_directory_reloads_from_disk_alone(which, tiny_train, tmp_path):
    res = run(config(which, tiny_train), tmp_path / "run")
    assert res.run_dir == tmp_path / "run"
    files = sorted(p.name for p in res.run_dir.iterdir())
    assert files == ["config.yaml", "history.csv", "meta.json", "model.pt"]  # no leftover temporaries
    moved = shutil.move(str(res.run_dir), str(tmp_path / "elsewhere"))  # nothing points back at the old path
    loaded = load_run(moved, device="cpu")
    assert loaded.config == res.config and loaded.meta["run_key"] == res.config.run_key
    assert not loaded.model.net.training
    for cfg in sample_configs(which):
        assert torch.equal(generate(loaded.model, 12, cfg, seed=5), generate(res.model, 12, cfg, seed=5)), cfg
    with open(f"{moved}/history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [row["step"] for row in res.history]
    assert float(rows[-1]["loss"]) == pytest.approx(res.history[-1]["loss"])
    ckpt = load_weights(f"{moved}/model.pt")
    assert ckpt["run_key"] == res.config.run_key and ckpt["family"] == res.config.model.family


class Exploit:
    """Unpickling this writes a marker file: what a hostile model.pt could do without weights_only."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (type(self.marker).write_text, (self.marker, "pwned"))


def sample_configs(which: str) -> list[SampleConfig]:
    if which == "ae":
        return [SampleConfig(), SampleConfig(prior="fitted")]
    if which == "ddpm":
        return [SampleConfig(), SampleConfig(sampler="ddim", steps=5)]
    return [SampleConfig()]


def test_ae_fitted_prior_is_saved_with_the_weights(tiny_train, tmp_path):
    res = run(config("ae", tiny_train), tmp_path / "run")
    assert res.model.net.code_mean.abs().sum() > 0  # fitted to the training codes, not the initial zeros
    loaded = load_run(tmp_path / "run", device="cpu")
    assert torch.equal(loaded.model.net.code_chol, res.model.net.code_chol)


def test_model_pt_is_written_by_atomic_rename(tiny_train, tmp_path, monkeypatch):
    import genlib.checkpoint as checkpoint

    renames = []
    original = checkpoint.os.replace

    def spy(src, dst):
        renames.append((str(src), str(dst)))
        return original(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", spy)
    run(config("vae", tiny_train), tmp_path / "run")
    targets = [dst for _, dst in renames]
    assert targets[-1] == str(tmp_path / "run" / "model.pt")  # written last, marking a finished run
    assert all(src.endswith(".tmp") and src != dst for src, dst in renames)
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


@pytest.fixture
def trained_dir(tiny_train, tmp_path):
    run(config("vae", tiny_train), tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.parametrize("corruption", ["truncated", "random_bytes", "malicious_pickle"])
def test_corrupt_checkpoint_is_refused_naming_the_file(trained_dir, corruption):
    path = trained_dir / "model.pt"
    marker = trained_dir / "marker"
    if corruption == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    elif corruption == "random_bytes":
        path.write_bytes(bytes(range(256)) * 16)
    else:
        torch.save({"format": "genbench-checkpoint", "version": 1, "x": Exploit(marker)}, path)
    with pytest.raises(CheckpointError, match=rf"checkpoint '{path}' is corrupt"):
        load_run(trained_dir, device="cpu")
    assert not marker.exists()


def test_config_and_weights_that_do_not_match_are_refused(trained_dir):
    cfg_path = trained_dir / "config.yaml"
    original = cfg_path.read_text()
    data = yaml.safe_load(original)
    data["model"]["hidden"] = [64, 16]
    cfg_path.write_text(yaml.safe_dump(data))
    with pytest.raises(CheckpointError, match=rf"'{trained_dir / 'model.pt'}' does not match the network of "
                                              rf"'{cfg_path}'(?s:.*)size mismatch"):
        load_run(trained_dir, device="cpu")
    data["model"] = {"family": "ae", "hidden": [32, 16], "latent_dim": 4}
    data.pop("loss")
    cfg_path.write_text(yaml.safe_dump(data))
    with pytest.raises(CheckpointError, match=rf"'{trained_dir / 'model.pt'}' holds a 'vae' model but "
                                              rf"'{cfg_path}' describes 'ae'"):
        load_run(trained_dir, device="cpu")
    cfg_path.write_text(original.replace("latent_dim", "latnt_dim"))
    with pytest.raises(CheckpointError, match=rf"'{cfg_path}': unknown key 'model.latnt_dim'; "
                                              r"did you mean 'model.latent_dim'\?"):
        load_run(trained_dir, device="cpu")


def test_missing_pieces_of_a_run_directory_are_named(trained_dir, tmp_path):
    with pytest.raises(CheckpointError, match=r"run directory '.*nowhere' does not exist"):
        load_run(tmp_path / "nowhere")
    (trained_dir / "model.pt").unlink()
    with pytest.raises(CheckpointError, match=r"checkpoint '.*model.pt' does not exist \(is the run finished\?"):
        load_run(trained_dir, device="cpu")
    (trained_dir / "config.yaml").unlink()
    with pytest.raises(CheckpointError, match=r"config file '.*config.yaml' does not exist"):
        load_run(trained_dir, device="cpu")


# ---------------------------------------------------------------- EMA

def test_saved_weights_are_the_ema_of_the_raw_weights(tiny_train, tmp_path, monkeypatch):
    """Replay: record the raw parameters after every optimiser step, average them by hand with the EMA
    recursion, and compare with what the run saved. EMA does not change the raw trajectory."""
    decay = 0.8
    snapshots: list[list[torch.Tensor]] = []
    original_step = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        if not snapshots:
            snapshots.append([p.detach().clone() for g in self.param_groups for p in g["params"]])  # init
        out = original_step(self, *args, **kwargs)
        snapshots.append([p.detach().clone() for g in self.param_groups for p in g["params"]])
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    ema_run = run(config("ddpm", tiny_train, **{"train.ema_decay": decay}), tmp_path / "ema")
    raw_final = snapshots[-1]
    expected = [p.clone() for p in snapshots[0]]
    for snap in snapshots[1:]:
        expected = [e + (1 - decay) * (s - e) for e, s in zip(expected, snap)]
    assert len(snapshots) == 1 + 20
    saved = load_weights(tmp_path / "ema" / "model.pt")["state_dict"]
    names = [n for n, _ in ema_run.model.net.named_parameters()]
    for name, exp, raw in zip(names, expected, raw_final):
        torch.testing.assert_close(saved[name], exp, rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(saved[n], r) for n, r in zip(names, raw_final))

    snapshots.clear()
    plain = run(config("ddpm", tiny_train))  # same seed without EMA: the saved weights are the raw ones
    assert plain.history == ema_run.history
    for (name, p), raw in zip(plain.model.net.named_parameters(), raw_final):
        assert torch.equal(p, raw), name


def test_train_accepts_a_preloaded_dataset(tiny_train):
    cfg = config("ddpm", tiny_train)
    ds = load_dataset(DataConfig(**TOY_DATA))
    a, b = train(cfg, progress=False, dataset=ds), run(cfg)
    assert a.history == b.history
    assert to_dict(a.config) == to_dict(cfg)
