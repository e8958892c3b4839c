"""The results store: one SQLite ledger (WAL mode) shared by training, grids, benchmarks and reports.

Schema (version 2; `PRAGMA user_version` holds it; a v1 store is migrated forward on open, one newer is refused):

    runs(run_key TEXT PRIMARY KEY,   -- sha256 prefix of the canonical resolved config (genlib.config.config_hash)
         kind TEXT,                  -- 'train' | 'eval' | 'floor' | 'export' | 'bench' | 'analytic' (genlib.records)
         study TEXT,                 -- grid/study name, or NULL for ad-hoc runs
         name TEXT, parent_key TEXT, -- parent_key: e.g. an eval cell's training run
         status TEXT,                -- 'pending' | 'running' | 'done' | 'failed'
         config_json TEXT,           -- resolved config, canonical JSON, in the layout genlib.records documents
         seed INTEGER, git_commit TEXT, versions_json TEXT,
         device TEXT, provider TEXT, -- torch device / ONNX Runtime execution provider that actually ran
         artifact_path TEXT, error TEXT,   -- error: traceback text of a failed run
         created_at TEXT, finished_at TEXT,   -- UTC ISO-8601
         config_key TEXT,            -- v2: hash of the config less the seed (genlib.record_layout.config_key)
         machine_json TEXT)          -- v2: machine facts (genlib.provenance.machine_info)
    metrics(run_key TEXT REFERENCES runs, name TEXT, split TEXT ('' when not applicable),
            value REAL, unit TEXT, higher_is_better INTEGER (1, 0 or NULL when neither),
            extra_json TEXT,              -- what is needed to compare the number: n, k, extractor, ...
            PRIMARY KEY (run_key, name, split))
    view results = metrics joined with their run's kind, study, name, status, seed, device, provider, config_key.

Writes are transactions (`commit_run` writes a run and all its metrics atomically, so a crash leaves
either all or none). One writer process at a time: workers return results, the driver writes.
`ResultsStore(path, readonly=True)` opens with SQLite's mode=ro and never writes (a v1 store is migrated in
memory). Files that are not genbench stores are refused before anything is written to them. A full disk,
an I/O error or a read-only file becomes a one-line StoreError naming the store.
`read_table("runs" | "metrics" | "results")` returns a pandas DataFrame. The store never sees tensors.
"""
from __future__ import annotations

import json
import math
import os
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Literal
from urllib.parse import quote

from genlib import record_layout

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_VERSION = 2
STATUSES = ("pending", "running", "done", "failed")
TABLES = ("runs", "metrics", "results")
RUN_COLUMNS = ("run_key", "kind", "study", "name", "parent_key", "status", "config_json", "seed", "git_commit",
               "versions_json", "device", "provider", "artifact_path", "error", "created_at", "finished_at",
               "config_key", "machine_json")

