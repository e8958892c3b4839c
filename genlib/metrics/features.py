"""The feature extractor behind every image sample metric: a small conv classifier trained here, no downloads.

It trains on the dataset's labelled training split, records its held-out (test split) accuracy, and gives
standardised penultimate-layer features and arg-max class predictions. Trained once, then cached under
$GENBENCH_CACHE/extractors (default ~/.cache/genbench/extractors), keyed by a hash of the data and config.
It computes no metric itself.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from genlib.checkpoint import atomic_write
from genlib.config import canonical_json
from genlib.data import Dataset
from genlib.progress import tqdm

CACHE_ENV = "GENBENCH_CACHE"
EXTRACTOR_FORMAT = "genbench-extractor"
EXTRACTOR_VERSION = 1  # bump when FeatureNet changes: old cache files are then retrained


class ExtractorError(ValueError):
    """A feature extractor cannot be built for this data (no labels, wrong shape); the message says why."""


@dataclass(frozen=True, kw_only=True)
class ExtractorConfig:
    """The classifier whose penultimate layer is the feature space. Every field but min_accuracy enters the cache key."""

    channels: int = 16  # first conv width; the second stage doubles it
    feature_dim: int = 64  # width of the feature layer (FD/KID/PRDC work in this many dimensions)
    steps: int = 1200  # AdamW steps (one-cycle schedule); digits trains in about 4 s on one CPU core
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    dropout: float = 0.2  # on the feature layer's activations, during training only
    shift_px: int = 1  # augmentation: random translations of up to this many pixels (0 disables)
    min_accuracy: float = 0.9  # below this held-out accuracy a warning says the features are weak
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("channels", "feature_dim", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"extractor.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"extractor.lr must be > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"extractor.dropout must be in [0, 1), got {self.dropout}")
        if self.shift_px < 0:
            raise ValueError(f"extractor.shift_px must be >= 0, got {self.shift_px}")
        if not 0.0 <= self.min_accuracy <= 1.0:
            raise ValueError(f"extractor.min_accuracy must be in [0, 1], got {self.min_accuracy}")


class FeatureNet(nn.Module):
    """Two conv stages (conv3x3, stride 2 while the side is >= 8, ReLU) -> linear features -> class logits.

    Sizes: digits (1, 8, 8) -> 4x4 -> 4x4; MNIST (1, 28, 28) -> 14x14 -> 7x7. Strided convolutions keep
    feature extraction cheap (about 0.35 M multiply-adds per MNIST image) so metrics on thousands of
    samples take well under a second.
    """

    def __init__(self, sample_shape: tuple[int, ...], n_classes: int, cfg: ExtractorConfig) -> None:
        super().__init__()
        c, h, w = sample_shape
        layers: list[nn.Module] = []
        width = cfg.channels
        for _ in range(2):
            stride = 2 if min(h, w) >= 8 else 1
            layers += [nn.Conv2d(c, width, 3, stride=stride, padding=1), nn.ReLU()]
            c, h, w = width, (h + stride - 1) // stride, (w + stride - 1) // stride
            width *= 2
        self.convs = nn.Sequential(*layers)
        self.feature = nn.Linear(c * h * w, cfg.feature_dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.feature_dim, n_classes)
        # Per-dimension standardisation fitted on the training split after training, so FD and the cubic
        # KID kernel (x.y / d + 1)^3 see features of unit scale whatever the dataset.
        self.register_buffer("feature_mean", torch.zeros(cfg.feature_dim))
        self.register_buffer("feature_std", torch.ones(cfg.feature_dim))

    def raw_features(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) in [0, 1] -> (B, feature_dim) pre-activation features of the penultimate layer."""
        return self.feature(self.convs(x).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(F.relu(self.raw_features(x))))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised features (B, feature_dim): (raw - mean) / std with training-split statistics."""
        return (self.raw_features(x) - self.feature_mean) / self.feature_std

    def logits_from_features(self, f: torch.Tensor) -> torch.Tensor:
        """Class logits (B, n_classes) from standardised features."""
        return self.head(F.relu(f * self.feature_std + self.feature_mean))

    @torch.no_grad()
    def fit_standardisation(self, x: torch.Tensor) -> None:
        raw = torch.cat([self.raw_features(b) for b in x.split(2048)]).double()
        self.feature_mean.copy_(raw.mean(0).float())
        self.feature_std.copy_(raw.std(0).clamp_min(1e-6).float())


@dataclass
class FeatureExtractor:
    """A trained FeatureNet with what it was trained on. `id` names it in every metric's `extra`."""

    net: FeatureNet
    id: str  # the cache key: sha256 prefix of data hash + config
    accuracy: float  # held-out (test split) accuracy
    n_classes: int
    sample_shape: tuple[int, ...]
    config: ExtractorConfig
    dataset: str
    from_cache: bool = False
    path: Path | None = None

    @property
    def feature_dim(self) -> int:
        return self.config.feature_dim

    def describe(self) -> dict:
        """What a metric computed in this feature space records about it."""
        return {"extractor": self.id, "extractor_accuracy": round(self.accuracy, 4),
                "feature_dim": self.feature_dim, "extractor_data": self.dataset}

    @torch.no_grad()
    def features_and_logits(self, x: np.ndarray, batch_size: int = 2048) -> tuple[np.ndarray, np.ndarray]:
        """x (N, C, H, W) in [0, 1] -> (features (N, feature_dim) float64, logits (N, n_classes) float64)."""
        x = np.require(x, dtype=np.float32, requirements=["C", "W"])  # torch wants writable memory
        if x.shape[1:] != self.sample_shape:
            raise ExtractorError(f"feature extractor '{self.id}' takes images of shape {self.sample_shape}, "
                                 f"got {x.shape[1:]}")
        self.net.eval()
        feats, logits = [], []
        for i in range(0, len(x), batch_size):
            f = self.net.features(torch.from_numpy(x[i:i + batch_size]))
            feats.append(f)
            logits.append(self.net.logits_from_features(f))
        if not feats:
            return np.empty((0, self.feature_dim)), np.empty((0, self.n_classes))
        return torch.cat(feats).double().numpy(), torch.cat(logits).double().numpy()


