"""Export a trained run's parts to ONNX with the torch.export-based exporter, behind a parity gate.

Parts (registry `PARTS`): decoder (z -> x), encoder (x -> mu, L), denoiser (x_t, t -> eps), chain
(x_t, t -> x_{t-1}) and sampler: the whole DDIM / DDPM / chain loop for fixed S, or the VAE prior plus K
refinement passes, as one graph with the noise as an input (see `bench.onnx_graph`). Every export is
checked against torch at two batch sizes (for `sampler`: against the torch sampler on the same noise,
plus a sample metric) and written with a JSON sidecar `FILE.onnx.json` holding the resolved configs,
exporter, opset, node count, file size, export time, provenance and the parity verdict. An export over
tolerance is kept but marked invalid. This module does not time anything (see `bench.suite`).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import onnx
import torch
import torch.nn as nn

from genlib.checkpoint import atomic_write, write_json
from genlib.cli import UserError
from genlib.config import config_hash, to_dict
from genlib.metrics import sliced_wasserstein
from genlib.models import SampleConfig
from genlib.provenance import provenance
from genlib.registry import Registry
from genlib.samplers import sample_chain, sample_ddim, sample_ddpm, sample_vae
from genlib.train import LoadedRun

from bench import onnx_graph
from bench.wrappers import (ChainPart, ChainStep, DDIMStep, DDPMStep, DecoderPart, DenoiserPart, EncoderPart,
                            VAEPassStep, ddim_tables, ddpm_tables)

SIDECAR_FORMAT = "genbench-onnx-export"
SIDECAR_VERSION = 1
EXPORTER = "torch.onnx.export(dynamo=True)"
DEFAULT_STEPS = 50
UNROLL_MAX_STEPS = 256

Part = Literal["decoder", "encoder", "denoiser", "chain", "sampler"]
PARTS: Registry[Callable] = Registry("export part")


class ExportError(UserError):
    """A part cannot be exported from this run (wrong family, bad option); the message says what fits."""


class NotOnnxFileError(UserError):
    """A file given as an ONNX model is missing or is not a readable ONNX model."""


class UnexpectedInputsError(UserError):
    """An ONNX graph's inputs do not match the contract of the part it claims to be (or of any part)."""


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    """What to export and how to check it. Sampler fields are used by part 'sampler' only."""

    part: Part = "decoder"
    # sampler: 'auto' = ddim for ddpm runs (the usual deployment choice), chain, or vae.
    sampler: Literal["auto", "ddim", "ddpm", "chain", "vae"] = "auto"
    steps: int | None = None  # S for ddim/ddpm (None = 50, capped at T); the chain always runs all T
    eta: float = 0.0
    variance: Literal["small", "large"] = "small"
    clip_x0: bool = True  # images only, as in genlib's generate()
    passes: int = 0  # vae: refinement passes K
    reencode: Literal["mean", "sample"] = "mean"
    # loop: an ONNX Loop (node count constant in S); unrolled: S copies of the step sharing weights, which
    # lets ONNX Runtime constant-fold everything that depends on t alone. auto: unrolled up to 256 steps.
    graph: Literal["auto", "unrolled", "loop"] = "auto"
    precision: Literal["fp32", "fp16"] = "fp32"
    opset: int = 18
    parity_batches: tuple[int, ...] = (1, 64)
    # Parity bound: max |onnx - torch| <= atol + rtol * max |torch|. None = the default for precision/part.
    atol: float | None = None
    rtol: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.opset < 18:
            raise ValueError(f"opset must be >= 18 for the torch.export-based exporter, got {self.opset}")
        SampleConfig(steps=self.steps, eta=self.eta, passes=self.passes)  # the same rules as genlib's sampling
        if len(self.parity_batches) < 2 or min(self.parity_batches) < 1:
            raise ValueError(f"parity_batches needs two or more batch sizes >= 1, got {self.parity_batches}")

    def tolerances(self) -> tuple[float, float]:
        """(atol, rtol) for the parity gate."""
        sampler = self.part == "sampler"
        default = {("fp32", False): 1e-4, ("fp32", True): 1e-3, ("fp16", False): 1e-2, ("fp16", True): 5e-2}
        d = default[(self.precision, sampler)]
        return (d if self.atol is None else self.atol), (d if self.rtol is None else self.rtol)

    def metric_tolerance(self) -> float:
        """Relative tolerance on the sample metric for `sampler` parity."""
        return 1e-3 if self.precision == "fp32" else 5e-2


