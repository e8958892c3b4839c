"""Part builders: what each exportable part of a trained run computes, with example inputs and a torch reference.

Parts (registry `PARTS`): decoder (z -> x), encoder (x -> mu, L), denoiser (x_t, t -> eps), chain
(x_t, t -> x_{t-1}) and sampler: one step module from `bench.wrappers` (DDIM / DDPM / chain step, or a
VAE refinement pass) that `bench.onnx_graph` composes into the whole loop, with the torch sampler of
`genlib.samplers` (the same step functions) as its reference. `ExportConfig` says what to build; this
module exports nothing (`bench.export`) and checks nothing (`bench.parity`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Literal

import numpy as np
import onnx
import torch
import torch.nn as nn

from genlib.cli import UserError
from genlib.models import SampleConfig
from genlib.registry import Registry
from genlib.samplers import clip_x0_for, ddim_plan, ddpm_plan, resolve_x0_clip, sample_chain, sample_ddim, sample_ddpm, sample_vae
from genlib.train import LoadedRun

from bench import onnx_graph
from bench.wrappers import ChainPart, ChainStep, DDIMStep, DDPMStep, DecoderPart, DenoiserPart, EncoderPart, VAEPassStep

DEFAULT_STEPS = 50
UNROLL_MAX_STEPS = 256

Part = Literal["decoder", "encoder", "denoiser", "chain", "sampler"]
PARTS: Registry[Callable] = Registry("export part")


class ExportError(UserError):
    """A part cannot be exported from this run (wrong family, bad option); the message says what fits."""


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    """What to export and how to check it. Sampler fields are used by part 'sampler' only."""

    part: Part = "decoder"
    # sampler: 'auto' = ddim for ddpm runs (the usual deployment choice), chain, or vae.
    sampler: Literal["auto", "ddim", "ddpm", "chain", "vae"] = "auto"
    steps: int | None = None  # S for ddim/ddpm (None = 50, capped at T); the chain always runs all T
    eta: float = 0.0
    variance: Literal["small", "large"] = "small"
    # ddim/ddpm: clip predicted x0 to the box of genlib's clip rule; the box is written in when resolved.
    clip_x0: bool = True
    clip_low: tuple[float, ...] | None = None
    clip_high: tuple[float, ...] | None = None
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
        # the same rules as genlib's sampling
        SampleConfig(steps=self.steps, eta=self.eta, passes=self.passes, clip_low=self.clip_low, clip_high=self.clip_high)
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


def _x_train(run: LoadedRun) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from genlib.data import load_dataset

        return load_dataset(run.config.data).x_train

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
    """Fill in sampler, steps, graph form and the x0 clip box for this run (the resolved config is what
    gets recorded: the box as numbers, from `genlib.samplers.resolve_x0_clip`)."""
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
    clip = resolve_x0_clip(SampleConfig(sampler=sampler, clip_x0=cfg.clip_x0, clip_low=cfg.clip_low,
                                        clip_high=cfg.clip_high), run.model, _x_train(run))
    return replace(cfg, sampler=sampler, steps=steps, graph=graph, clip_low=clip.clip_low, clip_high=clip.clip_high)


def _as_list(v: tuple[float, ...] | None) -> list[float] | None:
    return None if v is None else list(v)


def sampler_details(cfg: ExportConfig, n: int, noisy: bool) -> dict:
    """The resolved sampler settings recorded beside a sampler export."""
    return {"sampler": cfg.sampler, "steps": n, "graph": cfg.graph, "noise_input": noisy, "eta": cfg.eta,
            "variance": cfg.variance, "clip_x0": cfg.clip_x0, "clip_low": _as_list(cfg.clip_low),
            "clip_high": _as_list(cfg.clip_high),
            "passes": cfg.passes, "reencode": cfg.reencode}


@PARTS.register("sampler", help="the whole DDIM/DDPM/chain loop (fixed S) or VAE prior + K passes as one graph")
def sampler_part(run: LoadedRun, cfg: ExportConfig) -> PartGraph:
    cfg = resolve_sampler(run, cfg)
    if cfg.sampler == "vae":
        return _vae_sampler(run, cfg)
    model = run.model
    net = model.net
    shape = model.sample_shape
    clip = clip_x0_for(model, cfg)
    if cfg.sampler == "chain":
        n, noisy = model.schedule.T, False
        step: nn.Module = ChainStep(net, model.predict_prev, n, model.to_data_space)
    elif cfg.sampler == "ddim":
        n, noisy = cfg.steps, cfg.eta > 0
        step = DDIMStep(net, ddim_plan(model.schedule, n, cfg.eta), model.to_data_space, clip)
    else:
        n, noisy = cfg.steps, True
        step = DDPMStep(net, ddpm_plan(model.schedule, n, cfg.variance), model.to_data_space, clip)
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
            x0 = sample_chain(model.predict_prev, x_T, n)
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
        graph_outputs=["x0", "x"], details=sampler_details(cfg, n, noisy),
        compose=lambda m: onnx_graph.compose_sampler(m, indices, mode=cfg.graph, state_input="x_T",
                                                     state_output="x0", out_output="x", graph_name=cfg.sampler),
        metric_data=_held_out(run), to_data_space=model.to_data_space)


def _vae_sampler(run: LoadedRun, cfg: ExportConfig) -> PartGraph:
    net = run.model.net
    k = run.config.model.latent_dim
    K = cfg.passes
    noisy = cfg.reencode == "sample" and K > 0
    step = VAEPassStep(net, K, cfg.reencode).eval()

    def feeds(b: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        f = {"z": _randn((b, k), g)}
        if noisy:
            f["noise"] = _randn((K, b, k), g)  # pass p uses noise[p], in the graph and in sample_vae
        return f

    def reference(f: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"x": sample_vae(net.decode, net.encode, f["z"], passes=K, reencode=cfg.reencode, noise=f.get("noise"))}

    b = 3
    example = (torch.randn(b, k), torch.tensor([0])) + ((torch.randn(max(K, 1), b, k),) if noisy else ())
    names = ["x", "i"] + (["noise"] if noisy else [])
    dyn = {"x": {0: _batch_dim()}, "i": None, **({"noise": {1: _batch_dim()}} if noisy else {})}
    return PartGraph(
        module=step, example=example, input_names=names, output_names=["x_next", "out"], dynamic_shapes=dyn,
        make_feeds=feeds, reference=reference, graph_inputs=["z"] + (["noise"] if noisy else []),
        graph_outputs=["x"], details=sampler_details(cfg, K, noisy),
        compose=lambda m: onnx_graph.compose_sampler(m, list(range(K)), mode=cfg.graph, state_input="z",
                                                     state_output=None, out_output="x", graph_name="vae"),
        metric_data=_held_out(run), to_data_space=lambda x: x)
