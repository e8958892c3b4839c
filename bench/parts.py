"""Part builders: what each exportable part of a trained run computes, with example inputs and a torch reference.

Network parts are what each model family declares (`GenerativeModel.parts`: decoder z -> x, encoder
x -> mu, L, denoiser x_t, t -> eps, chain x_t, t -> x_{t-1}, ...); `network_part` turns any of them into a
graph. Part `sampler` is the step of any registered sampler's program (`bench.wrappers.program_step`) that
`bench.onnx_graph` composes into the whole loop, with the torch loop over the same program
(`genlib.samplers.run_program`) as its reference and its inputs drawn in that loop's order; the sampler's
registry spec (`genlib.models.SAMPLERS`) validates its settings and gives its step count. `ExportConfig` says what to build; this
module exports nothing (`bench.export`) and checks nothing (`bench.parity`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from typing import Callable, Literal

import numpy as np
import onnx
import torch
import torch.nn as nn

from genlib.cli import UserError
from genlib.config import ConfigError
from genlib.models import MODELS, SAMPLERS, SampleConfig, family_parts
from genlib.models import resolve_sampler as resolve_sample_config
from genlib.models.base import samplers_of
from genlib.samplers import SamplerProgram, draw_inputs, resolve_x0_clip, run_program
from genlib.train import LoadedRun

from bench import onnx_graph
from bench.precision import CALIBRATION_METHODS, PRECISIONS
from bench.wrappers import program_step

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
    # fp32 as exported; fp16 (float32 inputs/outputs); int8_dynamic (weights int8, activations quantized at run
    # time); int8_static (QDQ int8 weights and activations, ranges from calibration). See bench.precision.
    precision: Literal["fp32", "fp16", "int8_dynamic", "int8_static"] = "fp32"
    # int8_static: how activation ranges are found, and from how many samples (a sampler: that many trajectories
    # of its own steps; a network part: that many inputs drawn as sampling presents them)
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_size: int = 64
    per_channel: bool = False  # int8: one scale per output channel of each weight
    reduce_range: bool = False  # int8: 7-bit weights (for CPUs without VNNI, where 8 bits can saturate)
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
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.calibration_method not in CALIBRATION_METHODS:
            raise ValueError(f"calibration_method must be one of {', '.join(CALIBRATION_METHODS)}, "
                             f"got {self.calibration_method!r}")
        if self.calibration_size < 1:
            raise ValueError(f"calibration_size must be >= 1, got {self.calibration_size}")

    @property
    def gated(self) -> bool:
        """Whether parity decides validity: fp32 is gated; a lower precision is measured, never invalid."""
        return self.precision == "fp32"

    def precision_settings(self) -> dict:
        """The settings of the conversion (recorded beside the export)."""
        out: dict = {"precision": self.precision}
        if self.precision.startswith("int8"):
            out.update(per_channel=self.per_channel, reduce_range=self.reduce_range)
        if self.precision == "int8_static":
            out.update(calibration_method=self.calibration_method, calibration_size=self.calibration_size)
        return out

    def tolerances(self) -> tuple[float, float]:
        """(atol, rtol) for the parity gate."""
        sampler = self.part == "sampler"
        default = {("fp32", False): 1e-4, ("fp32", True): 1e-3, ("fp16", False): 1e-2, ("fp16", True): 5e-2}
        d = default.get((self.precision, sampler), 5e-2 if sampler else 2e-2)  # int8: the bound shown, not a gate
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
    # calibration(n, generator) -> feeds of the exported module's inputs (a list of runs) for int8 calibration,
    # and what they are drawn from
    calibration: Callable[[int, torch.Generator], list[dict[str, torch.Tensor]]] | None = None
    calibration_source: str = ""


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

    def calibration(n: int, g: torch.Generator) -> list[dict[str, torch.Tensor]]:
        if spec.calibration is None:
            return [feeds(n, g)]
        return [spec.calibration(model, n, g, _x_train(run)())]

    example = feeds(3, torch.Generator().manual_seed(0))
    return PartGraph(module=module, example=tuple(example[name] for name in spec.inputs),
                     input_names=list(spec.inputs), output_names=list(spec.outputs),
                     dynamic_shapes=tuple({0: _batch_dim()} for _ in spec.inputs),  # positional: any arg names
                     make_feeds=feeds,
                     reference=reference, graph_inputs=list(spec.inputs), graph_outputs=list(spec.outputs),
                     details=spec.details(model), calibration=calibration, calibration_source=spec.calibration_source)


def build_part(run: LoadedRun, cfg: ExportConfig) -> PartGraph:
    """The graph of `cfg.part` for this run: the whole sampler, or one of its family's network parts."""
    return sampler_part(run, cfg) if cfg.part == "sampler" else network_part(run, cfg)


