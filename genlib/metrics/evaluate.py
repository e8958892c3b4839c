"""One entry point for all metrics: evaluate a model, arrays of samples, a run directory, or the data itself.

`evaluate(names, dataset=..., model=..., samples=...)` checks every requested name applies (data kind, model
family, labels for the feature extractor, a closed-form density) before computing anything, then returns
`genlib.store.Metric` records with unit, direction and an `extra` holding n, k, extractor id and accuracy,
thresholds and seeds. `evaluate_floor` compares the training split with the test split at the same n: the
best a model can hope for. It never writes to a results store (the caller does).
"""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np

from genlib.data import KINDS, DataConfig, Dataset, load_dataset
from genlib.metrics import catalog  # noqa: F401  (registers every metric)
from genlib.metrics.base import METRICS, ORDER, MetricError, MetricSpec, MetricsConfig
from genlib.metrics.context import EvalContext
from genlib.store import Metric

DEFAULT_N = 1000  # samples per set on images
# 2-D toys: samples are cheap, and SWD, MMD and energy at n = 1000 still carry sampling noise comparable
# to the differences the studies test; 2,000 about halves their variance (the toys' test split holds 5,000).
DEFAULT_TOY_N = 2000


def default_n(kind: str) -> int:
    """Samples per set when none is given: DEFAULT_N for images, DEFAULT_TOY_N for 2-D toys."""
    return DEFAULT_TOY_N if kind == "toy" else DEFAULT_N


def default_metrics(family: str | None, kind: str) -> list[str]:
    """The metrics that apply to a model `family` (None: samples only) on `kind` data, in registry order.

    Dataset-specific conditions (class labels for the feature extractor, a closed-form density) are
    checked by `evaluate`, which drops defaults that do not apply.
    """
    if kind not in KINDS:
        raise MetricError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    out = []
    for name in ORDER:
        spec = METRICS.get(name)
        if kind not in spec.kinds:
            continue
        if spec.needs == "model" and (family is None or (spec.families is not None and family not in spec.families)):
            continue
        out.append(name)
    return out


def _has_density(ds: Dataset) -> bool:
    return ds.log_density(np.asarray(ds.x_test[:1], dtype=np.float64)) is not None


def why_not(spec: MetricSpec, *, dataset: Dataset, model: Any | None, have_samples: bool) -> str | None:
    """Why metric `spec` cannot be computed for these inputs, or None when it can."""
    name = spec.name
    if dataset.kind not in spec.kinds:
        return (f"metric '{name}' applies to {' and '.join(spec.kinds)} data; dataset '{dataset.name}' is "
                f"{dataset.kind} data")
    if spec.needs == "model":
        if model is None:
            return (f"metric '{name}' needs the trained model ({spec.why}); only samples were given "
                    "(evaluate a run, or pass model=)")
        family = model.cfg.family
        if spec.families is not None and family not in spec.families:
            return (f"metric '{name}' applies to model families {', '.join(spec.families)} ({spec.why}); "
                    f"this model is '{family}'")
    elif model is None and not have_samples:
        return f"metric '{name}' compares samples with a reference split: pass samples, or a model to draw them from"
    if "labels" in spec.uses and (dataset.y_train is None or dataset.y_test is None):
        return (f"metric '{name}' is computed in the feature space of a classifier trained on class labels; "
                f"dataset '{dataset.name}' has none")
    if "density" in spec.uses and not _has_density(dataset):
        return (f"metric '{name}' needs the true density in closed form; dataset '{dataset.name}' has none "
                "(8gaussians has one)")
    return None


def _resolve_names(names: list[str] | str | None, *, dataset: Dataset, model: Any | None,
                   have_samples: bool) -> list[str]:
    if names is None:
        family = None if model is None else model.cfg.family
        chosen = []
        for name in default_metrics(family, dataset.kind):
            reason = why_not(METRICS.get(name), dataset=dataset, model=model, have_samples=have_samples)
            if reason is None:
                chosen.append(name)
            elif "class labels" in reason:
                warnings.warn(f"skipping default {reason}", stacklevel=3)
        return chosen
    if isinstance(names, str):
        names = [n for n in names.split(",")]
    names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    if not names:
        raise MetricError("no metric names given; `genbench eval --list` shows them")
    problems = [why_not(METRICS.get(n), dataset=dataset, model=model, have_samples=have_samples) for n in names]
    problems = [p for p in problems if p]
    if problems:
        raise MetricError("; ".join(problems))
    return names


