"""Datasets: sklearn digits, MNIST-format IDX files, .npz arrays and the FFJORD 2-D toys.

Loads data as read-only float32 arrays (images (N, C, H, W) in [0, 1], toys (N, 2)) with a fixed
seeded train/test split, fresh held-out draws for toys and, where closed-form, the true log-density
in nats. Toys follow FFJORD's `inf_train_gen` (Grathwohl et al. 2018, `lib/toy_data.py`). It does
not batch, augment or move data to a device, and never unpickles (np.load with allow_pickle=False).
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import io
import math
import os
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from genlib.config import OMIT_DEFAULT
from genlib.registry import Registry, UnknownNameError

KINDS = ("image", "toy")


class DataError(ValueError):
    """Unreadable or malformed data; the message names the file and what was expected."""


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    # A registered name (`genbench datasets`), or "idx:PATH" / "npz:PATH". A PATH is stored absolute (made
    # so against the working directory), so a run's config and run key do not depend on where it started.
    name: str = "digits"
    n_train: int = 20000  # 2-D toys only: training samples drawn
    n_test: int = 5000  # 2-D toys only: test samples drawn (a stream separate from training)
    # Image data without a given split: stratified test fraction. sklearn rounds the test side up,
    # so digits (1,797) at 0.5 gives 898 train / 899 test, and MNIST t10k gives 5,000 / 5,000.
    test_fraction: float = 0.5
    seed: int = 0  # data seed: toy sampling and the train/test split (not the model seed)
    # File-backed data only: what the files held when the run was planned ("sha256:<hex> <bytes> B", from
    # data_fingerprint), so the run key follows the content, not the path; a file replaced at the same path
    # gives new keys and never old results. Filled by `resolved()` (train, grid plans); loading data whose
    # files no longer match it is refused. Empty (and out of the key) for registered datasets.
    fingerprint: str = field(default="", metadata={OMIT_DEFAULT: True})

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("data.name must be a dataset name or idx:PATH / npz:PATH, got ''")
        object.__setattr__(self, "name", absolute_name(self.name))
        if self.fingerprint and _file_form(self.name) is None:
            raise ValueError(f"data.fingerprint applies to idx:PATH / npz:PATH data only, not '{self.name}'")
        if self.n_train <= 0:
            raise ValueError(f"data.n_train must be > 0, got {self.n_train}")
        if self.n_test <= 0:
            raise ValueError(f"data.n_test must be > 0, got {self.n_test}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"data.test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.seed < 0:
            raise ValueError(f"data.seed must be >= 0 (a numpy SeedSequence entropy), got {self.seed}")

    def resolved(self) -> "DataConfig":
        """This config with the current content fingerprint of its files (unchanged for registered data)."""
        current = data_fingerprint(self.name)
        return self if current == self.fingerprint else dataclasses.replace(self, fingerprint=current)


def absolute_name(name: str) -> str:
    """'idx:PATH' / 'npz:PATH' with PATH made absolute (against the working directory, '~' expanded);
    a registered dataset name unchanged."""
    prefix, sep, rest = name.partition(":")
    if sep and rest and prefix in FILE_FORMATS:
        return f"{prefix}:{os.path.abspath(os.path.expanduser(rest))}"
    return name


@dataclass(frozen=True, eq=False)  # eq=False: comparing array fields elementwise is meaningless
class Dataset:
    """A loaded dataset. Arrays are stored read-only (shared through the in-process cache)."""

    name: str
    kind: str  # "image" or "toy"
    x_train: np.ndarray  # float32: images (N, C, H, W) in [0, 1]; toys (N, 2)
    x_test: np.ndarray
    y_train: np.ndarray | None = None  # int64 class labels when known
    y_test: np.ndarray | None = None
    # Toys only: draw(n, heldout_seed) -> (n, 2) fresh samples; log_density(x (N, 2)) -> (N,) nats.
    _draw: Callable[[int, int], np.ndarray] | None = field(default=None, repr=False)
    _log_density: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"dataset '{self.name}': kind must be one of {KINDS}, got {self.kind!r}")
        for attr, dtype in (("x_train", np.float32), ("x_test", np.float32),
                            ("y_train", np.int64), ("y_test", np.int64)):
            value = getattr(self, attr)
            if value is None:
                continue
            value = np.ascontiguousarray(value, dtype=dtype)
            value.flags.writeable = False
            object.__setattr__(self, attr, value)
        if self.x_train.ndim < 2 or self.x_test.shape[1:] != self.x_train.shape[1:]:
            raise ValueError(f"dataset '{self.name}': x_train {self.x_train.shape} and x_test "
                             f"{self.x_test.shape} must be (N, *sample_shape) with the same sample_shape")
        if 0 in self.x_train.shape or 0 in self.x_test.shape:
            raise DataError(f"dataset '{self.name}': x_train {self.x_train.shape} and x_test {self.x_test.shape} "
                            "must hold at least one sample each, and every sample dimension must be >= 1")
        for x_key, y_key in (("x_train", "y_train"), ("x_test", "y_test")):
            y = getattr(self, y_key)
            if y is not None and y.shape != (len(getattr(self, x_key)),):
                raise ValueError(f"dataset '{self.name}': {y_key} has shape {y.shape}, "
                                 f"expected ({len(getattr(self, x_key))},) to match {x_key}")

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def dim(self) -> int:
        return math.prod(self.sample_shape)

    def heldout(self, n: int, seed: int) -> np.ndarray:
        """n held-out samples, (n, *sample_shape) float32.

        Toys: fresh draws from the true distribution on a stream separate from the training and
        test draws (seeded by the data seed and `seed`). Other data: n test samples chosen without
        replacement by `seed` (in test-set order); DataError if n exceeds the test set.
        """
        if n < 1:
            raise ValueError(f"heldout: n must be >= 1, got {n}")
        if self._draw is not None:
            return self._draw(n, seed)
        available = len(self.x_test)
        if n > available:
            raise DataError(f"dataset '{self.name}' has {available} test samples; heldout asked for {n}")
        index = np.sort(np.random.default_rng(seed).choice(available, size=n, replace=False))
        return self.x_test[index]

    def log_density(self, x: np.ndarray) -> np.ndarray | None:
        """Exact log p(x) of the true distribution, (N,) float64 nats, for x (N, *sample_shape);
        None when no closed form is known (every dataset but 8gaussians)."""
        if self._log_density is None:
            return None
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 1 + len(self.sample_shape) or x.shape[1:] != self.sample_shape:
            raise ValueError(f"log_density of '{self.name}': x must be (N, {', '.join(map(str, self.sample_shape))}),"
                             f" got {x.shape}")
        return self._log_density(x)


DATASETS: Registry[Callable[[DataConfig], Dataset]] = Registry("dataset")
# Prefixed forms "idx:PATH" / "npz:PATH": each entry is (cfg, path) -> Dataset.
FILE_FORMATS: Registry[Callable[[DataConfig, Path], Dataset]] = Registry("data file format")
_REGISTERED_KINDS: dict[str, str] = {"digits": "image"}  # filled by _register_toy; plugins' kinds are unknown


# ---------------------------------------------------------------- splitting

def _split(name: str, kind: str, x: np.ndarray, y: np.ndarray | None, cfg: DataConfig,
           source: str) -> Dataset:
    """Fixed train/test split of x (N, ...), stratified by y when labels are known."""
    from sklearn.model_selection import train_test_split  # lazy: sklearn is slow to import

    arrays = (x,) if y is None else (x, y)
    try:
        parts = train_test_split(*arrays, test_size=cfg.test_fraction, stratify=y, random_state=cfg.seed)
    except ValueError as exc:  # e.g. a class with a single member cannot be stratified
        raise DataError(f"cannot split {source} with test_fraction={cfg.test_fraction}: {exc}") from None
    y_train, y_test = (parts[2], parts[3]) if y is not None else (None, None)
    return Dataset(name=name, kind=kind, x_train=parts[0], x_test=parts[1], y_train=y_train, y_test=y_test)


@DATASETS.register("digits")
def _load_digits(cfg: DataConfig) -> Dataset:
    """sklearn handwritten digits: 1,797 8x8 images, 10 classes, stratified split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0)[:, None]  # (N, 1, 8, 8), pixel counts 0..16 -> [0, 1]
    return _split("digits", "image", x, bunch.target, cfg, "sklearn load_digits")


