"""Cheap evaluations and tiny grids shared by the ablation tests (importable by spawned workers).

`ToyEvaluation` is real but small: n samples from the checkpoint scored by sliced Wasserstein distance
against held-out data. It also fails on purpose for marked cells: eval.n == DIE_N kills the worker
process, eval.n == RAISE_N raises, so failure handling is tested without slow models.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ablations.cells import Evaluation
from genlib.store import Metric

DIE_N = 13  # a cell with eval.n == 13 kills its worker process
RAISE_N = 17  # a cell with eval.n == 17 raises
TRACE_ENV = "GENBENCH_TEST_TRACE"  # file that every executed evaluation appends its cell key to


def cell_key(out_dir) -> str:
    """The cell key from the driver's temporary artifact directory '.tmp-<key>-<pid>-<random>'."""
    return Path(out_dir).name.split("-")[1]


def _trace(line: str) -> None:
    path = os.environ.get(TRACE_ENV)
    if path:
        with open(path, "a") as fh:
            fh.write(line + "\n")


class ToyEvaluation(Evaluation):
    def evaluate_run(self, run_dir, eval_cfg, seed, out_dir):
        from genlib.data import load_dataset
        from genlib.metrics import sliced_wasserstein
        from genlib.metrics.toy import energy_distance
        from genlib.train import generate, load_run
        from ablations.cells import _sample_config

        n = int(eval_cfg["n"])
        _trace(f"eval {cell_key(out_dir)}")
        if n == DIE_N:
            os._exit(3)
        if n == RAISE_N:
            raise ValueError("this cell raises on purpose")
        loaded = load_run(run_dir)
        samples = generate(loaded.model, n, _sample_config(eval_cfg), seed=seed).numpy()
        np.save(out_dir / "samples.npy", samples[:8], allow_pickle=False)
        ref = load_dataset(loaded.config.data).heldout(n, seed)
        sw = sliced_wasserstein(samples, ref, n_projections=32, seed=seed)
        return [Metric("swd", sw, unit="data units", higher_is_better=False, extra={"n": n}),
                Metric("energy", energy_distance(samples, ref), unit="data units", higher_is_better=False,
                       extra={"n": n})]

    def evaluate_floor(self, data_cfg, names, n, seed):
        from genlib.config import from_dict
        from genlib.data import DataConfig, load_dataset
        from genlib.metrics import sliced_wasserstein

        _trace(f"floor {seed}")
        ds = load_dataset(from_dict(DataConfig, data_cfg, "data"))
        x = ds.x_train[np.random.default_rng(seed).choice(len(ds.x_train), n, replace=False)]
        return [Metric("swd", sliced_wasserstein(x, ds.heldout(n, seed), n_projections=32, seed=seed),
                       unit="data units", higher_is_better=False, extra={"n": n})]


class TrivialEvaluation(Evaluation):
    """Does nothing: what remains of an evaluation cell's wall time is the executor's and driver's overhead."""

    def evaluate_run(self, run_dir, eval_cfg, seed, out_dir):
        return [Metric("swd", 1.0, unit="data units", higher_is_better=False)]

    def evaluate_floor(self, data_cfg, names, n, seed):
        return [Metric("swd", 1.0, unit="data units", higher_is_better=False)]


def tiny_grid(**changes) -> dict:
    """A 2-D toy DDPM grid that trains in a fraction of a second per cell: 4 trainings, 12 evaluations."""
    grid = {
        "study": "tiny",
        "base": {"data": {"name": "moons", "n_train": 1000, "n_test": 500},
                 "model": {"family": "ddpm", "hidden": [16, 16], "time_dim": 8, "noise": {"T": 10, "scaled": False}},
                 "train": {"steps": 30, "batch_size": 64, "log_every": 10, "device": "cpu"}},
        "eval": {"n": 64},
        "axes": {"train.lr": [0.001, 0.002], "eval.steps": [2, 5, None]},
        "seeds": [0, 1],
        "profiles": {"quick": {}, "full": {"seeds": [0, 1, 2]}},
    }
    grid.update(changes)
    return grid


class DrawEvaluation(Evaluation):
    """Sliced Wasserstein distance of n samples, drawn through the exported graph when the cell gives `draw`."""

    def evaluate_run(self, run_dir, eval_cfg, seed, out_dir, draw=None):
        from ablations.cells import _sample_config
        from genlib.data import load_dataset
        from genlib.metrics import sliced_wasserstein
        from genlib.train import generate, load_run

        n = int(eval_cfg["n"])
        loaded = load_run(run_dir)
        samples = draw(n, seed) if draw is not None else generate(loaded.model, n, _sample_config(eval_cfg),
                                                                  seed=seed).numpy()
        ref = load_dataset(loaded.config.data).heldout(n, seed)
        return [Metric("swd", sliced_wasserstein(samples, ref, n_projections=32, seed=seed), unit="data units",
                       higher_is_better=False)]

    def evaluate_floor(self, data_cfg, names, n, seed):
        raise AssertionError("the timed grid has no floor")
