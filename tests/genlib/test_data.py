"""Tests for genlib.data: digits split, FFJORD toys and the 8gaussians density, IDX and npz loading."""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from genlib import data
from genlib.config import ConfigError, from_dict, to_dict
from genlib.data import (DATASETS, DataConfig, DataError, Dataset, describe_datasets, from_symmetric,
                         load_dataset, to_symmetric)
from genlib.registry import UnknownNameError

TOYS = [name for name in DATASETS.names() if name != "digits"]
SMALL = {"n_train": 2000, "n_test": 500}


# ---------------------------------------------------------------- config

@pytest.mark.parametrize("bad", [{"n_train": 0}, {"n_test": -1}, {"test_fraction": 0.0},
                                 {"test_fraction": 1.0}, {"seed": -1}, {"name": ""}])
def test_data_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        DataConfig(**bad)
    with pytest.raises(ConfigError):
        from_dict(DataConfig, bad)


# ---------------------------------------------------------------- digits

def test_digits_shapes_range_and_labels():
    ds = load_dataset("digits")
    assert ds.kind == "image" and ds.sample_shape == (1, 8, 8) and ds.dim == 64
    assert (len(ds.x_train), len(ds.x_test)) == (898, 899)
    for x in (ds.x_train, ds.x_test):
        assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
    assert ds.y_train.dtype == np.int64 and set(np.unique(ds.y_test)) == set(range(10))


def test_digits_split_is_stratified():
    ds = load_dataset(DataConfig(name="digits", test_fraction=0.3))
    train, test = np.bincount(ds.y_train, minlength=10), np.bincount(ds.y_test, minlength=10)
    assert np.all(np.abs(test - 0.3 * (train + test)) <= 1)


def test_digits_split_is_deterministic_per_seed():
    first = DATASETS.get("digits")(DataConfig(seed=3))  # bypass the cache: a real second load
    again = DATASETS.get("digits")(DataConfig(seed=3))
    other = DATASETS.get("digits")(DataConfig(seed=4))
    np.testing.assert_array_equal(first.x_train, again.x_train)
    np.testing.assert_array_equal(first.y_test, again.y_test)
    assert first.x_train.shape == other.x_train.shape and not np.array_equal(first.x_train, other.x_train)


def test_cached_arrays_are_read_only_and_shared():
    ds = load_dataset("digits")
    assert load_dataset(DataConfig(name="digits")) is ds
    with pytest.raises(ValueError, match="read-only"):
        ds.x_train[0, 0, 0, 0] = 0.5


def test_image_heldout_is_a_seeded_subset_of_test():
    ds = load_dataset("digits")
    h = ds.heldout(100, seed=1)
    assert h.shape == (100, 1, 8, 8)
    np.testing.assert_array_equal(h, ds.heldout(100, seed=1))
    flat_test = {row.tobytes() for row in ds.x_test.reshape(len(ds.x_test), -1)}
    assert all(row.tobytes() in flat_test for row in h.reshape(100, -1))
    assert ds.log_density(h) is None
    with pytest.raises(DataError, match="899"):
        ds.heldout(900, seed=0)


# ---------------------------------------------------------------- toys

@pytest.mark.parametrize("name", TOYS)
def test_toy_contract(name):
    cfg = DataConfig(name=name, seed=5, **SMALL)
    ds = DATASETS.get(name)(cfg)
    assert ds.kind == "toy" and ds.sample_shape == (2,) and ds.dim == 2
    assert ds.x_train.shape == (2000, 2) and ds.x_test.shape == (500, 2)
    assert ds.x_train.dtype == np.float32 and np.isfinite(ds.x_train).all()
    np.testing.assert_array_equal(ds.x_train, DATASETS.get(name)(cfg).x_train)
    assert not np.array_equal(ds.x_train, DATASETS.get(name)(DataConfig(name=name, seed=6, **SMALL)).x_train)
    h1 = ds.heldout(500, seed=1)
    assert h1.shape == (500, 2) and h1.dtype == np.float32 and np.isfinite(h1).all()
    np.testing.assert_array_equal(h1, ds.heldout(500, seed=1))
    assert not np.array_equal(h1, ds.heldout(500, seed=2))
    assert not np.array_equal(h1, ds.x_train[:500]) and not np.array_equal(h1, ds.x_test)
    # Held-out draws come from the same distribution as training: a loose moment check.
    np.testing.assert_allclose(h1.mean(0), ds.x_train.mean(0), atol=0.4)
    np.testing.assert_allclose(h1.std(0), ds.x_train.std(0), rtol=0.15)


