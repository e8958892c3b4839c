"""Part builders: what each exportable part of a trained run computes, with example inputs and a torch reference.

Network parts are what each model family declares (`GenerativeModel.parts`: decoder z -> x, encoder
x -> mu, L, denoiser x_t, t -> eps, chain x_t, t -> x_{t-1}, ...); `network_part` turns any of them into a
graph. Part `sampler` is one step module from `bench.wrappers` (DDIM / DDPM / chain step, or a VAE
refinement pass) that `bench.onnx_graph` composes into the whole loop, with the torch sampler of
`genlib.samplers` (the same step functions) as its reference; the sampler's registry spec
(`genlib.models.SAMPLERS`) validates its settings and gives its step count. `ExportConfig` says what to build; this
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
from genlib.config import ConfigError
from genlib.models import MODELS, SampleConfig, family_parts
from genlib.models import resolve_sampler as resolve_sample_config
from genlib.samplers import clip_x0_for, ddim_plan, ddpm_plan, resolve_x0_clip, sample_chain, sample_ddim, sample_ddpm, sample_vae
from genlib.train import LoadedRun

from bench import onnx_graph
from bench.wrappers import ChainStep, DDIMStep, DDPMStep, VAEPassStep

DEFAULT_STEPS = 50
UNROLL_MAX_STEPS = 256


class ExportError(UserError):
    """A part cannot be exported from this run (wrong family, bad option); the message says what fits."""


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    """What to export and how to check it. `sample` (genlib's SampleConfig, its rules included) says which
    sampler part 'sampler' builds; the other parts ignore it. Two defaults differ from sampling's: sampler
    'auto' is ddim where the family has it (the usual deployment choice), else the family's first sampler
    with a graph; steps None is S = 50 capped at T (the chain always runs all T)."""

    part: str = "decoder"  # one of the run's family parts (`genbench models`), or 'sampler'
    # ddim/ddpm: only start 'prior' exports; the graph takes x_T as an input, so a q(x_T | x0) start is fed.
    sample: SampleConfig = field(default_factory=SampleConfig)
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
        if not isinstance(self.sample, SampleConfig):
            raise ValueError(f"sample must be a SampleConfig, got {type(self.sample).__name__}")
        if self.opset < 18:
            raise ValueError(f"opset must be >= 18 for the torch.export-based exporter, got {self.opset}")
        if self.sample.start != "prior":
            raise ValueError(f"start={self.sample.start!r} is not exported: the sampler graph takes x_T as an input "
                             "(feed it genlib.samplers.start_from_data's draw); export with start 'prior'")
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
    dynamic_shapes: dict | tuple  # per forward argument: by name, or positional
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
def network_part(run: LoadedRun, cfg: ExportConfig) -> PartGraph:
    """The network part `cfg.part` that the run's family declares (a genlib `PartSpec`), as a graph to export."""
    model = run.model
    spec = type(model).parts.get(cfg.part)
    if spec is None:
        raise ExportError(f"part '{cfg.part}' does not exist for model family '{_family(run)}' (its parts: "
                          f"{', '.join(family_parts(_family(run))) or 'none'})")
    module = spec.build(model).eval()
    held = _held_out(run)
    cache: dict = {}

    def held_out() -> np.ndarray | None:  # loaded on first use, once
        if "x" not in cache:
            cache["x"] = held()
        return cache["x"]

    def feeds(b: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        return spec.feeds(model, b, g, held_out)

    def reference(f: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = module(*[f[name].to(model.device) for name in spec.inputs])
        return dict(zip(spec.outputs, out if isinstance(out, tuple) else (out,)))

    example = feeds(3, torch.Generator().manual_seed(0))
    return PartGraph(module=module, example=tuple(example[name] for name in spec.inputs),
                     input_names=list(spec.inputs), output_names=list(spec.outputs),
                     dynamic_shapes=tuple({0: _batch_dim()} for _ in spec.inputs),  # positional: any arg names
                     make_feeds=feeds,
                     reference=reference, graph_inputs=list(spec.inputs), graph_outputs=list(spec.outputs),
                     details=spec.details(model))


def build_part(run: LoadedRun, cfg: ExportConfig) -> PartGraph:
    """The graph of `cfg.part` for this run: the whole sampler, or one of its family's network parts."""
    return sampler_part(run, cfg) if cfg.part == "sampler" else network_part(run, cfg)


# The samplers with a whole-sampler graph (a step module in bench.wrappers), in the order 'auto' prefers.
SAMPLER_GRAPHS = ("ddim", "ddpm", "chain", "vae")


def resolve_sampler(run: LoadedRun, cfg: ExportConfig) -> ExportConfig:
    """Fill in sampler, steps, graph form and the x0 clip box for this run (the resolved config is what
    gets recorded: the box as numbers, from `genlib.samplers.resolve_x0_clip`)."""
    family = _family(run)
    allowed = [name for name in SAMPLER_GRAPHS if name in MODELS.get(family).samplers]
    if not allowed:
        raise ExportError(f"part 'sampler' has no graph for model family '{family}' (its samplers "
                          f"{', '.join(MODELS.get(family).samplers)} have no step graph): export its network "
                          f"parts instead ({', '.join(type(run.model).parts) or 'none'})")
    sampler = allowed[0] if cfg.sample.sampler == "auto" else cfg.sample.sampler
    try:  # the sampler's own rules, as for genlib's sampling: applies to the family, reads these settings, S <= T
        spec = resolve_sample_config(run.config.model, SampleConfig(sampler=sampler))
        steps = cfg.sample.steps
        if steps is None and "steps" in spec.settings:  # the deployment default: S = 50, capped at T
            steps = min(DEFAULT_STEPS, spec.steps(run.config.model, SampleConfig(sampler=sampler)))
        sample_cfg = replace(cfg.sample, sampler=sampler, steps=steps)
        resolve_sample_config(run.config.model, sample_cfg)
    except ConfigError as exc:
        raise ExportError(str(exc)) from None
    if sampler not in allowed:
        raise ExportError(f"sampler '{sampler}' has no step graph (graphs exist for: {', '.join(allowed)})")
    n = spec.steps(run.config.model, sample_cfg)
    graph = cfg.graph if cfg.graph != "auto" else ("unrolled" if n <= UNROLL_MAX_STEPS else "loop")
    return replace(cfg, sample=resolve_x0_clip(sample_cfg, run.model, _x_train(run)), graph=graph)


def _as_list(v: tuple[float, ...] | None) -> list[float] | None:
    return None if v is None else list(v)


def sampler_details(cfg: ExportConfig, n: int, noisy: bool) -> dict:
    """The resolved sampler settings recorded beside a sampler export."""
    s = cfg.sample
    return {"sampler": s.sampler, "steps": n, "graph": cfg.graph, "noise_input": noisy, "eta": s.eta,
            "variance": s.variance, "clip_x0": s.clip_x0, "clip_low": _as_list(s.clip_low),
            "clip_high": _as_list(s.clip_high),
            "passes": s.passes, "reencode": s.reencode}


def sampler_part(run: LoadedRun, cfg: ExportConfig) -> PartGraph:
    cfg = resolve_sampler(run, cfg)
    s = cfg.sample
    if s.sampler == "vae":
        return _vae_sampler(run, cfg)
    model = run.model
    net = model.net
    shape = model.sample_shape
    clip = clip_x0_for(model, s)
    if s.sampler == "chain":
        n, noisy = model.schedule.T, False
        step: nn.Module = ChainStep(net, model.predict_prev, n, model.to_data_space)
    elif s.sampler == "ddim":
        n, noisy = s.steps, s.eta > 0
        step = DDIMStep(net, ddim_plan(model.schedule, n, s.eta), model.to_data_space, clip)
    else:
        n, noisy = s.steps, True
        step = DDPMStep(net, ddpm_plan(model.schedule, n, s.variance), model.to_data_space, clip)
    step.to(model.device).eval()  # the tables follow the network's device
    indices = list(reversed(range(n)))

    def feeds(b: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        f = {"x_T": _randn((b, *shape), g)}
        if noisy:
            f["noise"] = _randn((n, b, *shape), g)
        return f

    def reference(f: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x_T, noise = f["x_T"], f.get("noise")
        if s.sampler == "chain":
            x0 = sample_chain(model.predict_prev, x_T, n)
        elif s.sampler == "ddim":
            x0 = sample_ddim(net, x_T, model.schedule, n, eta=s.eta, clip_x0=clip, noise=noise)
        else:
            x0 = sample_ddpm(net, x_T, model.schedule, n, variance=s.variance, clip_x0=clip, noise=noise)
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
                                                     state_output="x0", out_output="x", graph_name=s.sampler),
        metric_data=_held_out(run), to_data_space=model.to_data_space)


def _vae_sampler(run: LoadedRun, cfg: ExportConfig) -> PartGraph:
    s = cfg.sample
    net = run.model.net
    k = run.config.model.latent_dim
    K = s.passes
    noisy = s.reencode == "sample" and K > 0
    step = VAEPassStep(net, K, s.reencode).eval()

    def feeds(b: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        f = {"z": _randn((b, k), g)}
        if noisy:
            f["noise"] = _randn((K, b, k), g)  # pass p uses noise[p], in the graph and in sample_vae
        return f

    def reference(f: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"x": sample_vae(net.decode, net.encode, f["z"], passes=K, reencode=s.reencode, noise=f.get("noise"))}

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
