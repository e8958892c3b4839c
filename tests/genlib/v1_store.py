"""A schema-v1 results store as genbench wrote it before the record contract (commit 39e3ff8).

`V1_SCHEMA` is that commit's schema SQL verbatim; `write_v1_store` lays rows out as its producers did: grid
cells ({"train", "eval", "axes", "profile"}), `genbench train --store` (the RunConfig at the top level),
`genbench eval --store` (a flat {kind, run_key, n, sample, ...}), exports, benchmarks (machine facts inside
the config) and analytic checks. Used by the migration tests and by the report-on-a-v1-store test.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    study TEXT,
    name TEXT,
    parent_key TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    config_json TEXT NOT NULL,
    seed INTEGER,
    git_commit TEXT,
    versions_json TEXT,
    device TEXT,
    provider TEXT,
    artifact_path TEXT,
    error TEXT,
    created_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE TABLE IF NOT EXISTS metrics (
    run_key TEXT NOT NULL REFERENCES runs(run_key) ON DELETE CASCADE,
    name TEXT NOT NULL,
    split TEXT NOT NULL DEFAULT '',
    value REAL,
    unit TEXT NOT NULL DEFAULT '',
    higher_is_better INTEGER,
    extra_json TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_key, name, split)
);
CREATE INDEX IF NOT EXISTS runs_by_study ON runs (study, status);
CREATE VIEW IF NOT EXISTS results AS
    SELECT m.run_key, r.kind, r.study, r.name AS run_name, r.parent_key, r.status, r.seed, r.device,
           r.provider, r.git_commit, m.name, m.split, m.value, m.unit, m.higher_is_better, m.extra_json
    FROM metrics m JOIN runs r ON r.run_key = m.run_key;
"""
GIT = "39e3ff8c0ffee"
VERSIONS = {"python": "3.11.9", "torch": "2.13.0", "numpy": "2.4.6"}
MACHINE = {"node": "box", "processor": "x86_64", "machine": "x86_64", "system": "Linux", "release": "6.1",
           "python": "3.11.9", "cpu_count": 2}


def run_config(seed: int, steps: int = 300, data: str = "moons") -> dict[str, Any]:
    """A resolved RunConfig dict as genlib.config.to_dict wrote it (ddpm on a toy)."""
    return {"name": "ddpm", "seed": seed, "data": {"name": data, "n_train": 2000, "n_test": 1000, "seed": 0},
            "model": {"family": "ddpm", "net": "mlp", "hidden": 64,
                      "noise": {"kind": "linear", "T": 100, "scaled": True}},
            "loss": {"beta": 1.0}, "train": {"steps": steps, "lr": 0.002, "batch_size": 256, "device": "auto"}}


def _insert_run(conn: sqlite3.Connection, key: str, kind: str, config: dict, *, study: str | None = None,
                name: str | None = None, parent: str | None = None, seed: int | None = None, device: str = "cpu",
                provider: str | None = None, status: str = "done", artifact: str | None = None) -> None:
    conn.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 (key, kind, study, name, parent, status, json.dumps(config, sort_keys=True, separators=(",", ":")),
                  seed, GIT, json.dumps(VERSIONS, sort_keys=True), device, provider, artifact, None,
                  "2026-11-01T10:00:00+00:00", "2026-11-01T10:01:00+00:00"))


