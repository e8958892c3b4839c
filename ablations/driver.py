"""The grid driver: schedules cells on an executor and is the only writer of the results store.

Resumable by construction: a cell's result is committed in one store transaction, committed cells
(done, and failed unless `retry_failed`) are never run again, and everything else (absent, pending,
or left 'running' by an interrupted run) runs from scratch. The driver is also the only writer of
`<store>.artifacts/`: cells return their artifacts as bytes, which it publishes (renamed into place
whole) before committing the row, and it hands each evaluation its parent's checkpoint as bytes, so no
worker reads a path another machine wrote. A store lock keeps two drivers off one store. Evaluations start
as soon as their training is committed. SIGINT / SIGTERM kill the workers and mark cells in flight pending.
"""
from __future__ import annotations

import heapq
import itertools
import json
import os
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

from genlib.cli import UserError
from genlib.progress import tqdm
from genlib.config import config_hash
from genlib import records
from genlib.provenance import provenance
from genlib.store import Metric, ResultsStore, RunRecord

from ablations.cells import (EXPORTS_DIR, CellContext, CellResult, Evaluation, MetricsEvaluation, artifact_complete,
                             cell_resources, clean_partial, init_worker, prepare_timed, run_cell, share_key)
from ablations.executors import EXECUTORS, default_workers, make_executor
from ablations.faults import check_fault_env, fault_point
from ablations.plan import Cell, EvalCell, Plan


