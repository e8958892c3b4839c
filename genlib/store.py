"""The results store: one SQLite ledger (WAL mode) shared by training, grids, benchmarks and reports.

Schema (version 1; `PRAGMA user_version` holds it, and a store written by a newer genbench is refused):

    runs(run_key TEXT PRIMARY KEY,   -- sha256 prefix of the canonical resolved config (genlib.config.config_hash)
         kind TEXT,                  -- what produced it: 'train', 'eval', 'bench', 'floor', ...
         study TEXT,                 -- grid/study name, or NULL for ad-hoc runs
         name TEXT, parent_key TEXT, -- parent_key: e.g. an eval cell's training run
         status TEXT,                -- 'pending' | 'running' | 'done' | 'failed'
         config_json TEXT,           -- resolved config, canonical JSON
         seed INTEGER, git_commit TEXT, versions_json TEXT,
         device TEXT, provider TEXT, -- torch device / ONNX Runtime execution provider actually used
         artifact_path TEXT, error TEXT,   -- error: traceback text of a failed run
         created_at TEXT, finished_at TEXT)   -- UTC ISO-8601
    metrics(run_key TEXT REFERENCES runs, name TEXT, split TEXT ('' when not applicable),
            value REAL, unit TEXT, higher_is_better INTEGER (1, 0 or NULL when neither),
            extra_json TEXT,              -- what is needed to compare the number: n, k, extractor, ...
            PRIMARY KEY (run_key, name, split))
    view results = metrics joined with their run's kind, study, name, status, seed, device, provider.

Writes are transactions (`commit_run` writes a run and all its metrics atomically, so a crash leaves
either all or none). One writer process at a time: workers return results, the driver writes.
`read_table("runs" | "metrics" | "results")` returns a pandas DataFrame. The store never sees tensors.
"""
from __future__ import annotations

import json
import math
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Literal

import pandas as pd

SCHEMA_VERSION = 1
STATUSES = ("pending", "running", "done", "failed")
TABLES = ("runs", "metrics", "results")