# ---------------------------------------------------------------- 2-D toys (FFJORD inf_train_gen)

def _register_toy(name: str, log_density: Callable[[np.ndarray], np.ndarray] | None = None):
    """Register sampler `(n, rng) -> (n, 2)` as toy dataset `name`. Training, test and heldout
    draws use separate SeedSequence streams: [seed, 0], [seed, 1] and [seed, 2, heldout_seed]."""

    def decorate(sample: Callable[[int, np.random.Generator], np.ndarray]):
        def load(cfg: DataConfig) -> Dataset:
            def draw(n: int, stream: tuple[int, ...]) -> np.ndarray:
                return np.asarray(sample(n, np.random.default_rng([cfg.seed, *stream])), dtype=np.float32)

            return Dataset(name=name, kind="toy", x_train=draw(cfg.n_train, (0,)), x_test=draw(cfg.n_test, (1,)),
                           _draw=lambda n, heldout_seed: draw(n, (2, heldout_seed)), _log_density=log_density)

        DATASETS.register(name, help=sample.__doc__)(load)
        _REGISTERED_KINDS[name] = "toy"
        return sample

    return decorate


def _sklearn_seed(rng: np.random.Generator) -> int:
    """An int random_state for sklearn's generators, drawn from our stream."""
    return int(rng.integers(2**31 - 1))


