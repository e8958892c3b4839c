"""Backends to time, registered by name: how to turn a target into one repeatable (call, sync) pair.

Network parts: `torch` (eager, inference mode), `torch_compile` (inductor, where it compiles), `ort`
(ONNX Runtime on each requested provider). Samplers: `torch_loop` (the genlib sampler), `ort_net_loop`
(the genlib sampler calling an ONNX Runtime network session once per step: STYLE seam 2),
`ort_step_loop` (a Python loop over the exported single-step graph), `ort_graph` (the whole-sampler
graph) and `diffusers_ddim` (diffusers' DDIMScheduler driving the same torch network; optional).
A backend that cannot run here raises `BackendUnavailable` with the reason; nothing here measures time.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from genlib.registry import Registry

from bench.onnx_files import ExportInfo, random_feeds
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


BACKENDS: Registry[BackendSpec] = Registry("backend")


def register(name: str, help: str, applies: Callable[[Target], bool], uses_provider: bool = False,
             baseline: bool = False):
    def deco(fn: Callable[..., Prepared]) -> Callable[..., Prepared]:
        BACKENDS.register(name, help=help)(BackendSpec(fn, applies, uses_provider, baseline))
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
          applies=lambda t: _has_torch(t) and not t.is_sampler)
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


def ort_session(path: Path, provider: str, threads: int, cuda_graph: bool = False):
    """A cached session per (file, provider, threads)."""
    key = (str(path), path.stat().st_mtime_ns, provider, threads, cuda_graph)
    if key not in _SESSIONS:
        _SESSIONS[key] = make_session(path, SessionConfig(provider=provider, intra_op_threads=threads,
                                                          cuda_graph=cuda_graph))
    return _SESSIONS[key]


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
    session = ort_session(target.step_path, provider, threads)
    feeds = target.onnx_feeds(batch)
    state_name = "x_T" if "x_T" in feeds else "z"
    state = feeds[state_name]
    noise = feeds.get("noise")
    details = target.info.details
    n = int(details.get("steps", 0))
    indices = list(reversed(range(n))) if details.get("sampler") != "vae" else list(range(n))
    index_arrays = [np.array([i], dtype=np.int64) for i in indices]
    base = {"noise": noise} if noise is not None else {}

    def call():
        x = state
        for idx in index_arrays:
            x = session.run(["x_next"], {**base, "x": x, "i": idx})[0]
        return x

    parity = _parity_for(target, ort_session(target.onnx_path, provider, threads), provider)
    return Prepared(call, lambda: None, session.get_providers()[0], provider,
                    peak_rss_mb if provider == "cpu" else None, parity=parity)


def with_net(model, net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
    """A shallow copy of `model` whose network is `net` (e.g. an ONNX session), so the family's own glue
    (predict_prev, ...) runs over it; `model` is unchanged."""
    other = copy.copy(model)
    other.net = net
    return other


@register("ort_net_loop", "the genlib sampler calling an ONNX Runtime network session once per step",
          applies=lambda t: _has_torch(t) and t.is_sampler, uses_provider=True)
def prepare_ort_net_loop(target: Target, batch: int, threads: int, provider: str = "cpu", **_) -> Prepared:
    from genlib.samplers import clip_x0_for, sample_chain, sample_ddim, sample_ddpm, sample_vae

    cfg = target.export_cfg.sample
    model = target.run.model
    feeds = target.feeds(batch)
    opened: list = []  # the sessions the loop calls: the provider they report is the one that runs

    def session_for(part: str):
        sib = target.siblings.get(part)
        if sib is None:
            raise BackendUnavailable(f"needs the '{part}' export of the same run (bench it alongside)")
        if sib.info.valid is False:
            raise BackendUnavailable(f"the '{part}' export failed its parity check")
        opened.append(ort_session(sib.onnx_path, provider, threads))
        return opened[-1]

    if cfg.sampler == "vae":
        dec, enc = session_for("decoder"), session_for("encoder")

        def decode(z):
            return torch.from_numpy(dec.run(None, {"z": z.numpy()})[0])

        def encode(x):
            mu, L = enc.run(None, {"x": x.numpy()})
            return torch.from_numpy(mu), torch.from_numpy(L)

        def call():
            return sample_vae(decode, encode, feeds["z"], passes=cfg.passes, reencode=cfg.reencode,
                              noise=feeds.get("noise"))
    else:
        from genlib.models import SAMPLERS

        sess = session_for(SAMPLERS.get(cfg.sampler).net_parts[0])  # the network part the sampler's steps call
        out_name = sess.get_outputs()[0].name

        def denoise(x_t, t):
            return torch.from_numpy(sess.run([out_name], {"x_t": x_t.numpy(), "t": t.numpy()})[0])

        clip = clip_x0_for(model, cfg)
        x_T, noise = feeds["x_T"], feeds.get("noise")
        if cfg.sampler == "chain":
            # the family's predict_prev over the ONNX network (a step_eps chain's network outputs eps, not x_{t-1})
            predict_prev = with_net(model, denoise).predict_prev

            def call():
                return sample_chain(predict_prev, x_T, model.schedule.T)
        elif cfg.sampler == "ddim":
            def call():
                return sample_ddim(denoise, x_T, model.schedule, cfg.steps, eta=cfg.eta, clip_x0=clip, noise=noise)
        else:
            def call():
                return sample_ddpm(denoise, x_T, model.schedule, cfg.steps, variance=cfg.variance, clip_x0=clip,
                                   noise=noise)
    restore = _torch_threads(threads)  # the sampler's own arithmetic runs in torch
    parity = _parity_for(target, ort_session(target.onnx_path, provider, threads), provider)
    actual = opened[0].get_providers()[0]
    return Prepared(call, lambda: None, actual, "cuda" if actual == PROVIDER_SHORT["cuda"] else "cpu",
                    peak_rss_mb if provider == "cpu" else None, restore, parity=parity)


PROVIDER_SHORT = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def diffusers_available() -> tuple[bool, str]:
    try:
        import diffusers  # noqa: F401
    except ImportError:
        return False, "diffusers is not installed (pip install 'diffusers>=0.30'; it is a benchmark-only dependency)"
    return True, ""


@register("diffusers_ddim", "diffusers' DDIMScheduler driving the same torch network (optional dependency)",
          applies=lambda t: _has_torch(t) and t.is_sampler and t.export_cfg is not None
          and t.export_cfg.sample.sampler == "ddim")
def prepare_diffusers_ddim(target: Target, batch: int, threads: int, **_) -> Prepared:
    ok, reason = diffusers_available()
    if not ok:
        raise BackendUnavailable(reason)
    from diffusers import DDIMScheduler

    from genlib.samplers import clip_x0_for

    cfg = target.export_cfg.sample
    model = target.run.model
    device = _torch_device(target)
    net = model.net
    box = clip_x0_for(model, cfg)  # diffusers clips to a symmetric range only
    clip = box is not None and len(box[1]) == 1 and box[0][0] == -box[1][0]
    scheduler = DDIMScheduler(num_train_timesteps=model.schedule.T,
                              trained_betas=model.schedule.betas.numpy().astype(np.float64),
                              clip_sample=clip, clip_sample_range=box[1][0] if clip else 1.0, set_alpha_to_one=True,
                              prediction_type="epsilon", timestep_spacing="linspace")
    feeds = target.feeds(batch)
    x_T = feeds["x_T"].to(device)
    noise = feeds.get("noise")
    restore = _torch_threads(threads)

    def call():
        # What a diffusers user writes: a stateful scheduler, set_timesteps per generation, step() per t.
        with torch.inference_mode():
            scheduler.set_timesteps(cfg.steps, device=device)
            x = x_T
            for k, t in enumerate(scheduler.timesteps):
                eps = net(x, t.expand(x.shape[0]))
                var_noise = noise[len(scheduler.timesteps) - 1 - k].to(device) if noise is not None else None
                x = scheduler.step(eps, t, x, eta=cfg.eta, variance_noise=var_noise).prev_sample
            return x

    with torch.inference_mode():
        ours = target.part_graph.reference({k: v.to(device) for k, v in feeds.items()})["x0"]
        theirs = call()
    notes = {"max_abs_diff_vs_genlib": float((ours - theirs).abs().max()),
             "note": "diffusers spaces DDIM steps by T // S, genlib by rounding linspace(0, T-1, S)"}
    return Prepared(call, _sync_for(device), f"torch:{device.type}", str(device), _torch_memory(device), restore,
                    notes=notes)
