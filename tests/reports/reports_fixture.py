"""A small, fully deterministic results store laid out exactly as the grid runner and the benchmarks write it.

Studies beta, warmup, refinement, steps and baselines (a study row with the claims below and the plots of the
bundled grid file; train, eval and floor rows; configs with `train`,
`eval`, `axes`, `profile`; timed steps cells carry latency metrics as bench.grid_timing stores them), sampler
and decoder benchmark rows (`kind="bench"`, as bench/results.py
writes them), one analytic run, artifact directories with history.csv and samples.npy, and a failed cell.
The numbers are synthetic and chosen so that each verdict of the claims rule occurs at least once.
`check_png` validates PNG bytes without an image library (for the embedded images of the HTML report).
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from genlib.store import Metric, ResultsStore, RunRecord
from genlib.study_schema import PlotEntry

GRIDS = Path(__file__).resolve().parents[2] / "ablations" / "grids"
GIT = "abc1234def5678"
VERSIONS = {"numpy": "2.4.6", "python": "3.11.9", "torch": "2.13.0"}
PROFILE = "quick"
UNITS: dict[str, tuple[str, bool | None]] = {
    "mse": ("sq. data units", False), "kl": ("nats", None), "active_units": ("count", True),
    "fd": ("sq. feature units", False), "precision": ("fraction", True), "recall": ("fraction", True),
    "coverage": ("fraction", True), "sharpness": ("ratio", None), "neg_elbo": ("nats", False),
    "swd": ("data units", False), "mmd": ("kernel units", False),
}
# Per-seed offsets (relative): different for each metric so that paired differences have spread.
JITTER = {0: -0.012, 1: 0.004, 2: 0.011}


def _value(base: float, seed: int, salt: int = 0) -> float:
    j = JITTER[seed] * (1 + 0.37 * (salt % 5))
    return round(base * (1 + j) + (0.001 * ((seed + salt) % 3) if base == 0 else 0.0), 6)


def _metrics(values: dict[str, float], seed: int, split: str = "test", salt: int = 0,
             exact: tuple[str, ...] = ()) -> list[Metric]:
    out = []
    for i, (name, base) in enumerate(values.items()):
        unit, hib = UNITS[name]
        extra: dict[str, Any] = {"n": 500}
        if name == "sharpness":
            extra["target"] = 1.0
        if name == "active_units":
            extra["latent_dim"] = 8
        value = base if name in exact else _value(base, seed, salt + i)
        out.append(Metric(name, value, unit=unit, higher_is_better=hib, split=split, extra=extra))
    return out


class _Writer:
    def __init__(self, store: ResultsStore, root: Path) -> None:
        self.store, self.root, self.n = store, root, 0

    def key(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.n:04d}"

    def artifact(self, key: str) -> tuple[str, Path]:
        rel = f"results.artifacts/{key}"
        path = self.root / rel
        path.mkdir(parents=True, exist_ok=True)
        return rel, path

    def run(self, kind: str, study: str | None, name: str, config: dict, seed: int | None, metrics: list[Metric],
            parent: str | None = None, status: str = "done", artifact: str | None = None, error: str | None = None,
            provider: str | None = None, key: str | None = None) -> str:
        key = key or self.key(f"{study or kind}-{kind}")
        self.store.commit_run(RunRecord(run_key=key, kind=kind, config=config, status=status, study=study, name=name,
                                        parent_key=parent, seed=seed, git_commit=GIT, versions=VERSIONS,
                                        device="cpu", provider=provider, artifact_path=artifact, error=error),
                              metrics)
        return key


def _train_cfg(study: str, seed: int, data: str, model: dict, loss: dict | None = None) -> dict:
    return {"name": study, "seed": seed, "data": {"name": data}, "model": model,
            "loss": loss or {"beta": 1.0, "kl_schedule": {"kind": "constant"}}, "train": {"steps": 1500}}


def _eval_cfg(metrics: list[str], **kw: Any) -> dict:
    base = {"sampler": "auto", "steps": None, "eta": 0.0, "variance": "small", "clip_x0": True, "passes": 0,
            "reencode": "mean", "prior": "standard", "n": 500, "metrics": metrics}
    return {**base, **kw}


def _label(study: str, axes: dict, seed: int) -> str:
    return f"{study}[{', '.join([f'{k}={v}' for k, v in axes.items()] + [f'seed={seed}'])}]"


def _cell(w: _Writer, study: str, seed: int, train: dict, axes: dict, t_axes: dict, ev: dict, values: dict,
          train_metrics: dict | None = None, salt: int = 0, train_key: str | None = None,
          history: list[dict] | None = None, samples: np.ndarray | None = None, exact=(),
          more: list[Metric] = ()) -> tuple[str, str]:
    if train_key is None:
        tkey = w.key(f"{study}-train")
        rel, path = w.artifact(tkey)
        if history:
            cols = list(history[0])
            (path / "history.csv").write_text(",".join(cols) + "\n" + "".join(
                ",".join(str(r[c]) for c in cols) + "\n" for r in history))
        (path / "model.pt").write_bytes(b"not a real checkpoint")
        tm = [Metric(n, v, unit="", higher_is_better=False, split="train", extra={"window": "last log window"})
              for n, v in (train_metrics or {"loss": 1.0}).items()]
        train_key = w.run("train", study, _label(study, t_axes, seed),
                          {"train": train, "eval": None, "axes": t_axes, "profile": PROFILE}, seed, tm, key=tkey,
                          artifact=rel)
    ekey = w.key(f"{study}-eval")
    art = None
    if samples is not None:
        art, path = w.artifact(ekey)
        np.save(path / "samples.npy", samples.astype(np.float32), allow_pickle=False)
    w.run("eval", study, _label(study, axes, seed), {"train": train, "eval": ev, "axes": axes, "profile": PROFILE},
          seed, _metrics(values, seed, salt=salt, exact=exact) + list(more), parent=train_key, artifact=art, key=ekey)
    return train_key, ekey


def _floor(w: _Writer, study: str, data: str, values: dict, seeds: tuple[int, ...]) -> None:
    for seed in seeds:
        w.run("floor", study, f"{study}[floor {data}, n=500, seed={seed}]",
              {"train": None, "eval": {"n": 500, "metrics": list(values)}, "data": {"name": data},
               "axes": {"data.name": data, "eval.n": 500}, "profile": PROFILE},
              seed, _metrics(values, seed, salt=7))


def _digits(seed: int, blur: float) -> np.ndarray:
    """(16, 1, 8, 8) images in [0, 1]: a bright cross, flattened towards grey by `blur`."""
    rng = np.random.default_rng(seed)
    x = np.zeros((16, 1, 8, 8), dtype=np.float32)
    x[:, :, 3:5, :] = 1.0
    x[:, :, :, 3:5] = 1.0
    x = (1 - blur) * x + blur * x.mean() + 0.05 * rng.standard_normal(x.shape)
    return np.clip(x, 0, 1)


def build_fixture_store(root: str | Path) -> Path:
    """Write the fixture store to `root`/results.db (artifacts beside it) and return its path."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "results.db"
    with ResultsStore(path) as store:
        w = _Writer(store, root)
        _beta(w)
        _warmup(w)
        _refinement(w)
        steps_train = _steps(w)
        vae_train = _baselines(w)
        _bench(w, steps_train, vae_train)
        _analytic(w)
        _studies(w)
    return path


