"""Fixtures for the ablation tests: the helper module on sys.path (spawned workers inherit it)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from grid_helpers import tiny_grid  # noqa: E402


@pytest.fixture
def tiny() -> dict:
    return tiny_grid()
