"""Export a trained run's parts to ONNX with the torch.export-based exporter, behind the parity gate.

`export_part` builds the part (`bench.parts`), exports it (a sampler: one step, composed into the whole
loop by `bench.onnx_graph`), writes FILE.onnx and its JSON sidecar FILE.onnx.json (resolved configs,
exporter, opset, node count, file size, export time, provenance, parity verdict) and returns everything
it wrote, the `ExportInfo` included, so callers never re-read the file. An export over tolerance is kept
but marked invalid. This module does not time anything (see `bench.suite`).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import time
import uuid
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import onnx
import torch
import torch.nn as nn

from genlib.checkpoint import atomic_write, write_json
from genlib.config import config_hash, to_dict
from genlib.models import module_device
from genlib.provenance import provenance
from genlib.train import LoadedRun

from bench import onnx_graph, precision
from bench.onnx_files import (SIDECAR_FORMAT, SIDECAR_VERSION, ExportInfo, export_info, io_spec, read_export,
                              sidecar_path)
from bench.parity import ParityResult, check_parity, unchecked
from bench.parts import ExportConfig, ExportError, PartGraph, build_part, resolve_sampler

EXPORTER = "torch.onnx.export(dynamo=True)"

# The batch axis of every graph input/output name; the noise of a sampler is (S, B, ...).
BATCH_AXIS = {"z": 0, "x": 0, "x_t": 0, "t": 0, "x_T": 0, "noise": 1, "mu": 0, "L": 0, "eps": 0, "x_prev": 0, "x0": 0}


@dataclass
class ExportResult:
    """What `export_part` wrote: the graph (and its single step for a sampler), the sidecar, the verdict."""

    path: Path
    info: dict  # the sidecar contents
    parity: ParityResult
    model: onnx.ModelProto
    step_model: onnx.ModelProto | None = None
    step_path: Path | None = None
    export_info: ExportInfo | None = None  # the file's contract, as `bench.onnx_files.read_export` would give
    part: PartGraph | None = None  # what was exported (module, feeds, torch reference)

    @property
    def valid(self) -> bool:
        return self.parity.valid


_REGISTRIES: dict = {}


@contextlib.contextmanager
def _torchlib_registry_once():
    """Build the exporter's ATen-to-ONNX registry once per process and opset instead of once per export.

    torch.onnx's `ONNXRegistry.from_torchlib` re-derives every torchlib function's signature from its source
    on each call (about 1.3 s of a 2-4 s export on these CPUs); the table it returns depends only on the
    installed torch and onnxscript and the opset. Each export gets its own copy of the table (the exporter
    may register into it). Where the private hook is missing (another torch), exports run as they are."""
    try:
        from torch.onnx._internal.exporter import _registration
        registry_cls = _registration.ONNXRegistry
        original = registry_cls.__dict__["from_torchlib"]
    except (ImportError, AttributeError, KeyError):
        yield
        return
    build = original.__func__

    def cached(cls, *args, **kwargs):
        key = (cls, args, tuple(sorted(kwargs.items())))
        if key not in _REGISTRIES:
            _REGISTRIES[key] = build(cls, *args, **kwargs)
        table = _REGISTRIES[key]
        copy = cls.__new__(cls)
        copy.__dict__.update(table.__dict__)
        copy.functions = {target: list(metas) for target, metas in table.functions.items()}
        return copy

    registry_cls.from_torchlib = classmethod(cached)
    try:
        yield
    finally:
        registry_cls.from_torchlib = original


def torch_export_onnx(module: nn.Module, example: tuple, input_names: list[str], output_names: list[str],
                      dynamic_shapes: dict, opset: int) -> onnx.ModelProto:
    """One module through torch.onnx.export(dynamo=True), quietly (its progress lines go to a buffer)."""
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in quiet]
    try:
        for lg in quiet:
            lg.setLevel(logging.ERROR)
        device = module_device(module)
        example = tuple(v.to(device) for v in example)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad(), \
                _torchlib_registry_once():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, example, dynamo=True, opset_version=opset,
                                        input_names=input_names, output_names=output_names,
                                        dynamic_shapes=dynamic_shapes, optimize=True, verbose=False)
    finally:
        for lg, level in zip(quiet, levels):
            lg.setLevel(level)
    return program.model_proto


def _batchify(spec: list[dict], batch_axis: dict[str, int]) -> list[dict]:
    """Name the batch axis 'batch' in an IO spec (the exporter names dynamic axes s0, s1, ...)."""
    for item in spec:
        axis = batch_axis.get(item["name"])
        if axis is not None and axis < len(item["shape"]):
            item["shape"][axis] = "batch"
    return spec


def _rename_batch_dim(model: onnx.ModelProto, batch_axis: dict[str, int]) -> None:
    for v in list(model.graph.input) + list(model.graph.output):
        axis = batch_axis.get(v.name)
        dims = v.type.tensor_type.shape.dim
        if axis is not None and axis < len(dims) and not dims[axis].dim_value:
            dims[axis].dim_param = "batch"


def network_nodes(model: onnx.ModelProto) -> set[str]:
    """Names of the exported module's nodes inside its network (what fp16 converts; the rest stays float32)."""
    blocked = set(onnx_graph.fp16_blocked_nodes(model))
    return {n.name for n in model.graph.node if n.name not in blocked}


