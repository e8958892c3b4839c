"""A benchmark run: export (or load) the graphs, then time every backend side by side in one process.

`targets_for_run` exports a trained run's parts behind the parity gate (reusing an earlier export with
the same export key); `target_for_onnx` wraps a bare ONNX file. `run_benchmarks` sweeps backends x
providers x batch sizes x thread counts with `bench.timing` and returns `BenchRow`s; an export that
failed parity on a provider is not timed there unless `allow_invalid`, and then its rows say so.
`speed_table` puts the rows side by side with speed-ups over the torch baseline. Storage is in
`bench.results`; this module prints nothing itself except through the progress bar.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import pandas as pd

from genlib.progress import tqdm
from genlib.models import SAMPLERS, family_parts
from genlib.train import LoadedRun

from bench.backends import BACKENDS, BackendUnavailable, Target, clear_sessions
from bench.export import cached_export, export_key
from bench.onnx_files import read_export
from bench.parts import ExportConfig, ExportError, build_part, resolve_sampler
from bench.runtime import resolve_providers
from bench.timing import Timing, TimingConfig, time_call


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """What to time. Empty `threads` means (1, all cores); None providers/backends mean all usable."""

    batches: tuple[int, ...] = (1, 16, 256)
    threads: tuple[int, ...] = ()
    providers: tuple[str, ...] | None = None
    backends: tuple[str, ...] | None = None
    timing: TimingConfig = field(default_factory=TimingConfig)
    allow_invalid: bool = False
    cuda_graph: bool = False

    def __post_init__(self) -> None:
        if not self.batches or min(self.batches) < 1:
            raise ValueError(f"batches must be positive integers, got {self.batches}")
        if self.threads and min(self.threads) < 1:
            raise ValueError(f"threads must be positive integers, got {self.threads}")
        for name in self.backends or ():
            BACKENDS.get(name)  # unknown names fail early with a suggestion

    def thread_counts(self) -> tuple[int, ...]:
        if self.threads:
            return self.threads
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return tuple(sorted({1, n}))


@dataclass
class BenchRow:
    """One timed cell: a backend on a provider at one batch size and thread count."""

    target: str  # the target's label (the part unless named otherwise)
    part: str
    backend: str
    provider: str  # what actually ran: 'torch:cpu', 'CPUExecutionProvider', 'CUDAExecutionProvider'
    device: str
    batch: int
    threads: int
    precision: str
    timing: Timing | None
    parity: dict | None  # {'valid', 'max_abs_err', 'tolerance', ...} for ONNX rows; None for torch rows
    status: str  # 'ok', 'invalid' (timed despite failing parity), 'skipped'
    reason: str = ""
    notes: dict = field(default_factory=dict)
    onnx_path: str | None = None
    export_key: str | None = None
    export_config: dict | None = None
    run_key: str | None = None
    details: dict = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return self.status == "ok" and (self.parity is None or bool(self.parity.get("valid")))


# --------------------------------------------------------------------------------------- targets
def export_for_bench(run: LoadedRun, cfg: ExportConfig, out_dir: Path, *, reuse: bool = True) -> Target:
    """Export one part into out_dir through the export cache (`bench.export.cached_export`: an earlier export
    with the same key is reused) as `<part>-<precision>-<export key>.onnx`, and wrap it as a Target."""
    if cfg.part == "sampler":
        cfg = resolve_sampler(run, cfg)
    stem = f"{cfg.part}-{cfg.precision}-{export_key(run, cfg)}"
    cached = cached_export(run, cfg, out_dir, stem=stem, reuse=reuse)
    step = cached.path.with_name(cached.path.stem + ".step.onnx")
    part_graph = cached.part if cached.part is not None else build_part(run, cached.cfg)
    return Target(part=cfg.part, onnx_path=cached.path, info=cached.info, export_cfg=cached.cfg,
                  part_graph=part_graph, run=run, step_path=step if step.is_file() else None)


def targets_for_run(run: LoadedRun, parts: Sequence[str] | None, base: ExportConfig, out_dir: str | Path, *,
                    precisions: Sequence[str] = ("fp32",), reuse: bool = True) -> list[Target]:
    """Targets for the run's parts (default: the parts its model family declares, then 'sampler' where one
    of its samplers has a step loop), each exported behind the parity gate into out_dir. The sampler target
    learns its sibling parts (its sampler spec's `net_parts`) for the per-step ONNX loop."""
    out_dir = Path(out_dir)
    family = run.config.model.family
    available = family_parts(family)
    parts = list(parts or available)
    for p in parts:
        if p not in available:
            raise ExportError(f"part '{p}' does not exist for model family '{family}' (its parts: "
                              f"{', '.join(available) or 'none'})")
    needed = set(parts)
    if "sampler" in parts:  # the ort_net_loop backend calls the network parts the sampler's steps call
        needed |= set(SAMPLERS.get(resolve_sampler(run, replace(base, part="sampler")).sample.sampler).net_parts)
    targets = []
    for precision in precisions:
        by_part: dict[str, Target] = {}
        for p in [p for p in available if p in needed]:
            by_part[p] = export_for_bench(run, replace(base, part=p, precision=precision), out_dir, reuse=reuse)
        for p in parts:
            t = by_part[p]
            t.siblings = {k: v for k, v in by_part.items() if k != p}
            if precision != "fp32":  # one row per precision in the speed table
                t.label = f"{p} {precision}"
            targets.append(t)
    return targets


def target_for_onnx(path: str | Path) -> Target:
    """A Target for a bare ONNX file: only the ONNX Runtime backends apply."""
    info = read_export(path)
    step = None
    if info.part == "sampler" and info.sidecar and info.sidecar.get("step_graph"):
        candidate = Path(path).with_name(info.sidecar["step_graph"])
        step = candidate if candidate.is_file() else None
    return Target(part=info.part, onnx_path=Path(path), info=info, step_path=step)


# --------------------------------------------------------------------------------------- running
def _backends_for(target: Target, cfg: BenchConfig) -> list[str]:
    names = list(cfg.backends) if cfg.backends else BACKENDS.names()
    return [n for n in names if BACKENDS.get(n).applies(target)]


def _parity_summary(parity) -> dict | None:
    if parity is None:
        return None
    return {"valid": parity.valid, "max_abs_err": parity.max_abs_err, "tolerance": parity.tolerance,
            "atol": parity.atol, "rtol": parity.rtol, "provider": parity.provider, "metric": parity.metric,
            "reason": parity.reason}


def run_benchmarks(targets: Sequence[Target], cfg: BenchConfig, *, progress: bool = True,
                   keep_sessions: bool = False) -> list[BenchRow]:
    """Time every applicable backend for every target, provider, batch size and thread count. The ONNX Runtime
    sessions are dropped at the end unless keep_sessions (the caller then calls `clear_sessions`)."""
    providers = resolve_providers(list(cfg.providers) if cfg.providers else None)
    cells = []
    for target in targets:
        for name in _backends_for(target, cfg):
            spec = BACKENDS.get(name)
            for provider in (providers if spec.uses_provider else [None]):
                for batch in cfg.batches:
                    for threads in cfg.thread_counts():
                        cells.append((target, name, provider, batch, threads))
    rows: list[BenchRow] = []
    bar = tqdm(cells, desc="bench", disable=not progress, leave=False, dynamic_ncols=True)
    for target, name, provider, batch, threads in bar:
        # refresh=False: the bar prints on its own schedule (in a log: a line every few seconds with the real count)
        bar.set_postfix_str(f"{target.part} {name}{'/' + provider if provider else ''} b{batch} t{threads}",
                            refresh=False)
        rows.append(_run_cell(target, name, provider, batch, threads, cfg))
    if not keep_sessions:
        clear_sessions()
    return rows


def _run_cell(target: Target, name: str, provider: str | None, batch: int, threads: int, cfg: BenchConfig) -> BenchRow:
    spec = BACKENDS.get(name)
    precision = target.export_cfg.precision if target.export_cfg else (target.info.sidecar or {}).get("precision", "fp32")
    if spec.torch_network:
        precision = "fp32"  # torch runs the network as trained
    base = dict(target=target.name, part=target.part, backend=name, batch=batch, threads=threads, precision=precision,
                onnx_path=str(target.onnx_path), export_key=(target.info.sidecar or {}).get("export_key"),
                export_config=(target.info.sidecar or {}).get("export_config"),
                run_key=(target.info.sidecar or {}).get("run", {}).get("run_key"), details=dict(target.info.details))
    kwargs = {"provider": provider} if provider else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prepared = spec.prepare(target, batch, threads, cuda_graph=cfg.cuda_graph, **kwargs)
    except BackendUnavailable as exc:
        return BenchRow(provider=provider or "", device="", timing=None, parity=None, status="skipped",
                        reason=str(exc), **base)
    parity = _parity_summary(prepared.parity)
    onnx_backed = spec.uses_provider
    if onnx_backed and parity is None:
        parity = {"valid": None, "reason": "parity unknown (no torch model and no sidecar)"}
    invalid = onnx_backed and parity is not None and parity.get("valid") is False
    try:
        if invalid and not cfg.allow_invalid:
            return BenchRow(provider=prepared.provider, device=prepared.device, timing=None, parity=parity,
                            status="skipped", reason=f"export failed parity: {parity.get('reason')}",
                            notes=prepared.notes, **base)
        timing = time_call(prepared.call, prepared.sync, batch=batch, cfg=cfg.timing, memory=prepared.memory)
    finally:
        prepared.close()
    return BenchRow(provider=prepared.provider, device=prepared.device, timing=timing, parity=parity,
                    status="invalid" if invalid else "ok", notes=prepared.notes, **base)


# ----------------------------------------------------------------------------------------- tables
def rows_frame(rows: Sequence[BenchRow]) -> pd.DataFrame:
    """One line per row: latency statistics, provider and parity."""
    recs = []
    for r in rows:
        t = r.timing
        recs.append({
            "target": r.target, "part": r.part, "backend": r.backend, "provider": r.provider, "precision": r.precision,
            "batch": r.batch, "threads": r.threads, "status": r.status,
            "p50_ms": t.p50_ms if t else None, "p90_ms": t.p90_ms if t else None, "p99_ms": t.p99_ms if t else None,
            "mean_ms": t.mean_ms if t else None, "std_ms": t.std_ms if t else None,
            "throughput_per_s": t.throughput_per_s if t else None, "rounds": t.rounds if t else None,
            "parity_max_abs_err": (r.parity or {}).get("max_abs_err"),
            "parity_valid": (r.parity or {}).get("valid"), "reason": r.reason,
        })
    return pd.DataFrame.from_records(recs)


def speed_table(rows: Sequence[BenchRow]) -> pd.DataFrame:
    """p50 latency per (target, batch, threads) with one column per backend/provider and the
    speed-up of each over the torch baseline (torch for parts, torch_loop for samplers). Only rows that
    passed parity are used; others appear as missing."""
    df = rows_frame([r for r in rows if r.valid and r.timing is not None])
    if df.empty:
        return df
    df["column"] = [b + ("" if p.startswith("torch") else "/" + p.replace("ExecutionProvider", "").lower())
                    + ("+fp16" if prec == "fp16" else "")
                    for b, p, prec in zip(df["backend"], df["provider"], df["precision"])]
    wide = df.pivot_table(index=["target", "batch", "threads"], columns="column", values="p50_ms", aggfunc="min")
    baseline = None
    for base in ("torch", "torch_loop"):
        if base in wide.columns:
            baseline = wide[base] if baseline is None else baseline.fillna(wide[base])
    columns = list(wide.columns)
    if baseline is not None:
        for col in columns:
            if col not in ("torch", "torch_loop"):
                wide[f"x {col}"] = baseline / wide[col]  # speed-up over the torch baseline
    wide.columns.name = None
    return wide.reset_index()
