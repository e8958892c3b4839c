"""Fixtures of the genlib command tests: a tiny trained VAE run directory, shared by the CLI test modules."""
from __future__ import annotations

import pytest

# Overrides that make a shipped example config train in about a second.
TINY = ["--set", "train.steps=30", "--set", "train.log_every=10", "--set", "train.device=cpu", "--quiet"]


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    from genlib.cli import main

    out = tmp_path_factory.mktemp("runs") / "vae"
    assert main(["train", "vae_digits", "--out", str(out), *TINY]) == 0
    return out
