"""Timing as a grid axis: export an evaluation cell's own sampler, gate it on parity, time it, draw through it.

`time_eval_cell` exports the cell's sampler (its checkpoint, sampler, S, eta, clip box) into a cache keyed by
export key (`<store>.artifacts/exports/`, written under a temporary name and renamed), times each (backend,
provider, batch, threads) with `bench.suite` and returns eval-record metrics plus `draw`, which samples through
the graph with the torch sampler's noise layout. It writes no store rows (the grid driver does).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from genlib import records
from genlib.config import ConfigError
from genlib.models import SampleConfig
from genlib.precisions import CALIBRATION_METHODS
from genlib.samplers import draw_inputs
from genlib.registry import UnknownNameError
from genlib.store import Metric
from genlib.train import LoadedRun

from bench.backends import BACKENDS, Target, clear_sessions, keep_session, ort_session
from bench.export import CachedExport, cached_export, export_key
from bench.parity import ParityResult
from bench.parts import ExportConfig, build_part, resolve_sampler, sampler_program
from bench.runtime import PROVIDER_NAMES, SessionConfig, make_session
from bench.suite import BenchConfig, BenchRow, run_benchmarks
from bench.timing import TimingConfig

TIMING_KEYS = ("backends", "providers", "batches", "threads", "target_s", "min_rounds", "warmup_rounds",
               "calibration_method", "calibration_size", "per_channel")
GENERATE_BATCH = 4096  # genlib.train.generate's batch: draws in chunks of this size, as the torch path does


class TimingSettingsError(ConfigError):
    """A grid's `timing` section names an unknown or inapplicable backend, provider or value."""


def sampler_backends() -> list[str]:
    """The registered backends that time a whole sampler: those that apply to a sampler target with its torch run
    and step graph, for some registered sampler (`peer` applies to samplers with a peer implementation only and
    is skipped on the others)."""
    from genlib.models import SAMPLERS

    names = []
    for sampler in SAMPLERS.names():
        probe = Target(part="sampler", onnx_path=Path("-"), info=None, part_graph=object(), run=object(),  # type: ignore[arg-type]
                       step_path=Path("-"), export_cfg=ExportConfig(part="sampler", sample=SampleConfig(sampler=sampler)))
        names += [n for n in BACKENDS.names() if n not in names and BACKENDS.get(n).applies(probe)]
    return sorted(names)


