"""Fixtures for bench tests: tiny trained runs (each trained once per session) and cached exports."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from genlib.train import load_run, load_run_config, train

from bench.export import export_part
from bench.parts import ExportConfig

TINY_RUNS = {
    "ddpm": {"model": {"family": "ddpm", "hidden": [32, 32], "time_dim": 16, "noise": {"T": 100}},
             "data": {"name": "8gaussians", "n_train": 2000, "n_test": 500}},
    "chain": {"model": {"family": "denoiser_chain", "hidden": [32, 32], "time_dim": 16,
                        "noise": {"T": 8, "scaled": False}},
              "data": {"name": "8gaussians", "n_train": 2000, "n_test": 500}},
    "chain_eps": {"model": {"family": "denoiser_chain", "parameterization": "step_eps", "hidden": [32, 32],
                            "time_dim": 16, "noise": {"T": 8, "scaled": False}},
                  "data": {"name": "8gaussians", "n_train": 2000, "n_test": 500}},
    "vae": {"model": {"family": "vae", "hidden": [32, 16], "latent_dim": 4}, "data": {"name": "digits"}},
    "vae_full": {"model": {"family": "vae", "hidden": [32, 16], "latent_dim": 4, "covariance": "full"},
                 "data": {"name": "digits"}},
    "ae": {"model": {"family": "ae", "hidden": [32, 16], "latent_dim": 4}, "data": {"name": "digits"}},
    "vae_gauss": {"model": {"family": "vae", "hidden": [32, 16], "latent_dim": 4, "likelihood": "gaussian"},
                  "data": {"name": "digits"}},
    "unet": {"model": {"family": "ddpm", "arch": "unet", "channels": 8, "time_dim": 16, "noise": {"T": 50}},
             "data": {"name": "digits"}},
}
PARITY_BATCHES = (2, 9)  # two sizes, neither the export's example batch (3)


@pytest.fixture(scope="session")
def run_dirs(tmp_path_factory):
    """name -> run directory, trained on first use (30 steps: these test plumbing, not quality)."""
    root = tmp_path_factory.mktemp("bench_runs")
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            spec = {**TINY_RUNS[name], "train": {"steps": 30, "batch_size": 64, "log_every": 10, "device": "cpu"}}
            train(load_run_config(spec), root / name, progress=False)
            made[name] = root / name
        return made[name]

    return get


@pytest.fixture(scope="session")
def runs(run_dirs):
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            cache[name] = load_run(run_dirs(name), "cpu")
        return cache[name]

    return get


@pytest.fixture(scope="session")
def exported(runs, tmp_path_factory):
    """(run name, ExportConfig) -> ExportResult, exported once per session."""
    root = tmp_path_factory.mktemp("bench_exports")
    cache: dict = {}

    def get(name: str, cfg: ExportConfig):
        cfg = replace(cfg, parity_batches=PARITY_BATCHES) if cfg.parity_batches == ExportConfig().parity_batches else cfg
        key = (name, cfg)
        if key not in cache:
            path = root / f"{name}-{len(cache)}.onnx"
            cache[key] = export_part(runs(name), cfg, path)
        return cache[key]

    return get
