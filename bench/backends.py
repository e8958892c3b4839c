"""Backends to time, registered by name: how to turn a target into one repeatable (call, sync) pair.

Network parts: `torch` (eager, inference mode), `torch_compile` (inductor, where it compiles), `ort`
(ONNX Runtime on each requested provider). Samplers: `torch_loop` (the genlib sampler), `ort_net_loop`
(the genlib sampler calling an ONNX Runtime network session once per step: STYLE seam 2),
`ort_step_loop` (a Python loop over the exported single-step graph), `ort_graph` (the whole-sampler
graph) and `peer` (the sampler's peer-library implementation, e.g. a diffusers scheduler, driving the same
torch network; optional). Every sampler backend reads the sampler's registry entry and never names a sampler.
A backend that cannot run here raises `BackendUnavailable` with the reason; nothing here measures time.
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from genlib.registry import Registry

from bench.onnx_files import ExportInfo, random_feeds
from bench.onnx_graph import history_names
from bench.parity import ParityResult, check_parity
from bench.parts import ExportConfig, PartGraph
from bench.runtime import SessionConfig, bind_runner, make_session
from bench.timing import peak_rss_mb


class BackendUnavailable(RuntimeError):
    """This backend cannot run this target here (missing package, compiler, provider or graph)."""


@dataclass
class Target:
    """One thing to time: a part or sampler of a run, with its exported graph(s).

    part_graph is None when only an ONNX file is known (`genbench bench --onnx`); then only the ONNX
    Runtime backends apply. `siblings` holds the other exported parts of the same run (the sampler's
    `ort_net_loop` needs the denoiser, or the VAE's decoder and encoder).
    """

    part: str
    onnx_path: Path
    info: ExportInfo
    export_cfg: ExportConfig | None = None
    part_graph: PartGraph | None = None
    run: Any = None  # genlib.train.LoadedRun
    step_path: Path | None = None
    siblings: dict[str, "Target"] = field(default_factory=dict)
    parity_cache: dict[str, ParityResult] = field(default_factory=dict)
    label: str = ""  # how tables name it (default: the part)

    @property
    def name(self) -> str:
        return self.label or self.part

    @property
    def is_sampler(self) -> bool:
        return self.part == "sampler"

    def feeds(self, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
        """Inputs for one call at this batch size (torch tensors; same values for every backend)."""
        if self.part_graph is not None:
            return self.part_graph.make_feeds(batch, torch.Generator().manual_seed(seed + batch))
        return {k: torch.from_numpy(v) for k, v in random_feeds(self.info, batch, seed).items()}

    def onnx_feeds(self, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
        names = {v["name"] for v in self.info.inputs}
        return {k: v.numpy() for k, v in self.feeds(batch, seed).items() if k in names}


@dataclass
class Prepared:
    """A ready-to-time call. `close()` restores anything `prepare` changed (thread counts)."""

    call: Callable[[], Any]
    sync: Callable[[], None]
    provider: str  # what actually executes: 'torch:cpu', 'CPUExecutionProvider', ...
    device: str
    memory: Callable[[], float | None] | None = None
    close: Callable[[], None] = lambda: None
    parity: ParityResult | None = None
    notes: dict = field(default_factory=dict)


@dataclass(frozen=True)
class BackendSpec:
    prepare: Callable[..., Prepared]
    applies: Callable[[Target], bool]
    uses_provider: bool  # fans out over ONNX Runtime providers
    baseline: bool = False  # the reference the others are compared with
    torch_network: bool = False  # runs the trained torch network (its precision is the training's, fp32)


BACKENDS: Registry[BackendSpec] = Registry("backend")


def register(name: str, help: str, applies: Callable[[Target], bool], uses_provider: bool = False,
             baseline: bool = False, torch_network: bool = False):
    def deco(fn: Callable[..., Prepared]) -> Callable[..., Prepared]:
        BACKENDS.register(name, help=help)(BackendSpec(fn, applies, uses_provider, baseline,
                                                       torch_network or baseline))
        return fn

    return deco


def _torch_threads(threads: int) -> Callable[[], None]:
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    return lambda: torch.set_num_threads(old)


def _torch_device(target: Target) -> torch.device:
    return next(target.run.model.net.parameters()).device


def _sync_for(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def _torch_memory(device: torch.device) -> Callable[[], float | None]:
    if device.type == "cuda":
        return lambda: torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb


def _has_torch(t: Target) -> bool:
    return t.part_graph is not None and t.run is not None


# ------------------------------------------------------------------------------- network parts
@register("torch", "torch eager on the run's device, inference mode (the baseline for parts)",
          applies=lambda t: _has_torch(t) and not t.is_sampler, baseline=True)
def prepare_torch(target: Target, batch: int, threads: int, **_) -> Prepared:
    device = _torch_device(target)
    inputs = [v.to(device) for k, v in target.feeds(batch).items() if k in target.part_graph.graph_inputs]
    module = target.part_graph.module
    restore = _torch_threads(threads)

    def call():
        with torch.inference_mode():
            return module(*inputs)

    return Prepared(call, _sync_for(device), f"torch:{device.type}", str(device), _torch_memory(device), restore)


_COMPILED: dict[int, Any] = {}


@register("torch_compile", "torch.compile (inductor) of the same module, compiled before timing",
          applies=lambda t: _has_torch(t) and not t.is_sampler, torch_network=True)
def prepare_torch_compile(target: Target, batch: int, threads: int, **_) -> Prepared:
    device = _torch_device(target)
    inputs = [v.to(device) for k, v in target.feeds(batch).items() if k in target.part_graph.graph_inputs]
    module = target.part_graph.module
    restore = _torch_threads(threads)
    key = id(module)
    start = time.perf_counter()
    try:
        # `is None`, not `or`: truth-testing a compiled module forwards to len(), which a plain module lacks.
        compiled = _COMPILED.get(key)
        if compiled is None:
            compiled = torch.compile(module, dynamic=False)
        with torch.inference_mode():
            compiled(*inputs)  # compiles for this shape; excluded from timing
    except Exception as exc:  # inductor raises many types (no compiler, unsupported op, ...)
        restore()
        raise BackendUnavailable(f"torch.compile failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}") from None
    _COMPILED[key] = compiled

    def call():
        with torch.inference_mode():
            return compiled(*inputs)

    return Prepared(call, _sync_for(device), f"torch_compile:{device.type}", str(device), _torch_memory(device),
                    restore, notes={"compile_s": time.perf_counter() - start})


_SESSIONS: dict[tuple, Any] = {}


def _session_key(path: Path, provider: str, threads: int, cuda_graph: bool) -> tuple:
    return (str(path), path.stat().st_mtime_ns, provider, threads, cuda_graph)


def ort_session(path: Path, provider: str, threads: int, cuda_graph: bool = False):
    """A cached session per (file, provider, threads)."""
    key = _session_key(path, provider, threads, cuda_graph)
    if key not in _SESSIONS:
        _SESSIONS[key] = make_session(path, SessionConfig(provider=provider, intra_op_threads=threads,
                                                          cuda_graph=cuda_graph))
    return _SESSIONS[key]


def keep_session(path: Path, provider: str, threads: int, session) -> None:
    """Hand a session already built on `path` (e.g. the one a cold start measured) to `ort_session`'s cache, so
    the timing and the draws that follow reuse it rather than build it again (seconds for a long graph)."""
    _SESSIONS[_session_key(path, provider, threads, False)] = session


def clear_sessions() -> None:
    _SESSIONS.clear()
    _COMPILED.clear()


def _parity_for(target: Target, session, provider: str) -> ParityResult | None:
    """The export's parity verdict on this provider (checked once per provider and cached)."""
    if provider in target.parity_cache:
        return target.parity_cache[provider]
    if target.part_graph is None or target.export_cfg is None:
        side = (target.info.sidecar or {}).get("parity")
        result = ParityResult(**{**side, "per_batch": tuple(side.get("per_batch", ()))}) if side else None
    else:
        result = check_parity(target.part_graph, target.export_cfg, None, session=session)
    target.parity_cache[provider] = result
    return result


def _output_shapes(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """Output shapes for pre-allocated (CUDA graph) outputs, from one CPU run."""
    cpu = make_session(path, SessionConfig(provider="cpu", intra_op_threads=1))
    return {o.name: tuple(v.shape) for o, v in zip(cpu.get_outputs(), cpu.run(None, feeds))}


def _prepare_ort_file(target: Target, path: Path, batch: int, threads: int, provider: str,
                      cuda_graph: bool = False) -> Prepared:
    cuda_graph = cuda_graph and provider == "cuda" and not target.is_sampler  # control flow cannot be captured
    session = ort_session(path, provider, threads, cuda_graph)
    feeds = target.onnx_feeds(batch)
    shapes = _output_shapes(path, feeds) if cuda_graph else None
    runner = bind_runner(session, feeds, output_shapes=shapes)
    actual = session.get_providers()[0]
    parity = _parity_for(target, session, provider)
    return Prepared(runner.call, runner.sync, actual, provider, peak_rss_mb if provider == "cpu" else None,
                    parity=parity, notes={"io_binding": runner.io_binding, "cuda_graph": cuda_graph})


@register("ort", "ONNX Runtime session on the exported graph (CPU: session.run; CUDA: IO binding)",
          applies=lambda t: not t.is_sampler, uses_provider=True)
def prepare_ort(target: Target, batch: int, threads: int, provider: str = "cpu", cuda_graph: bool = False,
                **_) -> Prepared:
    return _prepare_ort_file(target, target.onnx_path, batch, threads, provider, cuda_graph)


# ------------------------------------------------------------------------------------ samplers
@register("torch_loop", "the genlib sampler in torch eager (the baseline for samplers)",
          applies=lambda t: _has_torch(t) and t.is_sampler, baseline=True)
def prepare_torch_loop(target: Target, batch: int, threads: int, **_) -> Prepared:
    device = _torch_device(target)
    feeds = {k: v.to(device) for k, v in target.feeds(batch).items()}
    reference = target.part_graph.reference
    restore = _torch_threads(threads)

    def call():
        with torch.inference_mode():
            return reference(feeds)

    return Prepared(call, _sync_for(device), f"torch:{device.type}", str(device), _torch_memory(device), restore)


@register("ort_graph", "the whole sampler as one ONNX graph, one session.run per sample batch",
          applies=lambda t: t.is_sampler, uses_provider=True)
def prepare_ort_graph(target: Target, batch: int, threads: int, provider: str = "cpu", **_) -> Prepared:
    return _prepare_ort_file(target, target.onnx_path, batch, threads, provider)


@register("ort_step_loop", "a Python loop calling the exported single-step graph once per step",
          applies=lambda t: t.is_sampler and t.step_path is not None, uses_provider=True)
def prepare_ort_step_loop(target: Target, batch: int, threads: int, provider: str = "cpu", **_) -> Prepared:
    if target.step_path is None or not target.step_path.is_file():
        raise BackendUnavailable("no single-step graph beside the sampler export")
    details = target.info.details
    if "indices" not in details:
        raise BackendUnavailable("the export records no step order (exported by an older genbench); export it again")
    session = ort_session(target.step_path, provider, threads)
    feeds = target.onnx_feeds(batch)
    state = feeds[details.get("start", "x_T")]
    noise = feeds.get("noise")
    h_in, h_out = history_names(int(details.get("history", 0)))
    index_arrays = [np.array([i], dtype=np.int64) for i in details["indices"]]
    base = {"noise": noise} if noise is not None else {}
    wanted = ["x_next", *h_out]

    def call():
        x, history = state, [np.zeros_like(state) for _ in h_in]
        for idx in index_arrays:
            x, *history = session.run(wanted, {**base, "x": x, **dict(zip(h_in, history)), "i": idx})
        return x

    parity = _parity_for(target, ort_session(target.onnx_path, provider, threads), provider)
    return Prepared(call, lambda: None, session.get_providers()[0], provider,
                    peak_rss_mb if provider == "cpu" else None, parity=parity)


def onnx_part(session) -> Callable:
    """An ONNX Runtime network session as a torch callable over its inputs in order; one output is returned
    as a tensor, several as a tuple."""
    names = [i.name for i in session.get_inputs()]

    def call(*args: torch.Tensor):
        outs = session.run(None, {n: a.detach().cpu().numpy() for n, a in zip(names, args)})
        tensors = tuple(torch.from_numpy(o) for o in outs)
        return tensors[0] if len(tensors) == 1 else tensors

    return call


@register("ort_net_loop", "the genlib sampler calling an ONNX Runtime network session once per step",
          applies=lambda t: _has_torch(t) and t.is_sampler, uses_provider=True)
def prepare_ort_net_loop(target: Target, batch: int, threads: int, provider: str = "cpu", **_) -> Prepared:
    from genlib.models import SAMPLERS
    from genlib.samplers import run_program

    cfg = target.export_cfg.sample
    spec = SAMPLERS.get(cfg.sampler)
    parts = {}
    opened: list = []  # the sessions the loop calls: the provider they report is the one that runs
    for part in spec.net_parts:
        sib = target.siblings.get(part)
        if sib is None:
            raise BackendUnavailable(f"needs the '{part}' export of the same run (bench it alongside)")
        if sib.info.valid is False:
            raise BackendUnavailable(f"the '{part}' export failed its parity check")
        opened.append(ort_session(sib.onnx_path, provider, threads))
        parts[part] = onnx_part(opened[-1])
    # the sampler's own program (the family's glue included) over the ONNX network parts, on the CPU
    program = spec.program(target.run.model.with_parts(parts), cfg)
    feeds = target.feeds(batch)
    start, noise = feeds[program.start], feeds.get("noise")

    def call():
        return program.finish(run_program(program, start, noise=noise))

    restore = _torch_threads(threads)  # the sampler's own arithmetic runs in torch
    parity = _parity_for(target, ort_session(target.onnx_path, provider, threads), provider)
    actual = opened[0].get_providers()[0]
    return Prepared(call, lambda: None, actual, "cuda" if actual == PROVIDER_SHORT["cuda"] else "cpu",
                    peak_rss_mb if provider == "cpu" else None, restore, parity=parity)


PROVIDER_SHORT = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def peer_of(target: Target):
    """The sampler's peer-library implementation (its registry entry's `peer`), or None."""
    if target.export_cfg is None or target.part_graph is None:
        return None
    from genlib.models import SAMPLERS

    return SAMPLERS.get(target.export_cfg.sample.sampler).peer


def peer_available(peer) -> tuple[bool, str]:
    try:
        importlib.import_module(peer.library)
    except ImportError:
        return False, f"{peer.library} is not installed ({peer.install}; it is a benchmark-only dependency)"
    return True, ""


@register("peer", "the same sampler in a peer library (e.g. diffusers' scheduler) driving the same torch network",
          applies=lambda t: _has_torch(t) and t.is_sampler and peer_of(t) is not None, torch_network=True)
def prepare_peer(target: Target, batch: int, threads: int, **_) -> Prepared:
    peer = peer_of(target)
    ok, reason = peer_available(peer)
    if not ok:
        raise BackendUnavailable(reason)
    device = _torch_device(target)
    cfg = target.export_cfg.sample
    run_peer = peer.build(target.run.model, cfg)
    feeds = {k: v.to(device) for k, v in target.feeds(batch).items()}
    start_name = (target.info.details or {}).get("start", "x_T")
    x_T, noise = feeds[start_name], feeds.get("noise")
    restore = _torch_threads(threads)

    def call():
        with torch.inference_mode():
            return run_peer(x_T, noise)

    with torch.inference_mode():
        ours = target.part_graph.reference(feeds)
        state = next(v for k, v in ours.items() if k != "x")
        theirs = call()
    notes = {"library": peer.library, "max_abs_diff_vs_genlib": float((state - theirs).abs().max()),
             "note": peer.note}
    return Prepared(call, _sync_for(device), f"torch:{device.type}", str(device), _torch_memory(device), restore,
                    notes=notes)