@dataclass(frozen=True, kw_only=True)
class TimingSettings:
    """What a timed evaluation cell measures: each backend x provider x batch x threads, with a small budget.

    backends: sampler backends of `bench.backends` (torch_loop, ort_graph, ort_step_loop, ort_net_loop, ...);
    providers: ONNX Runtime short names ('cpu', 'cuda'); target_s, min_rounds, warmup_rounds: the
    `bench.timing.TimingConfig` of every setting (grids keep it small: a fraction of a second each)."""

    backends: tuple[str, ...] = ("torch_loop", "ort_graph")
    providers: tuple[str, ...] = ("cpu",)
    batches: tuple[int, ...] = (1, 256)
    threads: tuple[int, ...] = (1,)
    target_s: float = 0.2
    min_rounds: int = 5
    warmup_rounds: int = 2
    # cells at precision int8_*: how their graph is quantized (bench.parts.ExportConfig's settings)
    calibration_method: str = "minmax"
    calibration_size: int = 64
    per_channel: bool = False

    def __post_init__(self) -> None:
        for name in self.backends:
            try:
                BACKENDS.get(name)
            except UnknownNameError as exc:
                raise TimingSettingsError(f"backends: {exc}") from None
            if name not in sampler_backends():
                raise TimingSettingsError(f"backends: '{name}' times network parts, not a cell's sampler (sampler "
                                          f"backends: {', '.join(sampler_backends())})")
        for name in self.providers:
            if name not in PROVIDER_NAMES:
                raise TimingSettingsError(f"providers: unknown execution provider '{name}' (expected one of: "
                                          f"{', '.join(PROVIDER_NAMES)})")
        for key in ("backends", "providers", "batches", "threads"):
            values = getattr(self, key)
            if not values:
                raise TimingSettingsError(f"{key}: needs at least one value")
            if len(set(values)) != len(values):
                raise TimingSettingsError(f"{key}: repeated values in {list(values)}")
        for key in ("batches", "threads"):
            if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in getattr(self, key)):
                raise TimingSettingsError(f"{key}: needs integers >= 1, got {list(getattr(self, key))}")
        try:
            self.timing_config()
        except ValueError as exc:
            raise TimingSettingsError(str(exc)) from None
        if self.calibration_method not in CALIBRATION_METHODS:
            raise TimingSettingsError(f"calibration_method: unknown '{self.calibration_method}' (expected one of: "
                                      f"{', '.join(CALIBRATION_METHODS)})")
        if isinstance(self.calibration_size, bool) or not isinstance(self.calibration_size, int) \
                or self.calibration_size < 1:
            raise TimingSettingsError(f"calibration_size: needs an integer >= 1, got {self.calibration_size!r}")

    def timing_config(self) -> TimingConfig:
        return TimingConfig(warmup_rounds=self.warmup_rounds, min_rounds=self.min_rounds, target_s=self.target_s,
                            max_rounds=max(self.min_rounds, 10_000))

    def bench_config(self) -> BenchConfig:
        return BenchConfig(batches=self.batches, threads=self.threads, providers=self.providers,
                           backends=self.backends, timing=self.timing_config())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "timing") -> "TimingSettings":
        """From a grid's `timing` mapping (less `where`); a scalar stands for a one-element list."""
        from genlib.registry import suggest

        unknown = [k for k in data if k not in TIMING_KEYS]
        if unknown:
            raise TimingSettingsError(f"{where}: unknown key '{unknown[0]}'{suggest(str(unknown[0]), list(TIMING_KEYS))} "
                                      f"(valid keys: where, {', '.join(TIMING_KEYS)})")
        kwargs: dict[str, Any] = {}
        for key in ("backends", "providers", "batches", "threads"):
            if key in data:
                value = data[key]
                kwargs[key] = tuple(value) if isinstance(value, (list, tuple)) else (value,)
        for key in ("target_s", "min_rounds", "warmup_rounds", "calibration_method", "calibration_size", "per_channel"):
            if key in data:
                kwargs[key] = data[key]
        try:
            return cls(**kwargs)
        except TimingSettingsError as exc:
            raise TimingSettingsError(f"{where}.{exc}") from None
        except (TypeError, ValueError) as exc:
            raise TimingSettingsError(f"{where}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        out = {"backends": list(self.backends), "providers": list(self.providers), "batches": list(self.batches),
               "threads": list(self.threads), "target_s": self.target_s, "min_rounds": self.min_rounds,
               "warmup_rounds": self.warmup_rounds}
        quant = {"calibration_method": self.calibration_method, "calibration_size": self.calibration_size,
                 "per_channel": self.per_channel}
        defaults = {"calibration_method": "minmax", "calibration_size": 64, "per_channel": False}
        out.update({k: v for k, v in quant.items() if v != defaults[k]})  # defaults left out: keys stay as before
        return out

    def export_settings(self, precision: str) -> dict[str, Any]:
        """The ExportConfig fields of a cell at `precision`."""
        return {"precision": precision, "calibration_method": self.calibration_method,
                "calibration_size": self.calibration_size, "per_channel": self.per_channel}


@dataclass
class TimedEval:
    """What timing one evaluation cell gave: eval-record metrics, the parity verdict and a sampler through ONNX.

    draw(n, seed=None, generator=None) -> (n, *sample_shape) float32 samples in data space from the exported graph,
    drawn with the same noise (order and shapes) as the torch sampler; None when parity failed."""

    metrics: list[Metric]
    parity: dict
    export_key: str
    export_path: Path
    exports: int  # graphs this call exported (0: every one came from the cache)
    device: str  # where the checkpoint's torch sampler ran
    provider: str | None  # the ONNX Runtime provider that drew the samples (None: drawn by torch)
    draw: Callable[..., np.ndarray] | None
    drawn_by: str  # 'ort_graph/<provider>' or 'torch_loop/torch:<device>'
    rows: list[BenchRow] = field(default_factory=list)

    @property
    def parity_valid(self) -> bool:
        return bool(self.parity.get("valid"))


# -- the cell's sampler as an export ------------------------------------------------------------------------
def export_config_for(run: LoadedRun, sample_cfg: SampleConfig, **export: Any) -> ExportConfig:
    """The ExportConfig of the very sampler `sample_cfg` runs on this checkpoint: its sampler name ('auto'
    resolved as genlib does), S (None = T, as genlib samples; never the export's own default), eta,
    variance, clip rule and box, refinement passes. Resolved (graph form, box) as `export_part` records it.
    export: further ExportConfig fields (precision and its calibration)."""
    spec = run.model.resolve_sampler(sample_cfg)
    steps = spec.steps(run.config.model, sample_cfg) if "steps" in spec.settings else None
    return resolve_sampler(run, ExportConfig(part="sampler", sample=replace(sample_cfg, sampler=spec.name, steps=steps),
                                             **export))