@_register_toy("moons")
def _sample_moons(n: int, rng: np.random.Generator) -> np.ndarray:
    """Two interleaved half-moons: sklearn make_moons (noise 0.1), then x * 2 + (-1, -0.2)."""
    from sklearn.datasets import make_moons

    x = make_moons(n_samples=n, noise=0.1, random_state=_sklearn_seed(rng))[0]
    return x * 2 + np.array([-1.0, -0.2])


@_register_toy("swissroll")
def _sample_swissroll(n: int, rng: np.random.Generator) -> np.ndarray:
    """Swiss roll: sklearn make_swiss_roll (noise 1.0), coordinates (0, 2) divided by 5."""
    from sklearn.datasets import make_swiss_roll

    return make_swiss_roll(n_samples=n, noise=1.0, random_state=_sklearn_seed(rng))[0][:, [0, 2]] / 5


# 8gaussians: centres 4 * (8 unit-circle points), isotropic std 0.5, everything then divided by 1.414
# (FFJORD's rounded sqrt(2), kept so numbers compare with published ones): mu_k and sigma below.
_R = 1 / math.sqrt(2)
_EIGHT_UNIT_CENTRES = np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (_R, _R), (_R, -_R), (-_R, _R), (-_R, -_R)])
EIGHT_GAUSSIANS_MU = 4.0 * _EIGHT_UNIT_CENTRES / 1.414  # (8, 2)
EIGHT_GAUSSIANS_SIGMA = 0.5 / 1.414


def _log_density_8gaussians(x: np.ndarray) -> np.ndarray:
    """log (1/8) sum_k N(x; mu_k, sigma^2 I) for x (N, 2), in nats, via a stable log-sum-exp."""
    sq_dist = ((x[:, None, :] - EIGHT_GAUSSIANS_MU[None]) ** 2).sum(-1)  # (N, 8)
    a = -sq_dist / (2 * EIGHT_GAUSSIANS_SIGMA**2)
    a_max = a.max(axis=1, keepdims=True)
    log_mean = a_max[:, 0] + np.log(np.exp(a - a_max).mean(axis=1))
    return log_mean - math.log(2 * math.pi * EIGHT_GAUSSIANS_SIGMA**2)


@_register_toy("8gaussians", log_density=_log_density_8gaussians)
def _sample_8gaussians(n: int, rng: np.random.Generator) -> np.ndarray:
    """Equal mixture of 8 isotropic Gaussians on a circle (radius 4/1.414, std 0.5/1.414)."""
    k = rng.integers(8, size=n)
    return (4.0 * _EIGHT_UNIT_CENTRES[k] + 0.5 * rng.standard_normal((n, 2))) / 1.414