_VIEW = """
CREATE VIEW results AS
    SELECT m.run_key, r.kind, r.study, r.name AS run_name, r.parent_key, r.status, r.seed, r.device,
           r.provider, r.git_commit, r.config_key, m.name, m.split, m.value, m.unit, m.higher_is_better,
           m.extra_json
    FROM metrics m JOIN runs r ON r.run_key = m.run_key;
"""
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
    finished_at TEXT,
    config_key TEXT,
    machine_json TEXT
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
CREATE INDEX IF NOT EXISTS runs_by_config ON runs (study, config_key);
""" + _VIEW

# SQLite messages that mean the medium, not the query, failed.
_MEDIUM_ERRORS = ("disk is full", "disk i/o error", "readonly database", "unable to open database")


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
    """One runs row; build it with genlib.records.build. config_key None: computed on commit."""

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
    config_key: str | None = None
    machine: dict[str, Any] | None = None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _inspect(conn: sqlite3.Connection, path: Path) -> int:
    """The schema version of a genbench store at `conn` (0: empty file); StoreError for anything else.
    Reads only: nothing is written to a file that turns out not to be a store."""
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        run_cols = {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"'{path}' is not a SQLite results store: {exc}") from None
    if version > SCHEMA_VERSION:
        raise StoreError(f"results store '{path}' has schema version {version}, newer than this "
                         f"genbench reads ({SCHEMA_VERSION}); upgrade genbench or use another --store")
    ours = {"runs", "metrics"} <= tables and {"run_key", "kind", "config_json", "status"} <= run_cols
    if (version == 0 and tables) or (version > 0 and not ours):
        raise StoreError(f"'{path}' is a SQLite database but not a genbench results store "
                         f"(user_version {version}, tables: {', '.join(sorted(tables)) or 'none'})")
    return version


def _migrate_v1(conn: sqlite3.Connection) -> None:
    """v1 -> v2 in one transaction: add config_key and machine_json, rewrite v1 config layouts into the
    contract's (genlib.record_layout.upgrade_v1_config) and fill config_key from them."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("ALTER TABLE runs ADD COLUMN config_key TEXT")
        conn.execute("ALTER TABLE runs ADD COLUMN machine_json TEXT")
        rows = conn.execute("SELECT run_key, kind, config_json, parent_key FROM runs").fetchall()
        configs: dict[str, dict[str, Any]] = {}
        machines: dict[str, Any] = {}
        for run_key, kind, text, _ in rows:
            try:
                config = json.loads(text)
            except (TypeError, json.JSONDecodeError):
                config = {}
            config = config if isinstance(config, dict) else {"value": config}
            if isinstance(config.get("machine"), dict):
                machines[run_key] = config["machine"]
            configs[run_key] = record_layout.upgrade_v1_config(kind, config)
        kinds = {r[0]: r[1] for r in rows}
        parents = {r[0]: r[3] for r in rows}
        # `genbench eval --store` rows of v1 name their training by run key: embed its config when stored.
        for key, config in configs.items():
            parent = configs.get(config.get("run_key") or "") if kinds[key] == "eval" else None
            if config.get("train") is None and parent is not None and isinstance(parent.get("train"), dict):
                configs[key] = {k: v for k, v in config.items() if k != "run_key"} | {"train": parent["train"]}
        keys: dict[str, str] = {}

        def key_of(run_key: str, depth: int = 0) -> str:
            if run_key not in keys:
                config = configs[run_key]
                parent_ck = None
                if record_layout.needs_parent_key(config):
                    parent = parents[run_key] or config.get("run_key")
                    parent_ck = key_of(parent, depth + 1) if parent in configs and depth < 8 else parent
                keys[run_key] = record_layout.config_key(kinds[run_key], config, parent_ck)
            return keys[run_key]

        conn.executemany("UPDATE runs SET config_json=?, config_key=?, machine_json=? WHERE run_key=?",
                         [(json.dumps(configs[k], sort_keys=True, separators=(",", ":")), key_of(k),
                           json.dumps(machines[k], sort_keys=True) if k in machines else None, k) for k in configs])
        _rekey_v1_grid_evals(conn)
        conn.execute("DROP VIEW IF EXISTS results")
        conn.execute(_VIEW)
        conn.execute("CREATE INDEX IF NOT EXISTS runs_by_config ON runs (study, config_key)")
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _rekey_v1_grid_evals(conn: sqlite3.Connection) -> None:
    """Give v1 grid evaluation cells the run keys the planner computes now (record_layout.grid_eval_key over the
    evaluation config with the settings added since v1), so resuming the grid finds them done. A row is re-keyed
    only when its v1 key is provably the planner's hash of its own config; its metrics and children follow."""
    rows = conn.execute("SELECT run_key, study, parent_key, seed, config_json FROM runs WHERE kind='eval' AND "
                        "study IS NOT NULL AND parent_key IS NOT NULL AND seed IS NOT NULL").fetchall()
    taken = {r[0] for r in conn.execute("SELECT run_key FROM runs")}
    conn.execute("PRAGMA defer_foreign_keys=ON")  # metrics move with their run inside this transaction
    for old, study, parent, seed, text in rows:
        config = json.loads(text)
        ev = config.get("eval") if isinstance(config, dict) and isinstance(config.get("train"), dict) else None
        if not isinstance(ev, dict) or record_layout.grid_eval_key(study, parent, ev, seed) != old:
            continue
        upgraded = record_layout.upgrade_v1_eval(ev)
        new = record_layout.grid_eval_key(study, parent, upgraded, seed)
        if new == old or new in taken:
            continue
        taken.add(new)
        config = {**config, "eval": upgraded}
        conn.execute("UPDATE runs SET run_key=?, config_json=?, config_key=? WHERE run_key=?",
                     (new, json.dumps(config, sort_keys=True, separators=(",", ":")),
                      record_layout.config_key("eval", config), old))
        conn.execute("UPDATE metrics SET run_key=? WHERE run_key=?", (new, old))
        conn.execute("UPDATE runs SET parent_key=? WHERE parent_key=?", (new, old))