def test_log_density_known_only_for_8gaussians():
    for name in TOYS:
        ds = load_dataset(DataConfig(name=name, **SMALL))
        assert (ds.log_density(ds.x_test) is None) == (name != "8gaussians")


def test_8gaussians_log_density_integrates_to_one_and_peaks_at_centres():
    ds = load_dataset(DataConfig(name="8gaussians", **SMALL))
    step = 0.02
    axis = np.arange(-6.0, 6.0, step) + step / 2
    grid = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)
    logp = ds.log_density(grid)
    assert logp.shape == (len(grid),)
    assert abs(np.exp(logp).sum() * step**2 - 1.0) < 1e-2
    mu = data.EIGHT_GAUSSIANS_MU
    assert np.min(np.linalg.norm(mu - grid[np.argmax(logp)], axis=1)) < 2 * step
    at_centres = ds.log_density(mu)
    np.testing.assert_allclose(at_centres, at_centres[0])  # symmetric mixture: equal peaks
    between = (mu[0] + mu[4]) / 2  # midway between two neighbouring centres, ~3 sigma from each
    assert at_centres[0] > ds.log_density(np.stack([between, np.zeros(2)])).max() + 3


def test_8gaussians_samples_match_mixture_moments():
    x = load_dataset("8gaussians").x_train.astype(np.float64)  # 20,000 samples
    mu, sigma = data.EIGHT_GAUSSIANS_MU, data.EIGHT_GAUSSIANS_SIGMA
    cov = sigma**2 * np.eye(2) + mu.T @ mu / len(mu) - np.outer(mu.mean(0), mu.mean(0))  # law of total cov.
    np.testing.assert_allclose(x.mean(0), mu.mean(0), atol=0.06)  # ~4 standard errors
    np.testing.assert_allclose(np.cov(x.T), cov, atol=0.15)  # ~3.5% of the 4.13 variance
    # Mean log-likelihood of true samples ~ minus the entropy, log 8 + Gaussian entropy (the
    # components are 6 sigma apart, so the overlap is negligible): about -2.84 nats.
    entropy_nats = np.log(8) + 1 + np.log(2 * np.pi * sigma**2)
    assert abs(load_dataset("8gaussians").log_density(x).mean() + entropy_nats) < 0.03


# ---------------------------------------------------------------- IDX files

def _idx_bytes(magic: int, array: np.ndarray) -> bytes:
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


def _write_idx(path: Path, magic: int, array: np.ndarray, compress: bool) -> Path:
    raw = _idx_bytes(magic, array)
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def _fake_mnist(n: int, seed: int = 0, size: tuple[int, int] = (5, 4)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, *size), dtype=np.uint8)
    images[:, 0, 0] = np.arange(n)  # a per-image id, to undo the split's shuffle
    return images, np.arange(n) % 4


@pytest.mark.parametrize("compress, suffix", [(False, ""), (True, ".gz"), (True, ""), (False, ".gz")])
def test_idx_train_and_t10k_round_trip(tmp_path, compress, suffix):
    """gzip is detected by its magic bytes, so a misleading suffix is harmless."""
    train_x, train_y = _fake_mnist(30, seed=1)
    test_x, test_y = _fake_mnist(12, seed=2)
    for prefix, x, y in (("train", train_x, train_y), ("t10k", test_x, test_y)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", 0x803, x, compress)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", 0x801, y, compress)
    ds = load_dataset(f"idx:{tmp_path}")
    assert ds.kind == "image" and ds.sample_shape == (1, 5, 4)
    np.testing.assert_array_equal(ds.x_train, train_x[:, None].astype(np.float32) / 255.0)
    np.testing.assert_array_equal(ds.x_test, test_x[:, None].astype(np.float32) / 255.0)
    np.testing.assert_array_equal(ds.y_train, train_y)
    np.testing.assert_array_equal(ds.y_test, test_y)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_single_file_is_split_stratified(tmp_path, compress):
    images, labels = _fake_mnist(40)
    path = _write_idx(tmp_path / "t10k-images-idx3-ubyte", 0x803, images, compress)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 0x801, labels, compress=True)
    for name in (f"idx:{tmp_path}", f"idx:{path}"):
        ds = load_dataset(DataConfig(name=name, test_fraction=0.25))
        assert (len(ds.x_train), len(ds.x_test)) == (30, 10)
        assert set(np.bincount(ds.y_test)) <= {2, 3}  # 10 per class, a quarter each to test
        x = np.concatenate([ds.x_train, ds.x_test])
        y = np.concatenate([ds.y_train, ds.y_test])
        order = np.argsort(np.round(x[:, 0, 0, 0] * 255).astype(int))
        np.testing.assert_array_equal(x[order], images[:, None].astype(np.float32) / 255.0)
        np.testing.assert_array_equal(y[order], labels)


