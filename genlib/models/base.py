"""The model-family contract and its registries: families (`MODELS`), samplers (`SAMPLERS`), export parts.

A `GenerativeModel` pairs a network (`.net`, an nn.Module that knows nothing of losses or schedules) with
its family's glue: the loss that trains it, the samplers that generate from it and the network parts it
exposes for export and timing. Train, sample, eval, export, bench and grids dispatch through these
registries only, so a new family is one file in this package (imported by `genlib.models` on its own) and
its test (a case in tests/genlib/test_models.py; tests/test_new_family.py shows the whole path). One file:

    @dataclass(frozen=True, kw_only=True)
    class GaussConfig(ModelConfig):
        family: Literal["gauss"] = "gauss"

    SAMPLERS.register("gauss", help="mu + scale * eps")(SamplerSpec(
        name="gauss", run=lambda model, n, cfg, generator: ...))   # -> (n, *sample_shape), data space

    @MODELS.register("gauss", help="one Gaussian with a learned mean and diagonal scale")
    class Gauss(GenerativeModel):
        config_cls = GaussConfig
        samplers = ("gauss",)                             # the first is the default ('auto')
        parts = {"decoder": PartSpec(...)}                # what `genbench export` / `bench` can build
        provides = ()                                     # metric capabilities: "reconstruction", "posterior"
        reads_loss_config = False                         # True if training_loss reads loss.beta / kl_schedule
        def build_net(self): ...
        def training_loss(self, x, step, total_steps, loss_cfg, generator): ...

A family may also override `to_model_space` / `to_data_space`, `finish_training`, and, on its config,
`check_data(data_cfg)` (with `bind_data` on the model) when it only fits some datasets (see `oracle`).

A sampler reads only the `SampleConfig` fields named in its `settings`; any other field set away from
its default is refused. Its `check(model_cfg, sample_cfg)` holds rules that need the model config (S <= T)
and runs wherever settings are validated (`resolve_sampler`), before any work starts.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Literal

import numpy as np
import torch

from genlib.config import OMIT_DEFAULT, ConfigError
from genlib.perturb import parse_perturb
from genlib.records import MetricDef
from genlib.registry import Registry, UnknownNameError, suggest

MODELS: Registry[type["GenerativeModel"]] = Registry("model family")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Base of every family's config; `family` picks the subclass when a config is read."""

    family: str

    @classmethod
    def resolve_variant(cls, data: dict, path: str) -> type["ModelConfig"]:
        if cls is not ModelConfig:
            return cls
        key = f"{path}.family" if path else "family"
        if "family" not in data:
            raise ConfigError(f"missing required key '{key}' (one of: {', '.join(MODELS.names())})")
        try:
            return MODELS.get(str(data["family"])).config_cls
        except UnknownNameError as exc:
            raise ConfigError(f"'{key}': {exc}") from None

    def check_data(self, data: Any) -> None:
        """Refuse data this family cannot model (ConfigError naming data.name), given the run's DataConfig;
        RunConfig calls it, so grids catch the mismatch before anything trains. The default accepts any."""


@dataclass(frozen=True, kw_only=True)
class SampleConfig:
    """How to generate from a trained model. Fields the chosen sampler does not read must stay at their defaults."""

    # a registered sampler name (`genbench models` lists them), or auto = the family's first sampler.
    sampler: str = "auto"
    # diffusion: S respaced sampling steps (None = T); DDIM stochasticity; DDPM reverse variance.
    steps: int | None = None
    eta: float = 0.0
    variance: Literal["small", "large"] = "small"
    # ddpm/ddim: where the reverse chain starts. `prior`: x_T ~ N(0, I); `data`: x_T ~ q(x_T | x0) with x0 from
    # the test split (genlib.samplers.start_from_data), which isolates the prior mismatch on one checkpoint.
    start: Literal["prior", "data"] = "prior"
    # diffusion: clip the predicted x0 at each step to the box that genlib.samplers.x0_clip_bounds decides
    # (images: their data range; toys: the training data's bounding box plus a margin).
    clip_x0: bool = True
    # the box itself, per dimension in model space; written as numbers when a config is resolved
    # against its data (genlib.samplers.resolve_x0_clip), so a result records what it used.
    clip_low: tuple[float, ...] | None = None
    clip_high: tuple[float, ...] | None = None
    # vae: refinement passes (decode, re-encode, decode) and how the re-encoding is used.
    passes: int = 0
    reencode: Literal["mean", "sample"] = "mean"
    # ae: decode z ~ N(0, I) (`standard`) or z from a Gaussian fitted to the training codes.
    prior: Literal["standard", "fitted"] = "standard"
    # diffusion: a controlled error on the denoiser's output (genlib.perturb): none, scale:D (eps (1 + D)),
    # bias:D (eps + D u) or field:D (eps + D f(x_t)); left out of run keys while none.
    perturb: str = field(default="none", metadata={OMIT_DEFAULT: True})

    def __post_init__(self) -> None:
        if self.sampler != "auto" and self.sampler not in SAMPLERS:
            known = ["auto", *SAMPLERS.names()]
            raise ValueError(f"unknown sampler '{self.sampler}'{suggest(self.sampler, known)} (known: {', '.join(known)})")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")
        if self.passes < 0:
            raise ValueError(f"passes must be >= 0, got {self.passes}")
        parse_perturb(self.perturb)
        if (self.clip_low is None) != (self.clip_high is None):
            raise ValueError("clip_low and clip_high must be given together")
        if self.clip_low is not None and (len(self.clip_low) != len(self.clip_high)
                                          or any(lo > hi for lo, hi in zip(self.clip_low, self.clip_high))):
            raise ValueError(f"need clip_low <= clip_high per dimension, got {self.clip_low} and {self.clip_high}")