class GridRunError(UserError):
    """The grid cannot run (the store is in use by another run, ...); the message says what to do."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the driver like Ctrl-C so the same clean-up runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


def artifacts_dir_for(store_path: str | Path) -> Path:
    """Run directories live beside the store: results.db -> results.artifacts/<run_key>/."""
    store_path = Path(store_path)
    return store_path.parent / f"{store_path.stem}.artifacts"


def real_store_path(store_path: str | Path) -> Path:
    """The store file itself, symlinks resolved: one store has one lock and one artifacts folder."""
    return Path(os.path.realpath(store_path))


@contextmanager
def store_lock(store_path: Path) -> Iterator[None]:
    """An exclusive lock on <real store>.lock for the whole run (released by the kernel even on SIGKILL).
    The path is resolved first, so a second driver reaching the store through a symlink is refused too."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): run unguarded
        yield
        return
    real = real_store_path(store_path)
    lock_path = real.parent / f"{real.name}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(lock_path, "a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            via = f" (reached through '{store_path}')" if Path(store_path).absolute() != real else ""
            raise GridRunError(f"another grid run is writing '{real}'{via} (lock '{lock_path}'); wait for it "
                               "to finish or use another --store") from None
        # The file itself, by identity (device and inode): a hard link or a bind mount has another name, and so
        # another lock file above, but the same inode. flock is separate from SQLite's own fcntl locks.
        store_fh = open(real, "ab")
        try:
            fcntl.flock(store_fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            st = os.fstat(store_fh.fileno())
            store_fh.close()
            raise GridRunError(f"another grid run is writing '{real}' under another name (a hard link or bind mount "
                               f"of the same file: device {st.st_dev}, inode {st.st_ino}); wait for it to finish or "
                               "use another --store") from None
        try:
            yield
        finally:
            store_fh.close()
    finally:
        fh.close()


@dataclass
class RunSummary:
    studies: list[str]
    planned: int = 0  # cells in the plans
    already_done: int = 0  # committed as done before this run
    skipped_failed: int = 0  # committed as failed before this run and not retried
    done: int = 0  # completed by this run
    failed: int = 0  # failed in this run (exceptions, NaN losses, dead workers)
    not_run: int = 0  # evaluations recorded failed because their training failed
    interrupted: str | None = None  # "SIGINT" / "SIGTERM" when stopped by a signal
    stopped_early: bool = False  # --max-failures reached
    wall_s: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (label, last error line)

    @property
    def complete(self) -> bool:
        return (self.interrupted is None and not self.stopped_early and self.failed == 0 and self.not_run == 0
                and self.skipped_failed == 0)


def _record(cell: Cell, status: str, *, result: CellResult | None = None, error: str | None = None,
            git: dict[str, Any] | None = None) -> tuple[RunRecord, list[Metric]]:
    """The cell's row through the record contract; a result that breaks it is recorded as a failure."""
    def build(status: str, error: str | None, metrics: list[Metric]) -> tuple[RunRecord, list[Metric]]:
        return records.build(cell.kind, run_key=cell.key, config=cell.record_config(), status=status,
                             study=cell.study, name=cell.label, parent_key=getattr(cell, "parent", None),
                             seed=cell.seed, device=result.device if result else None,
                             provider=result.provider if result else None,
                             prov=result.provenance if result else (git or {}),
                             artifact_path=result.artifact_path if result else None, error=error, metrics=metrics)

    try:
        return build(status, error, list(result.metrics) if result else [])
    except records.RecordError as exc:
        if status != "done":
            raise
        return build("failed", f"the cell's result breaks the record contract: {exc}", [])


def _metrics_mid_commit(metrics: list[Metric]) -> Iterator[Metric]:
    # commit_run materialises the metrics inside its transaction, after writing the run row:
    # the fault fires with the row written but not committed.
    fault_point("mid_commit")
    yield from metrics


def _states(store: ResultsStore, keys: set[str]) -> dict[str, tuple[str, str | None]]:
    runs = store.read_table("runs")
    runs = runs[runs["run_key"].isin(keys)]
    return {k: (s, a) for k, s, a in zip(runs["run_key"], runs["status"], runs["artifact_path"])}


def publish_result(cell: Cell, result: CellResult, art_dir: Path) -> CellResult:
    """Write what a cell returned under `art_dir` (its artifact directory as `<run_key>/`, export-cache files
    under `exports/`), each renamed into place whole; the result with `artifact_path` set and the bytes dropped.
    A training that returned no complete checkpoint is an error (CheckpointError)."""
    import dataclasses

    from genlib.checkpoint import CheckpointError, atomic_write, unpack_dir

    path = None
    if result.artifact is not None:
        final = unpack_dir(result.artifact, art_dir / cell.key, replace=True)
        path = str(Path(art_dir.name) / final.name)
    if cell.kind == "train" and not artifact_complete(art_dir / cell.key, "train"):
        raise CheckpointError(f"training {cell.label} returned no complete checkpoint (model.pt) to publish")
    for name, data in result.exports.items():
        target = art_dir / EXPORTS_DIR / Path(name).name
        if not target.exists():
            atomic_write(target, lambda p, data=data: p.write_bytes(data))
    return dataclasses.replace(result, artifact_path=path, artifact=None, exports={})


def _last_line(error: str) -> str:
    lines = [line for line in error.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else error


def run_plans(plans: list[Plan], store_path: str | Path, *, executor: str = "local", workers: int | None = None,
              retry_failed: bool = False, max_failures: int | None = None, evaluation: Evaluation | None = None,
              threads: int | None = None, progress: bool = True, executor_options: dict[str, Any] | None = None,
              log=None, prepare_timed_exports: bool = True) -> RunSummary:
    """Run every pending cell of `plans` and commit each result to the store at `store_path`.

    executor: local | ray | serial. workers: parallel cells (default: the core count). threads: torch
    threads per cell (default: cores // workers; results depend on it, so keep it fixed across resumes).
    retry_failed: rerun cells recorded as failed. max_failures: stop (killing cells in flight) once this
    many cells failed in this run. evaluation: the seam that scores checkpoints (default: genlib.metrics).
    prepare_timed_exports: export each timed evaluation's graph beside other cells, before the timed phase
    (where the export cache is on the node that then times it, the evaluation only loads the graph).
    Raises KeyboardInterrupt / Terminated after clean-up when interrupted; resuming is running again.
    """
    check_fault_env()
    EXECUTORS.get(executor)  # an unknown name fails before anything is written
    start = time.perf_counter()
    store_path = real_store_path(store_path)  # artifacts and the lock belong to the real file, not a link
    log = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
    summary = RunSummary(studies=[p.study for p in plans])
    if max_failures is not None and max_failures < 1:
        raise GridRunError(f"--max-failures must be >= 1, got {max_failures}")
    cells: dict[str, Cell] = {}
    for plan in plans:
        for cell in plan.cells:
            cells.setdefault(cell.key, cell)
    summary.planned = len(cells)
    art_dir = artifacts_dir_for(store_path)

    with store_lock(store_path), ResultsStore(store_path) as store:
        art_dir.mkdir(parents=True, exist_ok=True)
        clean_partial(art_dir)
        states = _states(store, set(cells))
        git = _driver_provenance()
        for plan in plans:  # the study's definition (its claims), so reports can decide them from the store
            store.commit_run(*records.build("study", run_key=config_hash({"kind": "study", "study": plan.study}),
                                            config=plan.spec.record_config(), device=None, study=plan.study,
                                            name=plan.study, prov=git))
        # We hold the lock, so nothing is running: 'running' rows were left by a killed run.
        stale = [k for k, (s, _) in states.items() if s == "running"]
        if stale:
            _reset_running(store, stale)
            states.update({k: ("pending", states[k][1]) for k in stale})

        def status(key: str) -> str | None:
            return states.get(key, (None, None))[0]

        def runnable(cell: Cell) -> bool:
            s = status(cell.key)
            if s == "done":
                return False
            return s != "failed" or retry_failed

        to_run: dict[str, Cell] = {k: c for k, c in cells.items() if runnable(c)}
        summary.already_done = sum(status(k) == "done" for k in cells)
        summary.skipped_failed = sum(status(k) == "failed" and k not in to_run for k in cells)
        # A committed training whose checkpoint vanished (deleted by hand) is retrained if still needed.
        for cell in cells.values():
            if (isinstance(cell, EvalCell) and cell.key in to_run and status(cell.parent) == "done"
                    and not artifact_complete(art_dir / cell.parent, "train")):
                parent = cells[cell.parent]
                if parent.key not in to_run:
                    log(f"checkpoint of {parent.label} is missing from '{art_dir}'; training it again")
                    to_run[parent.key] = parent
        waiting: dict[str, list[EvalCell]] = {}
        # Ready cells by priority: evaluations of committed checkpoints first (a study's results complete
        # early, and little is lost to an interruption), then floors, then trainings (the longest first, so
        # no worker idles at the tail), then timed evaluations last; FIFO otherwise.
        ready: list[tuple[int, float, int, Cell]] = []
        order = itertools.count()

        def prepared(cell: Cell) -> bool:  # a timed evaluation whose graph is exported ahead, beside other cells
            return prepare_timed_exports and _timed(cell)

        def make_ready(cell: Cell) -> None:
            rank = 3 if _timed(cell) else {"eval": 0, "floor": 1, "train": 2}[cell.kind]
            heapq.heappush(ready, (rank, -training_cost(cell), next(order), cell))
            if prepared(cell):
                # its export (seconds to a minute) runs now beside other cells; the cell then runs alone
                heapq.heappush(ready, (0, 0.0, next(order), _Prepare(cell)))

        orphans: list[EvalCell] = []
        for cell in to_run.values():
            if isinstance(cell, EvalCell):
                if cell.parent in to_run:
                    waiting.setdefault(cell.parent, []).append(cell)
                elif status(cell.parent) == "done":
                    make_ready(cell)
                else:
                    orphans.append(cell)
            else:
                make_ready(cell)
        for cell in orphans:
            store.commit_run(*_record(cell, "failed", git=git, error=f"not run: its training {cell.parent} failed "
                                                                     "(rerun with --retry-failed)"))
            summary.not_run += 1
        todo = len(to_run) - len(orphans)
        if not todo:
            summary.wall_s = time.perf_counter() - start
            return summary

        # Threads follow the requested worker count, not the cells left, so a resumed run computes alike.
        n_threads = threads or max(1, default_workers() // (workers or default_workers()))
        n_workers = min(workers or default_workers(), todo) if executor != "ray" else (workers or None)
        ctx = CellContext(evaluation=evaluation or MetricsEvaluation(), threads=n_threads)
        # Checkpoints handed to evaluations: bytes of trainings finished in this run (kept only while they have
        # evaluations waiting), shared once per training, dropped when its last evaluation is handed out.
        evals_left: dict[str, int] = {}
        orphan_keys = {c.key for c in orphans}
        for cell in to_run.values():
            if isinstance(cell, EvalCell) and cell.key not in orphan_keys:
                handed = 2 if prepared(cell) else 1  # its preparation takes the checkpoint too
                evals_left[cell.parent] = evals_left.get(cell.parent, 0) + handed
        fresh: dict[str, bytes] = {}
        shared: dict[str, Any] = {}

        def checkpoint_for(parent: str):
            if parent not in shared:
                from genlib.checkpoint import pack_dir
                data = fresh.pop(parent, None)
                if data is None:
                    data = pack_dir(art_dir / parent)
                shared[parent] = pool.share(share_key(parent, data), data)
            handle = shared[parent]
            evals_left[parent] -= 1
            if evals_left[parent] <= 0:
                del shared[parent]
                pool.unshare(handle.key)
            return handle

        in_flight: dict[str, Cell] = {}
        previous_term = _install_sigterm()
        pool = None
        bar = tqdm(total=summary.planned, initial=summary.planned - todo, desc=", ".join(summary.studies), unit="cell",
                   disable=not progress, dynamic_ncols=True, file=sys.stderr)
        clean_exit = False
        try:
            pool = make_executor(executor, n_workers, initializer=init_worker, initargs=(n_threads,),
                                 **(executor_options or {}))
            # A cell no machine can ever take (a GPU on a cluster without one) is refused before any runs.
            pool.check_resources({f"{c.kind} cell {c.label}": cell_resources(c)
                                  for c in to_run.values() if c.key not in orphan_keys})

            def fill() -> None:
                # Hand out only as many cells as there are workers, so 'running' in the store means running.
                # A timed evaluation measures latency: it starts on idle cores and nothing starts beside it.
                while ready and len(in_flight) < pool.workers:
                    if any(_timed(c) for c in in_flight.values()) or (_timed(ready[0][-1]) and in_flight):
                        break
                    cell = heapq.heappop(ready)[-1]
                    if isinstance(cell, _Prepare):
                        in_flight[cell.key] = cell
                        pool.submit(cell.key, prepare_timed, (cell.cell, ctx, checkpoint_for(cell.parent)),
                                    resources=replace(cell_resources(cell.cell), whole_node=False))
                        continue
                    store.commit_run(*_record(cell, "running", git=git))
                    in_flight[cell.key] = cell
                    task = (cell, ctx, checkpoint_for(cell.parent)) if isinstance(cell, EvalCell) else (cell, ctx)
                    pool.submit(cell.key, run_cell, task, resources=cell_resources(cell))

            fill()
            while in_flight:
                for out in pool.wait(timeout=1.0):
                    cell = in_flight.pop(out.task_id)
                    if isinstance(cell, _Prepare):
                        continue  # its evaluation exports again where this failed, and records why if it fails
                    rec, metrics, error = None, [], out.error
                    if out.ok:
                        try:
                            result: CellResult = publish_result(cell, out.value, art_dir)
                        except Exception as exc:  # e.g. the driver's disk is full: the cell's result is lost
                            error = f"its artifact could not be published on the driver: {type(exc).__name__}: {exc}"
                        else:
                            rec, metrics = _record(cell, "done", result=result)
                            if cell.key in waiting and out.value.artifact is not None:
                                fresh[cell.key] = out.value.artifact  # its evaluations get these very bytes
                    if rec is not None and rec.status == "done":
                        if result.artifact_path:
                            fault_point("after_artifact")
                        store.commit_run(rec, _metrics_mid_commit(metrics))
                        fault_point("after_commit")
                        summary.done += 1
                        bar.update(1)
                        for child in waiting.pop(cell.key, []):
                            make_ready(child)
                        continue
                    error = rec.error if rec is not None else error
                    store.commit_run(*_record(cell, "failed", git=git, error=error))
                    fault_point("after_commit")
                    summary.failed += 1
                    summary.failures.append((cell.label, _last_line(error or "")))
                    bar.update(1)
                    log(f"failed: {cell.label}: {_last_line(error or '')}")
                    for child in waiting.pop(cell.key, []):
                        store.commit_run(*_record(child, "failed", git=git, error=(
                            f"not run: its training {cell.key} failed (rerun with --retry-failed)")))
                        summary.not_run += 1
                        bar.update(1)
                    if max_failures is not None and summary.failed >= max_failures:
                        summary.stopped_early = True
                        log(f"stopping: {summary.failed} cell(s) failed (--max-failures {max_failures})")
                        break
                bar.set_postfix(failed=summary.failed + summary.not_run, refresh=False)
                if summary.stopped_early:
                    break
                fill()
            clean_exit = not summary.stopped_early
        except KeyboardInterrupt as exc:
            summary.interrupted = "SIGTERM" if isinstance(exc, Terminated) else "SIGINT"
            raise
        finally:
            bar.close()
            if previous_term is not None:
                signal.signal(signal.SIGTERM, previous_term)
            if pool is not None:
                pool.shutdown(kill=not clean_exit)
            # Cells abandoned in flight are not results: mark them pending for the next run. Every 'running'
            # row of these plans, not just `in_flight`, in case the signal landed between commit and bookkeeping.
            if not clean_exit:
                _reset_running(store, list(cells))
            summary.wall_s = time.perf_counter() - start
    return summary


def _timed(cell: Cell) -> bool:
    return isinstance(cell, EvalCell) and cell.timed


@dataclass(frozen=True)
class _Prepare:
    """The export of a timed evaluation's graph, run beside other cells before the timed phase
    (`ablations.cells.prepare_timed`): not a cell, recorded nowhere; the evaluation finds its graph cached."""

    cell: EvalCell

    @property
    def key(self) -> str:
        return f"prepare:{self.cell.key}"

    @property
    def parent(self) -> str:
        return self.cell.parent


def training_cost(cell: Cell) -> float:
    """A training's relative cost for scheduling: train.steps x batch size x a model-size proxy (the sum of
    products of consecutive `hidden` widths, else channels squared); 0 for other cells."""
    if cell.kind != "train":
        return 0.0
    train = cell.config.get("train") or {}
    model = cell.config.get("model") or {}
    hidden = [int(h) for h in model.get("hidden") or () if isinstance(h, (int, float))]
    if len(hidden) > 1:
        size = float(sum(a * b for a, b in zip(hidden, hidden[1:])))
    elif hidden:
        size = float(hidden[0])
    else:
        size = float(model.get("channels") or 1) ** 2
    return float(train.get("steps") or 0) * float(train.get("batch_size") or 1) * max(size, 1.0)


def _reset_running(store: ResultsStore, keys: list[str]) -> None:
    with store.transaction() as cur:
        cur.executemany("UPDATE runs SET status='pending' WHERE run_key=? AND status='running'", [(k,) for k in keys])


def _driver_provenance() -> dict[str, Any]:
    return provenance()


def _install_sigterm():
    """SIGTERM -> Terminated in the main thread (elsewhere signals cannot be handled; leave them be)."""
    import threading
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise Terminated(signum)

    return signal.signal(signal.SIGTERM, handler)


def run_plan(plan: Plan, store_path: str | Path, **kwargs: Any) -> RunSummary:
    """run_plans for one plan."""
    return run_plans([plan], store_path, **kwargs)


# -- status -------------------------------------------------------------------------------------------------
STATUS_COLUMNS = ("done", "failed", "running", "pending")


def configurations(store: ResultsStore) -> dict[tuple[str, str], tuple[int, list[str]]]:
    """(study, kind) -> (the most configurations sharing one cell's settings, the keys in which they differ)
    for studies whose cells of one setting (axes and profile) hold several configurations (config_key), e.g.
    a grid edited and rerun into the same store. Reports show these apart; status says so."""
    runs = store.read_table("runs")
    groups: dict[tuple[str, str, str], dict[str, dict]] = {}
    for study, kind, text, ck in zip(runs["study"], runs["kind"], runs["config_json"], runs["config_key"]):
        if not isinstance(study, str) or kind not in ("train", "eval", "floor") or not isinstance(ck, str):
            continue
        config = json.loads(text)
        setting = json.dumps([records.axes(config), config.get("profile")], sort_keys=True, default=str)
        groups.setdefault((study, kind, setting), {}).setdefault(ck, config)
    out: dict[tuple[str, str], tuple[int, list[str]]] = {}
    for (study, kind, _), by_key in groups.items():
        if len(by_key) < 2:
            continue
        n, keys = out.get((study, kind), (0, []))
        names = [records.setting_name(p) for p in records.differing_keys(list(by_key.values()))]
        out[(study, kind)] = (max(n, len(by_key)), list(dict.fromkeys(keys + names)))
    return out


def _with_configurations(rows: list[dict[str, Any]], store: ResultsStore) -> list[dict[str, Any]]:
    several = configurations(store)
    for row in rows:
        n, keys = several.get((row["study"], row["kind"]), (1, []))
        row["configs"] = n
        row["differs"] = ", ".join(keys)
    return rows


def plan_status(plans: list[Plan], store: ResultsStore) -> list[dict[str, Any]]:
    """Per study and cell kind: how many cells are done / failed / running / pending (absent = pending);
    `configs` > 1 when the store holds several configurations for one cell's settings (`differs`: the keys)."""
    rows = []
    keys = {c.key for p in plans for c in p.cells}
    states = _states(store, keys)
    for plan in plans:
        for kind, group in (("train", plan.train_cells), ("eval", plan.eval_cells), ("floor", plan.floor_cells)):
            if not group:
                continue
            counts = dict.fromkeys(STATUS_COLUMNS, 0)
            for cell in group:
                counts[states.get(cell.key, ("pending", None))[0]] += 1
            rows.append({"study": plan.study, "profile": plan.spec.profile, "kind": kind, **counts,
                         "total": len(group)})
    return _with_configurations(rows, store)


def store_status(store: ResultsStore) -> list[dict[str, Any]]:
    """Per study and kind, from the store alone (cells never started are not counted)."""
    runs = store.read_table("runs")
    runs = runs[runs["kind"] != "study"]  # a study's stored definition, not a cell
    rows = []
    for (study, kind), group in runs.groupby([runs["study"].fillna("(none)"), "kind"], sort=True):
        counts = {s: int((group["status"] == s).sum()) for s in STATUS_COLUMNS}
        rows.append({"study": study, "profile": "", "kind": kind, **counts, "total": len(group)})
    return _with_configurations(rows, store)


def failed_cells(plans: list[Plan], store: ResultsStore) -> list[dict[str, Any]]:
    """The failed cells of `plans` with the last line of their error."""
    out = []
    for plan in plans:
        for cell in plan.cells:
            run = store.get_run(cell.key)
            if run and run["status"] == "failed":
                out.append({"study": plan.study, "name": cell.label, "run_key": cell.key,
                            "error": _last_line(run["error"] or "")})
    return out

