"""Shared fixtures: tiny configs, a seeded generator, a temporary results store.

Tests under tests/benchmarks/ are marked `bench` automatically; the default run deselects
`slow`, `mnist`, `gpu`, `ray`, `bench` and `browser` (see tox.ini for the environments that run them).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genlib.store import ResultsStore

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = REPO.parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="session", autouse=True)
def node_cache(tmp_path_factory):
    """Each test session gets its own node cache (unpacked checkpoints, export graphs), inherited by spawned grid
    workers, so what one session exported never answers another's "exported once" checks."""
    import os

    path = tmp_path_factory.mktemp("node-cache")
    old = os.environ.get("GENBENCH_NODE_CACHE")
    os.environ["GENBENCH_NODE_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("GENBENCH_NODE_CACHE", None)
    else:
        os.environ["GENBENCH_NODE_CACHE"] = old


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "benchmarks" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.bench)


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def store(tmp_path) -> ResultsStore:
    with ResultsStore(tmp_path / "results.db") as s:
        yield s


@pytest.fixture
def tiny_train() -> dict:
    """Overrides that make any run train in well under a second (for contract tests, not learning tests)."""
    return {"train.steps": 20, "train.batch_size": 32, "train.log_every": 5, "train.device": "cpu"}


@pytest.fixture
def single_thread():
    """Run a test with one intra-op torch thread, restoring the previous count afterwards.

    Tests on small tensors are dominated by thread hand-offs; on a shared 2-core machine two intra-op
    threads can be ten times slower than one. Use with `pytestmark = pytest.mark.usefixtures("single_thread")`.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_timed_grid():
    """The builder of a tiny timed grid (`_tiny_timed_grid`)."""
    return _tiny_timed_grid


def _tiny_timed_grid(study: str, eval_section: dict, axes: dict, timing_where: dict, *, seeds=(0,), batches=(4,),
                     **top) -> dict:
    """A 2-D toy DDPM grid (moons, T = 10, 40 training steps) whose cells matching `timing_where` are timed with
    `ort_graph` (plus any `timing` keys in top) on the CPU; for end-to-end report and timing tests."""
    timing = {"where": timing_where, "backends": ["ort_graph"], "providers": ["cpu"], "batches": list(batches),
              "threads": [1], "target_s": 0.0, "min_rounds": 2, "warmup_rounds": 0, **top.pop("timing", {})}
    return {"study": study,
            "base": {"data": {"name": "moons", "n_train": 1000, "n_test": 500},
                     "model": {"family": "ddpm", "hidden": [16, 16], "time_dim": 8, "noise": {"T": 10, "scaled": False}},
                     "train": {"steps": 40, "batch_size": 64, "log_every": 10, "device": "cpu"}},
            "eval": eval_section, "axes": axes, "seeds": list(seeds), "floor": False, "timing": timing, **top}