def _test(metric: str, direction: str, axis: str, treatment: Any, reference: Any, margin: float, **where: Any) -> dict:
    return {"metric": metric, "direction": direction, "axis": axis, "treatment": treatment, "reference": reference,
            "margin": margin, "where": {k.replace("__", "."): v for k, v in where.items()}}


REFINE = {"loss__beta": 1, "eval__reencode": "mean"}
MOONS_T1000 = {"block": "moons", "model__noise__T": 1000}
# Each study's stored definition, as `genbench grid run` writes it (ablations.spec.GridSpec.record_config).
# Chosen so that every verdict occurs: supported, contradicted (a secondary of 6), no effect (6b),
# inconclusive (5), not measured (a secondary of 1 on data the fixture lacks).
STUDY_CLAIMS: dict[str, list[dict]] = {
    "beta": [
        {"id": "3", "text": "KL dominating (large beta) collapses the posterior.",
         "primary": _test("active_units", "lower", "loss.beta", 64, 1, 1.0),
         "secondary": [_test("sharpness", "lower", "loss.beta", 64, 1, 0.1)]},
        {"id": "4", "text": "Reconstruction dominating (small beta) gives good reconstructions but bad prior samples.",
         "primary": _test("fd", "higher", "loss.beta", 0, 1, 2.0),
         "secondary": [_test("mse", "lower", "loss.beta", 0, 1, 0.002)]}],
    "warmup": [
        {"id": "5", "text": "Reconstruction first, KL later, gives a better trade-off.",
         "primary": _test("neg_elbo", "lower", "loss.kl_schedule.kind", "linear", "constant", 0.5),
         "secondary": [_test("neg_elbo", "lower", "loss.kl_schedule.kind", "recon_first", "kl_first", 0.5)]}],
    "refinement": [
        {"id": "6a", "text": "Many refinement passes turn prior samples to mush.",
         "primary": _test("recall", "lower", "eval.passes", 10, 1, 0.02, **REFINE),
         "secondary": [_test("precision", "higher", "eval.passes", 1, 0, 0.02, **REFINE),
                       _test("coverage", "lower", "eval.passes", 10, 1, 0.02, **REFINE)]},
        {"id": "6b", "text": "A second pass changes little.",
         "primary": _test("fd", "higher", "eval.passes", 2, 1, 2.0, **REFINE), "secondary": []}],
    "steps": [
        {"id": "7", "text": "More, smaller diffusion steps give better samples.",
         "primary": _test("swd", "lower", "eval.steps", 50, 5, 0.01, **MOONS_T1000, sampler="ddim_eta0"),
         "secondary": [_test("swd", "lower", "sampler", "ddim_eta0", "ddpm_small", 0.01, **MOONS_T1000,
                             eval__steps=5)]},
        {"id": "10b", "text": "A short unscaled linear schedule hurts samples.",
         "primary": _test("swd", "higher", "model.noise.scaled", False, True, 0.05, block="moons",
                          model__noise__T=100, eval__steps=None, sampler="ddpm_small"), "secondary": []}],
    "baselines": [
        {"id": "1", "text": "Sampling a plain autoencoder's latent space from N(0, I) gives off-distribution samples.",
         "primary": _test("fd", "higher", "method", "ae_standard", "vae_diagonal", 2.0, block="digits"),
         "secondary": [_test("swd", "higher", "method", "ae_standard", "vae_diagonal", 0.05, block="moons")]},
        {"id": "2", "text": "The naive chain gives blurrier, worse samples than DDPM.",
         "primary": _test("fd", "higher", "method", "denoiser_chain", "ddpm", 2.0, block="digits"),
         "secondary": [_test("sharpness", "lower", "method", "denoiser_chain", "ddpm", 0.1, block="digits")]}],
}


