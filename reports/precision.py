"""The Precision section: what shipping a lower-precision graph costs in quality and buys in speed, per setting.

For each timed setting (checkpoint config and sampler settings, provider, batch, threads) of the `ort_graph`
backend, one row per precision (fp32, fp16, int8_dynamic, int8_static): the study's quality metric on samples
drawn through that very graph, its fidelity to the fp32 graph's samples from identical noise, p50 latency, the
speed-up over fp32 (both graphs timed back to back in one process, so < 1 means slower), the graph's size, its
cold start, the quality gate and the run keys. It reads the rows `bench.grid_timing` stores; nothing is assumed.
"""
from __future__ import annotations

import json
from typing import Any

from matplotlib.figure import Figure

from reports.load import StoreData
from reports.pareto import ParetoPoint, _reference_key, pareto_points, study_gate, timed_studies
from reports.plots import Plot, _png, log_axis
from reports.render import Column, Num, Stat, Table
from reports.stats import t_interval
from reports.tables import MetricInfo, slug, varying_axes

BACKEND = "ort_graph"  # precision changes the exported graph; the torch loop always runs fp32
ORDER = {"fp32": 0, "fp16": 1, "int8_dynamic": 2, "int8_static": 3}


def _stat(values: list[float]) -> Stat | None:
    if not values:
        return None
    iv = t_interval(values)
    return Stat(iv.mean, iv.low, iv.high, iv.n)


def _metric(data: StoreData, run_keys: tuple[str, ...], name: str, split: str | None = None) -> list[float]:
    m = data.metrics
    rows = m[m["run_key"].isin(list(run_keys)) & (m["metric"] == name)]
    if split is not None:
        rows = rows[rows["split"] == split]
    return [float(v) for v in rows["value"]]


def precision_rows(data: StoreData, study: str) -> list[tuple[str, MetricInfo, list[ParetoPoint]]]:
    """(data name, quality metric, ort_graph points) of the study's groups that have a precision below fp32."""
    out = []
    for group, info, points in pareto_points(data, study):
        mine = [p for p in points if p.backend == BACKEND]
        if any(p.precision != "fp32" for p in mine):
            out.append((group, info, mine))
    return out


def precision_table(data: StoreData, study: str, group: str, info: MetricInfo, points: list[ParetoPoint]) -> Table:
    axes = [a for a in varying_axes([p.config for p in points]) if a != "eval.precision"]
    key_axes = varying_axes([p.config for p in points])
    ordered = sorted(points, key=lambda p: (_reference_key(p, key_axes), ORDER.get(p.precision, 9)))
    cols = [Column(a, a) for a in axes] + [
        Column("provider", "provider"), Column("batch", "batch", "num"), Column("threads", "threads", "num"),
        Column("precision", "precision"), Column("quality", info.key, "stat", info.unit, info.higher_is_better),
        Column("fidelity", "fidelity L2 to fp32", "stat", "data units", False),
        Column("latency", "p50", "stat", "ms", False), Column("speedup", "speed-up vs fp32", "stat", "x", True),
        Column("size", "size", "num", "KiB", False), Column("cold", "cold start", "num", "ms", False),
        Column("gate", "gate", "text"), Column("run_keys", "run keys", "text")]
    rows: list[dict[str, Any]] = []
    for p in ordered:
        split = f"{BACKEND}/{p.provider}/b{p.batch}/t{p.threads}"
        speedup = (Stat(1.0, 1.0, 1.0, len(p.run_keys)) if p.precision == "fp32"
                   else _stat(_metric(data, p.run_keys, "speedup_vs_fp32", split)))
        size = _metric(data, p.run_keys, "model_size_bytes")
        cold = _metric(data, p.run_keys, "cold_start_ms")
        shown = p.config.get("axes") or {}
        row = {a: shown.get(a) for a in axes}
        row.update(provider=p.provider, batch=p.batch, threads=p.threads, precision=p.precision, quality=p.quality,
                   fidelity=_stat(_metric(data, p.run_keys, "fidelity_l2_mean")), latency=p.latency,
                   speedup=speedup, size=Num(sum(size) / len(size) / 1024, digits=4) if size else None,
                   cold=Num(sum(cold) / len(cold), digits=4) if cold else None, gate=p.gate or "-",
                   run_keys=" ".join(p.run_keys))
        rows.append({k: ("-" if v is None else v) for k, v in row.items()})
    notes = [f"One row per precision of each timed {BACKEND} setting; every value is read from the evaluation rows "
             "listed under run keys (mean ± 95% t-interval over seeds). Quality: samples drawn through that very graph. "
             "Fidelity: per-sample L2 distance to the fp32 graph's samples from identical noise (mean over samples; "
             "0 for fp32 itself). Speed-up: fp32 p50 / this p50, both graphs timed back to back in the same process "
             "(below 1: slower than fp32). Cold start: session creation plus a first call at batch 1."]
    machines = set()
    timed = data.runs[data.runs["run_key"].isin([k for p in points for k in p.run_keys])]
    for text in timed.get("machine_json", []):
        try:
            machine = json.loads(text) if isinstance(text, str) else None
        except ValueError:
            machine = None
        if isinstance(machine, dict) and machine.get("cpu_features"):
            machines.add(", ".join(machine["cpu_features"]))
    if machines:
        notes.append("CPU features of the machines that timed these rows (they decide int8 and fp16 speed): "
                     + "; ".join(sorted(machines)) + ".")
    gate = study_gate(data, study)
    if gate is not None:
        notes.append(f"Gate: {gate['metric']} within {gate['max_increase']:g} of the fp32 graph's mean (95% interval).")
    return Table(slug(f"precision-{study}-{group}"), f"Precision ({study}, {group}, {info.key})", cols, rows,
                 notes=notes)