def cache_dir() -> Path:
    """$GENBENCH_CACHE/extractors, or ~/.cache/genbench/extractors."""
    root = os.environ.get(CACHE_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "genbench"
    return base / "extractors"


_DATA_HASHES: "weakref.WeakKeyDictionary[Dataset, str]" = weakref.WeakKeyDictionary()


def data_hash(ds: Dataset) -> str:
    """sha256 over the train/test arrays (shapes, dtypes and bytes) and labels; memoised per Dataset."""
    cached = _DATA_HASHES.get(ds)
    if cached is None:
        h = hashlib.sha256()
        for name in ("x_train", "y_train", "x_test", "y_test"):
            arr = getattr(ds, name)
            h.update(f"{name}:{None if arr is None else (arr.shape, str(arr.dtype))};".encode())
            if arr is not None:
                h.update(np.ascontiguousarray(arr).data)
        cached = _DATA_HASHES[ds] = h.hexdigest()
    return cached


def extractor_key(ds: Dataset, cfg: ExtractorConfig) -> str:
    config = json.loads(canonical_json(cfg))
    config.pop("min_accuracy")  # a reporting threshold, not part of what is trained
    payload = json.dumps({"data": data_hash(ds), "config": config, "version": EXTRACTOR_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _check_trainable(ds: Dataset) -> int:
    if ds.kind != "image" or len(ds.sample_shape) != 3:
        raise ExtractorError(f"the feature extractor needs image data (N, C, H, W); dataset '{ds.name}' is "
                             f"{ds.kind} with sample shape {ds.sample_shape}")
    if ds.y_train is None or ds.y_test is None:
        raise ExtractorError(f"dataset '{ds.name}' has no class labels; the feature extractor is a classifier "
                             "trained on them (IDX needs its labels file beside the images; npz needs "
                             "'y_train' and 'y_test')")
    n_classes = int(max(ds.y_train.max(), ds.y_test.max())) + 1
    if n_classes < 2:
        raise ExtractorError(f"dataset '{ds.name}' has a single class; a classifier cannot be trained on it")
    return n_classes


def _shift(x: torch.Tensor, max_px: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by a random integer offset in [-max_px, max_px]^2, zero-filled. x (B, C, H, W)."""
    if max_px == 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (max_px,) * 4)
    dy, dx = (torch.randint(0, 2 * max_px + 1, (2, b), generator=gen)).unbind(0)
    rows = (dy[:, None] + torch.arange(h)[None])  # (B, H)
    cols = (dx[:, None] + torch.arange(w)[None])  # (B, W)
    idx_b = torch.arange(b)[:, None, None]
    return padded.permute(0, 2, 3, 1)[idx_b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


@torch.no_grad()
def _accuracy(net: FeatureNet, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    pred = torch.cat([net(b).argmax(1) for b in x.split(2048)])
    return float((pred == y).double().mean())


def train_extractor(ds: Dataset, cfg: ExtractorConfig, *, progress: bool = True) -> FeatureExtractor:
    """Train a FeatureNet on ds.x_train/y_train (seeded, CPU) and measure its accuracy on ds.x_test/y_test."""
    n_classes = _check_trainable(ds)
    x = torch.from_numpy(np.array(ds.x_train, dtype=np.float32))
    y = torch.from_numpy(np.array(ds.y_train))
    gen = torch.Generator().manual_seed(cfg.seed)
    threads = torch.get_num_threads()
    # Batches of 64 tiny images: one thread beats the pool's synchronisation (about 8x on a busy 2-core box).
    torch.set_num_threads(1)
    try:
        net = _fit(ds, cfg, n_classes, x, y, gen, progress)
    finally:
        torch.set_num_threads(threads)
    acc = _accuracy(net, torch.from_numpy(np.array(ds.x_test, dtype=np.float32)), torch.from_numpy(np.array(ds.y_test)))
    return FeatureExtractor(net=net, id=extractor_key(ds, cfg), accuracy=acc, n_classes=n_classes,
                            sample_shape=ds.sample_shape, config=cfg, dataset=ds.name)


def _fit(ds: Dataset, cfg: ExtractorConfig, n_classes: int, x: torch.Tensor, y: torch.Tensor,
         gen: torch.Generator, progress: bool) -> FeatureNet:
    with torch.random.fork_rng(devices=[]):  # dropout and init draw from the global RNG: keep it untouched
        torch.manual_seed(cfg.seed)
        net = FeatureNet(ds.sample_shape, n_classes, cfg)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.15)
        net.train()
        bar = tqdm(range(cfg.steps), desc=f"feature extractor ({ds.name})", disable=not progress, leave=False)
        for _ in bar:
            idx = torch.randint(0, len(x), (cfg.batch_size,), generator=gen)
            loss = F.cross_entropy(net(_shift(x[idx], cfg.shift_px, gen)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    net.fit_standardisation(x)
    return net


def _save(ext: FeatureExtractor, path: Path, data_digest: str) -> None:
    payload = {"format": EXTRACTOR_FORMAT, "version": EXTRACTOR_VERSION, "id": ext.id, "data_hash": data_digest,
               "dataset": ext.dataset, "config": json.loads(canonical_json(ext.config)),
               "accuracy": ext.accuracy, "n_classes": ext.n_classes, "sample_shape": list(ext.sample_shape),
               "state_dict": {k: v.detach().cpu() for k, v in ext.net.state_dict().items()}}
    atomic_write(path, lambda p: torch.save(payload, p))


def _load(path: Path, ds: Dataset, cfg: ExtractorConfig, key: str) -> FeatureExtractor | None:
    """The cached extractor at `path`, or None (with a warning) when the file is unreadable or stale."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(data, dict) or data.get("format") != EXTRACTOR_FORMAT:
            raise ValueError("not a genbench extractor file")
        if data.get("version") != EXTRACTOR_VERSION or data.get("id") != key:
            raise ValueError(f"version/key mismatch ({data.get('version')}, {data.get('id')})")
        net = FeatureNet(ds.sample_shape, int(data["n_classes"]), cfg)
        net.load_state_dict(data["state_dict"])
    except Exception as exc:  # a cache entry is disposable: retrain rather than fail
        warnings.warn(f"ignoring unreadable feature-extractor cache file '{path}' ({type(exc).__name__}: {exc}); "
                      "retraining", stacklevel=3)
        return None
    net.eval()
    return FeatureExtractor(net=net, id=key, accuracy=float(data["accuracy"]), n_classes=int(data["n_classes"]),
                            sample_shape=ds.sample_shape, config=cfg, dataset=str(data["dataset"]),
                            from_cache=True, path=path)


_MEMO: dict[tuple[str, str], FeatureExtractor] = {}


def get_extractor(ds: Dataset, cfg: ExtractorConfig | None = None, *, progress: bool = True,
                  memo: bool = True) -> FeatureExtractor:
    """The extractor for `ds` and `cfg`: from this process's memo, else the disk cache, else trained and cached.

    `from_cache` on the result says whether it came from the disk cache rather than being trained in this process.
    """
    cfg = cfg or ExtractorConfig()
    _check_trainable(ds)
    key = extractor_key(ds, cfg)
    directory = cache_dir()
    path = directory / f"{_safe(ds.name)}-{key}.pt"
    memo_key = (str(directory), key)
    if memo and memo_key in _MEMO and path.is_file():
        return _MEMO[memo_key]
    ext = _load(path, ds, cfg, key) if path.is_file() else None
    if ext is None:
        ext = train_extractor(ds, cfg, progress=progress)
        _save(ext, path, data_hash(ds))
        ext.path = path
    if ext.accuracy < cfg.min_accuracy:
        warnings.warn(f"feature extractor for '{ds.name}' reaches only {ext.accuracy:.1%} held-out accuracy "
                      f"(< {cfg.min_accuracy:.0%}); metrics in its feature space are weak evidence", stacklevel=2)
    _MEMO[memo_key] = ext
    return ext


def clear_memo() -> None:
    """Forget extractors held in this process (the disk cache is untouched)."""
    _MEMO.clear()


def _safe(name: str) -> str:
    """A file-name-safe short form of a dataset name ('idx:/a/b/mnist' -> 'idx-mnist')."""
    prefix, sep, rest = name.partition(":")
    base = f"{prefix}-{Path(rest).name}" if sep else name
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in base)[:40] or "data"


__all__ = ["ExtractorConfig", "ExtractorError", "FeatureExtractor", "FeatureNet", "cache_dir", "clear_memo",
           "data_hash", "extractor_key", "get_extractor", "train_extractor"]