def bundled_plots(study: str) -> list[dict]:
    """The plot entries the bundled grid file of `study` declares, in the stored layout (tests/ablations checks
    that the grid runner stores exactly these)."""
    data = yaml.safe_load((GRIDS / f"{study}.yaml").read_text(encoding="utf-8"))
    return [PlotEntry.from_dict(p).to_dict() for p in data["plots"]]


def _studies(w: _Writer) -> None:
    for study, claims in STUDY_CLAIMS.items():
        w.run("study", study, study, {"study": study, "profile": PROFILE, "claims": claims,
                                      "plots": bundled_plots(study)}, None, [], key=f"study-{study}")


BETA_VALUES = {
    0: {"mse": 0.010, "kl": 40.0, "active_units": 8.0, "fd": 30.0, "precision": 0.20, "sharpness": 0.90},
    1: {"mse": 0.020, "kl": 20.0, "active_units": 6.0, "fd": 10.0, "precision": 0.60, "sharpness": 0.70},
    64: {"mse": 0.060, "kl": 0.10, "active_units": 0.0, "fd": 25.0, "precision": 0.30, "sharpness": 0.20},
}


def _beta(w: _Writer) -> None:
    model = {"family": "vae", "latent_dim": 8, "hidden": [256, 128], "covariance": "diagonal"}
    metrics = ["mse", "kl", "active_units", "fd", "precision", "sharpness"]
    for beta, values in BETA_VALUES.items():
        for seed in (0, 1, 2):
            train = _train_cfg("beta", seed, "digits", model, {"beta": float(beta), "kl_schedule": {"kind": "constant"}})
            axes = {"loss.beta": beta}
            _cell(w, "beta", seed, train, axes, axes, _eval_cfg(metrics, sampler="vae"), values,
                  {"loss": 100.0 + beta, "kl": 10.0, "beta_t": float(beta)}, salt=beta % 5,
                  samples=_digits(seed, blur=min(1.0, beta / 64)) if seed == 0 else None,
                  exact=("active_units",) if beta == 64 else ())
    # a cell that failed: in the notes, never in the means
    train = _train_cfg("beta", 0, "digits", model, {"beta": 8.0, "kl_schedule": {"kind": "constant"}})
    w.run("train", "beta", _label("beta", {"loss.beta": 8}, 0),
          {"train": train, "eval": None, "axes": {"loss.beta": 8}, "profile": PROFILE}, 0, [], status="failed",
          error="Traceback (most recent call last):\n  ...\ngenlib.train.TrainingDivergedError: loss became nan at step 12")
    _floor(w, "beta", "digits", {"fd": 1.5, "precision": 0.75, "sharpness": 1.0}, (0, 1, 2))