_SCHEMA = """
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


class StoreError(RuntimeError):
    """The store file is unusable (newer schema, not a genbench store, bad input); the message says why."""


@dataclass(frozen=True)
class Metric:
    """One number with its unit and direction. higher_is_better: True, False, or None (neither)."""

    name: str
    value: float
    unit: str = ""
    higher_is_better: bool | None = None
    split: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunRecord:
    run_key: str
    kind: str
    config: dict[str, Any]
    status: Literal["pending", "running", "done", "failed"] = "done"
    study: str | None = None
    name: str | None = None
    parent_key: str | None = None
    seed: int | None = None
    git_commit: str | None = None
    versions: dict[str, str] | None = None
    device: str | None = None
    provider: str | None = None
    artifact_path: str | None = None
    error: str | None = None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ResultsStore:
    """A handle on one results database. Use as a context manager or call `close()`."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise StoreError(f"results store '{self.path}' does not exist")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise StoreError(f"'{self.path}' is not a SQLite results store: {exc}") from None
        if version > SCHEMA_VERSION:
            self._conn.close()
            raise StoreError(f"results store '{self.path}' has schema version {version}, newer than this "
                             f"genbench reads ({SCHEMA_VERSION}); upgrade genbench or use another --store")
        if version == 0:
            tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables - {"runs", "metrics"}:
                self._conn.close()
                raise StoreError(f"'{self.path}' is a SQLite database but not a genbench results store "
                                 f"(tables: {', '.join(sorted(tables))})")
            # Schema and version in one transaction: a crash here leaves an empty, re-creatable file.
            self._conn.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")

    # -- plumbing ------------------------------------------------------------------------------------
    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
        cur = self._conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    # -- writing -------------------------------------------------------------------------------------
    @staticmethod
    def _upsert_run(cur: sqlite3.Cursor, rec: RunRecord) -> None:
        if rec.status not in STATUSES:
            raise StoreError(f"run status must be one of {STATUSES}, got {rec.status!r}")
        finished = _now() if rec.status in ("done", "failed") else None
        cur.execute(
            """INSERT INTO runs (run_key, kind, study, name, parent_key, status, config_json, seed, git_commit,
                                 versions_json, device, provider, artifact_path, error, created_at, finished_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (run_key) DO UPDATE SET
                 kind=excluded.kind, study=excluded.study, name=excluded.name, parent_key=excluded.parent_key,
                 status=excluded.status, config_json=excluded.config_json, seed=excluded.seed,
                 git_commit=excluded.git_commit, versions_json=excluded.versions_json, device=excluded.device,
                 provider=excluded.provider, artifact_path=excluded.artifact_path, error=excluded.error,
                 finished_at=excluded.finished_at""",
            (rec.run_key, rec.kind, rec.study, rec.name, rec.parent_key, rec.status,
             json.dumps(rec.config, sort_keys=True, separators=(",", ":")), rec.seed, rec.git_commit,
             json.dumps(rec.versions or {}, sort_keys=True), rec.device, rec.provider, rec.artifact_path,
             rec.error, _now(), finished))

    @staticmethod
    def _insert_metrics(cur: sqlite3.Cursor, run_key: str, metrics: list[Metric]) -> None:
        rows = []
        for m in metrics:
            value = float(m.value)
            rows.append((run_key, m.name, m.split, value if math.isfinite(value) else None, m.unit,
                         None if m.higher_is_better is None else int(bool(m.higher_is_better)),
                         json.dumps({**m.extra, **({} if math.isfinite(value) else {"nonfinite": str(value)})},
                                    sort_keys=True, default=str)))
        cur.executemany(
            """INSERT INTO metrics (run_key, name, split, value, unit, higher_is_better, extra_json)
               VALUES (?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (run_key, name, split) DO UPDATE SET value=excluded.value, unit=excluded.unit,
                 higher_is_better=excluded.higher_is_better, extra_json=excluded.extra_json""", rows)

    def commit_run(self, rec: RunRecord, metrics: list[Metric] = ()) -> None:
        """Write a run row and its metrics in one transaction (all or nothing)."""
        with self.transaction() as cur:
            self._upsert_run(cur, rec)
            self._insert_metrics(cur, rec.run_key, list(metrics))

    def add_metrics(self, run_key: str, metrics: list[Metric]) -> None:
        """Add or replace metrics of an existing run."""
        with self.transaction() as cur:
            if cur.execute("SELECT 1 FROM runs WHERE run_key=?", (run_key,)).fetchone() is None:
                raise StoreError(f"no run '{run_key}' in '{self.path}'")
            self._insert_metrics(cur, run_key, list(metrics))

    def set_status(self, run_key: str, status: str, error: str | None = None) -> None:
        if status not in STATUSES:
            raise StoreError(f"run status must be one of {STATUSES}, got {status!r}")
        with self.transaction() as cur:
            cur.execute("UPDATE runs SET status=?, error=?, finished_at=? WHERE run_key=?",
                        (status, error, _now() if status in ("done", "failed") else None, run_key))
            if cur.rowcount == 0:
                raise StoreError(f"no run '{run_key}' in '{self.path}'")

    # -- reading -------------------------------------------------------------------------------------
    def get_run(self, run_key: str) -> dict[str, Any] | None:
        cur = self._conn.execute("SELECT * FROM runs WHERE run_key=?", (run_key,))
        row = cur.fetchone()
        if row is None:
            return None
        out = dict(zip([d[0] for d in cur.description], row))
        out["config"] = json.loads(out.pop("config_json"))
        out["versions"] = json.loads(out.pop("versions_json") or "{}")
        return out

    def status_counts(self, study: str | None = None) -> dict[str, int]:
        sql = "SELECT status, COUNT(*) FROM runs" + (" WHERE study=?" if study else "") + " GROUP BY status"
        return dict(self._conn.execute(sql, (study,) if study else ()).fetchall())

    def read_table(self, table: str = "results") -> pd.DataFrame:
        """One table or view as a DataFrame ('runs', 'metrics' or 'results')."""
        if table not in TABLES:
            raise StoreError(f"unknown table {table!r}; expected one of {', '.join(TABLES)}")
        return pd.read_sql_query(f"SELECT * FROM {table}", self._conn)