def _parity_result(side: Mapping[str, Any]) -> ParityResult:
    return ParityResult(**{**side, "per_batch": tuple(side.get("per_batch", ()))})


def _target(run: LoadedRun, cached: CachedExport) -> Target:
    path, info, cfg = cached.path, cached.info, cached.cfg
    step = path.with_name(path.stem + ".step.onnx")
    part_graph = cached.part if cached.part is not None else build_part(run, cfg)  # built once per export
    target = Target(part=cfg.part, onnx_path=path, info=info, export_cfg=cfg, part_graph=part_graph,
                    run=run, step_path=step if step.is_file() else None)
    side = (info.sidecar or {}).get("parity")
    if side and side.get("provider") == PROVIDER_NAMES["cpu"]:
        target.parity_cache["cpu"] = _parity_result(side)  # the export's own check on CPU: not run again
    return target


# -- drawing through the graph --------------------------------------------------------------------------------
def make_draw(run: LoadedRun, cfg: ExportConfig, path: Path, provider: str, threads: int, seed: int = 0
              ) -> tuple[Callable[..., np.ndarray], str]:
    """(draw, the provider its session reports). draw(n, seed=`seed`, generator=None) runs the whole-sampler graph
    in chunks of GENERATE_BATCH (genlib.train.generate's), one generator across chunks, its inputs drawn by
    `genlib.samplers.draw_inputs` in the torch loop's order (the start, then each noisy step's draw). The session
    is `bench.backends.ort_session`'s (one per file, provider and threads, shared with the timing)."""
    session = ort_session(path, provider, threads)
    program = sampler_program(run, cfg)
    names = {i.name for i in session.get_inputs()}

    default_seed = seed

    last: dict = {}

    def draw(n: int, seed: int | None = None, generator: torch.Generator | None = None) -> np.ndarray:
        seed = default_seed if seed is None else seed
        if generator is None and last.get("key") == (n, int(seed)):
            return last["samples"].copy()  # the same draw again (fidelity, then quality): computed once
        samples = _draw(n, seed, generator)
        if generator is None:
            last.update(key=(n, int(seed)), samples=samples)
        return samples.copy()

    def _draw(n: int, seed: int, generator: torch.Generator | None) -> np.ndarray:
        gen = generator if generator is not None else torch.Generator().manual_seed(int(seed))
        chunks = []
        for i in range(0, n, GENERATE_BATCH):
            feeds = draw_inputs(program, min(GENERATE_BATCH, n - i), gen)
            chunks.append(session.run(["x"], {k: v.numpy() for k, v in feeds.items() if k in names})[0])
        if not chunks:
            return np.empty((0, *run.model.sample_shape), dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32)

    return draw, session.get_providers()[0]


# -- metrics ------------------------------------------------------------------------------------------------
TIMED_STATS = (("latency_ms_p50", "p50_ms"), ("latency_ms_p90", "p90_ms"), ("latency_ms_p99", "p99_ms"),
               ("latency_ms_mean", "mean_ms"), ("latency_ms_std", "std_ms"), ("latency_ms_min", "min_ms"),
               ("throughput_per_s", "throughput_per_s"))


def timing_split(backend: str, provider: str, batch: int, threads: int) -> str:
    """The split of a timed setting's metrics: 'ort_graph/CPUExecutionProvider/b1/t1' (provider: what ran)."""
    return f"{backend}/{provider}/b{batch}/t{threads}"


def timing_metrics(rows: list[BenchRow], key: str, exported: bool) -> list[Metric]:
    """Eval-record metrics of every timed row that may be reported (parity passed, or a torch backend)."""
    out: list[Metric] = []
    for row in rows:
        if row.timing is None or not row.valid:
            continue
        extra = {"backend": row.backend, "provider": row.provider, "device": row.device, "batch": row.batch,
                 "threads": row.threads, "rounds": row.timing.rounds, "export_key": key,
                 "export": "new" if exported else "cached", "parity": "n/a" if row.parity is None else "valid"}
        split = timing_split(row.backend, row.provider, row.batch, row.threads)
        for name, attr in TIMED_STATS:
            out.append(records.metric("eval", name, getattr(row.timing, attr), split=split, extra=extra))
    return out