def resolve_sampler(run: LoadedRun, cfg: ExportConfig) -> ExportConfig:
    """Fill in sampler, steps, graph form and the x0 clip box for this run (the resolved config is what
    gets recorded: the box as numbers, from `genlib.samplers.resolve_x0_clip`). A config already resolved
    (graph form set, box written) is returned as it is, so a cell resolves once."""
    family = _family(run)
    with_graph = [name for name in samplers_of(family) if SAMPLERS.get(name).has_program]
    if not with_graph:
        raise ExportError(f"part 'sampler' has no graph for model family '{family}' (its samplers "
                          f"{', '.join(samplers_of(family))} have no step program): export its network "
                          f"parts instead ({', '.join(type(run.model).parts) or 'none'})")
    if cfg.graph != "auto" and cfg.sample.sampler != "auto" and _is_resolved(run, cfg) and (
            cfg.graph == "unrolled" or cfg.precision == "fp32"):
        return cfg
    default = MODELS.get(family).export_sampler or with_graph[0]
    sampler = default if cfg.sample.sampler == "auto" else cfg.sample.sampler
    try:  # the sampler's own rules, as for genlib's sampling: applies to the family, reads these settings, S <= T
        spec = resolve_sample_config(run.config.model, SampleConfig(sampler=sampler))
        steps = cfg.sample.steps
        if steps is None and spec.step_setting == "steps":  # the deployment default: S = 50, capped at T
            steps = min(DEFAULT_STEPS, spec.steps(run.config.model, SampleConfig(sampler=sampler)))
        sample_cfg = replace(cfg.sample, sampler=sampler, steps=steps)
        resolve_sample_config(run.config.model, sample_cfg)
    except ConfigError as exc:
        raise ExportError(str(exc)) from None
    if sampler not in with_graph:
        raise ExportError(f"sampler '{sampler}' has no step graph (graphs exist for: {', '.join(with_graph)})")
    n = spec.steps(run.config.model, sample_cfg)
    graph = cfg.graph if cfg.graph != "auto" else ("unrolled" if n <= UNROLL_MAX_STEPS or cfg.precision != "fp32"
                                                   else "loop")
    if graph == "loop" and cfg.precision != "fp32":
        raise ExportError(f"precision {cfg.precision} needs the unrolled graph: ONNX Runtime's converters do not "
                          "convert a Loop body (use graph 'unrolled' or 'auto')")
    return replace(cfg, sample=resolve_x0_clip(sample_cfg, run.model, _x_train(run)), graph=graph)


def _is_resolved(run: LoadedRun, cfg: ExportConfig) -> bool:
    """Whether `resolve_sampler` would return cfg unchanged: graph form and sampler named, S written, and the
    clip box written where the sampler clips (so the training data is not read again)."""
    s = cfg.sample
    spec = SAMPLERS.get(s.sampler)
    steps_set = spec.step_setting != "steps" or s.steps is not None
    box_set = not s.clip_x0 or s.clip_low is not None or "clip_x0" not in spec.settings
    return steps_set and box_set


def _jsonable(v):
    return list(v) if isinstance(v, tuple) else v