@dataclass
class PartGraph:
    """Everything needed to export and check one part."""

    module: nn.Module
    example: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    dynamic_shapes: dict
    make_feeds: Callable[[int, torch.Generator], dict[str, torch.Tensor]]  # graph inputs for a batch
    reference: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]  # torch outputs for those inputs
    graph_inputs: list[str]
    graph_outputs: list[str]
    compose: Callable[[onnx.ModelProto], onnx.ModelProto] | None = None
    details: dict = field(default_factory=dict)  # resolved sampler settings etc.
    metric_data: Callable[[], np.ndarray | None] | None = None  # held-out data for the sample metric
    to_data_space: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass(frozen=True)
class ParityResult:
    valid: bool
    max_abs_err: float
    tolerance: float  # the bound at the batch with the largest error ratio
    atol: float
    rtol: float
    provider: str
    per_batch: tuple[dict, ...]
    metric: dict | None = None
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ExportResult:
    path: Path
    info: dict  # the sidecar contents
    parity: ParityResult
    model: onnx.ModelProto
    step_model: onnx.ModelProto | None = None

    @property
    def valid(self) -> bool:
        return self.parity.valid


# ------------------------------------------------------------------------------------- helpers
def _batch_dim():
    return torch.export.Dim("batch", min=1, max=1 << 20)


def _family(run: LoadedRun) -> str:
    return run.config.model.family


def _require(run: LoadedRun, part: str, families: tuple[str, ...], hint: str) -> None:
    if _family(run) not in families:
        raise ExportError(f"part '{part}' needs a run of family {' or '.join(families)}, but '{run.run_dir}' "
                          f"is '{_family(run)}'; {hint}")


def default_parts(family: str) -> list[str]:
    """The parts worth exporting and timing for a family."""
    return {"ae": ["decoder", "encoder"], "vae": ["decoder", "encoder", "sampler"],
            "ddpm": ["denoiser", "sampler"], "denoiser_chain": ["chain", "sampler"]}.get(family, [])


def _randn(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=gen)


def _held_out(run: LoadedRun, n: int = 2000) -> Callable[[], np.ndarray | None]:
    def load() -> np.ndarray | None:
        from genlib.data import DataError, load_dataset

        try:
            data = load_dataset(run.config.data)
        except (DataError, OSError):
            return None
        return np.asarray(data.x_test[:n], dtype=np.float32)

    return load


# --------------------------------------------------------------------------------------- parts
@PARTS.register("decoder", help="z (B, k) -> x (B, *shape) in data space (ae, vae)")
def decoder_part(run: LoadedRun, cfg: ExportConfig) -> PartGraph:
    _require(run, "decoder", ("ae", "vae"), "diffusion runs export 'denoiser', 'chain' or 'sampler'")
    net = run.model.net
    k = run.config.model.latent_dim
    module = DecoderPart(net).eval()
    return PartGraph(module=module, example=(torch.randn(3, k),), input_names=["z"], output_names=["x"],
                     dynamic_shapes={"z": {0: _batch_dim()}},
                     make_feeds=lambda b, g: {"z": _randn((b, k), g)},
                     reference=lambda f: {"x": module(f["z"])}, graph_inputs=["z"], graph_outputs=["x"])