SAMPLE_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(SampleConfig))
_SETTINGS = tuple(f for f in SAMPLE_FIELDS if f != "sampler")


@dataclass(frozen=True, kw_only=True)
class SamplerSpec:
    """One generation procedure, owning everything about it; nothing outside its entry names a sampler.

    settings: the SampleConfig fields it reads (any other field set away from its default is refused).
    check(model_cfg, cfg) raises ConfigError for settings this model cannot honour (e.g. S > T).
    program(model, cfg) -> `genlib.samplers.SamplerProgram`: its tables, its pure step (one protocol for every
      sampler: step(tables, i, (x, *history), noise) -> state), its start and noise draws in draw order, and
      the data-space finish. The torch loop, the whole-sampler ONNX graph, the graph's feeds and every timing
      backend are derived from it. Samplers without a step loop give `run` instead.
    run(model, n, cfg, generator) -> (n, *sample_shape) samples in data space; derived from `program` when absent.
    steps(model_cfg, cfg): the number of steps one sample batch takes (required with `program`).
    step_setting: the setting that is its step count (e.g. 'steps'; plots of quality against steps read it).
    nfe(model_cfg, cfg): network evaluations per sample batch (default: one per step).
    net_parts: the family's network parts the steps call (the ONNX-network loop exports them beside the graph).
    families: families (and their subclasses) it applies to besides those listing it in `samplers`.
    label(cfg) -> the report label of a setting (default: the name and its non-default read settings but steps).
    peer: an optional `PeerSampler`: the same sampler in a peer library, timed beside ours on the same network.
    """

    name: str
    settings: tuple[str, ...] = ()
    check: Callable[["ModelConfig", "SampleConfig"], None] | None = None
    program: Callable[["GenerativeModel", "SampleConfig"], Any] | None = None
    run: Callable[["GenerativeModel", int, "SampleConfig", torch.Generator], torch.Tensor] | None = None
    steps: Callable[["ModelConfig", "SampleConfig"], int] | None = None
    step_setting: str | None = None
    nfe: Callable[["ModelConfig", "SampleConfig"], int] | None = None
    net_parts: tuple[str, ...] = ()
    families: tuple[str, ...] = ()
    label: Callable[["SampleConfig"], str] | None = None
    peer: Any = None

    def __post_init__(self) -> None:
        unknown = [s for s in self.settings if s not in _SETTINGS]
        if unknown:
            raise ValueError(f"sampler '{self.name}' names unknown settings {unknown} (SampleConfig has: "
                             f"{', '.join(_SETTINGS)})")
        if (self.program is None) == (self.run is None):
            raise ValueError(f"sampler '{self.name}' needs exactly one of program (a step loop) or run")
        if self.program is not None and (self.steps is None or not self.net_parts):
            raise ValueError(f"sampler '{self.name}' has a program, so it needs steps (its step count) and net_parts "
                             "(the network parts its steps call)")
        if self.step_setting is not None and self.step_setting not in self.settings:
            raise ValueError(f"sampler '{self.name}': step_setting '{self.step_setting}' is not one of its settings")

    @property
    def has_program(self) -> bool:
        return self.program is not None

    def generate(self, model: "GenerativeModel", n: int, cfg: "SampleConfig", generator: torch.Generator
                 ) -> torch.Tensor:
        """n samples in data space: `run`, or the program's torch loop from its own start draw."""
        if self.run is not None:
            return self.run(model, n, cfg, generator)
        from genlib.samplers import run_program

        program = self.program(model, cfg)
        return program.finish(run_program(program, program.draw_start(n, generator), generator=generator))

    def network_evaluations(self, model_cfg: "ModelConfig", cfg: "SampleConfig") -> int:
        if self.nfe is not None:
            return self.nfe(model_cfg, cfg)
        return self.steps(model_cfg, cfg) if self.steps is not None else 1

    def describe(self, cfg: "SampleConfig") -> str:
        """The report label of this sampler at `cfg`."""
        if self.label is not None:
            return self.label(cfg)
        default = SampleConfig()
        shown = [f"{s}={getattr(cfg, s)}" for s in self.settings
                 if s not in (self.step_setting, "clip_low", "clip_high", "start") and getattr(cfg, s) != getattr(default, s)]
        return " ".join([self.name, *shown])

    def info(self, model_cfg: "ModelConfig", cfg: "SampleConfig") -> dict[str, Any]:
        """What a result records about the sampler that ran: name, label, step count and setting, NFE."""
        steps = self.steps(model_cfg, cfg) if self.steps is not None else None
        return {"name": self.name, "label": self.describe(cfg), "steps": steps, "step_setting": self.step_setting,
                "nfe": self.network_evaluations(model_cfg, cfg)}


