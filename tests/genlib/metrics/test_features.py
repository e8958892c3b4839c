"""The feature extractor: accuracy bar on digits, trained once and reused from the cache, safe to load."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from genlib.data import DataConfig, Dataset, load_dataset
from genlib.metrics import features
from genlib.metrics.features import (ExtractorConfig, ExtractorError, cache_dir, clear_memo, data_hash, extractor_key,
                                     get_extractor)

pytestmark = pytest.mark.usefixtures("single_thread")

REPO = Path(__file__).resolve().parents[3]
MNIST = Path(os.environ.get("GENBENCH_MNIST") or REPO.parent / "shared" / "data" / "mnist")


def _no_training(*args, **kwargs):
    raise AssertionError("the extractor was retrained instead of loaded from the cache")


def test_digits_extractor_reaches_its_accuracy_bar_and_is_reused_from_cache(extractor_cache, monkeypatch):
    ds = load_dataset("digits")
    first = get_extractor(ds, progress=False)
    assert first.accuracy >= 0.95
    assert cache_dir() == extractor_cache / "extractors"
    assert first.path is not None and first.path.parent == cache_dir() and first.path.is_file()
    stamp = first.path.stat().st_mtime_ns

    clear_memo()  # force the disk path, and make sure no training happens on it
    monkeypatch.setattr(features, "train_extractor", _no_training)
    second = get_extractor(ds, progress=False)
    assert second.from_cache and second.id == first.id and second.accuracy == first.accuracy
    assert first.path.stat().st_mtime_ns == stamp
    x = ds.x_test[:64]
    np.testing.assert_allclose(second.features_and_logits(x)[0], first.features_and_logits(x)[0], rtol=1e-6)


def test_features_are_standardised_on_the_training_split():
    ds = load_dataset("digits")
    f, logits = get_extractor(ds, progress=False).features_and_logits(ds.x_train)
    np.testing.assert_allclose(f.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(f.std(0, ddof=1), 1.0, rtol=1e-3)
    assert (logits.argmax(1) == ds.y_train).mean() > 0.97


def test_cache_key_depends_on_data_and_config():
    ds = load_dataset("digits")
    other = load_dataset(DataConfig(name="digits", seed=1))  # another split of the same images
    assert data_hash(ds) != data_hash(other)
    assert extractor_key(ds, ExtractorConfig()) != extractor_key(other, ExtractorConfig())
    assert extractor_key(ds, ExtractorConfig()) != extractor_key(ds, ExtractorConfig(steps=1000))
    assert extractor_key(ds, ExtractorConfig()) == extractor_key(ds, ExtractorConfig(min_accuracy=0.5))
    assert extractor_key(ds, ExtractorConfig()) == extractor_key(load_dataset("digits"), ExtractorConfig())


def _tiny_images(labels: bool = True) -> Dataset:
    rng = np.random.default_rng(0)
    y = np.arange(200) % 2
    x = rng.random((200, 1, 8, 8)).astype(np.float32) * 0.2
    x[y == 1, :, :4] += 0.7  # class 1: bright top half
    return Dataset(name="halves", kind="image", x_train=x[:100], x_test=x[100:],
                   y_train=y[:100] if labels else None, y_test=y[100:] if labels else None)


def test_corrupt_cache_file_is_retrained_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path))
    ds, cfg = _tiny_images(), ExtractorConfig(steps=30)
    ext = get_extractor(ds, cfg, progress=False)
    assert ext.accuracy > 0.9
    ext.path.write_bytes(b"not a torch file")
    clear_memo()
    with pytest.warns(UserWarning, match="ignoring unreadable feature-extractor cache file"):
        again = get_extractor(ds, cfg, progress=False)
    assert not again.from_cache
    clear_memo()
    assert get_extractor(ds, cfg, progress=False).from_cache  # rewritten atomically, loads again
    assert not list(tmp_path.rglob("*.tmp"))


def test_cache_file_loads_with_weights_only(tmp_path, monkeypatch):
    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path))
    ext = get_extractor(_tiny_images(), ExtractorConfig(steps=10), progress=False)
    payload = torch.load(ext.path, weights_only=True)
    assert payload["format"] == "genbench-extractor" and payload["id"] == ext.id
    assert payload["config"]["steps"] == 10 and payload["accuracy"] == ext.accuracy


def test_weak_extractor_warns(tmp_path, monkeypatch):
    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path))
    ds = _tiny_images()
    shuffled = Dataset(name="shuffled", kind="image", x_train=ds.x_train, x_test=ds.x_test, y_train=ds.y_train,
                       y_test=np.random.default_rng(0).permutation(ds.y_test))  # test labels carry no signal
    with pytest.warns(UserWarning, match="reaches only .* held-out accuracy"):
        ext = get_extractor(shuffled, ExtractorConfig(steps=30), progress=False)
    assert ext.accuracy < 0.9


def test_unusable_data_is_a_clear_error():
    with pytest.raises(ExtractorError, match="no class labels"):
        get_extractor(_tiny_images(labels=False), progress=False)
    with pytest.raises(ExtractorError, match="needs image data"):
        get_extractor(load_dataset("moons"), progress=False)
    ext = get_extractor(_tiny_images(), ExtractorConfig(steps=10), progress=False)
    with pytest.raises(ExtractorError, match=r"takes images of shape \(1, 8, 8\)"):
        ext.features_and_logits(np.zeros((2, 1, 28, 28)))


@pytest.mark.parametrize("bad", [{"steps": 0}, {"dropout": 1.0}, {"shift_px": -1}, {"min_accuracy": 2.0}])
def test_extractor_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        ExtractorConfig(**bad)


@pytest.mark.mnist
def test_mnist_idx_extractor_reaches_its_accuracy_bar():
    if not MNIST.is_dir():
        pytest.skip(f"MNIST IDX files not found at {MNIST} (set GENBENCH_MNIST to a directory of IDX files)")
    ds = load_dataset(DataConfig(name=f"idx:{MNIST}", test_fraction=0.2))  # 8,000 train / 2,000 test
    ext = get_extractor(ds, progress=False)
    assert ext.accuracy >= 0.97
    assert ext.feature_dim == 64 and ext.n_classes == 10