@_register_toy("checkerboard")
def _sample_checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform on the 8 dark squares of a 4x4 checkerboard over [-4, 4]^2."""
    x1 = rng.random(n) * 4 - 2
    x2 = rng.random(n) - rng.integers(0, 2, size=n) * 2 + np.floor(x1) % 2
    return np.stack([x1, x2], axis=1) * 2


@_register_toy("rings")
def _sample_rings(n: int, rng: np.random.Generator) -> np.ndarray:
    """4 concentric circles (radii 3, 2.25, 1.5, 0.75), evenly spaced angles, noise std 0.08."""
    counts = [n // 4] * 3 + [n - 3 * (n // 4)]  # FFJORD: the innermost ring takes the remainder
    radius = np.repeat([3.0, 2.25, 1.5, 0.75], counts)
    theta = np.concatenate([np.linspace(0, 2 * np.pi, c, endpoint=False) for c in counts])
    x = radius[:, None] * np.stack([np.cos(theta), np.sin(theta)], axis=1)
    return x[rng.permutation(n)] + rng.normal(scale=0.08, size=(n, 2))


# ---------------------------------------------------------------- IDX files (MNIST format)

_IDX_SPEC = {"images": (0x00000803, 3), "labels": (0x00000801, 1)}  # magic (ubyte data), ndims
_IDX_IMAGES = re.compile(r"images([-.])idx3-ubyte(\.gz)?$")


def _read_idx(path: Path, what: str) -> np.ndarray:
    """Parse one IDX file (raw, or gzip detected by its 1f 8b magic) into a uint8 array."""
    magic_expected, ndim = _IDX_SPEC[what]
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read IDX {what} file '{path}': {exc.strerror}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as gz:
                raw = gz.read(NPZ_MAX_BYTES + 1)  # bounded: a small .gz may inflate to gigabytes
            if len(raw) > NPZ_MAX_BYTES:
                raise DataError(f"IDX {what} file '{path}' decompresses to more than the "
                                f"{NPZ_MAX_BYTES / 2**30:g} GiB limit for data; refused")
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"IDX {what} file '{path}' starts with the gzip magic 1f 8b but does not "
                            f"decompress ({exc}); expected a complete gzip stream") from None
    header_bytes = 4 + 4 * ndim
    if len(raw) < 4:
        raise DataError(f"IDX {what} file '{path}' has {len(raw)} bytes; expected at least a 4-byte magic number")
    magic = int.from_bytes(raw[:4], "big")
    if magic != magic_expected:
        raise DataError(f"IDX {what} file '{path}' has magic number 0x{magic:08x}; expected "
                        f"0x{magic_expected:08x} (unsigned bytes, {ndim} dimension{'s' * (ndim > 1)})")
    if len(raw) < header_bytes:
        raise DataError(f"IDX {what} file '{path}' is truncated: expected a {header_bytes}-byte header, "
                        f"found {len(raw)} bytes")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    if 0 in dims:
        raise DataError(f"IDX {what} file '{path}' has header shape {dims}; expected every dimension >= 1")
    expected, found = math.prod(dims), len(raw) - header_bytes
    if found != expected:
        problem = "is truncated" if found < expected else "has trailing bytes"
        raise DataError(f"IDX {what} file '{path}' {problem}: header shape {dims} expects {expected} "
                        f"data bytes, found {found}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_bytes).reshape(dims)


def _labels_path(images: Path) -> Path | None:
    """The labels file beside an images file ('images-idx3' -> 'labels-idx1', raw or .gz), if any."""
    name = _IDX_IMAGES.sub(r"labels\1idx1-ubyte", images.name)
    if name == images.name:
        return None
    return next((p for p in (images.with_name(name), images.with_name(name + ".gz")) if p.is_file()), None)


def _read_idx_pair(images: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Images (N, 1, H, W) float32 in [0, 1] and labels (N,) int64 (None without a labels file)."""
    x = _read_idx(images, "images")
    labels = _labels_path(images)
    y = None if labels is None else _read_idx(labels, "labels")
    if y is not None and len(y) != len(x):
        raise DataError(f"IDX images file '{images}' has {len(x)} images but labels file '{labels}' "
                        f"has {len(y)} labels; expected equal counts")
    x = x[:, None].astype(np.float32) / 255.0
    return x, None if y is None else y.astype(np.int64)


def _find_idx_images(directory: Path) -> tuple[Path, Path | None]:
    """(train, test) images files in a directory; test is None when there is a single file."""
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and _IDX_IMAGES.search(path.name):
            key = path.name.removesuffix(".gz")
            if key not in found or path.name == key:  # a raw copy beside its .gz wins
                found[key] = path
    images = sorted(found.values())
    if len(images) == 1:
        return images[0], None
    train = [p for p in images if p.name.startswith("train")]
    test = [p for p in images if p.name.startswith("t10k")]
    if len(images) == 2 and len(train) == 1 and len(test) == 1:
        return train[0], test[0]
    listing = ", ".join(p.name for p in images) or "none"
    raise DataError(f"IDX directory '{directory}' has images files: {listing}; expected exactly one "
                    f"'*images-idx3-ubyte[.gz]', or one 'train-' and one 't10k-' file")


