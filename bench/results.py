"""Benchmark and export results into the results store (genlib.store), joinable with training runs.

Each timed cell becomes one `kind="bench"` run whose parent is the training run (parent_key = its
run_key), whose config is the resolved export + bench settings, and whose metrics are latency
percentiles, throughput, peak memory and the parity error, each with unit and direction; `extra`
carries batch, threads, backend, part, precision and the parity verdict. A cell timed despite failing
parity is stored with status 'failed' and the reason, so reports never take it for a valid speed.
Each export becomes a `kind="export"` run holding node count, file size, export time and parity.
"""
from __future__ import annotations

import math
from typing import Sequence

from genlib.config import config_hash
from genlib.provenance import git_commit, library_versions
from genlib.store import Metric, ResultsStore, RunRecord

from bench.suite import BenchConfig, BenchRow
from bench.timing import machine_info


def _extra(row: BenchRow) -> dict:
    parity = row.parity or {}
    return {"batch": row.batch, "threads": row.threads, "backend": row.backend, "part": row.part, "target": row.target,
            "precision": row.precision, "provider": row.provider,
            "parity": "n/a" if row.parity is None else ("valid" if parity.get("valid") else
                                                        "unchecked" if parity.get("valid") is None else "invalid"),
            **{k: v for k, v in row.details.items() if k in ("sampler", "steps", "graph", "passes", "eta")}}


def bench_metrics(row: BenchRow) -> list[Metric]:
    t = row.timing
    extra = _extra(row)
    out: list[Metric] = []
    if t is not None:
        for name, value in (("latency_ms_p50", t.p50_ms), ("latency_ms_p90", t.p90_ms), ("latency_ms_p99", t.p99_ms),
                            ("latency_ms_mean", t.mean_ms), ("latency_ms_std", t.std_ms), ("latency_ms_min", t.min_ms)):
            out.append(Metric(name, value, unit="ms", higher_is_better=False, extra={**extra, "rounds": t.rounds}))
        out.append(Metric("throughput_per_s", t.throughput_per_s, unit="samples/s", higher_is_better=True, extra=extra))
        if t.peak_memory_mb is not None:
            out.append(Metric("peak_memory_mb", t.peak_memory_mb, unit="MB", higher_is_better=False,
                              extra={**extra, "scope": "process peak RSS" if row.device in ("cpu", "") else "device"}))
    if row.parity is not None and row.parity.get("max_abs_err") is not None:
        out.append(Metric("parity_max_abs_err", float(row.parity["max_abs_err"]), unit="abs", higher_is_better=False,
                          extra={**extra, "tolerance": row.parity.get("tolerance"), "valid": row.parity.get("valid")}))
    return out


def bench_record(row: BenchRow, cfg: BenchConfig, *, study: str | None = None, seed: int | None = None) -> RunRecord:
    config = {"bench": {"backend": row.backend, "provider": row.provider, "batch": row.batch, "threads": row.threads,
                        "precision": row.precision, "timing": vars(cfg.timing), "cuda_graph": cfg.cuda_graph},
              "part": row.part, "target": row.target, "export": row.export_config, "export_key": row.export_key, "run_key": row.run_key,
              "machine": machine_info()}
    key_config = {k: v for k, v in config.items() if k != "machine"}
    failed = row.status == "invalid"
    return RunRecord(
        run_key="bench-" + config_hash({**key_config, "node": config["machine"].get("node")}), kind="bench",
        config=config, status="failed" if failed else "done", study=study,
        name=f"{row.target}/{row.backend}/{row.provider}/b{row.batch}/t{row.threads}/{row.precision}",
        parent_key=row.run_key, seed=seed, git_commit=git_commit(), versions=library_versions(), device=row.device,
        provider=row.provider, artifact_path=row.onnx_path,
        error=f"export failed parity: {(row.parity or {}).get('reason')}" if failed else None)


def store_bench_rows(store: ResultsStore, rows: Sequence[BenchRow], cfg: BenchConfig, *, study: str | None = None) -> int:
    """Write every timed row (skipped ones are not results); returns how many were written."""
    n = 0
    for row in rows:
        if row.timing is None:
            continue
        store.commit_run(bench_record(row, cfg, study=study), bench_metrics(row))
        n += 1
    return n


def store_export(store: ResultsStore, info: dict, *, study: str | None = None) -> str:
    """Write one export (its sidecar dict) as a kind='export' run; returns its run key."""
    parity = info.get("parity") or {}
    valid = parity.get("valid")
    extra = {"part": info["part"], "precision": info.get("precision"), "opset": info.get("opset"),
             "exporter": info.get("exporter"), **{k: v for k, v in (info.get("details") or {}).items()
                                                   if k in ("sampler", "steps", "graph", "passes")}}
    metrics = [
        Metric("export_time_s", info["export_time_s"], unit="s", higher_is_better=False, extra=extra),
        Metric("node_count", info["node_count"], unit="nodes", higher_is_better=False, extra=extra),
        Metric("file_size_bytes", info["file_size_bytes"], unit="bytes", higher_is_better=False, extra=extra),
    ]
    err = parity.get("max_abs_err")
    if err is not None and not (isinstance(err, float) and math.isnan(err)):
        metrics.append(Metric("parity_max_abs_err", err, unit="abs", higher_is_better=False,
                              extra={**extra, "tolerance": parity.get("tolerance"), "valid": valid,
                                     "provider": parity.get("provider"),
                                     "batches": sorted({r["batch"] for r in parity.get("per_batch", [])})}))
    metric = parity.get("metric") or {}
    if metric.get("onnx") is not None:
        metrics.append(Metric("parity_sample_metric_abs_diff", metric["abs_diff"], unit=metric["name"],
                              higher_is_better=False, extra={**extra, "torch": metric["torch"], "onnx": metric["onnx"],
                                                             "tolerance": metric["tolerance"], "agree": metric["agree"]}))
    prov = info.get("provenance") or {}
    key = "export-" + info["export_key"]
    store.commit_run(RunRecord(
        run_key=key, kind="export", config={"export": info["export_config"], "run_key": info["run"]["run_key"],
                                            "part": info["part"]},
        status="done" if valid else "failed", study=study, name=f"export/{info['part']}/{info.get('precision')}",
        parent_key=info["run"]["run_key"], seed=info["export_config"].get("seed"), git_commit=prov.get("git_commit"),
        versions=prov.get("versions"), device="cpu", provider=parity.get("provider"),
        artifact_path=info.get("path"), error=None if valid else (parity.get("reason") or "parity not checked")), metrics)
    return key
