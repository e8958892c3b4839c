"""Training: the run config, a seeded Adam loop with optional EMA, and run directories to reload.

`train(cfg, out_dir)` is deterministic for a seed on a given device and thread count: batches, noise
and timesteps all come from one CPU `torch.Generator`. It stops with `TrainingDivergedError` on a
NaN/Inf loss or one past `LOSS_EXPLOSION_FACTOR` times the first step's, logs the family's curves
(loss, KL, the beta(t) actually used) and writes the run directory described in `genlib.checkpoint`.
`load_run(dir)` rebuilds the model from the saved config alone, refusing weights of another run key.
The loop knows nothing of any family's loss: it calls `model.training_loss`.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import io
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from genlib.checkpoint import (RUN_FILES, ArtifactWriteError, CheckpointError, atomic_write_text, check_run_target, clean_stale_siblings,
                                load_weights, make_temp_sibling, publish_dir, read_json, save_weights, write_json)
from genlib.config import OMIT_DEFAULT, ConfigError, apply_overrides, config_hash, dump_yaml, from_dict, read_yaml
from genlib.data import DataConfig, Dataset, load_dataset
from genlib.kl_schedules import KLScheduleConfig
from genlib.models import MODELS, GenerativeModel, ModelConfig, SampleConfig, build_model
from genlib.perturb import mark_realised
from genlib.progress import tqdm
from genlib.provenance import device_info, provenance, select_device
from genlib.records import MetricDef
from genlib.store import Metric


@dataclass(frozen=True, kw_only=True)
class LossConfig:
    """The VAE objective: recon_nll + beta(t) * KL, with beta(t) from `kl_schedule` (other families ignore it)."""

    beta: float = 1.0
    kl_schedule: KLScheduleConfig = field(default_factory=KLScheduleConfig)

    def __post_init__(self) -> None:
        if self.beta < 0 or not math.isfinite(self.beta):
            raise ValueError(f"beta must be a finite number >= 0, got {self.beta}")


# A training whose loss reaches this many times its first step's loss (or 1, if larger) has diverged,
# even while the loss is still finite (a loss of 8.5e31 is no result): it stops with TrainingDivergedError.
LOSS_EXPLOSION_FACTOR = 1e6


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How to optimise. Every float must be finite. A loss past LOSS_EXPLOSION_FACTOR (1e6) times the
    first step's loss stops the run as diverged, like a NaN loss."""

    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    # Global gradient-norm clip (None disables); keeps early diffusion training stable.
    grad_clip: float | None = 1.0
    # Exponential moving average of the weights used for sampling (diffusion usually wants ~0.999), with
    # the warm-up min(ema_decay, (1 + n) / (10 + n)) at update n so no run samples its initialisation.
    ema_decay: float | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # CPU threads for torch during training. These networks are small: one thread per run is fastest
    # (2 threads ran 30x slower than 1 on a busy 2-core machine), and grids run one run per core.
    # 0 keeps torch's default.
    threads: int = 1
    log_every: int = 50
    # Earlier weights kept beside the final ones (the sampled weights: the EMA's where there is one), at these
    # steps (each in 1..steps-1), as model.step<N>.pt; an evaluation samples them with eval.perturb "step:N"
    # (an early checkpoint as a real denoiser error). Left out of run keys while empty.
    save_at: tuple[int, ...] = field(default=(), metadata={OMIT_DEFAULT: True})

    def __post_init__(self) -> None:
        bad = [s for s in self.save_at if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s < self.steps]
        if bad:
            raise ValueError(f"save_at lists {bad[0]!r}: each step must be an integer in 1..{self.steps - 1} "
                             f"(steps - 1; the final weights are model.pt)")
        if len(set(self.save_at)) != len(self.save_at) or list(self.save_at) != sorted(self.save_at):
            raise ValueError(f"save_at must list increasing steps without repeats, got {list(self.save_at)}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            raise ValueError(f"grad_clip must be a finite number >= 0 or null, got {self.grad_clip}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """One training run: what data, which model, which objective, how long, which seed."""

    name: str = "run"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if not MODELS.get(self.model.family).reads_loss_config and self.loss != LossConfig():
            readers = "', '".join(n for n in MODELS.names() if MODELS.get(n).reads_loss_config)
            raise ValueError(f"loss.* (beta, kl_schedule) applies only to model.family '{readers}', not "
                             f"'{self.model.family}'; remove it so equal runs share one run key")
        self.model.check_data(self.data)

    @property
    def run_key(self) -> str:
        return config_hash(self)


# What the loop records beside a family's own logs (GenerativeModel.training_logs): the share of the initial
# weights left in the EMA (logged per window) and the training speed (meta.json and the train record).
LOOP_LOGS: dict[str, MetricDef] = {
    "ema_init_weight": MetricDef("fraction", False),
    "train_steps_per_s": MetricDef("steps/s", True),
}


def training_logs(family: str | None) -> dict[str, MetricDef]:
    """Unit and direction of everything a training of `family` records: the family's declared training_logs
    and the loop's (None: the base GenerativeModel's, the logs every family has). UnknownNameError for an
    unregistered family."""
    declared = GenerativeModel.training_logs if family is None else MODELS.get(family).training_logs
    return {**declared, **LOOP_LOGS}


def check_logs(family: str, logs: dict[str, float]) -> None:
    """ValueError naming what `family`'s training_loss logs without declaring it in its training_logs."""
    declared = MODELS.get(family).training_logs
    undeclared = sorted(set(logs) - set(declared))
    if undeclared:
        raise ValueError(f"model family '{family}' logs {', '.join(undeclared)} from training_loss without "
                         f"declaring {'it' if len(undeclared) == 1 else 'them'} in its training_logs (declared: "
                         f"{', '.join(sorted(declared)) or 'none'}); add each name with its unit and direction")


def training_metrics(history: list[dict[str, float]], family: str) -> list[Metric]:
    """The final logged window of a training of `family` as store metrics (split 'train'), each with the unit
    and direction its declaration gives (training_logs); timings are left out on purpose."""
    final = history[-1] if history else {}
    defs = training_logs(family)
    out = []
    for name, value in final.items():
        if name == "step":
            continue
        d = defs[name]
        out.append(Metric(name=name, value=float(value), unit=d.unit, higher_is_better=d.higher_is_better,
                          split="train", extra={"step": int(final.get("step", 0)), "window": "last log window"}))
    return out


def ema_decay_at(n: int, decay: float) -> float:
    """Decay of EMA update n (0-based): min(decay, (1 + n) / (10 + n)), the warm-up of TensorFlow's
    ExponentialMovingAverage(num_updates=n). Without it the EMA starts as a copy of the untrained network
    and keeps decay^steps of it (0.999^2000 = 13.5% after 2,000 steps); with it, under 1e-20."""
    return min(decay, (1.0 + n) / (10.0 + n))


class TrainingDivergedError(RuntimeError):
    """The loss became NaN, infinite or exploded past its bound; the message names the step and the last values."""


def load_run_config(source: str | Path | dict, overrides: list[str] | dict | None = None, *,
                    resolve_data: bool = False) -> RunConfig:
    """RunConfig from a YAML file (or dict) plus dotted overrides; errors name the bad key.

    resolve_data: set data.fingerprint to what file-backed data holds now (a new run: train, grid plans),
    so its run key follows the data's content; otherwise a stored fingerprint is kept (reloading a run)."""
    data = read_yaml(source) if isinstance(source, (str, Path)) else dict(source)
    cfg = from_dict(RunConfig, apply_overrides(data, overrides or []))
    if resolve_data:
        data_cfg = cfg.data.resolved()
        if data_cfg is not cfg.data:
            cfg = dataclasses.replace(cfg, data=data_cfg)
    return cfg


@dataclass
class TrainResult:
    config: RunConfig
    model: GenerativeModel
    history: list[dict[str, float]]
    meta: dict
    run_dir: Path | None


def _seeded_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _history_csv(history: list[dict[str, float]]) -> str:
    keys = list(dict.fromkeys(k for row in history for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    return buf.getvalue()


def train(cfg: RunConfig, out_dir: str | Path | None = None, *, progress: bool = True,
          dataset: Dataset | None = None, overwrite: bool = False) -> TrainResult:
    """Train `cfg` and, when `out_dir` is given, write its run directory. Returns the trained model.

    The directory is built in a temporary sibling and renamed into place at the end, so `out_dir` always
    holds one whole run. An existing run there is refused (CheckpointError) before training unless
    `overwrite`; it is replaced only once the new run is complete."""
    tmp_dir = None
    if out_dir is not None:
        clean_stale_siblings(out_dir)
        check_run_target(out_dir, overwrite=overwrite)
        tmp_dir = make_temp_sibling(out_dir)
    previous_threads = torch.get_num_threads()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    try:
        result = _train(cfg, tmp_dir, progress=progress, dataset=dataset)
        if tmp_dir is not None:
            result.run_dir = publish_dir(tmp_dir, out_dir)
        return result
    except ArtifactWriteError as exc:  # training is complete when its files are written
        raise ArtifactWriteError(f"training of '{cfg.name}' (run key {cfg.run_key}) finished but was not saved: "
                                 f"{exc}; '{out_dir}' holds what it held before") from None
    finally:
        torch.set_num_threads(previous_threads)
        if tmp_dir is not None and tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)


def _train(cfg: RunConfig, out_dir: Path | None, *, progress: bool, dataset: Dataset | None) -> TrainResult:
    torch.manual_seed(cfg.seed)
    device = select_device(cfg.train.device)
    data = dataset if dataset is not None else load_dataset(cfg.data)
    model = build_model(cfg.model, data.sample_shape, data.kind).to(device)
    model.bind_data(cfg.data)
    x_train = model.to_model_space(torch.tensor(np.asarray(data.x_train), dtype=torch.float32)).to(device)
    gen = _seeded_generator(cfg.seed)
    # A network without trainable weights (the exact `oracle`) has nothing to learn: it runs no steps.
    steps = cfg.train.steps if any(p.requires_grad for p in model.net.parameters()) else 0
    ema = copy.deepcopy(model.net).requires_grad_(False) if cfg.train.ema_decay else None
    net_params = list(model.net.parameters())  # listed once: walking the module tree each step costs ~5%
    ema_params = list(ema.parameters()) if ema is not None else []
    opt = torch.optim.Adam(net_params, lr=cfg.train.lr, foreach=True) if steps else None
    ema_init_weight = 1.0  # share of the initial weights left in the EMA: the product of the decays used
    save_at = set(cfg.train.save_at) if steps else set()
    snapshots: dict[int, dict[str, torch.Tensor]] = {}  # step -> the weights a sampler would use then

    history: list[dict[str, float]] = []
    sums: dict[str, float] = {}
    n_in_window = 0
    start = time.perf_counter()
    bar = tqdm(range(steps), desc=f"train {cfg.model.family}", disable=not progress, leave=False,
               dynamic_ncols=True)
    model.net.train()
    for step in bar:
        idx = torch.randint(0, x_train.shape[0], (cfg.train.batch_size,), generator=gen).to(device)
        loss, logs = model.training_loss(x_train[idx], step, cfg.train.steps, cfg.loss, gen)
        loss_value = loss.item()
        if step == 0:
            check_logs(cfg.model.family, logs)
            loss_bound = LOSS_EXPLOSION_FACTOR * max(1.0, abs(loss_value))
        if not math.isfinite(loss_value) or abs(loss_value) > loss_bound:
            last = history[-1] if history else {}
            past = "" if not math.isfinite(loss_value) else (
                f", past the divergence bound {loss_bound:.3g} ({LOSS_EXPLOSION_FACTOR:g} x the first step's loss)")
            raise TrainingDivergedError(
                f"loss became {loss_value:.4g} at step {step} of run '{cfg.name}' ({cfg.model.family}){past}; "
                f"last logged values: {last or 'none'}. Try a lower train.lr or a train.grad_clip.")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(net_params, cfg.train.grad_clip)
        opt.step()
        if ema is not None:
            decay = ema_decay_at(step, cfg.train.ema_decay)
            ema_init_weight *= decay
            with torch.no_grad():  # one foreach call (each tensor's lerp_, as a loop over them would do)
                torch._foreach_lerp_(ema_params, net_params, 1.0 - decay)
        if step + 1 in save_at:
            snapshots[step + 1] = _sampled_weights(model, ema, x_train)
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + v
        n_in_window += 1
        if (step + 1) % cfg.train.log_every == 0 or step + 1 == cfg.train.steps:
            row = {"step": step + 1, **{k: v / n_in_window for k, v in sums.items()}}
            if ema is not None:
                row["ema_init_weight"] = ema_init_weight  # at the window's end, not averaged
            history.append(row)
            bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k != "step"}, refresh=False)
            sums, n_in_window = {}, 0
    wall_s = time.perf_counter() - start
    if ema is not None:
        model.net.load_state_dict(ema.state_dict())
    model.net.eval()
    with torch.no_grad():
        model.finish_training(x_train)

    meta = {
        "run_key": cfg.run_key,
        "name": cfg.name,
        "family": cfg.model.family,
        "seed": cfg.seed,
        "sample_shape": list(data.sample_shape),
        "kind": data.kind,
        "n_params": sum(p.numel() for p in model.net.parameters()),
        "steps_run": steps,  # 0 for a network without trainable weights, whatever train.steps says
        "train_wall_s": wall_s,
        "train_steps_per_s": steps / wall_s if wall_s > 0 else float("inf"),
        "final": history[-1] if history else {},
        "files": [*RUN_FILES, *(step_weights_name(n) for n in snapshots)],  # all that --overwrite may replace
        **({"saved_at": sorted(snapshots)} if snapshots else {}),
        **({"ema_decay": cfg.train.ema_decay, "ema_init_weight": ema_init_weight} if ema is not None else {}),
        **device_info(device),
        **provenance(),
    }
    run_dir = None
    if out_dir is not None:
        run_dir = Path(out_dir)
        atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
        atomic_write_text(run_dir / "history.csv", _history_csv(history))
        write_json(run_dir / "meta.json", meta)
        save_weights(run_dir / "model.pt", {
            "family": cfg.model.family, "run_key": cfg.run_key, "sample_shape": list(data.sample_shape),
            "kind": data.kind, "state_dict": {k: v.detach().cpu() for k, v in model.net.state_dict().items()},
        })
        for n, state in snapshots.items():
            save_weights(run_dir / step_weights_name(n), {
                "family": cfg.model.family, "run_key": cfg.run_key, "sample_shape": list(data.sample_shape),
                "kind": data.kind, "state_dict": state, "step": n})
    return TrainResult(cfg, model, history, meta, run_dir)