# -- the cell --------------------------------------------------------------------------------------------------
def prepare_export(loaded_run: LoadedRun, sample_cfg: SampleConfig, timing: TimingSettings | Mapping[str, Any], *,
                   exports_dir: str | Path, precision: str = "fp32") -> CachedExport:
    """The sampler graph a timed cell times (at `precision`), from the export cache or exported now behind the
    parity gate (int8_static calibrated): what `time_eval_cell` starts with. A grid runs it for each timed
    cell ahead of the timed phase, beside other cells, so the cell that then runs alone only loads the graph."""
    settings = timing if isinstance(timing, TimingSettings) else TimingSettings.from_dict(timing)
    cfg = export_config_for(loaded_run, sample_cfg, **settings.export_settings(precision))
    return cached_export(loaded_run, cfg, Path(exports_dir))


def time_eval_cell(loaded_run: LoadedRun, sample_cfg: SampleConfig, timing: TimingSettings | Mapping[str, Any], *,
                   exports_dir: str | Path, seed: int = 0, precision: str = "fp32", n: int | None = None) -> TimedEval:
    """Export, check, time and wrap the sampler of one evaluation cell.

    sample_cfg: the cell's SampleConfig with its clip box resolved (genlib.samplers.resolve_x0_clip), so the
    export is the sampler the cell evaluates. timing: TimingSettings or its dict (a grid cell's eval.timing).
    exports_dir: the export cache folder. seed: the default seed of `draw`. Backends that run ONNX are timed
    only where the export passed parity; the torch sampler always is. precision: the graph's (genlib.precisions);
    below fp32 the cell also measures, against the fp32 graph of the same sampler (exported or cached): the
    fidelity of n samples drawn from identical noise (per-sample L2 distance, mean and max) and the speed-up of
    `ort_graph` over fp32 timed back to back in this process; and for every precision the graph's size and its
    cold start (session creation plus a first call at batch 1)."""
    settings = timing if isinstance(timing, TimingSettings) else TimingSettings.from_dict(timing)
    exports_dir = Path(exports_dir)
    cached = prepare_export(loaded_run, sample_cfg, settings, exports_dir=exports_dir, precision=precision)
    cfg = cached.cfg
    path, info, fresh = cached.path, cached.info, cached.fresh
    exports = int(fresh)
    target = _target(loaded_run, cached)
    if "ort_net_loop" in settings.backends:  # the torch loop calling exported network parts
        from genlib.models import SAMPLERS

        for part in SAMPLERS.get(cfg.sample.sampler).net_parts:
            p_cached = cached_export(loaded_run, replace(ExportConfig(part=part), seed=cfg.seed), exports_dir)
            exports += int(p_cached.fresh)
            target.siblings[part] = _target(loaded_run, p_cached)
    fp32 = None
    targets = [target]
    if cfg.precision != "fp32":  # its fp32 graph, timed in the same run with ort_graph only (no torch reference)
        fp32 = cached_export(loaded_run, replace(cfg, precision="fp32"), exports_dir)
        exports += int(fp32.fresh)
        targets.append(Target(part="sampler", onnx_path=fp32.path, info=fp32.info, export_cfg=fp32.cfg,
                              label="fp32 reference"))
    bench_cfg = settings.bench_config()
    if cfg.precision != "fp32":  # the torch backends run the trained fp32 network: timed by the fp32 cell, not here
        onnx_only = tuple(b for b in bench_cfg.backends if not BACKENDS.get(b).torch_network)
        bench_cfg = replace(bench_cfg, backends=onnx_only or ("ort_graph",))
    # one ONNX Runtime session per (file, provider, threads): the cold start builds the graph's session at 1
    # thread, the timing and the draws reuse it (a 50-step Heun graph's session takes about 4 s to build)
    try:
        cold_ms, cold_provider = cold_start_ms(path, target, settings.providers[0])
        all_rows = run_benchmarks(targets, bench_cfg, progress=False, keep_sessions=True)
        rows = [r for r in all_rows if r.target != "fp32 reference"]
        reference_rows = [r for r in all_rows if r.target == "fp32 reference" and r.backend == "ort_graph"]
        key = (info.sidecar or {}).get("export_key") or export_key(loaded_run, cfg)
        parity = dict((info.sidecar or {}).get("parity") or {"valid": False, "reason": "no parity verdict"})
        metrics = timing_metrics(rows, key, fresh)
        skipped = [f"{timing_split(r.backend, r.provider or '-', r.batch, r.threads)}: {r.reason}"
                   for r in rows if r.timing is None or not r.valid]
        parity_extra = {"valid": parity.get("valid"), "tolerance": parity.get("tolerance"),
                        "reason": parity.get("reason", ""), "provider": parity.get("provider"), "export_key": key,
                        "export": "new" if fresh else "cached", "skipped": skipped}
        metrics.append(records.metric("eval", "parity_max_abs_err", float(parity.get("max_abs_err", float("nan"))),
                                      split="export", extra=parity_extra))
        device = str(loaded_run.model.device)
        draw, provider = None, None
        if parity.get("valid"):
            draw, provider = make_draw(loaded_run, cfg, path, settings.providers[0], torch.get_num_threads(), seed)
        drawn_by = f"ort_graph/{provider}" if provider else f"torch_loop/torch:{loaded_run.model.device.type}"
        extra = {"precision": cfg.precision, "export_key": key, "export": "new" if fresh else "cached"}
        metrics.append(records.metric("eval", "model_size_bytes", float(path.stat().st_size), split="export",
                                      extra=extra))
        metrics.append(records.metric("eval", "cold_start_ms", cold_ms,
                                      split=timing_split("ort_graph", cold_provider, 1, 1), extra=extra))
        if fp32 is not None:
            metrics += speedup_metrics(rows, reference_rows, extra)
        if draw is not None and n is not None:
            # the reference is drawn again on the fp32 file (for an fp32 cell: the same file and session, so its
            # distance measures that identical noise gives identical samples, not a shared array)
            reference = cached if fp32 is None else fp32
            ref_draw = make_draw(loaded_run, reference.cfg, reference.path, settings.providers[0],
                                 torch.get_num_threads(), seed)[0]
            ref_key = (reference.info.sidecar or {}).get("export_key")
            metrics += fidelity_metrics(draw(n, seed), ref_draw(n, seed), {**extra, "reference_export_key": ref_key})
        return TimedEval(metrics=metrics, parity=parity, export_key=key, export_path=path, exports=exports,
                         device=device if provider is None else _ort_device(provider, device), provider=provider,
                         draw=draw, drawn_by=drawn_by, rows=rows)
    finally:
        clear_sessions()