@FILE_FORMATS.register("idx")
def _load_idx(cfg: DataConfig, path: Path) -> Dataset:
    """MNIST-format IDX files (raw or gzipped): a directory or its '*images-idx3-ubyte[.gz]' file."""
    if not path.exists():
        raise DataError(f"IDX path '{path}' does not exist; expected a directory or an images-idx3-ubyte file")
    train, test = _find_idx_images(path) if path.is_dir() else (path, None)
    x, y = _read_idx_pair(train)
    if test is None:  # one split on disk (e.g. only t10k): make a fixed stratified split
        return _split(cfg.name, "image", x, y, cfg, f"IDX file '{train}'")
    x_test, y_test = _read_idx_pair(test)
    if (y is None) != (y_test is None):
        raise DataError(f"IDX directory '{path}': labels found for only one of '{train.name}' and "
                        f"'{test.name}'; expected labels for both or neither")
    if x_test.shape[1:] != x.shape[1:]:
        raise DataError(f"IDX images '{train}' are {x.shape[2:]} but '{test}' are {x_test.shape[2:]}; "
                        "expected one image size")
    return Dataset(name=cfg.name, kind="image", x_train=x, x_test=x_test, y_train=y, y_test=y_test)


# ---------------------------------------------------------------- .npz arrays

_NPZ_EXPECTED = "'x' (+ optional 'y'), or 'x_train' and 'x_test' (+ optional 'y_train' and 'y_test')"


def _npz_samples(path: Path, key: str, x: np.ndarray) -> tuple[str, np.ndarray]:
    """(kind, float32 samples) from an npz array: images (N, [C,] H, W) or 2-D points (N, 2)."""
    if x.ndim == 3:
        x = x[:, None]  # (N, H, W) -> (N, 1, H, W)
    if x.ndim == 2 and x.shape[1] == 2:
        kind = "toy"
    elif x.ndim == 4:
        kind = "image"
    else:
        raise DataError(f"'{key}' in npz file '{path}' has shape {x.shape}; expected images (N, H, W) or "
                        "(N, C, H, W), or 2-D points (N, 2)")
    if 0 in x.shape:
        raise DataError(f"'{key}' in npz file '{path}' has shape {x.shape}; expected at least one sample and "
                        "every sample dimension >= 1")
    if kind == "image" and x.dtype == np.uint8:
        return kind, x.astype(np.float32) / 255.0
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"'{key}' in npz file '{path}' is {x.dtype}; expected floats"
                        + (" in [0, 1] or uint8 0..255" if kind == "image" else ""))
    bad = int(x.size - np.isfinite(x).sum())
    if bad:
        raise DataError(f"'{key}' in npz file '{path}' holds {bad} non-finite value{'s' * (bad > 1)} (NaN or "
                        "infinity); expected finite numbers")
    if kind == "image" and (x.min() < 0 or x.max() > 1):
        raise DataError(f"'{key}' in npz file '{path}' has values in [{x.min():g}, {x.max():g}]; "
                        "expected float images in [0, 1] or uint8 0..255")
    return kind, x.astype(np.float32)


def _npz_labels(path: Path, key: str, y: np.ndarray, n: int) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer) or y.shape != (n,):
        raise DataError(f"'{key}' in npz file '{path}' is {y.dtype} {y.shape}; expected {n} integer labels")
    return y.astype(np.int64)


# The most bytes the arrays of one .npz may hold once decompressed. Checked against each member's declared size
# before anything is read (zipfile refuses a member longer than it declares), so a small compressed file that
# inflates to many gigabytes is refused at once instead of exhausting memory.
NPZ_MAX_BYTES = 4 * 2**30


def _check_npz_sizes(path: Path, archive: zipfile.ZipFile) -> None:
    total = sum(info.file_size for info in archive.infolist())
    if total > NPZ_MAX_BYTES:
        packed = sum(info.compress_size for info in archive.infolist())
        raise DataError(f"npz file '{path}' decompresses to {total / 2**30:.2f} GiB ({packed / 2**20:.1f} MiB "
                        f"compressed), over the {NPZ_MAX_BYTES / 2**30:g} GiB limit for data; refused before reading")


