"""Quality against latency of the same artifact: the Pareto table and plot of timed grid evaluations.

A point is one (evaluation `config_key`: checkpoint config + sampler settings, backend, provider, batch, threads):
the study's primary metric and `latency_ms_p50`, both read from the same evaluation rows (mean and 95% t-interval
over seeds, run keys listed); a point from rows of two configurations is refused (`ParetoError`). On the front:
no other point at the same batch and threads is both faster and better.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import pandas as pd
from matplotlib.figure import Figure

from genlib import records

from reports.load import ReportError, StoreData, data_name, is_scalar
from reports.plots import Plot, _err, _png, log_axis
from reports.render import Column, Stat, Table
from reports.stats import t_interval
from reports.tables import MetricInfo, metric_infos, slug, study_slug, varying_axes

LATENCY = "latency_ms_p50"


class ParetoError(ReportError):
    """A Pareto row would mix configurations (its quality and latency would not describe one artifact)."""


@dataclass(frozen=True)
class Measure:
    """One evaluation row: its quality and the p50 latency of one timed setting, both from `run_key`."""

    run_key: str
    config_key: str
    seed: Any
    quality: float
    latency_ms: float


@dataclass(frozen=True)
class ParetoPoint:
    config_key: str
    backend: str
    provider: str  # the provider that ran ('CPUExecutionProvider', 'torch:cpu')
    batch: int
    threads: int
    run_keys: tuple[str, ...]
    quality: Stat
    latency: Stat  # p50 latency per call at this batch, ms
    config: dict = field(default_factory=dict, compare=False)  # one row's record config (settings to show)
    front: bool = False
    gate: str = ""  # "pass" / "fail" against the study's quality gate (rows below fp32), "" where none applies

    @property
    def precision(self) -> str:
        return precision_of(self.config)


def precision_of(config: dict) -> str:
    """The precision of the graph an evaluation row's samples and latency came from (fp32 unless recorded)."""
    return str(records.eval_config(config).get("precision") or "fp32")


def study_gate(data: StoreData, study: str) -> dict | None:
    """The quality gate the study's grid file declares (`gate:`), from its stored definition."""
    runs = data.runs[(data.runs["kind"] == "study") & (data.runs["study"] == study)]
    for cfg in runs["config"]:
        if isinstance(cfg, dict) and isinstance(cfg.get("gate"), dict):
            return cfg["gate"]
    return None


def _reference_key(point: "ParetoPoint", axes: list[str]) -> tuple:
    """What a row shares with its fp32 reference: every varying setting but the precision, and the timed setting."""
    shown = records.axes(point.config)
    return (tuple(str(shown.get(a)) for a in axes if a != "eval.precision"), point.backend, point.provider,
            point.batch, point.threads)


def apply_gate(points: list["ParetoPoint"], gate: dict | None, info: MetricInfo) -> list["ParetoPoint"]:
    """Rows below fp32 marked pass/fail: a row fails when its quality interval leaves the window of
    `max_increase` (in the metric's unit) beyond its fp32 reference's mean, on the worse side: for a
    lower-is-better metric when its upper 95% bound exceeds fp32's mean + max_increase. Gate metrics other
    than the table's quality are not applied here (the table says so)."""
    if gate is None or gate.get("metric") != info.name:
        return points
    axes = varying_axes([p.config for p in points])
    reference = {_reference_key(p, axes): p for p in points if p.precision == "fp32"}
    limit = float(gate["max_increase"])
    out = []
    for p in points:
        ref = reference.get(_reference_key(p, axes))
        if p.precision == "fp32" or ref is None:
            out.append(p)
            continue
        if info.higher_is_better:
            ok = p.quality.low >= ref.quality.mean - limit
        else:
            ok = p.quality.high <= ref.quality.mean + limit
        out.append(dataclasses.replace(p, gate="pass" if ok else "fail"))
    return out


def _stat(values: Iterable[float]) -> Stat:
    iv = t_interval(list(values))
    return Stat(iv.mean, iv.low, iv.high, iv.n)