def _convert(part: PartGraph, cfg: ExportConfig, model: onnx.ModelProto, network: set[str]
             ) -> tuple[onnx.ModelProto, dict]:
    """The graph at cfg.precision, with the facts of the conversion. fp16 keeps every node outside the network
    in float32 (a composed sampler's nodes are named '<step>/<node>'); int8_static calibrates on
    `part.calibration` (cfg.calibration_size samples, seeded)."""
    facts: dict = {}

    def calibration() -> list[dict]:
        runs = part.calibration(cfg.calibration_size, torch.Generator().manual_seed(cfg.seed + 104729))
        names = {v.name for v in model.graph.input}
        facts["calibration"] = {"source": part.calibration_source, "size": cfg.calibration_size,
                                "method": cfg.calibration_method, "runs": len(runs), "seed": cfg.seed + 104729}
        return [{k: v.detach().cpu().numpy() for k, v in r.items() if k in names} for r in runs]

    keep = [n.name for n in model.graph.node if n.name.split("/", 1)[-1] not in network] if cfg.precision == "fp16" else ()
    try:
        converted, done = precision.convert(model, cfg.precision, keep_fp32_nodes=keep,
                                            calibration=calibration if part.calibration is not None else None,
                                            calibration_method=cfg.calibration_method, per_channel=cfg.per_channel,
                                            reduce_range=cfg.reduce_range)
    except precision.PrecisionError as exc:
        raise ExportError(str(exc)) from None
    return converted, {**done, **facts}


def export_key(run: LoadedRun, cfg: ExportConfig) -> str:
    """Hash of (the run's key, the digest of its weights, the resolved export config): equal keys mean the same
    graph. The weights count by content, so an export cached on a machine is never reused for a checkpoint
    trained again under the same run key (another store, another machine, a retried cell)."""
    doc = {"run_key": run.config.run_key, "export": to_dict(cfg)}
    digest = weights_digest(Path(run.run_dir) / "model.pt") if getattr(run, "run_dir", None) else None
    if digest is not None:
        doc["weights"] = digest
    return config_hash(doc)


_DIGESTS: dict[tuple, str] = {}


def weights_digest(path: Path) -> str | None:
    """sha256 of a weights file (None when absent), computed once per path, size and modification time."""
    try:
        st = path.stat()
    except OSError:
        return None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return _DIGESTS[key]


def export_part(run: LoadedRun, cfg: ExportConfig, out: str | Path, *, check: bool = True,
                parity_provider: str = "cpu") -> ExportResult:
    """Export `cfg.part` of `run` to `out` (.onnx) and its sidecar `out.json`; check parity unless told not to.

    Returns what was written (graph, step graph, sidecar, ExportInfo) with the parity verdict; an invalid
    export is written and marked, not raised.
    """
    out = Path(out)
    if out.suffix != ".onnx":
        raise ExportError(f"output file '{out}' must end in .onnx")
    if cfg.part == "sampler":
        cfg = resolve_sampler(run, cfg)
    part = build_part(run, cfg)
    run.model.net.eval()
    start = time.perf_counter()
    exported = torch_export_onnx(part.module, part.example, part.input_names, part.output_names,
                                 part.dynamic_shapes, cfg.opset)
    network = network_nodes(exported)
    precision_facts: dict = {}
    if cfg.precision.startswith("int8"):
        # a sampler's single step is quantized (its weights once; calibrated on its inputs at each of the
        # sampler's steps), then composed: the quantizer rewrites weights per node, which shared weights forbid
        exported, precision_facts = _convert(part, cfg, exported, network)
    step_model = None
    if part.compose is not None:
        step_model = exported if cfg.precision != "fp16" else None
        model = part.compose(exported)
    else:
        model = exported
    if cfg.precision == "fp16":  # converted whole: the composed graph's casts stay at its inputs and outputs
        model, precision_facts = _convert(part, cfg, model, network)
    _rename_batch_dim(model, BATCH_AXIS)
    meta = {"genbench.part": cfg.part, "genbench.run_key": run.config.run_key,
            "genbench.export_key": export_key(run, cfg), "genbench.export_config": json.dumps(to_dict(cfg)),
            "genbench.details": json.dumps(part.details), "genbench.sample_shape": json.dumps(list(run.model.sample_shape))}
    onnx.helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    atomic_write(out, lambda p: p.write_bytes(data))
    step_path = None
    if step_model is not None:
        step_path = out.with_name(out.stem + ".step.onnx")
        onnx.helper.set_model_props(step_model, {**meta, "genbench.part": "sampler_step"})
        step_bytes = step_model.SerializeToString()
        atomic_write(step_path, lambda p: p.write_bytes(step_bytes))
    export_s = time.perf_counter() - start

    info = {
        "format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, "part": cfg.part, "path": str(out.resolve()),
        "export_key": meta["genbench.export_key"], "export_config": to_dict(cfg), "details": part.details,
        "run": {"run_dir": str(run.run_dir), "run_key": run.config.run_key, "family": run.config.model.family,
                "config": to_dict(run.config), "sample_shape": list(run.model.sample_shape), "kind": run.model.kind},
        "exporter": EXPORTER, "torch_version": torch.__version__, "opset": cfg.opset,
        "precision": cfg.precision, "precision_facts": precision_facts,
        "node_count": onnx_graph.count_nodes(model.graph),
        "top_level_node_count": len(model.graph.node), "file_size_bytes": len(data),
        "export_time_s": export_s, "inputs": _batchify(io_spec(model.graph.input), BATCH_AXIS),
        "outputs": _batchify(io_spec(model.graph.output), BATCH_AXIS),
        "step_graph": step_path.name if step_path else None,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "provenance": provenance(), "parity": None,
    }
    parity = check_parity(part, cfg, data, provider=parity_provider) if check else unchecked(cfg)
    info["parity"] = parity.to_dict()
    write_json(sidecar_path(out), info)
    return ExportResult(out, info, parity, model, step_model, step_path, export_info(model, out, info), part)