def step_weights_name(step: int) -> str:
    """The file of the weights saved at training step `step` (train.save_at)."""
    return f"model.step{step}.pt"


def _sampled_weights(model: GenerativeModel, ema: torch.nn.Module | None, x_train: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
    """The weights a sampler would use if training stopped now: the EMA's (or the network's), after the
    family's finish_training, on the CPU; the training state itself is untouched."""
    snap = copy.deepcopy(model)
    if ema is not None:
        snap.net.load_state_dict(ema.state_dict())
    snap.net.eval()
    with torch.no_grad():
        snap.finish_training(x_train)
    return {k: v.detach().cpu().clone() for k, v in snap.net.state_dict().items()}


@dataclass
class LoadedRun:
    config: RunConfig
    model: GenerativeModel
    meta: dict
    run_dir: Path


def load_run(run_dir: str | Path, device: str = "auto", at_step: int | None = None) -> LoadedRun:
    """Rebuild a trained model from its run directory alone (config.yaml + model.pt), in eval mode. at_step:
    the weights saved at that training step instead (train.save_at), their network marked as realising the
    perturbation 'step:N' (genlib.perturb), so it is only sampled under that name."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory '{run_dir}' does not exist")
    cfg_path = run_dir / "config.yaml"
    try:
        cfg = load_run_config(cfg_path)
    except ConfigError as exc:
        raise CheckpointError(f"'{cfg_path}': {exc}") from None
    weights = run_dir / "model.pt"
    if at_step is not None:
        if at_step not in cfg.train.save_at:
            saved = list(cfg.train.save_at) or "none"
            raise CheckpointError(f"run '{run_dir}' saved no weights at step {at_step} (its train.save_at: {saved}); "
                                  f"add {at_step} to train.save_at and train it again")
        weights = run_dir / step_weights_name(at_step)
        if not weights.is_file() and (run_dir / "meta.json").is_file() and read_json(run_dir / "meta.json").get(
                "steps_run", 1) == 0:
            raise CheckpointError(f"run '{run_dir}' trained no steps (a network without trainable weights): it has "
                                  f"no weights at step {at_step}")
    ckpt = load_weights(weights)
    if ckpt.get("family") != cfg.model.family:
        raise CheckpointError(f"'{weights}' holds a '{ckpt.get('family')}' model but "
                              f"'{cfg_path}' describes '{cfg.model.family}'")
    model = build_model(cfg.model, tuple(ckpt["sample_shape"]), ckpt["kind"])
    model.bind_data(cfg.data)
    try:
        model.net.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"'{weights}' does not match the network of '{cfg_path}': {exc}") from None
    if ckpt.get("run_key") != cfg.run_key:
        # Weights that fit another config (T 100 -> 1000, a new likelihood) must not run under its key.
        raise CheckpointError(f"'{weights}' was trained as run key {ckpt.get('run_key')} but "
                              f"'{cfg_path}' resolves to run key {cfg.run_key} (edited, or written by another "
                              f"genbench version); restore the config or train again")
    model.net.eval()
    model.to(select_device(device))
    if at_step is not None:
        mark_realised(model.net, f"step:{at_step}")
    meta = read_json(run_dir / "meta.json") if (run_dir / "meta.json").exists() else {}
    return LoadedRun(cfg, model, meta, run_dir)


def generate(model: GenerativeModel, n: int, sample_cfg: SampleConfig | None = None, seed: int = 0,
             batch_size: int = 4096) -> torch.Tensor:
    """n samples in data space (CPU tensor), in batches, reproducible for a seed, by the sampler `sample_cfg`
    names (its `SAMPLERS` spec; 'auto' = the family's first)."""
    cfg = sample_cfg or SampleConfig()
    spec = model.resolve_sampler(cfg)  # the SAMPLERS spec; every setting checked before any sampling
    gen = _seeded_generator(seed)
    if isinstance(model.net, torch.nn.Module):  # not an ONNX Runtime part (GenerativeModel.with_parts)
        model.net.eval()
    with torch.no_grad():
        out = [spec.generate(model, min(batch_size, n - i), cfg, gen).cpu() for i in range(0, n, batch_size)]
    return torch.cat(out) if out else torch.empty(0, *model.sample_shape)


__all__ = ["RunConfig", "LossConfig", "TrainConfig", "TrainResult", "TrainingDivergedError", "train",
           "load_run", "load_run_config", "generate", "LoadedRun", "training_metrics", "training_logs", "LOOP_LOGS",
           "check_logs", "ema_decay_at", "step_weights_name"]