@PARTS.register("encoder", help="x (B, *shape) -> mu (B, k), L (B, k, k) for a vae; -> z (B, k) for an ae")
def encoder_part(run: LoadedRun, cfg: ExportConfig) -> PartGraph:
    _require(run, "encoder", ("ae", "vae"), "diffusion runs have no encoder")
    gaussian = _family(run) == "vae"
    module = EncoderPart(run.model.net, gaussian).eval()
    shape = run.model.sample_shape
    outputs = ["mu", "L"] if gaussian else ["z"]
    held = _held_out(run)
    cache: dict = {}

    def feeds(b: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        if "x" not in cache:
            cache["x"] = held()
        x = cache["x"]
        if x is not None and len(x) > 0:
            idx = torch.randint(0, len(x), (b,), generator=g)
            return {"x": torch.from_numpy(np.array(x[idx.numpy()])).reshape(b, *shape)}
        base = torch.rand((b, *shape), generator=g) if run.model.kind == "image" else _randn((b, *shape), g)
        return {"x": base}

    def reference(f: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = module(f["x"])
        return dict(zip(outputs, out if isinstance(out, tuple) else (out,)))

    return PartGraph(module=module, example=(torch.rand(3, *shape),), input_names=["x"], output_names=outputs,
                     dynamic_shapes={"x": {0: _batch_dim()}}, make_feeds=feeds, reference=reference,
                     graph_inputs=["x"], graph_outputs=outputs)


def _denoiser_like(run: LoadedRun, module: nn.Module, output: str) -> PartGraph:
    shape = run.model.sample_shape
    T = run.model.schedule.T

    def feeds(b: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        return {"x_t": _randn((b, *shape), g), "t": torch.randint(0, T, (b,), generator=g)}

    return PartGraph(module=module.eval(), example=(torch.randn(3, *shape), torch.tensor([0, T // 2, T - 1])),
                     input_names=["x_t", "t"], output_names=[output],
                     dynamic_shapes={"x_t": {0: _batch_dim()}, "t": {0: _batch_dim()}}, make_feeds=feeds,
                     reference=lambda f: {output: module(f["x_t"], f["t"])}, graph_inputs=["x_t", "t"],
                     graph_outputs=[output], details={"T": T})


@PARTS.register("denoiser", help="(x_t (B, *shape), t (B,) int64) -> eps (ddpm)")
def denoiser_part(run: LoadedRun, cfg: ExportConfig) -> PartGraph:
    _require(run, "denoiser", ("ddpm",), "the naive chain's network is part 'chain'")
    return _denoiser_like(run, DenoiserPart(run.model.net), "eps")


@PARTS.register("chain", help="(x_t, t) -> x_{t-1}: the naive chain's denoiser (denoiser_chain)")
def chain_part(run: LoadedRun, cfg: ExportConfig) -> PartGraph:
    _require(run, "chain", ("denoiser_chain",), "ddpm networks are part 'denoiser'")
    return _denoiser_like(run, ChainPart(run.model.net), "x_prev")


def resolve_sampler(run: LoadedRun, cfg: ExportConfig) -> ExportConfig:
    """Fill in sampler, steps and graph form for this run (the resolved config is what gets recorded)."""
    family = _family(run)
    allowed = {"ddpm": ("ddim", "ddpm"), "denoiser_chain": ("chain",), "vae": ("vae",)}.get(family)
    if allowed is None:
        raise ExportError(f"part 'sampler' has no graph for family '{family}' (a plain autoencoder samples with "
                          f"its decoder alone: export part 'decoder')")
    sampler = allowed[0] if cfg.sampler == "auto" else cfg.sampler
    if sampler not in allowed:
        raise ExportError(f"sampler '{sampler}' does not apply to family '{family}' (use one of: {', '.join(allowed)})")
    if family == "vae":
        n = cfg.passes
        steps = None
    elif family == "denoiser_chain":
        T = run.model.schedule.T
        if cfg.steps not in (None, T):
            raise ExportError(f"the naive chain runs all T={T} steps; steps={cfg.steps} is not supported")
        n = steps = T
    else:
        T = run.model.schedule.T
        steps = min(DEFAULT_STEPS, T) if cfg.steps is None else cfg.steps
        if steps > T:
            raise ExportError(f"steps={steps} exceeds the run's T={T}")
        n = steps
    graph = cfg.graph if cfg.graph != "auto" else ("unrolled" if n <= UNROLL_MAX_STEPS else "loop")
    return replace(cfg, sampler=sampler, steps=steps, graph=graph)


@PARTS.register("sampler", help="the whole DDIM/DDPM/chain loop (fixed S) or VAE prior + K passes as one graph")
def sampler_part(run: LoadedRun, cfg: ExportConfig) -> PartGraph:
    cfg = resolve_sampler(run, cfg)
    model = run.model
    net = model.net
    shape = model.sample_shape
    if cfg.sampler == "vae":
        return _vae_sampler(run, cfg)
    clip = 1.0 if (cfg.clip_x0 and model.kind == "image") else None
    if cfg.sampler == "chain":
        step: nn.Module = ChainStep(net, model.schedule.T, model.to_data_space)
        n, noisy = model.schedule.T, False
    elif cfg.sampler == "ddim":
        n, noisy = cfg.steps, cfg.eta > 0
        step = DDIMStep(net, ddim_tables(model.schedule, n, cfg.eta), model.to_data_space, clip, stochastic=noisy)
    else:
        n, noisy = cfg.steps, True
        step = DDPMStep(net, ddpm_tables(model.schedule, n, cfg.variance), model.to_data_space, clip)
    step.to(model.device).eval()  # the tables follow the network's device
    indices = list(reversed(range(n)))

    def feeds(b: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        f = {"x_T": _randn((b, *shape), g)}
        if noisy:
            f["noise"] = _randn((n, b, *shape), g)
        return f

    def reference(f: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x_T, noise = f["x_T"], f.get("noise")
        if cfg.sampler == "chain":
            x0 = sample_chain(net, x_T, n)
        elif cfg.sampler == "ddim":
            x0 = sample_ddim(net, x_T, model.schedule, n, eta=cfg.eta, clip_x0=clip, noise=noise)
        else:
            x0 = sample_ddpm(net, x_T, model.schedule, n, variance=cfg.variance, clip_x0=clip, noise=noise)
        return {"x0": x0, "x": model.to_data_space(x0)}

    b = 3
    example = (torch.randn(b, *shape), torch.tensor([n - 1])) + ((torch.randn(n, b, *shape),) if noisy else ())
    names = ["x", "i"] + (["noise"] if noisy else [])
    dyn = {"x": {0: _batch_dim()}, "i": None, **({"noise": {1: _batch_dim()}} if noisy else {})}
    return PartGraph(
        module=step, example=example, input_names=names, output_names=["x_next", "out"], dynamic_shapes=dyn,
        make_feeds=feeds, reference=reference, graph_inputs=["x_T"] + (["noise"] if noisy else []),
        graph_outputs=["x0", "x"], details=_sampler_details(cfg, n, noisy),
        compose=lambda m: onnx_graph.compose_sampler(m, indices, mode=cfg.graph, state_input="x_T",
                                                     state_output="x0", out_output="x", graph_name=cfg.sampler),
        metric_data=_held_out(run), to_data_space=model.to_data_space)


def _sampler_details(cfg: ExportConfig, n: int, noisy: bool) -> dict:
    return {"sampler": cfg.sampler, "steps": n, "graph": cfg.graph, "noise_input": noisy, "eta": cfg.eta,
            "variance": cfg.variance, "clip_x0": cfg.clip_x0, "passes": cfg.passes, "reencode": cfg.reencode}


def _vae_sampler(run: LoadedRun, cfg: ExportConfig) -> PartGraph:
    net = run.model.net
    k = run.config.model.latent_dim
    K = cfg.passes
    noisy = cfg.reencode == "sample" and K > 0
    step = VAEPassStep(net, K, cfg.reencode).eval()

    def feeds(b: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        f = {"z": _randn((b, k), g)}
        if noisy:
            # Drawn one pass at a time, exactly as sample_vae draws from its generator.
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
            pass_gen = torch.Generator().manual_seed(seed)
            f["noise"] = torch.stack([_randn((b, k), pass_gen) for _ in range(K)])
            f["_seed"] = torch.tensor(seed)
        return f

    def reference(f: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(int(f["_seed"])) if noisy else None
        x = sample_vae(net.decode, net.encode, f["z"], passes=K, reencode=cfg.reencode, generator=gen)
        return {"x": x}

    b = 3
    example = (torch.randn(b, k), torch.tensor([0])) + ((torch.randn(max(K, 1), b, k),) if noisy else ())
    names = ["x", "i"] + (["noise"] if noisy else [])
    dyn = {"x": {0: _batch_dim()}, "i": None, **({"noise": {1: _batch_dim()}} if noisy else {})}
    return PartGraph(
        module=step, example=example, input_names=names, output_names=["x_next", "out"], dynamic_shapes=dyn,
        make_feeds=feeds, reference=reference, graph_inputs=["z"] + (["noise"] if noisy else []),
        graph_outputs=["x"], details=_sampler_details(cfg, K, noisy),
        compose=lambda m: onnx_graph.compose_sampler(m, list(range(K)), mode=cfg.graph, state_input="z",
                                                     state_output=None, out_output="x", graph_name="vae"),
        metric_data=_held_out(run), to_data_space=lambda x: x)


# ------------------------------------------------------------------------------------ exporting
def torch_export_onnx(module: nn.Module, example: tuple, input_names: list[str], output_names: list[str],
                      dynamic_shapes: dict, opset: int) -> onnx.ModelProto:
    """One module through torch.onnx.export(dynamo=True), quietly (its progress lines go to a buffer)."""
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in quiet]
    try:
        for lg in quiet:
            lg.setLevel(logging.ERROR)
        device = next(module.parameters()).device
        example = tuple(v.to(device) for v in example)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, example, dynamo=True, opset_version=opset,
                                        input_names=input_names, output_names=output_names,
                                        dynamic_shapes=dynamic_shapes, optimize=True, verbose=False)
    finally:
        for lg, level in zip(quiet, levels):
            lg.setLevel(level)
    return program.model_proto


def _io_spec(values) -> list[dict]:
    out = []
    for v in values:
        t = v.type.tensor_type
        dims = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
        out.append({"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, "shape": dims})
    return out


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


# The batch axis of every graph input/output name; the noise of a sampler is (S, B, ...).
BATCH_AXIS = {"z": 0, "x": 0, "x_t": 0, "t": 0, "x_T": 0, "noise": 1, "mu": 0, "L": 0, "eps": 0, "x_prev": 0, "x0": 0}


def export_key(run: LoadedRun, cfg: ExportConfig) -> str:
    return config_hash({"run_key": run.config.run_key, "export": to_dict(cfg)})


def export_part(run: LoadedRun, cfg: ExportConfig, out: str | Path, *, check: bool = True,
                parity_provider: str = "cpu") -> ExportResult:
    """Export `cfg.part` of `run` to `out` (.onnx) and its sidecar `out.json`; check parity unless told not to.

    Returns the result with the parity verdict; an invalid export is written and marked, not raised.
    """
    out = Path(out)
    if out.suffix != ".onnx":
        raise ExportError(f"output file '{out}' must end in .onnx")
    if cfg.part == "sampler":
        cfg = resolve_sampler(run, cfg)
    part = PARTS.get(cfg.part)(run, cfg)
    run.model.net.eval()
    start = time.perf_counter()
    exported = torch_export_onnx(part.module, part.example, part.input_names, part.output_names,
                                 part.dynamic_shapes, cfg.opset)
    if cfg.precision == "fp16":
        exported = onnx_graph.to_float16(exported)
    step_model = None
    if part.compose is not None:
        step_model = exported
        model = part.compose(exported)
    else:
        model = exported
    batch_axis = BATCH_AXIS
    _rename_batch_dim(model, batch_axis)
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
        "run": {"run_dir": str(run.run_dir), "run_key": run.config.run_key, "family": _family(run),
                "config": to_dict(run.config), "sample_shape": list(run.model.sample_shape), "kind": run.model.kind},
        "exporter": EXPORTER, "torch_version": torch.__version__, "opset": cfg.opset,
        "precision": cfg.precision, "node_count": onnx_graph.count_nodes(model.graph),
        "top_level_node_count": len(model.graph.node), "file_size_bytes": out.stat().st_size,
        "export_time_s": export_s, "inputs": _batchify(_io_spec(model.graph.input), batch_axis),
        "outputs": _batchify(_io_spec(model.graph.output), batch_axis),
        "step_graph": step_path.name if step_path else None,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "provenance": provenance(), "parity": None,
    }
    parity = check_parity(part, cfg, data, provider=parity_provider) if check else ParityResult(
        valid=False, max_abs_err=math.nan, tolerance=math.nan, atol=cfg.tolerances()[0], rtol=cfg.tolerances()[1],
        provider="", per_batch=(), reason="parity not checked")
    info["parity"] = parity.to_dict()
    write_json(sidecar_path(out), info)
    return ExportResult(out, info, parity, model, step_model)


def sidecar_path(onnx_path: str | Path) -> Path:
    p = Path(onnx_path)
    return p.with_name(p.name + ".json")


# ---------------------------------------------------------------------------------------- parity
def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _np(v: torch.Tensor) -> np.ndarray:
    return v.detach().cpu().numpy()


def check_parity(part: PartGraph, cfg: ExportConfig, model: bytes | str | Path | object, *,
                 provider: str = "cpu", session=None) -> ParityResult:
    """ONNX Runtime vs torch at each of `cfg.parity_batches`; for a sampler also a sample metric.

    Valid when every output's max |onnx - torch| <= atol + rtol * max |torch| at every batch (and, for a
    sampler, the sliced Wasserstein distance to held-out data agrees within `cfg.metric_tolerance()`).
    """
    from bench.runtime import SessionConfig, make_session

    if session is None:
        session = make_session(model, SessionConfig(provider=provider))
    atol, rtol = cfg.tolerances()
    rows = []
    worst_ratio, worst = -1.0, (0.0, atol)
    metric = None
    nonfinite = False
    for b in cfg.parity_batches:
        gen = torch.Generator().manual_seed(cfg.seed + 7919 * b)
        feeds = part.make_feeds(b, gen)
        device = _device_of(part.module)
        with torch.inference_mode():
            ref = {k: _np(v) for k, v in part.reference({k: v.to(device) for k, v in feeds.items()}).items()}
        onnx_feeds = {k: _np(v) for k, v in feeds.items() if k in part.graph_inputs}
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, onnx_feeds)))
        for name in part.graph_outputs:
            r, o = ref[name].astype(np.float64), got[name].astype(np.float64)
            if r.shape != o.shape:
                raise UnexpectedInputsError(f"output '{name}' has shape {o.shape} in ONNX but {r.shape} in torch")
            err = float(np.max(np.abs(r - o))) if r.size else 0.0
            if not math.isfinite(err):
                nonfinite = True
            bound = atol + rtol * float(np.max(np.abs(r))) if r.size else atol
            rows.append({"batch": b, "output": name, "max_abs_err": err, "tolerance": bound,
                         "max_abs_ref": float(np.max(np.abs(r))) if r.size else 0.0})
            if not math.isfinite(err):
                ratio = math.inf
            else:
                ratio = err / bound if bound > 0 else (0.0 if err == 0 else math.inf)
            if ratio > worst_ratio:
                worst_ratio, worst = ratio, (err, bound)
        if part.metric_data is not None and b == max(cfg.parity_batches):
            metric = _metric_agreement(part, cfg, ref, got)
    valid = worst_ratio <= 1.0 and not nonfinite
    reason = "" if valid else f"max abs error {worst[0]:.3g} exceeds tolerance {worst[1]:.3g}"
    if metric is not None and metric.get("agree") is False:
        valid = False
        reason = (reason + "; " if reason else "") + (f"sample metric {metric['name']} differs: onnx {metric['onnx']:.5g} "
                                                      f"vs torch {metric['torch']:.5g}")
    return ParityResult(valid=valid, max_abs_err=worst[0], tolerance=worst[1], atol=atol, rtol=rtol,
                        provider=session.get_providers()[0], per_batch=tuple(rows), metric=metric, reason=reason)


def _metric_agreement(part: PartGraph, cfg: ExportConfig, ref: dict, got: dict) -> dict:
    data = part.metric_data()
    if data is None or len(data) == 0:
        return {"name": "sliced_wasserstein", "agree": None, "reason": "held-out data unavailable"}
    x_ref, x_onnx = ref["x"].reshape(len(ref["x"]), -1), got["x"].reshape(len(got["x"]), -1)
    data = data.reshape(len(data), -1)
    m_torch = sliced_wasserstein(x_ref, data, seed=cfg.seed)
    m_onnx = sliced_wasserstein(x_onnx, data, seed=cfg.seed)
    tol = cfg.metric_tolerance() * abs(m_torch) + 1e-6
    return {"name": "sliced_wasserstein", "torch": m_torch, "onnx": m_onnx, "abs_diff": abs(m_onnx - m_torch),
            "tolerance": tol, "agree": bool(abs(m_onnx - m_torch) <= tol), "n": int(len(x_ref))}


# ------------------------------------------------------------------------------ reading exports
PART_CONTRACTS: dict[str, list[tuple[str, ...]]] = {
    "decoder": [("z",)], "encoder": [("x",)], "denoiser": [("x_t", "t")], "chain": [("x_t", "t")],
    "sampler": [("x_T",), ("x_T", "noise"), ("z",), ("z", "noise")],
}


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Read an ONNX model, raising NotOnnxFileError (naming the file) for anything else."""
    path = Path(path)
    if not path.is_file():
        raise NotOnnxFileError(f"ONNX file '{path}' does not exist")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises DecodeError, onnx raises several types
        raise NotOnnxFileError(f"'{path}' is not an ONNX model ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not model.graph.node and not model.graph.output:
        raise NotOnnxFileError(f"'{path}' is not an ONNX model (no graph)")
    return model


@dataclass
class ExportInfo:
    """What a benchmark needs to know about an ONNX file: its part, IO contract and sidecar (if any)."""

    path: Path
    part: str
    inputs: list[dict]
    outputs: list[dict]
    sidecar: dict | None
    details: dict

    @property
    def valid(self) -> bool | None:
        parity = (self.sidecar or {}).get("parity") or {}
        return parity.get("valid")


def read_export(path: str | Path) -> ExportInfo:
    """Load an ONNX file's contract: from genbench metadata when present, else inferred from its inputs.

    Raises NotOnnxFileError for a non-ONNX file and UnexpectedInputsError when the inputs fit no part
    (or not the part the metadata names).
    """
    path = Path(path)
    model = load_onnx(path)
    props = {p.key: p.value for p in model.metadata_props}
    init_names = {i.name for i in model.graph.initializer}
    inputs = _io_spec([v for v in model.graph.input if v.name not in init_names])
    outputs = _io_spec(model.graph.output)
    names = tuple(v["name"] for v in inputs)
    part = props.get("genbench.part")
    if part is not None:
        if part not in PART_CONTRACTS:
            raise UnexpectedInputsError(f"'{path}' is a genbench '{part}' graph, which cannot be benchmarked on its own")
        if names not in PART_CONTRACTS[part]:
            raise UnexpectedInputsError(
                f"'{path}' claims to be a '{part}' graph but has inputs {list(names)}; expected "
                f"{' or '.join(str(list(c)) for c in PART_CONTRACTS[part])}")
    else:
        matches = [p for p, contracts in PART_CONTRACTS.items() if names in contracts and p != "sampler"]
        if not matches:
            raise UnexpectedInputsError(
                f"'{path}' has inputs {list(names)}, which match no genbench part (expected one of: "
                + "; ".join(f"{p} {list(c[0])}" for p, c in PART_CONTRACTS.items()) + ")")
        part = matches[0]
    side = sidecar_path(path)
    sidecar = None
    if side.is_file():
        try:
            sidecar = json.loads(side.read_text())
        except json.JSONDecodeError:
            sidecar = None
    details = json.loads(props.get("genbench.details", "{}"))
    return ExportInfo(path, part, inputs, outputs, sidecar, details)


def random_feeds(info: ExportInfo, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of the right shape and dtype for timing an ONNX file alone (no torch model needed).

    Float inputs are standard normal, int64 timesteps uniform over 0..T-1 (T from the export details
    when known). Symbolic axes other than the batch take 1.
    """
    rng = np.random.default_rng(seed)
    T = int(info.details.get("T", 1000))
    feeds = {}
    for item in info.inputs:
        shape = [batch if d == "batch" else (d if isinstance(d, int) and d > 0 else 1) for d in item["shape"]]
        if item["dtype"].startswith("int"):
            feeds[item["name"]] = rng.integers(0, T, size=shape).astype(item["dtype"])
        else:
            feeds[item["name"]] = rng.standard_normal(shape).astype(item["dtype"])
    return feeds
