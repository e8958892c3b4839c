"""Metric throughput (pytest-benchmark; `tox -e bench`): every image sample metric at n = 2,000, features included.

One call of `genlib.metrics.evaluate` for fd, kid, precision, recall, density, coverage, class_entropy and
sharpness: feature extraction of samples and reference with an already-trained extractor, then every
distance. MNIST (2,000 test images of 28x28, 8,000 to train the extractor) is the headline figure; digits
(899 test images of 8x8) runs anywhere. The extractor cache is a temporary directory.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from genlib.data import DataConfig, Dataset, load_dataset
from genlib.metrics import default_metrics, evaluate, get_extractor

REPO = Path(__file__).resolve().parents[2]
MNIST = Path(os.environ.get("GENBENCH_MNIST") or REPO.parent / "shared" / "data" / "mnist")
NAMES = default_metrics(None, "image")


@pytest.fixture(scope="module", autouse=True)
def temporary_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENBENCH_CACHE", str(tmp_path_factory.mktemp("genbench-cache")))
        yield


def _stand_in_samples(ds: Dataset, n: int) -> np.ndarray:
    """Training images with pixel noise: a sample set that is close to, but not, the data."""
    x = ds.x_train[np.random.default_rng(0).choice(len(ds.x_train), size=n, replace=False)]
    return np.clip(x + 0.05 * np.random.default_rng(1).standard_normal(x.shape), 0, 1).astype(np.float32)


def _bench(benchmark, ds: Dataset, n: int, threads: int) -> None:
    get_extractor(ds, progress=False)  # trained (and cached) outside the timing
    samples = _stand_in_samples(ds, min(n, len(ds.x_train)))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        evaluate(NAMES, dataset=ds, samples=samples, n=n)  # burn-in
        metrics = benchmark.pedantic(evaluate, args=(NAMES,), kwargs={"dataset": ds, "samples": samples, "n": n},
                                     rounds=5, iterations=1)
    finally:
        torch.set_num_threads(before)
    assert [m.name for m in metrics] == NAMES and metrics[0].extra["n_reference"] == n
    benchmark.extra_info.update(n=n, threads=threads, metrics=",".join(NAMES), dataset=ds.name,
                                median_s=benchmark.stats.stats.median if benchmark.stats else None)


@pytest.mark.mnist
@pytest.mark.parametrize("threads", [1, 2])
def test_image_sample_metrics_mnist_n2000(benchmark, threads):
    if not MNIST.is_dir():
        pytest.skip(f"MNIST IDX files not found at {MNIST} (set GENBENCH_MNIST to a directory of IDX files)")
    ds = load_dataset(DataConfig(name=f"idx:{MNIST}", test_fraction=0.2))  # 8,000 train / 2,000 test
    _bench(benchmark, ds, 2000, threads)


@pytest.mark.parametrize("threads", [1, 2])
def test_image_sample_metrics_digits_full_test_split(benchmark, threads):
    ds = load_dataset("digits")
    _bench(benchmark, ds, len(ds.x_test), threads)
