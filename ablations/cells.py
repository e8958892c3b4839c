"""What a worker does with one cell: train a checkpoint, evaluate one, or measure a data floor.

Cell bodies run in worker processes (or Ray tasks) and return plain results (metrics, the artifact
path, provenance); they never touch the results store, which only the driver writes. Artifacts are
built in a temporary directory and renamed into place, so a directory under its final name is always
complete. The evaluation is a seam (`Evaluation`): the default computes `genlib.metrics` on samples
from the checkpoint; tests pass a cheap one. Metrics are deterministic for a config and seed (on one
machine and thread count). An evaluation whose config carries `timing` also exports, checks and times its
sampler (`bench.grid_timing`) and scores samples drawn through the exported graph where parity holds: its
latency and quality metrics come back together, for one row under one run key.
"""
from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from genlib.store import Metric

from ablations.plan import Cell, EvalCell, FloorCell, TrainCell

TMP_PREFIX = ".tmp-"
TRASH_MARKER = ".trash-"  # genlib.checkpoint.publish_dir names a replaced directory <name>.trash-<pid>-<hex>
PREVIEW_SAMPLES = 64  # samples kept beside each evaluation for sample grids

# Training logs recorded as metrics of a training row (split "train"): (unit, higher_is_better).


class Evaluation:
    """How evaluation cells and floors are measured. Subclasses must be importable (pickled by reference).
    `device`: where checkpoints are loaded (`genlib.train.load_run`'s preference). `ran_on`: set by
    `evaluate_run` to the device the loaded network is on (its parameters or buffers); records name that."""

    device: str = "auto"
    ran_on: str | None = None

    def evaluate_run(self, run_dir: Path, eval_cfg: dict[str, Any], seed: int, out_dir: Path,
                     draw: Callable[..., Any] | None = None) -> list[Metric]:
        """Metrics of the checkpoint in `run_dir` under `eval_cfg` (SampleConfig fields + n + metrics).

        `out_dir` is a fresh temporary directory for files worth keeping (it becomes the cell's artifact).
        `draw`: given for timed cells whose export passed parity, draw(n, seed) -> (n, *sample_shape) samples
        through the exported graph; the evaluation scores those instead of sampling the checkpoint in torch
        (an evaluation that ignores it only serves untimed grids)."""
        raise NotImplementedError

    def evaluate_floor(self, data_cfg: dict[str, Any], names: list[str] | None, n: int, seed: int) -> list[Metric]:
        """Data-versus-data metrics (training split against test split at n samples)."""
        raise NotImplementedError


def _sample_config(eval_cfg: dict[str, Any]):
    """The SampleConfig of a cell's resolved (flat) eval section, read through genlib's EvaluationConfig."""
    from genlib.metrics.eval_config import EvaluationConfig
    flat = {k: v for k, v in eval_cfg.items() if k != "timing"}  # timing settings are bench's, not sampling's
    return EvaluationConfig.from_flat(flat, "eval").sample


def _metrics_module():
    import genlib.metrics as metrics
    if not hasattr(metrics, "evaluate"):
        raise RuntimeError("genlib.metrics.evaluate is not available in this genbench installation")
    return metrics


class MetricsEvaluation(Evaluation):
    """The default: draw n samples with the cell's SampleConfig, keep a preview, score with genlib.metrics."""

    def evaluate_run(self, run_dir: Path, eval_cfg: dict[str, Any], seed: int, out_dir: Path,
                     draw: Callable[..., Any] | None = None) -> list[Metric]:
        import numpy as np

        from genlib.checkpoint import atomic_write
        from genlib.data import load_dataset
        from genlib.samplers import resolve_x0_clip
        from genlib.train import generate, load_run

        metrics = _metrics_module()
        loaded = load_run(run_dir, device=self.device)
        self.ran_on = str(loaded.model.device)
        dataset = load_dataset(loaded.config.data)
        sample_cfg = resolve_x0_clip(_sample_config(eval_cfg), loaded.model, dataset.x_train)  # the box, as numbers
        n = int(eval_cfg["n"])
        if draw is not None:  # through the exported graph, with the torch sampler's noise
            samples = np.asarray(draw(n, seed), dtype=np.float32)
        else:
            samples = generate(loaded.model, n, sample_cfg, seed=seed).numpy().astype(np.float32)  # (n, *shape)
        preview = samples[:PREVIEW_SAMPLES]
        def write(path: Path) -> None:
            with open(path, "wb") as fh:  # a file object: np.save would append '.npy' to a temporary name
                np.save(fh, preview, allow_pickle=False)

        atomic_write(out_dir / "samples.npy", write)
        # names None: every default metric that applies to this family and data.
        return list(metrics.evaluate(eval_cfg.get("metrics"), dataset=dataset, model=loaded.model, samples=samples,
                                     sample_cfg=sample_cfg, n=n, seed=seed))

    def evaluate_floor(self, data_cfg: dict[str, Any], names: list[str] | None, n: int, seed: int) -> list[Metric]:
        from genlib.config import from_dict
        from genlib.data import DataConfig, load_dataset

        metrics = _metrics_module()
        dataset = load_dataset(from_dict(DataConfig, data_cfg, "data"))
        return list(metrics.evaluate_floor(dataset, names, n=n, seed=seed))


@dataclass(frozen=True)
class CellContext:
    """What a worker needs besides the cell: where artifacts go, how to evaluate, how many threads."""

    artifacts_dir: Path
    evaluation: Evaluation = field(default_factory=MetricsEvaluation)
    threads: int = 1