@FILE_FORMATS.register("npz")
def _load_npz(cfg: DataConfig, path: Path) -> Dataset:
    """NumPy .npz with 'x' [+ 'y'] (split by test_fraction) or 'x_train'/'x_test' [+ labels]."""
    if not path.is_file():
        raise DataError(f"npz file '{path}' does not exist")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
    except OSError as exc:
        raise DataError(f"cannot read npz file '{path}': {exc.strerror or exc}") from None
    if magic == b"\x93NUMPY":
        raise DataError(f"'{path}' holds a single .npy array; expected an .npz archive with {_NPZ_EXPECTED}")
    if not magic.startswith(b"PK"):
        raise DataError(f"'{path}' is not an .npz archive (a zip file starting 'PK'; it starts with {magic!r}); "
                        f"expected numpy.savez output with {_NPZ_EXPECTED}")
    try:
        npz = np.load(path, allow_pickle=False)
        with npz:
            _check_npz_sizes(path, npz.zip)
            arrays = {key: npz[key] for key in npz.files}
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:  # object arrays need pickle
        raise DataError(f"cannot read npz file '{path}': expected a NumPy .npz archive without object "
                        f"arrays (allow_pickle=False); numpy says: {exc}") from None
    keys = sorted(arrays)
    if {"x_train", "x_test"} <= arrays.keys():
        split = ("x_train", "x_test")
    elif "x" in arrays:
        split = ("x",)
    else:
        raise DataError(f"npz file '{path}' has keys {keys}; expected {_NPZ_EXPECTED}")
    samples = {key: _npz_samples(path, key, arrays[key]) for key in split}
    if len(split) == 1:
        kind, x = samples["x"]
        y = _npz_labels(path, "y", arrays["y"], len(x)) if "y" in arrays else None
        return _split(cfg.name, kind, x, y, cfg, f"npz file '{path}'")
    (kind, x_train), (kind_test, x_test) = samples["x_train"], samples["x_test"]
    if kind != kind_test or x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"npz file '{path}': x_train {arrays['x_train'].shape} and x_test "
                        f"{arrays['x_test'].shape} must hold samples of the same shape")
    label_keys = {"y_train", "y_test"} & arrays.keys()
    if len(label_keys) == 1:
        raise DataError(f"npz file '{path}' has {label_keys.pop()!r} only; "
                        "expected both 'y_train' and 'y_test' or neither")
    y_train = _npz_labels(path, "y_train", arrays["y_train"], len(x_train)) if label_keys else None
    y_test = _npz_labels(path, "y_test", arrays["y_test"], len(x_test)) if label_keys else None
    return Dataset(name=cfg.name, kind=kind, x_train=x_train, x_test=x_test, y_train=y_train, y_test=y_test)


# ---------------------------------------------------------------- loading, caching, listing

def _file_form(name: str) -> tuple[str, Path] | None:
    """("idx", path) for "idx:PATH" (and likewise npz), None for a registry name."""
    prefix, sep, rest = name.partition(":")
    if not sep or prefix not in FILE_FORMATS:
        return None
    if not rest:
        raise DataError(f"dataset name '{name}' needs a path after '{prefix}:'")
    return prefix, Path(rest).expanduser()


def _files_stamp(name: str) -> tuple | None:
    """Names, sizes and mtimes of the files a path dataset may read, so that the cache reloads a
    file rewritten in place; None for registry datasets."""
    form = _file_form(name)
    if form is None:
        return None
    folder = form[1] if form[1].is_dir() else form[1].parent
    try:
        return tuple(sorted((p.name, s.st_size, s.st_mtime_ns) for p in folder.iterdir() if p.is_file()
                            for s in (p.stat(),)))
    except OSError:
        return None


@functools.lru_cache(maxsize=16)
def _load_cached(cfg: DataConfig, stamp: tuple | None) -> Dataset:
    form = _file_form(cfg.name)
    if form is not None:
        return FILE_FORMATS.get(form[0])(cfg, form[1])
    try:
        loader = DATASETS.get(cfg.name)
    except UnknownNameError as exc:
        raise UnknownNameError(f"{exc}; files load as idx:PATH or npz:PATH") from None
    return loader(cfg)


def load_dataset(cfg: DataConfig | str) -> Dataset:
    """Load (or fetch from the in-process cache) the dataset `cfg` names; a str is DataConfig(name=str).
    DataError when `cfg.fingerprint` is set and the files no longer hold that content."""
    if isinstance(cfg, str):
        cfg = DataConfig(name=cfg)
    if cfg.fingerprint:
        current = data_fingerprint(cfg.name)
        if current != cfg.fingerprint:
            raise DataError(f"data '{cfg.name}' changed since this run was configured (fingerprint "
                            f"{cfg.fingerprint}, now {current}); results of the old content do not describe the "
                            "new one: run the command again to plan with the new data, or restore the file")
    return _load_cached(cfg, _files_stamp(cfg.name))