@dataclass(frozen=True, kw_only=True)
class PeerSampler:
    """The same sampler as a peer library implements it, driving the same torch network: `genbench bench` times
    it beside ours (backend `peer`) and records how far its output is from ours on identical inputs.

    build(model, cfg) -> call(x_T, noise) -> the final state in model space, for the inputs `draw_inputs` lays
    out (noise (S, B, ...) or None). `library` is imported first; when missing, the backend says `install`."""

    library: str
    install: str
    build: Callable[["GenerativeModel", "SampleConfig"], Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]]
    note: str = ""


SAMPLERS: Registry[SamplerSpec] = Registry("sampler")


@dataclass(frozen=True, kw_only=True)
class PartSpec:
    """A network part a family exposes for export and timing: a torch module over named tensors.

    build(model) -> nn.Module whose forward takes `inputs` (in order) and returns `outputs` (a tensor, or
    a tuple in that order), every tensor batched on axis 0. feeds(model, batch, generator, held_out) ->
    {input name: tensor} for one call; held_out is test data in data space (N, *shape) or None. details
    are recorded beside the export (e.g. T, so a bare ONNX file gets valid timesteps). calibration draws the
    inputs int8 calibration collects activation ranges from.
    """

    help: str
    build: Callable[["GenerativeModel"], torch.nn.Module]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    feeds: Callable[["GenerativeModel", int, torch.Generator, np.ndarray | None], dict[str, torch.Tensor]]
    details: Callable[["GenerativeModel"], dict] = lambda model: {}
    # calibration(model, n, generator, x_train) -> {input name: tensor}: n inputs as the part sees them when
    # sampling (a denoiser: q(x_t | x0) over the timesteps; a decoder: the prior), for int8 calibration.
    # x_train: the training split in data space. None: `feeds`. `calibration_source` says what it draws.
    calibration: Callable[["GenerativeModel", int, torch.Generator, np.ndarray], dict[str, torch.Tensor]] | None = None
    calibration_source: str = "the part's example feeds"