def fidelity_metrics(samples: np.ndarray, reference: np.ndarray, extra: dict) -> list[Metric]:
    """Fidelity to fp32 from identical noise: per-sample L2 distance (data space) between this graph's samples and
    the fp32 graph's, its mean and max over the n samples (exactly 0 for the fp32 graph itself)."""
    dist = np.sqrt(((samples.reshape(len(samples), -1).astype(np.float64)
                     - reference.reshape(len(reference), -1).astype(np.float64)) ** 2).sum(axis=1))
    extra = {**extra, "n": int(len(dist))}
    return [records.metric("eval", "fidelity_l2_mean", float(dist.mean()), split="fidelity", extra=extra),
            records.metric("eval", "fidelity_l2_max", float(dist.max()), split="fidelity", extra=extra)]


def speedup_metrics(rows: list[BenchRow], reference_rows: list[BenchRow], extra: dict) -> list[Metric]:
    """The speed-up of this graph over its fp32 graph (p50 ratio, fp32 / this) per provider, batch and threads,
    both timed by `ort_graph` in the same run (never assumed; below 1 where this graph is slower)."""
    mine = {(r.provider, r.batch, r.threads): r for r in rows if r.backend == "ort_graph" and r.timing is not None}
    out = []
    for r in reference_rows:
        other = mine.get((r.provider, r.batch, r.threads))
        if r.timing is None or other is None:
            continue
        split = timing_split("ort_graph", r.provider, r.batch, r.threads)
        out.append(records.metric("eval", "speedup_vs_fp32", r.timing.p50_ms / other.timing.p50_ms, split=split,
                                  extra={**extra, "fp32_p50_ms": r.timing.p50_ms, "p50_ms": other.timing.p50_ms}))
    return out


def cold_start_ms(path: Path, target: Target, provider: str) -> tuple[float, str]:
    """(session creation plus the first call at batch 1 in ms: what a service pays before its first answer, the
    provider that ran). The session is always built here, then kept (`bench.backends.keep_session`) for the
    1-thread timing and draws that follow."""
    import time

    feeds = target.onnx_feeds(1)
    start = time.perf_counter()
    session = make_session(path, SessionConfig(provider=provider, intra_op_threads=1))
    session.run(None, feeds)
    elapsed_ms = (time.perf_counter() - start) * 1000.0
    keep_session(path, provider, 1, session)
    return elapsed_ms, session.get_providers()[0]


def _ort_device(provider: str, fallback: str) -> str:
    return records.ort_device(provider) or fallback


__all__ = ["sampler_backends", "TIMING_KEYS", "TimedEval", "TimingSettings", "TimingSettingsError", "cached_export", "export_config_for",
           "make_draw", "prepare_export", "time_eval_cell", "timing_metrics", "timing_split"]