def evaluate(names: list[str] | None, *, dataset: Dataset, model: Any | None = None,
             samples: np.ndarray | None = None, sample_cfg: Any | None = None, n: int | None = None, seed: int = 0,
             reference: Literal["test", "train"] = "test", cfg: MetricsConfig | None = None,
             progress: bool = False) -> list[Metric]:
    """Compute metrics `names` (None: every default that applies) and return them as store Metrics.

    dataset: the data the model was trained on; the reference is a seeded subset of its `reference` split
        with min(n, split size) items; n None is `default_n(dataset.kind)`: 1000 images, 2000 toy points.
        samples: data-space arrays (N, *sample_shape) ([0, 1] for images); when None and a sample metric is
        asked for, min(n, split size) samples are drawn from `model` with `sample_cfg` and `seed`.
        cfg: metric settings (IWAE k, k-NN sizes, extractor, ...).
    Raises MetricError naming every requested metric that does not apply, and why, before computing any.
    """
    cfg = cfg or MetricsConfig()
    n = default_n(dataset.kind) if n is None else n
    if model is not None and (tuple(model.sample_shape) != dataset.sample_shape or model.kind != dataset.kind):
        raise MetricError(f"the model was built for {model.kind} data of shape {tuple(model.sample_shape)}, but "
                          f"dataset '{dataset.name}' is {dataset.kind} data of shape {dataset.sample_shape}")
    chosen = _resolve_names(names, dataset=dataset, model=model, have_samples=samples is not None)
    if model is not None and samples is None:  # samples drawn here: record the x0 clip box they use
        from genlib.models import SampleConfig
        from genlib.samplers import resolve_x0_clip

        sample_cfg = resolve_x0_clip(sample_cfg or SampleConfig(), model, dataset.x_train)
    ctx = EvalContext(dataset=dataset, model=model, samples=samples, sample_cfg=sample_cfg, cfg=cfg, n=n, seed=seed,
                      reference=reference, progress=progress)
    out = []
    for name in chosen:
        spec = METRICS.get(name)
        value, extra = spec.compute(ctx)
        out.append(Metric(name=name, value=float(value), unit=spec.unit, higher_is_better=spec.higher_is_better,
                          split=reference, extra=extra))
    return out


def evaluate_run(run_dir: str | Path, names: list[str] | None = None, *, n: int | None = None,
                 sample_cfg: Any | None = None, seed: int = 0, cfg: MetricsConfig | None = None,
                 device: str = "auto", progress: bool = False) -> list[Metric]:
    """Evaluate the trained run in `run_dir` (see genlib.train.load_run) on its own dataset's test split."""
    from genlib.models import SampleConfig
    from genlib.train import load_run  # lazy: genlib.train pulls in every model family

    loaded = load_run(run_dir, device=device)
    dataset = load_dataset(loaded.config.data)
    return evaluate(names, dataset=dataset, model=loaded.model, sample_cfg=sample_cfg or SampleConfig(), n=n,
                    seed=seed, cfg=cfg, progress=progress)


def evaluate_floor(dataset_name_or_cfg: str | DataConfig | Dataset, names: list[str] | None = None, *,
                   n: int | None = None, seed: int = 0, cfg: MetricsConfig | None = None,
                   progress: bool = False) -> list[Metric]:
    """The data-versus-data reference: training-split items scored as if they were samples, against the test split.

    n: items per set (default 1000 images, 2000 toy points), capped by each split, so digits compares 898
    training with 899 test images. Only sample metrics apply; each result's extra says `floor: true`.
    """
    dataset = dataset_name_or_cfg if isinstance(dataset_name_or_cfg, Dataset) else load_dataset(dataset_name_or_cfg)
    n = default_n(dataset.kind) if n is None else n
    if n < 1:
        raise MetricError(f"n must be >= 1, got {n}")
    if names is not None:
        names = [names] if isinstance(names, str) else list(names)
        for name in ",".join(names).split(","):
            if name.strip() and METRICS.get(name.strip()).needs == "model":
                raise MetricError(f"metric '{name.strip()}' needs a trained model; the floor compares data "
                                  "with data, so only sample metrics apply")
    pool = dataset.x_train
    index = np.sort(np.random.default_rng([seed, 3]).choice(len(pool), size=min(n, len(pool)), replace=False))
    metrics = evaluate(names, dataset=dataset, samples=pool[index], n=n, seed=seed, reference="test", cfg=cfg,
                       progress=progress)
    return [dataclasses.replace(m, extra={**m.extra, "floor": True, "samples_from": "train split"}) for m in metrics]


__all__ = ["DEFAULT_N", "DEFAULT_TOY_N", "default_metrics", "default_n", "evaluate", "evaluate_floor", "evaluate_run",
           "why_not"]