@dataclass(frozen=True)
class CellResult:
    metrics: list[Metric]
    artifact_path: str | None  # relative to the artifacts directory's parent (the store's directory)
    device: str | None  # the torch device the cell ran on
    provenance: dict[str, Any]  # genlib.provenance.provenance() of the worker
    provider: str | None = None  # the ONNX Runtime provider a session reported, when the cell ran one


def init_worker(threads: int) -> None:
    """Run once per worker process: fix the thread count (results depend on it) and import the stack."""
    import torch

    import genlib.train  # noqa: F401  (import costs are paid at start-up, not inside the first cell)
    torch.set_num_threads(max(1, int(threads)))
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # the first optimiser pulls in torch._dynamo


def _tmp_dir(artifacts_dir: Path, key: str) -> Path:
    path = artifacts_dir / f"{TMP_PREFIX}{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    return path


def clean_partial(artifacts_dir: Path) -> int:
    """Remove temporary and trash directories left by an interrupted run; returns how many."""
    if not artifacts_dir.is_dir():
        return 0
    removed = 0
    for path in artifacts_dir.iterdir():
        if path.name.startswith(TMP_PREFIX) or TRASH_MARKER in path.name:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            removed += 1
    return removed


def artifact_complete(path: Path, kind: str) -> bool:
    """A training artifact is complete when model.pt exists (written last); others when the dir exists."""
    return (path / "model.pt").is_file() if kind == "train" else path.is_dir()


def _relative(path: Path, artifacts_dir: Path) -> str:
    return str(Path(artifacts_dir.name) / path.name)


def _provenance() -> dict[str, Any]:
    from genlib.provenance import provenance
    return provenance()


def _run_train(cell: TrainCell, ctx: CellContext) -> CellResult:
    from genlib.checkpoint import publish_dir
    from genlib.train import load_run_config, train, training_metrics

    cfg = load_run_config(cell.config)
    tmp = _tmp_dir(ctx.artifacts_dir, cell.key)
    try:
        result = train(cfg, tmp, progress=False)
        final = publish_dir(tmp, ctx.artifacts_dir / cell.key)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return CellResult(metrics=training_metrics(result.history, cfg.model.family),
                      artifact_path=_relative(final, ctx.artifacts_dir), device=result.meta.get("device"),
                      provenance=_provenance())


def _run_eval(cell: EvalCell, ctx: CellContext) -> CellResult:
    from genlib.checkpoint import CheckpointError, publish_dir

    run_dir = ctx.artifacts_dir / cell.parent
    if not artifact_complete(run_dir, "train"):
        raise CheckpointError(f"the checkpoint of training {cell.parent} is missing ('{run_dir}/model.pt')")
    tmp = _tmp_dir(ctx.artifacts_dir, cell.key)
    try:
        if cell.timed:
            metrics, device, provider = _timed_eval(cell, ctx, run_dir, tmp)
        else:
            ctx.evaluation.ran_on = None
            metrics = ctx.evaluation.evaluate_run(run_dir, cell.eval_config, cell.seed, tmp)
            device, provider = _device(ctx.evaluation), None
        final = publish_dir(tmp, ctx.artifacts_dir / cell.key) if any(tmp.iterdir()) else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return CellResult(metrics=list(metrics), device=device, provider=provider,
                      artifact_path=_relative(final, ctx.artifacts_dir) if final else None, provenance=_provenance())


EXPORTS_DIR = "exports"  # <store>.artifacts/exports/<export_key>.onnx: the export cache of timed cells


def _timed_eval(cell: EvalCell, ctx: CellContext, run_dir: Path, out_dir: Path) -> tuple[list[Metric], str, str | None]:
    """Export, check and time the cell's sampler, then score samples drawn through the export (torch where
    parity failed); quality metrics say which path drew them (extra `samples_drawn_by`)."""
    import dataclasses

    from bench.grid_timing import time_eval_cell
    from genlib.data import load_dataset
    from genlib.samplers import resolve_x0_clip
    from genlib.train import load_run

    loaded = load_run(run_dir, device=ctx.evaluation.device)
    sample_cfg = resolve_x0_clip(_sample_config(cell.eval_config), loaded.model,
                                 lambda: load_dataset(loaded.config.data).x_train)  # the box the evaluation uses
    timed = time_eval_cell(loaded, sample_cfg, cell.eval_config["timing"],
                           exports_dir=ctx.artifacts_dir / EXPORTS_DIR, seed=cell.seed)
    quality = ctx.evaluation.evaluate_run(run_dir, cell.eval_config, cell.seed, out_dir, draw=timed.draw)
    tagged = [dataclasses.replace(m, extra={**m.extra, "samples_drawn_by": timed.drawn_by}) for m in quality]
    return tagged + timed.metrics, timed.device, timed.provider


def _run_floor(cell: FloorCell, ctx: CellContext) -> CellResult:
    metrics = ctx.evaluation.evaluate_floor(cell.data, cell.metrics, cell.n, cell.seed)
    return CellResult(metrics=list(metrics), artifact_path=None, device="cpu", provenance=_provenance())


def _device(evaluation: Evaluation) -> str:
    """The device the evaluation's loaded network ran on (never the training config's device); an evaluation
    that loads no checkpoint (a test's stand-in) is recorded where it would load one."""
    if evaluation.ran_on is not None:
        return evaluation.ran_on
    from genlib.provenance import select_device
    return str(select_device(evaluation.device))


CELL_BODIES = {"train": _run_train, "eval": _run_eval, "floor": _run_floor}


def run_cell(task: tuple[Cell, CellContext]) -> CellResult:
    """Worker entry point: run one cell with the context's thread count. Exceptions propagate."""
    cell, ctx = task
    import torch
    torch.set_num_threads(max(1, ctx.threads))
    return CELL_BODIES[cell.kind](cell, ctx)
