"""Fixtures for the metric tests: an isolated extractor cache and small trained VAEs shared by the files.

Every test here sees GENBENCH_CACHE pointing at one temporary directory for the session, so the digits
feature extractor trains once per run (a few seconds) and never touches the user's cache. The VAEs
train for a few hundred steps: enough for latent statistics, not for good samples.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from genlib.train import load_run_config, train

VAE_STEPS = 300


@pytest.fixture(scope="session", autouse=True)
def extractor_cache(tmp_path_factory) -> Path:
    """GENBENCH_CACHE for the whole session. Session scope, so it is set before any module-scoped
    fixture computes a metric (a function-scoped monkeypatch would come too late for those)."""
    path = tmp_path_factory.mktemp("genbench-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENBENCH_CACHE", str(path))
        yield path


def _vae_config(beta: float, steps: int = VAE_STEPS, **model):
    return load_run_config({
        "name": f"vae_beta{beta:g}", "data": {"name": "digits"},
        "model": {"family": "vae", "latent_dim": 8, "hidden": [128, 64], **model},
        "loss": {"beta": beta},
        "train": {"steps": steps, "batch_size": 64, "lr": 2e-3, "device": "cpu", "log_every": 100}})


@pytest.fixture(scope="session")
def vae_run(tmp_path_factory):
    """A digits VAE (beta = 1) with its run directory."""
    return train(_vae_config(1.0), tmp_path_factory.mktemp("vae-run"), progress=False)


@pytest.fixture(scope="session")
def collapsed_vae():
    """A digits VAE trained with a huge KL weight: the posterior collapses onto the prior."""
    return train(_vae_config(500.0), progress=False).model