def test_idx_without_labels(tmp_path):
    images, _ = _fake_mnist(10)
    path = _write_idx(tmp_path / "images-idx3-ubyte", 0x803, images, compress=False)
    ds = load_dataset(f"idx:{path}")
    assert ds.y_train is None and ds.y_test is None and len(ds.x_train) + len(ds.x_test) == 10


def test_idx_wrong_magic_names_file_and_magic(tmp_path):
    images, _ = _fake_mnist(10)
    path = _write_idx(tmp_path / "bad-images-idx3-ubyte", 0x801, images, compress=True)
    with pytest.raises(DataError, match="magic") as info:
        load_dataset(f"idx:{path}")
    assert "bad-images-idx3-ubyte" in str(info.value) and "0x00000803" in str(info.value)


def test_idx_count_mismatch_names_both_counts(tmp_path):
    images, labels = _fake_mnist(20)
    path = _write_idx(tmp_path / "train-images-idx3-ubyte", 0x803, images, compress=False)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", 0x801, labels[:19], compress=False)
    with pytest.raises(DataError) as info:
        load_dataset(f"idx:{path}")
    message = str(info.value)
    assert "20" in message and "19" in message
    assert "train-images-idx3-ubyte" in message and "train-labels-idx1-ubyte" in message


def test_idx_missing_path_is_named(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="nowhere"):
        load_dataset(f"idx:{missing}")


@pytest.mark.parametrize("compress", [False, True])
def test_idx_truncated_file(tmp_path, compress):
    images, _ = _fake_mnist(10)
    raw = _idx_bytes(0x803, images)[:-7]
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(gzip.compress(raw) if compress else raw)
    with pytest.raises(DataError, match="truncated") as info:
        load_dataset(f"idx:{path}")
    assert "200" in str(info.value) and "193" in str(info.value)  # expected vs found data bytes
    path.write_bytes(gzip.compress(_idx_bytes(0x803, images))[:-10])  # a cut-off gzip stream
    with pytest.raises(DataError, match="gzip"):
        load_dataset(f"idx:{path}")


def test_idx_ambiguous_directory_lists_files(tmp_path):
    for prefix in ("a", "b", "c"):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", 0x803, _fake_mnist(4)[0], compress=False)
    with pytest.raises(DataError, match="a-images-idx3-ubyte, b-images-idx3-ubyte, c-images"):
        load_dataset(f"idx:{tmp_path}")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="none"):
        load_dataset(f"idx:{empty}")


# ---------------------------------------------------------------- npz files

def test_npz_single_array_round_trip(tmp_path):
    images, labels = _fake_mnist(40)
    path = tmp_path / "data.npz"
    np.savez(path, x=images, y=labels)
    ds = load_dataset(DataConfig(name=f"npz:{path}", test_fraction=0.25))
    assert ds.kind == "image" and ds.sample_shape == (1, 5, 4) and (len(ds.x_train), len(ds.x_test)) == (30, 10)
    x = np.concatenate([ds.x_train, ds.x_test])
    order = np.argsort(np.round(x[:, 0, 0, 0] * 255).astype(int))
    np.testing.assert_array_equal(x[order], images[:, None] / np.float32(255))
    np.testing.assert_array_equal(np.concatenate([ds.y_train, ds.y_test])[order], labels)


def test_npz_pre_split_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.random((8, 3, 4, 4), dtype=np.float32), "x_test": rng.random((5, 3, 4, 4)),
              "y_train": np.arange(8), "y_test": np.arange(5)}
    path = tmp_path / "split.npz"
    np.savez_compressed(path, **arrays)
    ds = load_dataset(f"npz:{path}")
    assert ds.kind == "image" and ds.sample_shape == (3, 4, 4)
    np.testing.assert_array_equal(ds.x_train, arrays["x_train"])
    np.testing.assert_array_equal(ds.x_test, arrays["x_test"].astype(np.float32))
    np.testing.assert_array_equal(ds.y_test, arrays["y_test"])