# ---------------------------------------------------------------- content fingerprints

# sha256 of a file's bytes by (real path, device, inode, size, mtime_ns): a large file is hashed once a process.
_DIGESTS: dict[tuple, str] = {}
_HASH_CHUNK = 1 << 20


def _file_digest(path: Path) -> str:
    try:
        st = path.stat()
        stamp = (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp not in _DIGESTS:
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                while chunk := fh.read(_HASH_CHUNK):
                    h.update(chunk)
            _DIGESTS[stamp] = h.hexdigest()
    except OSError as exc:
        raise DataError(f"cannot read data file '{path}': {exc.strerror or exc}") from None
    return _DIGESTS[stamp]


def _fingerprint_files(prefix: str, path: Path) -> list[Path]:
    """The files a file-backed dataset reads: IDX images and their labels files; otherwise the file itself,
    or every regular file directly inside a directory (any format a plugin registers)."""
    if prefix == "idx":
        images = [p for p in _find_idx_images(path) if p is not None] if path.is_dir() else [path]
        return images + [lab for p in images if (lab := _labels_path(p)) is not None]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file())
    return [path]


def data_fingerprint(name: str) -> str:
    """Content fingerprint of the files behind 'idx:PATH' / 'npz:PATH' (any FILE_FORMATS prefix):
    "sha256:<16 hex> <total bytes> B" over each file's name and bytes; "" for a registered dataset.
    DataError naming the path when it does not exist or cannot be read."""
    form = _file_form(name)
    if form is None:
        return ""
    prefix, path = form
    if not path.exists():
        raise DataError(f"data path '{path}' (data.name '{name}') does not exist")
    h, total = hashlib.sha256(), 0
    for file in _fingerprint_files(prefix, path):
        h.update(f"{file.name}\0{_file_digest(file)}\0".encode())
        total += file.stat().st_size
    return f"sha256:{h.hexdigest()[:16]} {total} B"


def data_kind(cfg: DataConfig | str) -> str | None:
    """'image' or 'toy' without loading the data (IDX is images; an npz by its 'x' / 'x_train' header; a
    built-in dataset by its registration); None when only loading would tell (a plugin's dataset, an
    unreadable file: loading it reports why)."""
    name = cfg if isinstance(cfg, str) else cfg.name
    form = _file_form(absolute_name(name)) if ":" in name else None
    if form is None:
        return _REGISTERED_KINDS.get(name)
    prefix, path = form
    if prefix == "idx":
        return "image"
    if prefix != "npz":
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            member = next(m for m in ("x_train.npy", "x.npy") if m in archive.namelist())
            with archive.open(member) as fh:
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}[np.lib.format.read_magic(fh)]
                shape = read_header(fh)[0]
    except (OSError, StopIteration, KeyError, ValueError, zipfile.BadZipFile):
        return None
    if len(shape) == 2 and shape[1] == 2:
        return "toy"
    return "image" if len(shape) in (3, 4) else None


def describe_datasets() -> list[dict[str, Any]]:
    """One row per registered dataset at its default config, then the idx:PATH / npz:PATH forms:
    name, kind, sample_shape, n_train, n_test (None when they depend on the file) and description."""
    rows = []
    for name in DATASETS.names():
        ds = load_dataset(name)
        rows.append({"name": name, "kind": ds.kind, "sample_shape": ds.sample_shape, "n_train": len(ds.x_train),
                     "n_test": len(ds.x_test), "description": DATASETS.describe(name)})
    kinds = {"idx": "image", "npz": "image or toy"}
    for prefix in FILE_FORMATS.names():
        rows.append({"name": f"{prefix}:PATH", "kind": kinds.get(prefix, "image"), "sample_shape": None,
                     "n_train": None, "n_test": None, "description": FILE_FORMATS.describe(prefix)})
    return rows


def to_symmetric(x: Any) -> Any:
    """[0, 1] -> [-1, 1] (the DDPM data range); plain arithmetic, so numpy arrays and torch tensors."""
    return x * 2 - 1


def from_symmetric(x: Any) -> Any:
    """[-1, 1] -> [0, 1], the inverse of to_symmetric."""
    return (x + 1) / 2