def _insert_metric(conn: sqlite3.Connection, key: str, name: str, value: float, unit: str, hib: bool | None,
                   split: str = "", extra: dict | None = None) -> None:
    conn.execute("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (key, name, split, value, unit, None if hib is None else int(hib), json.dumps(extra or {})))


def write_v1_store(path: str | Path, *, steps: tuple[int, ...] = (300,)) -> dict[str, list[str]]:
    """A v1 store at `path` with a 'steps'-like grid study 'toy' (one train + one eval cell per seed 0-2 and
    per train.steps in `steps`), a floor, CLI train/eval/floor rows, an export, a bench row and an analytic
    row. Returns the run keys by kind."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(f"BEGIN IMMEDIATE; {V1_SCHEMA} PRAGMA user_version=1; COMMIT;")
    keys: dict[str, list[str]] = {}
    conn.execute("BEGIN")
    ev = {"sampler": "ddim", "steps": 20, "eta": 0.0, "variance": "small", "clip_x0": True, "passes": 0,
          "reencode": "mean", "prior": "standard", "n": 500, "metrics": ["swd", "mmd"]}
    for n_steps in steps:
        for seed in (0, 1, 2):
            train = run_config(seed, n_steps)
            tkey, ekey = f"t{n_steps}s{seed}", f"e{n_steps}s{seed}"
            _insert_run(conn, tkey, "train", {"train": train, "eval": None, "axes": {}, "profile": "quick"},
                        study="toy", name=f"toy[seed={seed}]", seed=seed, artifact=f"r.artifacts/{tkey}")
            _insert_metric(conn, tkey, "loss", 0.5, "", False, "train", {"step": n_steps, "window": "last log window"})
            _insert_run(conn, ekey, "eval", {"train": train, "eval": ev, "axes": {"sampler": "ddim"},
                                             "profile": "quick"},
                        study="toy", name=f"toy[sampler=ddim, seed={seed}]", parent=tkey, seed=seed)
            swd = (0.04 if n_steps == 300 else 0.03) + 0.001 * seed
            _insert_metric(conn, ekey, "swd", swd, "data units", False, "", {"n": 500})
            _insert_metric(conn, ekey, "mmd", swd / 10, "kernel units", False, "", {"n": 500})
            keys.setdefault("train", []).append(tkey)
            keys.setdefault("eval", []).append(ekey)
    for seed in (0, 1, 2):
        fkey = f"f{seed}"
        _insert_run(conn, fkey, "floor", {"train": None, "eval": {"n": 500, "metrics": None},
                                          "data": run_config(seed)["data"],
                                          "axes": {"data.name": "moons", "eval.n": 500}, "profile": "quick"},
                    study="toy", name=f"toy[floor moons, n=500, seed={seed}]", seed=seed)
        _insert_metric(conn, fkey, "swd", 0.01, "data units", False, "", {"n": 500})
        keys.setdefault("floor", []).append(fkey)
    # genbench train --store / eval --store / eval --data --store
    cli_train = run_config(7)
    _insert_run(conn, "clitrain", "train", cli_train, name="ddpm", seed=7, artifact="/abs/runs/ddpm")
    _insert_metric(conn, "clitrain", "loss", 0.4, "", False, "train")
    _insert_metric(conn, "clitrain", "train_steps_per_s", 900.0, "steps/s", True)
    _insert_run(conn, "clieval", "eval", {"kind": "eval", "run_key": "clitrain", "run_name": "ddpm", "device": "cpu",
                                          "metrics": ["swd"], "n": 1000, "seed": 0, "reference": "test",
                                          "settings": {"swd_projections": 256}, "sample": {"sampler": "ddim",
                                                                                           "steps": 20}},
                name="ddpm", parent="clitrain", seed=0)
    _insert_metric(conn, "clieval", "swd", 0.05, "data units", False)
    _insert_run(conn, "clifloor", "floor", {"kind": "floor", "data": {"name": "moons"}, "device": "cpu",
                                            "metrics": ["swd"], "n": 1000, "seed": 0, "reference": "test",
                                            "settings": {}}, name="floor:moons", seed=0)
    _insert_metric(conn, "clifloor", "swd", 0.01, "data units", False)
    keys["cli"] = ["clitrain", "clieval", "clifloor"]
    export = {"part": "sampler", "sampler": "ddim", "steps": 20, "eta": 0.0, "precision": "fp32", "seed": 0}
    _insert_run(conn, "export-x1", "export", {"export": export, "run_key": "t300s0", "part": "sampler"},
                name="export/sampler/fp32", parent="t300s0", seed=0, provider="CPUExecutionProvider")
    _insert_metric(conn, "export-x1", "node_count", 120, "nodes", False)
    bench = {"bench": {"backend": "ort_graph", "provider": "CPUExecutionProvider", "batch": 1, "threads": 1,
                       "precision": "fp32", "timing": {"rounds": 20}, "cuda_graph": False},
             "part": "sampler", "target": "sampler", "export": export, "export_key": "x1", "run_key": "t300s0",
             "machine": MACHINE}
    _insert_run(conn, "bench-b1", "bench", bench, name="sampler/ort_graph/CPUExecutionProvider/b1/t1/fp32",
                parent="t300s0", provider="CPUExecutionProvider")
    for name, value in (("latency_ms_p50", 3.0), ("latency_ms_p90", 3.5), ("throughput_per_s", 330.0)):
        _insert_metric(conn, "bench-b1", name, value, "ms" if name.startswith("latency") else "samples/s",
                       not name.startswith("latency"), "", {"batch": 1, "threads": 1, "backend": "ort_graph",
                                                            "parity": "valid"})
    _insert_run(conn, "analytic-a", "analytic", {"analytic": "alpha_bar_T_unscaled_T100"}, study="analytic",
                name="alpha_bar_T_unscaled_T100", seed=0)
    _insert_metric(conn, "analytic-a", "alpha_bar_T", 0.36, "", None, "",
                   {"T": 100, "schedule": "linear", "scaled": False})
    keys["other"] = ["export-x1", "bench-b1", "analytic-a"]
    conn.execute("COMMIT")
    conn.close()
    return keys