WARMUP_VALUES = {"constant": 102.0, "recon_first": 99.0, "linear": 101.0, "kl_first": 110.0}


def _warmup(w: _Writer) -> None:
    model = {"family": "vae", "latent_dim": 8, "hidden": [256, 128], "covariance": "diagonal"}
    for i, (kind, neg_elbo) in enumerate(WARMUP_VALUES.items()):
        for seed in (0, 1):
            train = _train_cfg("warmup", seed, "digits", model, {"beta": 1.0, "kl_schedule": {"kind": kind}})
            axes = {"loss.kl_schedule.kind": kind}
            history = []
            for step in range(25, 201, 25):
                frac = step / 200
                beta_t = {"constant": 1.0, "recon_first": float(frac > 0.5), "linear": frac,
                          "kl_first": 1.0 + (1 - frac)}[kind]
                history.append({"step": step, "loss": round(200 - 90 * frac + seed + i, 3),
                                "kl": round(5 + 10 * frac * (1 + i / 4), 3), "beta_t": round(beta_t, 4)})
            # linear vs constant: the per-seed differences straddle 0 (inconclusive by design)
            bump = {("linear", 0): -2.5, ("linear", 1): 1.5}.get((kind, seed), 0.0)
            values = {"neg_elbo": neg_elbo + bump, "active_units": 5.0 + i}
            _cell(w, "warmup", seed, train, axes, axes, _eval_cfg(["neg_elbo", "active_units"], sampler="vae"), values,
                  {"loss": history[-1]["loss"]}, salt=i, history=history)
    _floor(w, "warmup", "digits", {"active_units": 8.0}, (0,))


REFINE_VALUES = {0: {"precision": 0.50, "recall": 0.40, "coverage": 0.50, "fd": 12.0},
                 1: {"precision": 0.62, "recall": 0.42, "coverage": 0.52, "fd": 10.0},
                 2: {"precision": 0.64, "recall": 0.38, "coverage": 0.50, "fd": 10.5},
                 10: {"precision": 0.70, "recall": 0.15, "coverage": 0.60, "fd": 16.0}}