def precision_plot(table: Table, study: str, info: MetricInfo, points: list[ParetoPoint], data: StoreData) -> Plot:
    """Quality change against fp32 (y) vs speed-up over fp32 (x, log), one marker per precision, per batch."""
    key_axes = varying_axes([p.config for p in points])
    ref = {_reference_key(p, key_axes): p for p in points if p.precision == "fp32"}
    batches = sorted({p.batch for p in points})
    fig = Figure(figsize=(4.4 * len(batches), 3.6), layout="constrained")
    axes = fig.subplots(1, len(batches), squeeze=False).ravel()
    precisions = sorted({p.precision for p in points}, key=lambda s: ORDER.get(s, 9))
    for ax, batch in zip(axes, batches):
        for i, prec in enumerate(precisions):
            xs, ys = [], []
            for p in points:
                r = ref.get(_reference_key(p, key_axes))
                if p.batch != batch or p.precision != prec or r is None:
                    continue
                split = f"{BACKEND}/{p.provider}/b{p.batch}/t{p.threads}"
                sp = [1.0] if prec == "fp32" else _metric(data, p.run_keys, "speedup_vs_fp32", split)
                if sp:
                    xs.append(sum(sp) / len(sp))
                    ys.append(p.quality.mean - r.quality.mean)
            if xs:
                ax.plot(xs, ys, "osD^"[i % 4], color=f"C{i}", label=prec, alpha=0.85)
        ax.axhline(0, color="0.5", lw=0.8)
        ax.axvline(1, color="0.5", lw=0.8, ls=":")
        log_axis(ax, "x")
        ax.set_xlabel("speed-up over fp32 (x)")
        ax.set_title(f"batch {batch}")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel(f"{info.key} change vs fp32 {'(↑ better)' if info.higher_is_better else '(↓ better)'}")
    axes[0].legend(fontsize=7)
    return Plot(table.name, f"{table.title}: quality change vs speed-up, one marker per setting and precision",
                _png(fig), study)


def precision_report(data: StoreData, studies=None) -> tuple[list[Table], list[Plot]]:
    tables, plots = [], []
    for study in timed_studies(data, studies):
        for group, info, points in precision_rows(data, study):
            table = precision_table(data, study, group, info, points)
            tables.append(table)
            plots.append(precision_plot(table, study, info, points, data))
    return tables, plots


__all__ = ["precision_plot", "precision_report", "precision_rows", "precision_table"]