class GenerativeModel:
    """A family's network plus the glue that trains and samples it. Subclasses register with MODELS."""

    config_cls: ClassVar[type[ModelConfig]]
    samplers: ClassVar[tuple[str, ...]]  # registered SAMPLERS names; the first is the default
    parts: ClassVar[dict[str, PartSpec]] = {}  # exportable network parts (part 'sampler' comes from samplers)
    reads_loss_config: ClassVar[bool] = False  # whether training_loss reads RunConfig.loss (beta, kl_schedule)
    # whether the network has weights that training learns (a real perturbation needs them: an early
    # checkpoint, a quantized graph; genlib.perturb)
    trainable: ClassVar[bool] = True
    # Unit and direction of each float training_loss logs, the one declaration genlib.train and the train
    # records read (nats are per example, summed over dimensions). A name logged but not declared stops the
    # training at its first step.
    training_logs: ClassVar[dict[str, MetricDef]] = {"loss": MetricDef("", False)}
    # What the network offers to model metrics (genlib.metrics): "reconstruction" (net(x) -> x_hat, model
    # space), "posterior" (net.encode(x) -> (mu, scale), net.decode_raw(z), cfg.likelihood and cfg.obs_sigma).
    provides: ClassVar[tuple[str, ...]] = ()
    # The sampler `genbench export --part sampler` builds by default (None: the family's first with a program).
    export_sampler: ClassVar[str | None] = None

    def __init__(self, cfg: ModelConfig, sample_shape: tuple[int, ...], kind: str) -> None:
        self.cfg = cfg
        self.sample_shape = tuple(sample_shape)
        self.kind = kind  # "image" or "toy"
        self.net = self.build_net()

    # -- to implement ------------------------------------------------------------------------------
    def build_net(self) -> torch.nn.Module:
        raise NotImplementedError

    def training_loss(self, x: torch.Tensor, step: int, total_steps: int, loss_cfg: Any,
                      generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss on a model-space batch x (B, *shape); returns (scalar loss, logged floats)."""
        raise NotImplementedError

    # -- shared behaviour --------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, n: int, cfg: SampleConfig, generator: torch.Generator) -> torch.Tensor:
        """n samples in data space ([0, 1] for images), shape (n, *sample_shape), by the configured sampler."""
        return self.resolve_sampler(cfg).generate(self, n, cfg, generator)

    def to_model_space(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def to_data_space(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def bind_data(self, data: Any) -> None:
        """Hook after building, before training or reloading weights, given the run's DataConfig (the exact
        `oracle` reads its mixture here). The default does nothing."""

    def finish_training(self, x_train: torch.Tensor) -> None:
        """Hook after the last step, given the model-space training set (the AE fits its code Gaussian)."""

    @property
    def device(self) -> torch.device:
        """Where the network is: a network of buffers only (the exact oracle) counts too."""
        return module_device(self.net) if isinstance(self.net, torch.nn.Module) else torch.device("cpu")

    def to(self, device: torch.device | str) -> "GenerativeModel":
        self.net.to(device)
        return self

    def randn(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """Standard normal noise drawn on the CPU generator (reproducible across devices), moved to the net's device."""
        return torch.randn(shape, generator=generator).to(self.device)

    def with_parts(self, parts: dict[str, Callable]) -> "GenerativeModel":
        """A shallow copy whose network is made of other implementations of its parts (e.g. ONNX Runtime
        sessions, by part name), so the family's own glue and every sampler's program run over them. The
        default serves a family whose samplers call one network part with the network's own signature; a
        family whose steps call several parts (the VAE's encoder and decoder) overrides it."""
        if len(parts) != 1:
            raise NotImplementedError(f"family '{self.cfg.family}' does not say how to assemble its network from "
                                      f"parts {sorted(parts)} (override GenerativeModel.with_parts)")
        other = copy.copy(self)
        other.net = next(iter(parts.values()))
        return other

    def resolve_sampler(self, cfg: SampleConfig) -> SamplerSpec:
        """The sampler to run; see `resolve_sampler`."""
        return resolve_sampler(self.cfg, cfg)


def resolve_sampler(model_cfg: ModelConfig, cfg: SampleConfig) -> SamplerSpec:
    """The spec of the sampler `cfg` asks for on a `model_cfg` model, after every check of its settings.

    Raises ConfigError when the sampler does not apply to the family, when a field the sampler would
    silently ignore is set, or when the sampler's own check fails (e.g. S > T).
    """
    available = samplers_of(model_cfg.family)
    name = available[0] if cfg.sampler == "auto" else cfg.sampler
    if name not in available:
        raise ConfigError(f"sampler '{name}' does not apply to model family '{model_cfg.family}' "
                          f"(use one of: {', '.join(available)})")
    spec = SAMPLERS.get(name)
    if spec.check is not None:
        spec.check(model_cfg, cfg)
    default = SampleConfig()
    ignored = [f for f in _SETTINGS if f not in spec.settings and getattr(cfg, f) != getattr(default, f)]
    if ignored:
        raise ConfigError(f"sampler '{name}' does not use {', '.join(ignored)} "
                          f"(it uses: {', '.join(spec.settings) or 'no settings'})")
    return spec


def samplers_of(family: str) -> tuple[str, ...]:
    """The samplers of a family: its own `samplers` (the first is its default), then every registered sampler
    that names the family, or a family it derives from, in its `families`."""
    cls = MODELS.get(family)
    own = tuple(cls.samplers)
    extra = tuple(name for name in SAMPLERS.names() if name not in own
                  and any(f in MODELS and issubclass(cls, MODELS.get(f)) for f in SAMPLERS.get(name).families))
    return own + extra


def families_providing(capability: str) -> tuple[str, ...]:
    """The registered families whose network offers `capability` to metrics (see GenerativeModel.provides)."""
    return tuple(name for name in MODELS.names() if capability in MODELS.get(name).provides)


def family_parts(family: str) -> list[str]:
    """The parts worth exporting and timing for a family: its network parts, then 'sampler' when one of
    its samplers has a step loop."""
    cls = MODELS.get(family)
    sampler = any(SAMPLERS.get(s).has_program for s in samplers_of(family))
    return list(cls.parts) + (["sampler"] if sampler else [])


def part_names() -> list[str]:
    """Every exportable part name over the registered families ('sampler' last)."""
    names = {p for f in MODELS.names() for p in MODELS.get(f).parts}
    return sorted(names) + ["sampler"]


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (cpu for a module holding neither)."""
    return next((t.device for t in itertools.chain(module.parameters(), module.buffers())), torch.device("cpu"))


def build_model(cfg: ModelConfig, sample_shape: tuple[int, ...], kind: str) -> GenerativeModel:
    return MODELS.get(cfg.family)(cfg, sample_shape, kind)