def build_point(measures: list[Measure], *, backend: str, provider: str, batch: int, threads: int,
                config: dict | None = None) -> ParetoPoint:
    """The point of `measures` (one per seed). Raises ParetoError unless every measure has one config_key,
    so a row's quality and latency always describe the same checkpoint config and sampler settings."""
    keys = sorted({m.config_key for m in measures})
    if len(keys) != 1:
        raise ParetoError(f"a Pareto row needs rows of one configuration (config_key); got {len(keys)}: "
                          f"{', '.join(keys) or 'none'} from run keys {', '.join(m.run_key for m in measures)}")
    if len({m.run_key for m in measures}) != len(measures):
        raise ParetoError(f"a Pareto row lists a run key twice: {', '.join(m.run_key for m in measures)}")
    ordered = sorted(measures, key=lambda m: (m.seed is None, m.seed if isinstance(m.seed, (int, float)) else 0))
    return ParetoPoint(config_key=keys[0], backend=backend, provider=provider, batch=int(batch), threads=int(threads),
                       run_keys=tuple(m.run_key for m in ordered), quality=_stat(m.quality for m in ordered),
                       latency=_stat(m.latency_ms for m in ordered), config=dict(config or {}))


def mark_front(points: list[ParetoPoint], higher_is_better: bool) -> list[ParetoPoint]:
    """The points with `front` set: not dominated (faster-or-equal and better-or-equal, one strictly) by another
    point of the same batch and threads. A row that fails the quality gate is never on the front, nor dominates."""
    sign = -1.0 if higher_is_better else 1.0
    out = []
    points_in = points
    points = [p for p in points_in if p.gate != "fail"]
    for p in points_in:
        cost, loss = p.latency.mean, sign * p.quality.mean
        ok = math.isfinite(cost) and math.isfinite(loss) and p.gate != "fail"
        dominated = any(
            (q.batch, q.threads) == (p.batch, p.threads) and math.isfinite(q.latency.mean)
            and math.isfinite(q.quality.mean) and q.latency.mean <= cost and sign * q.quality.mean <= loss
            and (q.latency.mean < cost or sign * q.quality.mean < loss)
            for q in points if q is not p)
        out.append(dataclasses.replace(p, front=ok and not dominated))
    return out


# -- reading the store ----------------------------------------------------------------------------------------
def _claim_metrics(data: StoreData, study: str) -> list[str]:
    """The metrics of a study's stored claims, primary tests first (as the grid file declares them)."""
    runs = data.runs[(data.runs["kind"] == "study") & (data.runs["study"] == study)]
    primary, secondary = [], []
    for cfg in runs["config"]:
        for claim in cfg.get("claims") or []:
            primary.append((claim.get("primary") or {}).get("metric"))
            secondary.extend(t.get("metric") for t in claim.get("secondary") or [])
    return [m for m in dict.fromkeys(primary + secondary) if isinstance(m, str)]


def primary_metric(data: StoreData, study: str, frame: pd.DataFrame) -> MetricInfo | None:
    """The quality metric of a data group: the first claim metric of the study measured there, else the first
    metric with a direction in the order the cells list them (eval.metrics)."""
    quality = frame[~frame["metric"].isin(list(records.TIMING))]
    preferred: list[str] = []
    for cfg in quality["config"]:
        names = records.eval_config(cfg).get("metrics")
        preferred.extend(n for n in names or [] if isinstance(n, str))
    infos = [i for i in metric_infos(quality, dict.fromkeys(preferred)) if i.higher_is_better is not None]
    for name in _claim_metrics(data, study):
        for info in infos:
            if info.name == name:
                return info
    return infos[0] if infos else None


def timed_studies(data: StoreData, studies: Iterable[str] | None = None) -> list[str]:
    """Studies whose evaluations carry latency metrics, in store order (only those of `studies` when given)."""
    m = data.metrics
    rows = m[(m["kind"] == "eval") & (m["metric"] == LATENCY) & m["study"].notna()]
    found = list(dict.fromkeys(rows["study"]))
    return found if studies is None else [s for s in found if s in set(studies)]