# -- the export cache ---------------------------------------------------------------------------------------------
@dataclass
class CachedExport:
    """An export found in (or just written to) a cache folder: its file, contract and resolved config; `part`
    is the PartGraph when it was built now (so a caller need not build it again); `fresh` when exported now."""

    path: Path
    info: ExportInfo
    cfg: ExportConfig
    fresh: bool
    part: PartGraph | None = None


def reusable_export(path: Path, key: str) -> ExportInfo | None:
    """The export at `path` when it is complete (sidecar and step graph present) and its sidecar has `key`."""
    if not (path.is_file() and sidecar_path(path).is_file()):
        return None
    try:
        info = read_export(path)
    except Exception:  # a truncated or foreign file is exported again
        return None
    side = info.sidecar or {}
    if side.get("export_key") != key:
        return None
    if side.get("step_graph") and not (path.parent / side["step_graph"]).is_file():
        return None
    return info


def _remove_stale_tmp(folder: Path, key: str) -> None:
    """Remove the temporary folders of this export that a killed process left (`.tmp-<key>-<pid>-<hex>` whose
    process is gone); a live one's is left alone."""
    for tmp in folder.glob(f".tmp-{key}-*"):
        try:
            pid = int(tmp.name[len(f".tmp-{key}-"):].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, PermissionError, OSError):
            continue


def cached_export(run: LoadedRun, cfg: ExportConfig, folder: str | Path, *, stem: str | None = None,
                  reuse: bool = True) -> CachedExport:
    """The one export cache (timed grid cells and `genbench bench` alike): `cfg` for `run` in `folder` as
    `<stem>.onnx` (default stem: the export key) with its sidecar (and `<stem>.step.onnx` for a sampler).
    A file whose sidecar has the same export key is reused (unless reuse=False); otherwise the part is
    exported behind the parity gate into a private temporary folder and renamed into place, the sidecar last
    (it is what makes the export reusable), so concurrent workers never see half a file; workers asking for
    the same key at once export it once (a lock per key in `folder`), the others wait and reuse it."""
    folder = Path(folder)
    if cfg.part == "sampler":
        cfg = resolve_sampler(run, cfg)
    key = export_key(run, cfg)
    path = folder / f"{stem or key}.onnx"
    if not reuse:
        return _export_into(run, cfg, folder, path, key)
    folder.mkdir(parents=True, exist_ok=True)
    with _single_flight(folder / f".lock-{key}"):  # one process exports a key; the others then find it cached
        info = reusable_export(path, key)
        if info is not None:
            return CachedExport(path, info, cfg, False)
        return _export_into(run, cfg, folder, path, key)


@contextlib.contextmanager
def _single_flight(lock_path: Path):
    """An exclusive lock on `lock_path` across processes on this machine (released if the holder dies)."""
    import fcntl

    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _export_into(run: LoadedRun, cfg: ExportConfig, folder: Path, path: Path, key: str) -> CachedExport:
    _remove_stale_tmp(folder, key)
    tmp = folder / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        result = export_part(run, cfg, tmp / path.name)
        sidecar = {**result.info, "path": str(path.resolve())}
        write_json(sidecar_path(result.path), sidecar)
        if result.step_path is not None:
            os.replace(result.step_path, folder / result.step_path.name)
        os.replace(result.path, path)
        os.replace(sidecar_path(result.path), sidecar_path(path))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return CachedExport(path, export_info(result.model, path, sidecar), cfg, True, result.part)
