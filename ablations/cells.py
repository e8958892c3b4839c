"""What a worker does with one cell: train a checkpoint, evaluate one, or measure a data floor.

Cell bodies run in worker processes (or Ray tasks, on machines that may share no disk with the driver) and
return plain results: metrics, provenance and their artifacts as bytes (`pack_dir`). They never touch the
results store nor the driver's artifacts folder: the driver writes both. An evaluation receives its parent's
checkpoint as bytes (`Shared`, through the pool's pipe or Ray's object store) and unpacks it once per node into
a cache keyed by run key and content (`node_cache_dir`). The evaluation is a seam (`Evaluation`): the default computes `genlib.metrics` on samples
from the checkpoint; tests pass a cheap one. Metrics are deterministic for a config and seed (on one
machine and thread count). An evaluation whose config carries `timing` also exports, checks and times its
sampler (`bench.grid_timing`) and scores samples drawn through the exported graph where parity holds: its
latency and quality metrics come back together, for one row under one run key.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from genlib.store import Metric

from ablations.executors import Resources, Shared
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
    exports_dir: Path | None = None  # the node's export cache, set by the cell (a precision perturbation's graph)

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
        import dataclasses

        import numpy as np

        from bench.perturb import realise_perturbation
        from genlib.checkpoint import atomic_write
        from genlib.data import load_dataset
        from genlib.samplers import resolve_x0_clip
        from genlib.train import generate, load_run

        metrics = _metrics_module()
        loaded = load_run(run_dir, device=self.device)
        self.ran_on = str(loaded.model.device)
        dataset = load_dataset(loaded.config.data)
        sample_cfg = resolve_x0_clip(_sample_config(eval_cfg), loaded.model, dataset.x_train)  # the box, as numbers
        # a real perturbation (an early checkpoint, the int8 denoiser) is the network itself: loaded as such
        exports_dir = self.exports_dir or node_cache_dir() / EXPORTS_DIR
        loaded, perturb_facts = realise_perturbation(loaded, sample_cfg.perturb, exports_dir, device=self.device,
                                                     seed=seed)
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
        scored = list(metrics.evaluate(eval_cfg.get("metrics"), dataset=dataset, model=loaded.model, samples=samples,
                                       sample_cfg=sample_cfg, n=n, seed=seed))
        if perturb_facts:  # what the perturbed network was, with every number measured through it
            scored = [dataclasses.replace(m, extra={**m.extra, "perturb_facts": perturb_facts}) for m in scored]
        return scored

    def evaluate_floor(self, data_cfg: dict[str, Any], names: list[str] | None, n: int, seed: int) -> list[Metric]:
        from genlib.config import from_dict
        from genlib.data import DataConfig, load_dataset

        metrics = _metrics_module()
        dataset = load_dataset(from_dict(DataConfig, data_cfg, "data"))
        return list(metrics.evaluate_floor(dataset, names, n=n, seed=seed))


NODE_CACHE_ENV = "GENBENCH_NODE_CACHE"


def node_cache_dir() -> Path:
    """This machine's cache of unpacked checkpoints, export graphs and scratch space: $GENBENCH_NODE_CACHE, else
    `<temp dir>/genbench-node-<uid>`. Read on the node that runs the cell, never sent from the driver."""
    env = os.environ.get(NODE_CACHE_ENV)
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(env) if env else Path(tempfile.gettempdir()) / f"genbench-node-{uid}"


def share_key(run_key: str, data: bytes) -> str:
    """The name of a checkpoint in node caches: its run key and a digest of its bytes, so two checkpoints
    trained under one run key (another store, another machine) are never mixed."""
    return f"{run_key}-{hashlib.sha256(data).hexdigest()[:16]}"


def cell_resources(cell: Cell) -> Resources:
    """What a cell asks of a node: a GPU when its training config's device is cuda (an evaluation loads its
    checkpoint where the training ran), else one CPU; a timed evaluation takes its whole node."""
    train_cfg = cell.config if isinstance(cell, TrainCell) else getattr(cell, "train_config", None) or {}
    gpu = (train_cfg.get("train") or {}).get("device") == "cuda"
    return Resources(num_cpus=1, num_gpus=1 if gpu else 0, whole_node=isinstance(cell, EvalCell) and cell.timed)


@dataclass(frozen=True)
class CellContext:
    """What a worker needs besides the cell: how to evaluate and how many threads. `cache_dir`: the node cache
    (None: `node_cache_dir()` of the node the cell runs on)."""

    evaluation: Evaluation = field(default_factory=MetricsEvaluation)
    threads: int = 1
    cache_dir: Path | None = None

    @property
    def cache(self) -> Path:
        return self.cache_dir if self.cache_dir is not None else node_cache_dir()


@dataclass(frozen=True)
class CellResult:
    """What a cell hands back. `artifact`: its artifact directory as `pack_dir` bytes (a training's run
    directory, an evaluation's samples); `exports`: export-cache files by name. The driver publishes both
    under `<store>.artifacts/` and sets `artifact_path` (relative to the store's directory) before recording."""

    metrics: list[Metric]
    artifact_path: str | None  # set by the driver once the artifact is published
    device: str | None  # the torch device the cell ran on
    provenance: dict[str, Any]  # genlib.provenance.provenance() of the worker (machine.ray_node on Ray)
    provider: str | None = None  # the ONNX Runtime provider a session reported, when the cell ran one
    artifact: bytes | None = field(default=None, repr=False)
    exports: dict[str, bytes] = field(default_factory=dict, repr=False)


def init_worker(threads: int) -> None:
    """Run once per worker process: fix the thread count (results depend on it) and import the stack."""
    import torch

    import genlib.train  # noqa: F401  (import costs are paid at start-up, not inside the first cell)
    torch.set_num_threads(max(1, int(threads)))
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # the first optimiser pulls in torch._dynamo


def _tmp_dir(parent: Path, key: str) -> Path:
    path = parent / f"{TMP_PREFIX}{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    return path


def clean_partial(artifacts_dir: Path) -> int:
    """Remove temporary and trash directories left by an interrupted run; returns how many."""
    if not artifacts_dir.is_dir():
        return 0
    removed = 0
    for path in artifacts_dir.iterdir():
        # `.tmp-<key>-...` (a cell's scratch), `<key>.tmp-...` (genlib's unpack) and `<key>.trash-...`
        if path.name.startswith(TMP_PREFIX) or TMP_PREFIX in path.name or TRASH_MARKER in path.name:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            removed += 1
    return removed


def artifact_complete(path: Path, kind: str) -> bool:
    """A training artifact is complete when model.pt exists (written last); others when the dir exists."""
    return (path / "model.pt").is_file() if kind == "train" else path.is_dir()


def _provenance() -> dict[str, Any]:
    """The worker's provenance; on a Ray worker its machine facts also name the Ray node (`ray_node`)."""
    import sys

    from genlib.provenance import provenance
    prov = provenance()
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        prov["machine"]["ray_node"] = ray.get_runtime_context().get_node_id()
    return prov


def _scratch(ctx: CellContext, key: str) -> Path:
    return _tmp_dir(ctx.cache / "scratch", key)


def checkpoint_dir(checkpoint: Shared, cache: Path) -> Path:
    """The parent's run directory in this node's cache, unpacked from `checkpoint` on first use."""
    from genlib.checkpoint import unpack_dir

    path = cache / "checkpoints" / checkpoint.key
    if artifact_complete(path, "train"):
        return path
    return unpack_dir(checkpoint.get(), path, replace=path.is_dir())  # an incomplete copy is replaced


def _run_train(cell: TrainCell, ctx: CellContext, _inputs: None = None) -> CellResult:
    from genlib.checkpoint import pack_dir
    from genlib.train import load_run_config, train, training_metrics

    cfg = load_run_config(cell.config)
    tmp = _scratch(ctx, cell.key)
    try:
        result = train(cfg, tmp, progress=False)
        artifact = pack_dir(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return CellResult(metrics=training_metrics(result.history, cfg.model.family), artifact_path=None,
                      device=result.meta.get("device"), provenance=_provenance(), artifact=artifact)


def _run_eval(cell: EvalCell, ctx: CellContext, checkpoint: Shared | None = None) -> CellResult:
    from genlib.checkpoint import CheckpointError, pack_dir

    if checkpoint is None:
        raise CheckpointError(f"evaluation {cell.label} was handed no checkpoint of its training {cell.parent}")
    run_dir = checkpoint_dir(checkpoint, ctx.cache)
    tmp = _scratch(ctx, cell.key)
    exports: dict[str, bytes] = {}
    try:
        if cell.timed:
            metrics, device, provider, exports = _timed_eval(cell, ctx, run_dir, tmp)
        else:
            ctx.evaluation.ran_on = None
            ctx.evaluation.exports_dir = ctx.cache / EXPORTS_DIR
            metrics = ctx.evaluation.evaluate_run(run_dir, cell.eval_config, cell.seed, tmp)
            device, provider = _device(ctx.evaluation), None
        artifact = pack_dir(tmp) if any(tmp.iterdir()) else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return CellResult(metrics=list(metrics), device=device, provider=provider, artifact_path=None,
                      provenance=_provenance(), artifact=artifact, exports=exports)


EXPORTS_DIR = "exports"  # <store>.artifacts/exports/<export_key>.onnx: the export cache of timed cells


def _export_files(exports_dir: Path, keys: set[str]) -> dict[str, bytes]:
    """The export-cache files of `keys` (graph, step graph, sidecar) by file name, to publish on the driver."""
    return {p.name: p.read_bytes() for p in sorted(exports_dir.iterdir())
            if p.is_file() and not p.name.startswith(".") and p.name.split(".", 1)[0] in keys}


def _timed_run(cell: EvalCell, ctx: CellContext, run_dir: Path):
    """(the loaded checkpoint, the cell's SampleConfig with the clip box the evaluation uses)."""
    from genlib.data import load_dataset
    from genlib.samplers import resolve_x0_clip
    from genlib.train import load_run

    loaded = load_run(run_dir, device=ctx.evaluation.device)
    return loaded, resolve_x0_clip(_sample_config(cell.eval_config), loaded.model,
                                   lambda: load_dataset(loaded.config.data).x_train)


def prepare_timed(task: tuple[EvalCell, CellContext, Shared]) -> CellResult:
    """Worker entry point, run ahead of a timed evaluation and beside other cells: export the graph it will time
    into this node's export cache (behind the parity gate; `bench.grid_timing.prepare_export`), so the
    evaluation, which runs alone, spends its time alone measuring. It records nothing; the evaluation records
    everything and exports itself where the cache misses (another node, a failure here)."""
    from bench.grid_timing import prepare_export

    cell, ctx, checkpoint = task
    import torch
    torch.set_num_threads(max(1, ctx.threads))
    loaded, sample_cfg = _timed_run(cell, ctx, checkpoint_dir(checkpoint, ctx.cache))
    prepare_export(loaded, sample_cfg, cell.eval_config["timing"], exports_dir=ctx.cache / EXPORTS_DIR,
                   precision=cell.eval_config.get("precision", "fp32"))
    return CellResult(metrics=[], artifact_path=None, device=None, provenance={})


def _timed_eval(cell: EvalCell, ctx: CellContext, run_dir: Path,
                out_dir: Path) -> tuple[list[Metric], str, str | None, dict[str, bytes]]:
    """Export, check and time the cell's sampler, then score samples drawn through the export (torch where
    parity failed); quality metrics say which path drew them (extra `samples_drawn_by`)."""
    import dataclasses

    from bench.grid_timing import time_eval_cell

    loaded, sample_cfg = _timed_run(cell, ctx, run_dir)
    exports_dir = ctx.cache / EXPORTS_DIR
    timed = time_eval_cell(loaded, sample_cfg, cell.eval_config["timing"], exports_dir=exports_dir, seed=cell.seed,
                           precision=cell.eval_config.get("precision", "fp32"), n=int(cell.eval_config["n"]))
    quality = ctx.evaluation.evaluate_run(run_dir, cell.eval_config, cell.seed, out_dir, draw=timed.draw)
    tagged = [dataclasses.replace(m, extra={**m.extra, "samples_drawn_by": timed.drawn_by}) for m in quality]
    keys = {timed.export_key} | {m.extra["export_key"] for m in timed.metrics if m.extra.get("export_key")}
    return tagged + timed.metrics, timed.device, timed.provider, _export_files(exports_dir, keys)


def _run_floor(cell: FloorCell, ctx: CellContext, _inputs: None = None) -> CellResult:
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


def run_cell(task: tuple[Cell, CellContext] | tuple[Cell, CellContext, Shared | None]) -> CellResult:
    """Worker entry point: run one cell with the context's thread count; an evaluation's third item is its
    parent's checkpoint. Exceptions propagate."""
    cell, ctx, *inputs = task
    import torch
    torch.set_num_threads(max(1, ctx.threads))
    return CELL_BODIES[cell.kind](cell, ctx, *inputs)