def pareto_points(data: StoreData, study: str) -> list[tuple[str, MetricInfo, list[ParetoPoint]]]:
    """(data name, quality metric, points) per dataset of the study's timed evaluations."""
    m = data.metrics
    ev = m[(m["study"] == study) & (m["kind"] == "eval") & (m["status"] == "done")]
    timed_keys = set(ev.loc[ev["metric"] == LATENCY, "run_key"])
    ev = ev[ev["run_key"].isin(timed_keys)]
    if ev.empty:
        return []
    groups = [data_name(c) or "" for c in ev["config"]]
    out = []
    for group in dict.fromkeys(groups):
        frame = ev[[g == group for g in groups]]
        info = primary_metric(data, study, frame)
        if info is None:
            continue
        q = frame[(frame["metric"] == info.name) & (frame["split"] == info.split)]
        quality = dict(zip(q["run_key"], q["value"]))
        lat = frame[frame["metric"] == LATENCY]
        by_point: dict[tuple, list[Measure]] = {}
        config_of: dict[tuple, dict] = {}
        for rk, ck, seed, value, extra, cfg in zip(lat["run_key"], lat["config_key"], lat["seed"], lat["value"],
                                                   lat["extra"], lat["config"]):
            if rk not in quality:
                continue  # a row without the quality metric gives no point
            ck = ck if isinstance(ck, str) and ck else f"run:{rk}"  # never pooled without a config_key
            setting = (ck, str(extra.get("backend")), str(extra.get("provider")), int(extra.get("batch", 0)),
                       int(extra.get("threads", 0)))
            by_point.setdefault(setting, []).append(Measure(rk, ck, seed, float(quality[rk]), float(value)))
            config_of.setdefault(setting, cfg)
        points = [build_point(ms, backend=s[1], provider=s[2], batch=s[3], threads=s[4], config=config_of[s])
                  for s, ms in by_point.items()]
        if points:
            points = apply_gate(points, study_gate(data, study), info)
            out.append((group, info, mark_front(points, bool(info.higher_is_better))))
    return out


# -- table and plot -------------------------------------------------------------------------------------------
def _show(value: Any) -> Any:
    return "null" if value is None else value if is_scalar(value) else str(value)


def _drawn_by(data: StoreData, run_keys: Iterable[str]) -> set[str]:
    m = data.metrics
    rows = m[m["run_key"].isin(list(run_keys))]
    return {e["samples_drawn_by"] for e in rows["extra"] if isinstance(e.get("samples_drawn_by"), str)}