def _create(conn: sqlite3.Connection) -> None:
    # Schema and version in one transaction: a crash here leaves an empty, re-creatable file.
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in (s.strip() for s in _SCHEMA.split(";")):
            if statement:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class ResultsStore:
    """A handle on one results database. Use as a context manager or call `close()`.

    create: make the file when absent (writers). readonly: open with SQLite's mode=ro and never write
    (reports, `grid status`); a v1 store is then migrated in an in-memory copy."""

    def __init__(self, path: str | Path, *, create: bool = True, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        if (readonly or not create) and not self.path.exists():
            raise StoreError(f"results store '{self.path}' does not exist")
        if self.path.exists() and not self.path.is_file():
            raise StoreError(f"results store '{self.path}' is not a file (pass the .db file)")
        self._conn = self._open_readonly() if readonly else self._open_writer()

    def _open_readonly(self) -> sqlite3.Connection:
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            # A WAL store in a folder we cannot write (no -shm can be made): read the file as it stands.
            conn.close()
            conn = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None)
        except sqlite3.DatabaseError:
            pass  # not a database: _inspect says so
        try:
            version = _inspect(conn, self.path)
        except StoreError:
            conn.close()
            raise
        if version == SCHEMA_VERSION:
            return conn
        memory = sqlite3.connect(":memory:", isolation_level=None)
        try:
            conn.backup(memory)
        finally:
            conn.close()
        if version == 0:
            _create(memory)
        else:
            _migrate_v1(memory)
        return memory

    def _open_writer(self) -> sqlite3.Connection:
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the folder of results store '{self.path}': {exc.strerror}") from None
        if self.path.exists() and not os.access(self.path, os.W_OK):
            raise StoreError(f"results store '{self.path}' is read-only; reports can read it, writers need "
                             "write access (or another --store)")
        if not os.access(folder, os.W_OK):
            raise StoreError(f"the folder of results store '{self.path}' is read-only (SQLite needs to write its "
                             "journal beside the file); use another --store")
        try:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open results store '{self.path}': {exc}") from None
        try:
            version = _inspect(conn, self.path)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            if version == 0:
                _create(conn)
            elif version < SCHEMA_VERSION:
                _migrate_v1(conn)
        except StoreError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise self._medium_error(exc) from None
        return conn

    def _medium_error(self, exc: sqlite3.Error) -> StoreError:
        text = str(exc)
        if any(s in text.lower() for s in _MEDIUM_ERRORS):
            hint = ("free some space or use another --store" if "full" in text.lower() else
                    "check the file's permissions and the disk")
            return StoreError(f"results store '{self.path}': {text} ({hint}); the last write was not recorded")
        return StoreError(f"results store '{self.path}': {text}")

    # -- plumbing ------------------------------------------------------------------------------------
    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception; medium failures become StoreError."""
        if self.readonly:
            raise StoreError(f"results store '{self.path}' was opened read-only")
        cur = self._conn.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise self._medium_error(exc) from None
        try:
            yield cur
            cur.execute("COMMIT")
        except BaseException as exc:
            if self._conn.in_transaction:
                try:
                    cur.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            if isinstance(exc, sqlite3.OperationalError):
                raise self._medium_error(exc) from None
            raise

    # -- writing -------------------------------------------------------------------------------------
    @staticmethod
    def _config_key(cur: sqlite3.Cursor, rec: RunRecord) -> str:
        if rec.config_key is not None:
            return rec.config_key
        parent_ck = None
        if record_layout.needs_parent_key(rec.config):
            parent = rec.parent_key or rec.config.get("run_key")
            row = cur.execute("SELECT config_key FROM runs WHERE run_key=?", (parent,)).fetchone()
            parent_ck = row[0] if row and row[0] else parent
        return record_layout.config_key(rec.kind, rec.config, parent_ck)

    @classmethod
    def _upsert_run(cls, cur: sqlite3.Cursor, rec: RunRecord) -> None:
        if rec.status not in STATUSES:
            raise StoreError(f"run status must be one of {STATUSES}, got {rec.status!r}")
        finished = _now() if rec.status in ("done", "failed") else None
        cur.execute(
            """INSERT INTO runs (run_key, kind, study, name, parent_key, status, config_json, seed, git_commit,
                                 versions_json, device, provider, artifact_path, error, created_at, finished_at,
                                 config_key, machine_json)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (run_key) DO UPDATE SET
                 kind=excluded.kind, study=excluded.study, name=excluded.name, parent_key=excluded.parent_key,
                 status=excluded.status, config_json=excluded.config_json, seed=excluded.seed,
                 git_commit=excluded.git_commit, versions_json=excluded.versions_json, device=excluded.device,
                 provider=excluded.provider, artifact_path=excluded.artifact_path, error=excluded.error,
                 finished_at=excluded.finished_at, config_key=excluded.config_key,
                 machine_json=excluded.machine_json""",
            (rec.run_key, rec.kind, rec.study, rec.name, rec.parent_key, rec.status,
             json.dumps(rec.config, sort_keys=True, separators=(",", ":")), rec.seed, rec.git_commit,
             json.dumps(rec.versions or {}, sort_keys=True), rec.device, rec.provider, rec.artifact_path,
             rec.error, _now(), finished, cls._config_key(cur, rec),
             None if rec.machine is None else json.dumps(rec.machine, sort_keys=True, default=str)))
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
        out["machine"] = json.loads(out.pop("machine_json") or "null")
        return out

    def status_counts(self, study: str | None = None) -> dict[str, int]:
        sql = "SELECT status, COUNT(*) FROM runs" + (" WHERE study=?" if study else "") + " GROUP BY status"
        return dict(self._conn.execute(sql, (study,) if study else ()).fetchall())

    def read_table(self, table: str = "results") -> pd.DataFrame:
        """One table or view as a DataFrame ('runs', 'metrics' or 'results')."""
        if table not in TABLES:
            raise StoreError(f"unknown table {table!r}; expected one of {', '.join(TABLES)}")
        import pandas as pd

        return pd.read_sql_query(f"SELECT * FROM {table}", self._conn)