def test_npz_points_are_a_toy_without_density(tmp_path):
    path = tmp_path / "points.npz"
    np.savez(path, x_train=np.random.default_rng(0).normal(size=(50, 2)), x_test=np.zeros((10, 2)))
    ds = load_dataset(f"npz:{path}")
    assert ds.kind == "toy" and ds.sample_shape == (2,) and ds.log_density(ds.x_test) is None
    assert ds.heldout(4, seed=0).shape == (4, 2)


def test_npz_missing_key_names_file_and_keys(tmp_path):
    path = tmp_path / "wrong.npz"
    np.savez(path, images=np.zeros((3, 4, 4)), x_train=np.zeros((3, 4, 4)))
    with pytest.raises(DataError) as info:
        load_dataset(f"npz:{path}")
    message = str(info.value)
    assert "wrong.npz" in message and "['images', 'x_train']" in message and "'x_test'" in message


@pytest.mark.parametrize("x, expected", [(np.zeros((5, 7)), "shape"), (np.full((5, 4, 4), 2.0), r"\[0, 1\]"),
                                         (np.zeros((5, 4, 4), dtype=np.int64), "int64")])
def test_npz_bad_arrays_are_explained(tmp_path, x, expected):
    path = tmp_path / "bad.npz"
    np.savez(path, x=x)
    with pytest.raises(DataError, match=expected):
        load_dataset(f"npz:{path}")


def test_npz_never_unpickles(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError, match="objects.npz"):
        load_dataset(f"npz:{path}")


def test_npz_decompression_bomb_is_refused_before_reading(tmp_path, monkeypatch):
    import genlib.data as data_module

    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, x=np.zeros((2000, 1, 64, 64), dtype=np.float32))  # 33 MB of zeros in ~30 kB
    assert path.stat().st_size < 200_000
    monkeypatch.setattr(data_module, "NPZ_MAX_BYTES", 8 * 2**20)
    reads = []
    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", lambda self, key: reads.append(key))
    with pytest.raises(DataError, match=r"^npz file '.*bomb.npz' decompresses to 0.03 GiB \(0.0 MiB compressed\), "
                                        r"over the 0.0078125 GiB limit for data; refused before reading$"):
        load_dataset(f"npz:{path}")
    assert reads == []  # no member was read


def test_idx_gzip_bomb_is_refused(tmp_path, monkeypatch):
    import genlib.data as data_module

    path = _write_idx(tmp_path / "images-idx3-ubyte.gz", 0x803, np.zeros((4000, 32, 32)), compress=True)
    monkeypatch.setattr(data_module, "NPZ_MAX_BYTES", 2**20)
    with pytest.raises(DataError, match="decompresses to more than the .* limit for data"):
        load_dataset(f"idx:{path}")


@pytest.mark.parametrize("shape", [(100, 0, 8), (0, 8, 8), (100, 8, 0)])
def test_zero_size_dimensions_are_refused(tmp_path, shape):
    path = tmp_path / "empty.npz"
    np.savez(path, x=np.zeros(shape, dtype=np.float32))
    with pytest.raises(DataError, match=rf"'x' in npz file '.*empty.npz' has shape \({shape[0]}, 1, "
                                        rf"{shape[1]}, {shape[2]}\); expected at least one sample"):
        load_dataset(f"npz:{path}")
    idx = tmp_path / "images-idx3-ubyte"
    idx.write_bytes(_idx_bytes(0x803, np.zeros(shape, dtype=np.uint8)))
    with pytest.raises(DataError, match=rf"has header shape \({', '.join(map(str, shape))}\); expected every "
                                        "dimension >= 1"):
        load_dataset(f"idx:{idx}")