def pareto_table(data: StoreData, study: str, group: str, info: MetricInfo, points: list[ParetoPoint]) -> Table:
    axes = [a for a in varying_axes([p.config for p in points]) if a != "eval.precision"]
    points = sorted(points, key=lambda p: (p.batch, p.threads, p.latency.mean, p.backend))
    cols = [Column(a, a) for a in axes] or [Column("setting", "setting")]
    cols += [Column("precision", "precision"), Column("backend", "backend"), Column("provider", "provider"),
             Column("batch", "batch", "num"),
             Column("threads", "threads", "num"),
             Column("quality", info.key, "stat", info.unit, info.higher_is_better),
             Column("latency", "p50", "stat", "ms", False), Column("seeds", "seeds", "setting"),
             Column("run_keys", "run keys", "text"), Column("gate", "gate", "text"), Column("front", "Pareto", "text")]
    rows = []
    for p in points:
        row: dict[str, Any] = ({a: _show((p.config.get("axes") or {}).get(a)) for a in axes} if axes
                               else {"setting": "all cells"})
        row.update(precision=p.precision, backend=p.backend, provider=p.provider, batch=p.batch, threads=p.threads,
                   quality=p.quality, latency=p.latency, seeds=len(p.run_keys), run_keys=" ".join(p.run_keys),
                   gate=p.gate or "-", front="yes" if p.front else "")
        rows.append(row)
    drawn = _drawn_by(data, [k for p in points for k in p.run_keys])
    notes = [f"One row per evaluated configuration (checkpoint config and sampler settings) timed on one backend, "
             f"provider, batch and threads; {info.key} and median (p50) latency per call are mean ± 95% t-interval "
             f"over seeds, both read from the evaluation rows listed under run keys (one per seed).",
             "Pareto: yes when no other row at the same batch and threads is both faster and better."]
    gate = study_gate(data, study)
    if gate is not None:
        side = "lower bound below" if info.higher_is_better else "upper bound above"
        applied = gate["metric"] == info.name
        notes.append(f"Quality gate: {gate['metric']} may worsen by at most {gate['max_increase']:g} relative to the "
                     f"same setting's {gate['relative_to']} graph; a row below fp32 fails when its 95% interval's "
                     f"{side} that window, is marked 'fail' and is excluded from the front"
                     + ("." if applied else f" (not applied here: this table's quality metric is {info.name})."))
    if drawn:
        notes.append("Quality samples drawn by: " + ", ".join(sorted(drawn))
                     + " (ort_graph: through the exported graph that passed the parity gate).")
    return Table(slug(f"pareto-{group}") if study == "steps" else f"pareto-{study_slug(study)}-{slug(group)}",
                 f"Quality vs latency ({study}, {group}, {info.key})", cols, rows, notes=notes)


def pareto_plot(table: Table, study: str, info: MetricInfo, points: list[ParetoPoint]) -> Plot:
    """Latency (log x) against quality, one point per row with both intervals, one panel per batch and threads,
    the front joined by a line."""
    panels = sorted({(p.batch, p.threads) for p in points})
    fig = Figure(figsize=(4.6 * len(panels), 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False).ravel()
    backends = sorted({p.backend for p in points})
    markers = dict(zip(backends, "osD^v<>"))
    for ax, (batch, threads) in zip(axes, panels):
        here = [p for p in points if (p.batch, p.threads) == (batch, threads)]
        for i, backend in enumerate(backends):
            pts = [p for p in here if p.backend == backend]
            if pts:
                ax.errorbar([p.latency.mean for p in pts], [p.quality.mean for p in pts],
                            xerr=_err([p.latency for p in pts]), yerr=_err([p.quality for p in pts]),
                            fmt=markers.get(backend, "o"), color=f"C{i}", ms=4, capsize=2, alpha=0.8, label=backend)
        front = sorted((p for p in here if p.front), key=lambda p: p.latency.mean)
        if front:
            ax.plot([p.latency.mean for p in front], [p.quality.mean for p in front], "-", color="C3", lw=1.2,
                    label="Pareto front")
        log_axis(ax, "x")
        ax.set_xlabel(f"p50 latency per call at batch {batch} [ms]")
        ax.set_title(f"batch {batch}, {threads} thread(s)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel(f"{info.key} {'↑' if info.higher_is_better else '↓'}")
    axes[0].legend(fontsize=7)
    return Plot(table.name, f"{table.title}: each row's mean ± 95% CI over seeds, the Pareto front joined",
                _png(fig), study)


def pareto_report(data: StoreData, studies: Iterable[str] | None = None) -> tuple[list[Table], list[Plot]]:
    """Tables and plots for every study with timed evaluations (or those of `studies` that have them)."""
    tables, plots = [], []
    for study in timed_studies(data, studies):
        for group, info, points in pareto_points(data, study):
            table = pareto_table(data, study, group, info, points)
            tables.append(table)
            plots.append(pareto_plot(table, study, info, points))
    return tables, plots


__all__ = ["LATENCY", "Measure", "ParetoError", "ParetoPoint", "build_point", "mark_front", "pareto_points",
           "pareto_plot", "pareto_report", "pareto_table", "primary_metric", "timed_studies"]
