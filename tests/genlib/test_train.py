"""Tests for genlib.train: reproducibility under a seed, divergence detection, run directories that
reload from disk alone (with refusal of corrupt or mismatched ones), and EMA weights."""
from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from genlib.checkpoint import CheckpointError, load_weights
from genlib.config import to_dict
from genlib.data import DataConfig, load_dataset
from genlib.models import SampleConfig
from genlib.provenance import provenance
from genlib.train import (RunConfig, TrainingDivergedError, ema_decay_at, generate, load_run, load_run_config,
                          train, training_metrics)

pytestmark = pytest.mark.usefixtures("single_thread")

TOY_DATA = {"name": "8gaussians", "n_train": 512, "n_test": 128}
MODELS = {
    "ae": ({"name": "digits"}, {"family": "ae", "hidden": [32, 16], "latent_dim": 4}),
    "vae": ({"name": "digits"}, {"family": "vae", "hidden": [32, 16], "latent_dim": 4}),
    "vae_full_toy": (TOY_DATA, {"family": "vae", "hidden": [32, 16], "latent_dim": 2, "likelihood": "gaussian",
                                "covariance": "full"}),
    # T = 20 is below the 50 steps the 1000/T-scaled linear schedule needs: the unscaled one is used.
    "ddpm": (TOY_DATA, {"family": "ddpm", "hidden": [32, 32], "time_dim": 16, "noise": {"T": 20, "scaled": False}}),
    "denoiser_chain": (TOY_DATA, {"family": "denoiser_chain", "hidden": [32, 32], "time_dim": 16,
                                  "noise": {"T": 20, "scaled": False}}),
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
    assert meta["steps_run"] == res.config.train.steps == res.history[-1]["step"]
    assert {"device", "git_commit", "versions", "torch_threads", "machine"} <= set(meta)
    assert {k: meta[k] for k in ("git_commit", "versions", "machine")} == provenance()  # the one shape
    assert res.run_dir is None


def test_kl_schedule_reaches_the_logged_beta(tiny_train):
    res = run(config("vae", tiny_train, **{"loss.kl_schedule.kind": "recon_first",
                                           "loss.kl_schedule.warmup_steps": 10, "loss.beta": 2.0}))
    betas = [row["beta_t"] for row in res.history]  # windows of 5 steps: 0-4, 5-9, 10-14, 15-19
    assert betas == [0.0, 0.0, 2.0, 2.0]


# ---------------------------------------------------------------- divergence

def test_absurd_learning_rate_raises_naming_the_step(tiny_train):
    cfg = config("vae", tiny_train, **{"train.lr": 1e6, "train.grad_clip": None})
    with pytest.raises(TrainingDivergedError, match=r"loss became \S+ at step \d+ of run 'vae' \(vae\).*"
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
    *files, (built, final) = renames  # every file into the temporary sibling, then the directory into place
    assert final == str(tmp_path / "run") and built.startswith(str(tmp_path / "run.tmp-"))
    assert [Path(dst) for _, dst in files][-1] == Path(built) / "model.pt"  # written last
    assert all(src.endswith(".tmp") and Path(dst).parent == Path(built) for src, dst in files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no leftover temporaries
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
    """Replay: record the raw parameters after every optimiser step, average them by hand with the warmed-up
    EMA recursion, and compare with what the run saved. EMA does not change the raw trajectory."""
    decay = 0.8  # the warm-up (1 + n) / (10 + n) stays below it for n < 36: all 20 updates are warm-up
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
    for n, snap in enumerate(snapshots[1:]):
        d = min(decay, (1 + n) / (10 + n))
        expected = [e + (1 - d) * (s - e) for e, s in zip(expected, snap)]
    assert len(snapshots) == 1 + 20
    saved = load_weights(tmp_path / "ema" / "model.pt")["state_dict"]
    names = [n for n, _ in ema_run.model.net.named_parameters()]
    for name, exp, raw in zip(names, expected, raw_final):
        torch.testing.assert_close(saved[name], exp, rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(saved[n], r) for n, r in zip(names, raw_final))

    snapshots.clear()
    plain = run(config("ddpm", tiny_train))  # same seed without EMA: the saved weights are the raw ones
    assert plain.history == [{k: v for k, v in row.items() if k != "ema_init_weight"} for row in ema_run.history]
    for (name, p), raw in zip(plain.model.net.named_parameters(), raw_final):
        assert torch.equal(p, raw), name


def test_train_accepts_a_preloaded_dataset(tiny_train):
    cfg = config("ddpm", tiny_train)
    ds = load_dataset(DataConfig(**TOY_DATA))
    a, b = train(cfg, progress=False, dataset=ds), run(cfg)
    assert a.history == b.history
    assert to_dict(a.config) == to_dict(cfg)


QUICK_EMA = {"train.steps": 2000, "train.ema_decay": 0.999}  # ablations/grids/steps.yaml, quick profile


def test_ema_keeps_under_1_percent_of_the_initial_weights_after_a_quick_profile(tiny_train, monkeypatch):
    """The share of the initialisation left in the EMA after 2,000 updates at decay 0.999, three ways:
    the closed form of the warm-up product, the trainer's record, and a direct measurement."""
    steps, decay = QUICK_EMA["train.steps"], QUICK_EMA["train.ema_decay"]
    # (1 + n) / (10 + n) < 0.999 for n < 8990, so every update is warm-up and the product telescopes:
    # prod_{n < N} (1 + n) / (10 + n) = 9! / ((N + 1) ... (N + 9)).
    closed_form = math.factorial(9) / math.prod(range(steps + 1, steps + 10))
    assert closed_form < 1e-20 and decay**steps == pytest.approx(0.135, abs=1e-3)  # 13.5% without warm-up

    # Direct: after each optimiser step every raw weight is set to 0, so the EMA is w_0 * theta_0 exactly
    # and the share of the initial weights left is EMA / theta_0, elementwise.
    initial: list[torch.Tensor] = []

    def zeroing_step(self, *args, **kwargs):
        params = [p for g in self.param_groups for p in g["params"]]
        if not initial:
            initial.extend(p.detach().clone() for p in params)
        with torch.no_grad():
            for p in params:
                p.zero_()

    monkeypatch.setattr(torch.optim.Adam, "step", zeroing_step)
    res = run(config("ddpm", tiny_train, **QUICK_EMA))
    assert res.meta["ema_init_weight"] == pytest.approx(closed_form, rel=1e-9)
    assert res.meta["ema_decay"] == decay
    ema = [p.detach() for p in res.model.net.parameters()]
    ratios = torch.cat([(e / i)[i.abs() > 1e-3] for e, i in zip(ema, initial)])
    assert len(ratios) > 1000
    # float32 lerps: about 2,000 roundings of relative size 6e-8 each
    torch.testing.assert_close(ratios, torch.full_like(ratios, closed_form), rtol=1e-3, atol=0.0)
    assert res.history[-1]["ema_init_weight"] == res.meta["ema_init_weight"] < 0.01
    recorded = {m.name: m for m in training_metrics(res.history, "ddpm")}["ema_init_weight"]
    assert recorded.value < 0.01 and recorded.unit == "fraction" and recorded.higher_is_better is False


@pytest.mark.parametrize(("n", "decay", "expected"), [(0, 0.999, 0.1), (10, 0.999, 11 / 20), (8989, 0.999, 8990 / 8999),
                                                     (8990, 0.999, 0.999), (10**6, 0.999, 0.999), (3, 0.5, 4 / 13),
                                                     (20, 0.5, 0.5)])
def test_ema_decay_warms_up_to_the_configured_decay(n, decay, expected):
    assert ema_decay_at(n, decay) == pytest.approx(expected, rel=1e-12)


def test_runs_without_ema_record_no_ema_weight(tiny_train):
    res = run(config("ddpm", tiny_train))
    assert "ema_init_weight" not in res.meta and "ema_init_weight" not in res.history[-1]