def sampler_details(run: LoadedRun, cfg: ExportConfig, program: SamplerProgram) -> dict:
    """The resolved sampler recorded beside a sampler export: every setting it reads (by name, and their names
    under 'settings'), its registry info (name, label, steps, NFE), the graph form, its start input, history
    and step order (`ort_step_loop` replays it)."""
    s = cfg.sample
    spec = SAMPLERS.get(s.sampler)
    info = spec.info(run.config.model, s)
    return {**{k: _jsonable(getattr(s, k)) for k in spec.settings}, "settings": list(spec.settings),
            "sampler": s.sampler, "steps": len(program.indices), "graph": cfg.graph, "noise_input": bool(program.noisy),
            "label": info["label"], "step_setting": info["step_setting"], "nfe": info["nfe"], "start": program.start,
            "history": program.history, "indices": list(program.indices)}


def sampler_program(run: LoadedRun, cfg: ExportConfig) -> SamplerProgram:
    """The program of a resolved sampler export config on this run (the same one genlib's sampling runs)."""
    return SAMPLERS.get(cfg.sample.sampler).program(run.model, cfg.sample)


def sampler_part(run: LoadedRun, cfg: ExportConfig) -> PartGraph:
    """Part 'sampler' of any registered sampler with a program: its `ProgramStep` (exported once, composed S
    times), the torch loop over the same program as reference, and feeds drawn in the torch loop's order."""
    cfg = resolve_sampler(run, cfg)
    model = run.model
    program = sampler_program(run, cfg)
    step = program_step(program, model.net).to(model.device).eval()  # the tables follow the network's device
    h_in, h_out = onnx_graph.history_names(program.history)
    noisy = bool(program.noisy)

    def feeds(b: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        return draw_inputs(program, b, g)

    @torch.no_grad()
    def reference(f: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = run_program(program, f[program.start], noise=f.get("noise"))
        out = {"x": program.finish(x)}
        if program.state_output is not None:
            out[program.state_output] = x
        return out

    def calibration(n: int, g: torch.Generator) -> list[dict[str, torch.Tensor]]:
        """The step's inputs at every one of the sampler's own steps, along n trajectories from its start drawn
        as the torch loop draws them: one run per step, so activation ranges cover all of its timesteps."""
        runs: list[dict[str, torch.Tensor]] = []
        f = draw_inputs(program, n, g)
        noise = f.get("noise")

        def recording(tables, i, state, z):
            run_feeds = {"x": state[0], **dict(zip(h_in, state[1:])), "i": torch.tensor([i])}
            if noise is not None:
                run_feeds["noise"] = noise
            runs.append({k: v.detach().cpu() for k, v in run_feeds.items()})
            return program.step(tables, i, state, z)

        with torch.no_grad():
            run_program(dataclasses.replace(program, step=recording), f[program.start].to(model.device),
                        noise=noise.to(model.device) if noise is not None else None)
        return runs

    b = 3
    example = (torch.randn(b, *program.start_shape),) + tuple(torch.zeros(b, *program.start_shape) for _ in h_in)
    example += (torch.tensor([program.indices[0] if program.indices else 0]),)
    if noisy:
        example += (torch.randn(program.noise_slots, b, *program.noise_shape),)
    dyn = ({0: _batch_dim()},) + tuple({0: _batch_dim()} for _ in h_in) + (None,) + (({1: _batch_dim()},) if noisy else ())
    outputs = ([program.state_output] if program.state_output is not None else []) + ["x"]
    return PartGraph(
        module=step, example=example, input_names=["x", *h_in, "i"] + (["noise"] if noisy else []),
        output_names=["x_next", *h_out, "out"], dynamic_shapes=dyn, make_feeds=feeds, reference=reference,
        graph_inputs=[program.start] + (["noise"] if noisy else []), graph_outputs=outputs,
        details=sampler_details(run, cfg, program),
        compose=lambda m: onnx_graph.compose_sampler(m, program.indices, mode=cfg.graph, state_input=program.start,
                                                     state_output=program.state_output, out_output="x",
                                                     graph_name=cfg.sample.sampler, history=program.history),
        metric_data=_held_out(run), calibration=calibration,
        calibration_source=f"the step's inputs at each of the sampler's {len(program.indices)} steps, along "
                           f"trajectories from {program.start} ~ N(0, I)")