def _refinement(w: _Writer) -> None:
    model = {"family": "vae", "latent_dim": 8, "hidden": [256, 128], "covariance": "diagonal"}
    metrics = ["precision", "recall", "coverage", "fd"]
    for beta in (1, 4):
        for seed in (0, 1, 2):
            train = _train_cfg("refinement", seed, "digits", model,
                               {"beta": float(beta), "kl_schedule": {"kind": "constant"}})
            tkey = None
            for passes, values in REFINE_VALUES.items():
                axes = {"loss.beta": beta, "eval.passes": passes, "eval.reencode": "mean"}
                # beta 4 is worse everywhere: the `where` filter of the claims must keep it out
                vals = values if beta == 1 else {k: v * (0.5 if k != "fd" else 2.0) for k, v in values.items()}
                tkey, _ = _cell(w, "refinement", seed, train, axes, {"loss.beta": beta},
                                _eval_cfg(metrics, sampler="vae", passes=passes), vals, salt=passes + beta,
                                train_key=tkey, samples=_digits(seed, 0.1 * passes) if seed == 0 and beta == 1 else None)
    _floor(w, "refinement", "digits", {"precision": 0.74, "recall": 0.74, "coverage": 0.95, "fd": 1.5}, (0, 1, 2))


SAMPLERS = {"ddpm_small": {"sampler": "ddpm", "variance": "small", "eta": 0.0},
            "ddim_eta0": {"sampler": "ddim", "eta": 0.0, "variance": "small"}}


def _swd(T: int, scaled: bool, label: str, steps: int | None) -> float:
    S = steps or T
    base = 0.05 + 0.6 / S ** (0.9 if label == "ddim_eta0" else 0.6)
    return base * (3.0 if not scaled else 1.0) * (1.0 if T == 1000 else 1.3)


TIMING = {"backends": ["ort_graph", "torch_loop"], "providers": ["cpu"], "batches": [1, 64], "threads": [1],
          "target_s": 0.2, "min_rounds": 5, "warmup_rounds": 2}
TIMED_PER_STEP = {"torch_loop": ("torch:cpu", 0.30), "ort_graph": ("CPUExecutionProvider", 0.12)}


def _timed_metrics(seed: int, steps: int) -> list[Metric]:
    """Latency of a timed steps cell, as bench.grid_timing stores it: one split per backend/provider/batch/threads."""
    out = []
    for backend, (provider, per_step) in TIMED_PER_STEP.items():
        for batch in TIMING["batches"]:
            p50 = round(steps * per_step * (1 + batch / 32) * (1 + JITTER[seed]), 4)
            extra = {"backend": backend, "provider": provider, "device": "cpu", "batch": batch, "threads": 1,
                     "rounds": 20, "export_key": f"x{steps}", "export": "cached",
                     "parity": "n/a" if backend == "torch_loop" else "valid"}
            split = f"{backend}/{provider}/b{batch}/t1"
            out += [Metric("latency_ms_p50", p50, unit="ms", higher_is_better=False, split=split, extra=extra),
                    Metric("latency_ms_p90", p50 * 1.2, unit="ms", higher_is_better=False, split=split, extra=extra),
                    Metric("throughput_per_s", batch / (p50 / 1000), unit="samples/s", higher_is_better=True,
                           split=split, extra=extra)]
    out.append(Metric("parity_max_abs_err", 2e-6, unit="abs", higher_is_better=False, split="export",
                      extra={"valid": True, "export_key": f"x{steps}"}))
    return out