def test_npz_messages_say_what_is_wrong(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("x,y\n1,2\n")
    with pytest.raises(DataError, match=r"is not an .npz archive \(a zip file starting 'PK'; it starts with b'x,y"):
        load_dataset(f"npz:{text}")
    nan = tmp_path / "nan.npz"
    x = np.zeros((10, 2), dtype=np.float32)
    x[3, 1] = np.nan
    np.savez(nan, x=x)
    with pytest.raises(DataError, match=r"'x' in npz file '.*nan.npz' holds 1 non-finite value \(NaN or infinity\)"):
        load_dataset(f"npz:{nan}")


def test_fingerprint_follows_content_not_path_or_mtime(tmp_path):
    import os

    from genlib.data import DataConfig, data_fingerprint

    path = tmp_path / "points.npz"
    np.savez(path, x=np.zeros((20, 2)))
    cfg = DataConfig(name=f"npz:{path}").resolved()
    assert cfg.fingerprint.startswith("sha256:") and cfg.fingerprint == data_fingerprint(cfg.name)
    os.utime(path, (1, 1))  # touched, same bytes: same fingerprint, so results are reused
    assert data_fingerprint(cfg.name) == cfg.fingerprint
    assert len(load_dataset(cfg).x_train) == 10
    np.savez(path, x=np.ones((20, 2)))
    assert data_fingerprint(cfg.name) != cfg.fingerprint
    with pytest.raises(DataError, match=r"data 'npz:.*points.npz' changed since this run was configured"):
        load_dataset(cfg)
    assert DataConfig(name="digits").resolved() == DataConfig(name="digits")
    assert "fingerprint" not in to_dict(DataConfig(name="digits"))  # registered data: keys unchanged


def test_cache_reloads_a_rewritten_file(tmp_path):
    path = tmp_path / "points.npz"
    np.savez(path, x=np.zeros((20, 2)))
    assert len(load_dataset(f"npz:{path}").x_train) == 10
    np.savez(path, x=np.ones((40, 2)))
    ds = load_dataset(f"npz:{path}")
    assert len(ds.x_train) == 20 and ds.x_train.min() == 1.0


# ---------------------------------------------------------------- names, listing, ranges

def test_unknown_name_suggests():
    with pytest.raises(UnknownNameError, match="did you mean 'digits'"):
        load_dataset("digts")
    with pytest.raises(DataError, match="needs a path"):
        load_dataset("npz:")


def test_describe_datasets_lists_every_name_and_file_forms():
    rows = {row["name"]: row for row in describe_datasets()}
    assert set(DATASETS.names()) | {"idx:PATH", "npz:PATH"} == set(rows)
    assert rows["digits"]["sample_shape"] == (1, 8, 8) and rows["digits"]["n_test"] == 899
    assert rows["moons"]["kind"] == "toy" and rows["moons"]["n_train"] == DataConfig().n_train
    assert all(row["description"] for row in rows.values())


def test_symmetric_range_round_trip():
    x = np.linspace(0, 1, 11, dtype=np.float32)
    np.testing.assert_allclose(to_symmetric(x)[[0, -1]], [-1, 1])
    np.testing.assert_allclose(from_symmetric(to_symmetric(x)), x, atol=1e-7)
    t = torch.from_numpy(x)
    assert torch.allclose(from_symmetric(to_symmetric(t)), t) and to_symmetric(t).min() == -1


def test_dataset_validates_shapes():
    with pytest.raises(ValueError, match="y_train"):
        Dataset(name="t", kind="toy", x_train=np.zeros((3, 2)), x_test=np.zeros((2, 2)), y_train=np.zeros(2))
    with pytest.raises(ValueError, match="kind"):
        Dataset(name="t", kind="audio", x_train=np.zeros((3, 2)), x_test=np.zeros((2, 2)))


# ---------------------------------------------------------------- real MNIST (opt-in data)

def _mnist_dir() -> Path:
    return Path(os.environ.get("GENBENCH_MNIST") or Path(__file__).resolve().parents[3] / "shared/data/mnist")


@pytest.mark.mnist
def test_mnist_t10k_loads_and_splits():
    root = _mnist_dir()
    if not any(root.glob("*images-idx3-ubyte*")):
        pytest.skip(f"MNIST not found at {root} (set GENBENCH_MNIST to a directory of IDX files)")
    ds = load_dataset(DataConfig(name=f"idx:{root}", test_fraction=0.2))
    assert len(ds.x_train) + len(ds.x_test) == 10_000 and len(ds.x_test) == 2_000
    assert ds.sample_shape == (1, 28, 28) and 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    assert set(np.unique(ds.y_train)) == set(range(10)) == set(np.unique(ds.y_test))
