"""Benchmark and export results into the results store (genlib.store), joinable with training runs.

Each timed cell becomes one `kind="bench"` run whose parent is the training run (parent_key = its
run_key), whose config is the resolved export + bench settings, and whose metrics are latency
percentiles, throughput, peak memory and the parity error, each with unit and direction; `extra`
carries batch, threads, backend, part, precision and the parity verdict. A cell timed despite failing
parity is stored with status 'failed' and the reason, so reports never take it for a valid speed.
Each export becomes a `kind="export"` run holding node count, file size, export time and parity. Rows are
built by genlib.records; device and provider are where the timing or the parity check actually ran.
"""
from __future__ import annotations

import math
from typing import Sequence

from genlib import records
from genlib.config import config_hash
from genlib.store import Metric, ResultsStore, RunRecord

from bench.suite import BenchConfig, BenchRow


def _extra(row: BenchRow) -> dict:
    parity = row.parity or {}
    return {"batch": row.batch, "threads": row.threads, "backend": row.backend, "part": row.part, "target": row.target,
            "precision": row.precision, "provider": row.provider,
            "parity": "n/a" if row.parity is None else ("valid" if parity.get("valid") else
                                                        "unchecked" if parity.get("valid") is None else "invalid"),
            **sampler_extra(row.details)}


def sampler_extra(details: dict) -> dict:
    """The resolved sampler of an export's details as flat metric extras: name, label, steps, NFE, graph form
    and every setting the sampler reads (eta, variance, passes, ...)."""
    keys = ("sampler", "label", "steps", "nfe", "graph", *(details.get("settings") or ("eta", "passes")))
    return {k: details[k] for k in keys if k in details and k not in ("clip_low", "clip_high")}


def bench_metrics(row: BenchRow) -> list[Metric]:
    t = row.timing
    extra = _extra(row)
    out: list[Metric] = []
    if t is not None:
        for name, value in (("latency_ms_p50", t.p50_ms), ("latency_ms_p90", t.p90_ms), ("latency_ms_p99", t.p99_ms),
                            ("latency_ms_mean", t.mean_ms), ("latency_ms_std", t.std_ms), ("latency_ms_min", t.min_ms)):
            out.append(records.metric("bench", name, value, extra={**extra, "rounds": t.rounds}))
        out.append(records.metric("bench", "throughput_per_s", t.throughput_per_s, extra=extra))
        if t.peak_memory_mb is not None:
            out.append(records.metric("bench", "peak_memory_mb", t.peak_memory_mb, extra={
                **extra, "scope": "process peak RSS" if row.device in ("cpu", "") else "device"}))
    if row.parity is not None and row.parity.get("max_abs_err") is not None:
        out.append(records.metric("bench", "parity_max_abs_err", float(row.parity["max_abs_err"]), extra={
            **extra, "tolerance": row.parity.get("tolerance"), "valid": row.parity.get("valid")}))
    return out


def bench_record(row: BenchRow, cfg: BenchConfig, *, study: str | None = None,
                 seed: int | None = None) -> tuple[RunRecord, list[Metric]]:
    """The row and metrics of one timed cell. row.provider is what ran (a session's get_providers()[0])."""
    config = {"bench": {"backend": row.backend, "provider": row.provider, "batch": row.batch, "threads": row.threads,
                        "precision": row.precision, "timing": vars(cfg.timing), "cuda_graph": cfg.cuda_graph},
              "part": row.part, "target": row.target, "export": row.export_config, "export_key": row.export_key,
              "run_key": row.run_key}
    prov = records.provenance()
    failed = row.status == "invalid"
    return records.build(
        "bench", run_key="bench-" + config_hash({**config, "node": prov["machine"].get("node")}), config=config,
        status="failed" if failed else "done", study=study,
        name=f"{row.target}/{row.backend}/{row.provider}/b{row.batch}/t{row.threads}/{row.precision}",
        parent_key=row.run_key, seed=seed, prov=prov, device=records.ort_device(row.provider) or row.device,
        provider=row.provider, artifact_path=row.onnx_path, metrics=bench_metrics(row),
        error=f"export failed parity: {(row.parity or {}).get('reason')}" if failed else None)


def store_bench_rows(store: ResultsStore, rows: Sequence[BenchRow], cfg: BenchConfig, *, study: str | None = None) -> int:
    """Write every timed row (skipped ones are not results); returns how many were written."""
    n = 0
    for row in rows:
        if row.timing is None:
            continue
        store.commit_run(*bench_record(row, cfg, study=study))
        n += 1
    return n


def export_record(info: dict, *, study: str | None = None) -> tuple[RunRecord, list[Metric]]:
    """The row and metrics of one export (its sidecar dict). Device and provider: where parity ran."""
    parity = info.get("parity") or {}
    valid = parity.get("valid")
    extra = {"part": info["part"], "precision": info.get("precision"), "opset": info.get("opset"),
             "exporter": info.get("exporter"), **sampler_extra(info.get("details") or {})}
    metrics = [records.metric("export", "export_time_s", info["export_time_s"], extra=extra),
               records.metric("export", "node_count", info["node_count"], extra=extra),
               records.metric("export", "file_size_bytes", info["file_size_bytes"], extra=extra)]
    err = parity.get("max_abs_err")
    if err is not None and not (isinstance(err, float) and math.isnan(err)):
        metrics.append(records.metric("export", "parity_max_abs_err", err, extra={
            **extra, "tolerance": parity.get("tolerance"), "valid": valid, "provider": parity.get("provider"),
            "batches": sorted({r["batch"] for r in parity.get("per_batch", [])})}))
    metric = parity.get("metric") or {}
    if metric.get("onnx") is not None:
        metrics.append(records.metric("export", "parity_sample_metric_abs_diff", metric["abs_diff"], extra={
            **extra, "metric": metric["name"], "torch": metric["torch"], "onnx": metric["onnx"],
            "tolerance": metric["tolerance"], "agree": metric["agree"]}))
    prov = info.get("provenance") or {}
    provider = parity.get("provider") or None
    return records.build(
        "export", run_key="export-" + info["export_key"],
        config={"export": info["export_config"], "run_key": info["run"]["run_key"], "part": info["part"]},
        status="done" if valid else "failed", study=study, name=f"export/{info['part']}/{info.get('precision')}",
        parent_key=info["run"]["run_key"], seed=info["export_config"].get("seed"),
        prov={"git_commit": prov.get("git_commit"), "versions": prov.get("versions"),
              "machine": records.machine_info()},
        device=records.ort_device(provider), provider=provider, artifact_path=info.get("path"), metrics=metrics,
        error=None if valid else (parity.get("reason") or "parity not checked"))


def store_export(store: ResultsStore, info: dict, *, study: str | None = None) -> str:
    """Write one export (its sidecar dict) as a kind='export' run; returns its run key."""
    rec, metrics = export_record(info, study=study)
    store.commit_run(rec, metrics)
    return rec.run_key