def _steps(w: _Writer) -> str:
    """Returns the run key of the T=1000 seed-0 training (the benchmarks' parent)."""
    parent = ""
    for T, scaled in ((100, True), (100, False), (1000, True)):
        model = {"family": "ddpm", "hidden": [128, 128, 128], "noise": {"kind": "linear", "T": T, "scaled": scaled}}
        for seed in (0, 1):
            train = _train_cfg("steps", seed, "moons", model)
            t_axes = {"block": "moons", "data.name": "moons", "eval.metrics": ["swd", "mmd"], "model.noise.T": T,
                      "model.noise.scaled": scaled}
            tkey = None
            for label, sampler in SAMPLERS.items():
                for steps in (5, 50, None):
                    axes = {**t_axes, "eval.steps": steps, "sampler": label}
                    t_axes_train = {k: v for k, v in t_axes.items() if not k.startswith("eval.")}
                    swd = _swd(T, scaled, label, steps)
                    rng = np.random.default_rng(seed + 10 * (steps or 0))
                    pts = np.concatenate([rng.normal([-1, 0], 0.2 + swd, (32, 2)), rng.normal([1, 0.5], 0.2 + swd,
                                                                                              (32, 2))])
                    timed = T == 1000 and steps in (5, 50) and label in ("ddim_eta0", "ddpm_small")
                    ev = _eval_cfg(["swd", "mmd"], steps=steps, **sampler, **({"timing": TIMING} if timed else {}))
                    tkey, _ = _cell(w, "steps", seed, train, axes, t_axes_train, ev,
                                    {"swd": swd, "mmd": swd / 10}, salt=(steps or 3) + len(label), train_key=tkey,
                                    samples=pts if seed == 0 and T == 1000 and label == "ddim_eta0" else None,
                                    more=_timed_metrics(seed, steps) if timed else ())
            if T == 1000 and seed == 0:
                parent = tkey
    return parent


BASELINE_VALUES = {"ae_standard": {"fd": 40.0, "precision": 0.1, "sharpness": 0.8},
                   "vae_diagonal": {"fd": 9.0, "precision": 0.5, "sharpness": 0.6},
                   "denoiser_chain": {"fd": 20.0, "precision": 0.3, "sharpness": 0.3},
                   "ddpm": {"fd": 6.0, "precision": 0.6, "sharpness": 0.95}}


def _baselines(w: _Writer) -> str:
    vae_key = ""
    families = {"ae_standard": "ae", "vae_diagonal": "vae", "denoiser_chain": "denoiser_chain", "ddpm": "ddpm"}
    for i, (method, values) in enumerate(BASELINE_VALUES.items()):
        for seed in (0, 1, 2):
            model = {"family": families[method], "latent_dim": 8, "hidden": [256, 128]}
            if families[method] in ("ddpm", "denoiser_chain"):
                model = {"family": families[method], "hidden": [256, 256, 256],
                         "noise": {"kind": "linear", "T": 100, "scaled": True}}
            train = _train_cfg("baselines", seed, "digits", model)
            axes = {"block": "digits", "data": {"name": "digits"}, "eval.metrics": ["fd", "precision", "sharpness"],
                    "method": method}
            tkey, _ = _cell(w, "baselines", seed, train, axes, {k: v for k, v in axes.items() if k != "eval.metrics"},
                            _eval_cfg(["fd", "precision", "sharpness"]), values, salt=i,
                            samples=_digits(seed, 0.2 * i) if seed == 0 else None)
            if method == "vae_diagonal" and seed == 0:
                vae_key = tkey
    return vae_key


def _bench_row(w: _Writer, parent: str, part: str, backend: str, provider: str, batch: int, threads: int,
               p50: float, precision: str = "fp32", parity: str = "n/a", max_abs_err: float | None = None,
               details: dict | None = None) -> None:
    details = details or {}
    extra = {"batch": batch, "threads": threads, "backend": backend, "part": part, "precision": precision,
             "provider": provider, "parity": parity, **details}
    metrics = [Metric(n, v, unit="ms", higher_is_better=False, extra={**extra, "rounds": 20})
               for n, v in (("latency_ms_p50", p50), ("latency_ms_p90", p50 * 1.2), ("latency_ms_p99", p50 * 1.5),
                            ("latency_ms_mean", p50 * 1.05), ("latency_ms_std", p50 * 0.1))]
    metrics.append(Metric("throughput_per_s", batch / (p50 / 1000), unit="samples/s", higher_is_better=True,
                          extra=extra))
    metrics.append(Metric("peak_memory_mb", 300.0 + batch / 8, unit="MB", higher_is_better=False, extra=extra))
    if max_abs_err is not None:
        metrics.append(Metric("parity_max_abs_err", max_abs_err, unit="abs", higher_is_better=False,
                              extra={**extra, "valid": parity == "valid", "tolerance": 1e-4}))
    config = {"bench": {"backend": backend, "provider": provider, "batch": batch, "threads": threads,
                        "precision": precision, "timing": {"rounds": 20}, "cuda_graph": False},
              "part": part, "export": {"part": part, "precision": precision, "graph": details.get("graph", "auto"),
                                       "sample": {k: v for k, v in details.items() if k not in ("graph", "label")}},
              "export_key": "e" + parent[-4:],
              "run_key": parent, "machine": {"node": "fixture"}}
    failed = parity == "invalid"
    w.run("bench", None, f"{part}/{backend}/{provider}/b{batch}/t{threads}/{precision}", config, None, metrics,
          parent=parent, status="failed" if failed else "done", provider=provider,
          error="export failed parity: max_abs_err 0.02 > 0.01" if failed else None)


def _bench(w: _Writer, steps_parent: str, vae_parent: str) -> None:
    # details as bench/results.py writes them: the sampler's registry label and the settings it reads
    for sampler, eta_or_var in (("ddim", {"eta": 0.0, "label": "ddim eta=0.0"}),
                                ("ddpm", {"variance": "small", "label": "ddpm small"})):
        for steps in (5, 50, 1000):
            for backend, provider, per_step in (("torch_loop", "torch:cpu", 0.30), ("ort_graph", "CPUExecutionProvider",
                                                                                    0.12)):
                for batch in (1, 64):
                    p50 = steps * per_step * (1 + batch / 32)
                    _bench_row(w, steps_parent, "sampler", backend, provider, batch, 1, round(p50, 4),
                               parity="n/a" if backend.startswith("torch") else "valid",
                               max_abs_err=None if backend.startswith("torch") else 2e-6,
                               details={"sampler": sampler, "steps": steps, "graph": "unrolled", **eta_or_var})
    for backend, provider, base, precision, parity in (
            ("torch", "torch:cpu", 0.20, "fp32", "n/a"), ("ort", "CPUExecutionProvider", 0.08, "fp32", "valid"),
            ("ort", "CPUExecutionProvider", 0.07, "fp16", "invalid")):
        for batch in (1, 16, 256):
            _bench_row(w, vae_parent, "decoder", backend, provider, batch, 1, round(base * (1 + batch / 16), 4),
                       precision=precision, parity=parity,
                       max_abs_err=None if parity == "n/a" else (3e-7 if parity == "valid" else 0.02))


def _analytic(w: _Writer) -> None:
    w.run("analytic", "analytic", "kl_gaussians", {"p": "N(0, 1)", "q": "N(1, 2^2)"}, 0, [
        Metric("kl_closed_form", 0.4431, unit="nats", extra={"p": "N(0,1)", "q": "N(1,4)"}),
        Metric("kl_monte_carlo", 0.4452, unit="nats", extra={"std_error": 0.0011, "draws": 100000}),
        Metric("kl_forward", 0.4431, unit="nats", extra={"p": "N(0,1)", "q": "N(1,4)"}),
        Metric("kl_reverse", 1.3069, unit="nats", extra={"p": "N(1,4)", "q": "N(0,1)"}),
    ])


def check_png(data: bytes) -> tuple[int, int]:
    """Validate a PNG without an image library: signature, chunk CRCs, IHDR, and the IDAT stream's size."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc, f"bad CRC in chunk {kind!r}"
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
        if kind == b"IEND":
            break
    assert ihdr is not None and idat
    width, height, depth, color = ihdr[:4]
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color]
    raw = zlib.decompress(idat)
    assert len(raw) == height * (1 + (width * channels * depth + 7) // 8)  # one filter byte per row
    return width, height
