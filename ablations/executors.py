"""Executors run cell functions somewhere and hand the outcomes back to the driver.

`local` is a pool of spawned worker processes (one cell at a time each; a worker that dies is
reported as a failed outcome for exactly the cell it held, then replaced). `ray` submits plain Ray
tasks to an existing cluster (`address` or RAY_ADDRESS) or to a local one it starts. `serial` runs
cells in the calling process (for debugging). Executors never write results: the driver does.
"""
from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from multiprocessing import connection, get_context
from typing import Any, Callable

from genlib.cli import UserError
from genlib.registry import Registry

EXECUTORS: Registry[type["Executor"]] = Registry("executor")


class ExecutorError(UserError):
    """An executor cannot start (e.g. Ray is not installed); the message says how to fix it."""


@dataclass(frozen=True)
class Outcome:
    """The end of one task: ok with a value, or failed with an error text (a traceback)."""

    task_id: str
    ok: bool
    value: Any = None
    error: str | None = None


class Executor:
    """Submit `fn(arg)` under a task id; `wait` returns finished outcomes. Subclasses register with EXECUTORS."""

    workers: int

    def submit(self, task_id: str, fn: Callable[[Any], Any], arg: Any) -> None:
        raise NotImplementedError

    def wait(self, timeout: float | None = None) -> list[Outcome]:
        """Block until at least one task ends (or `timeout` seconds pass); return the ended ones."""
        raise NotImplementedError

    @property
    def in_flight(self) -> int:
        raise NotImplementedError

    def shutdown(self, *, kill: bool = False) -> None:
        """Stop the workers; kill=True ends them at once (tasks in flight are abandoned)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(kill=exc[0] is not None)


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


# -- serial -------------------------------------------------------------------------------------------
@EXECUTORS.register("serial", help="run cells one by one in the driver process (debugging)")
class SerialExecutor(Executor):
    def __init__(self, workers: int | None = None, initializer: Callable[..., None] | None = None,
                 initargs: tuple = (), **_: Any) -> None:
        self.workers = 1
        self._queue: deque[tuple[str, Callable, Any]] = deque()
        if initializer is not None:
            initializer(*initargs)

    def submit(self, task_id, fn, arg):
        self._queue.append((task_id, fn, arg))

    def wait(self, timeout=None):
        if not self._queue:
            return []
        task_id, fn, arg = self._queue.popleft()
        interrupted: list[int] = []
        previous = None
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            def on_sigint(signum, frame):
                interrupted.append(signum)
                raise KeyboardInterrupt

            previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            return [Outcome(task_id, True, fn(arg))]
        except Exception:
            # Library clean-up code can turn a KeyboardInterrupt into another error; Ctrl-C during a cell is
            # an interruption of the grid, never a failure of the cell.
            if interrupted:
                raise KeyboardInterrupt from None
            return [Outcome(task_id, False, error=traceback.format_exc())]
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    @property
    def in_flight(self) -> int:
        return len(self._queue)


# -- local process pool --------------------------------------------------------------------------------
def _die_with_parent(parent_pid: int) -> None:
    """A worker must not outlive its driver (it could publish artifacts behind a resumed run's back)."""
    try:  # Linux: the kernel sends SIGKILL when the parent dies
        import ctypes
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _thread_lock_for_tqdm() -> None:
    """tqdm guards its bars with a multiprocessing RLock, a named POSIX semaphore created on the first bar;
    a worker killed at an interruption never unlinks it and Python warns of 'leaked semaphore objects'
    at exit. A worker's bars are its own (the driver draws the grid's), so a thread lock is enough."""
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())


def _worker_main(conn, parent_pid: int, initializer, initargs) -> None:
    # Ctrl-C reaches the whole process group: the driver decides what happens to cells in flight.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent(parent_pid)
    _thread_lock_for_tqdm()
    if initializer is not None:
        initializer(*initargs)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        task_id, fn, arg = msg
        try:
            reply = (task_id, True, fn(arg), None)
        except BaseException:
            reply = (task_id, False, None, traceback.format_exc())
        try:
            conn.send(reply)
        except Exception:  # an unpicklable result is the cell's failure, not the worker's
            conn.send((task_id, False, None, traceback.format_exc()))


class _Worker:
    def __init__(self, ctx, initializer, initargs) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, os.getpid(), initializer, initargs),
                                daemon=True, name="genbench-grid-worker")
        self.proc.start()
        child.close()
        self.task_id: str | None = None


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "an unknown status"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


@EXECUTORS.register("local", help="a pool of spawned worker processes on this machine (default: one per core)")
class LocalExecutor(Executor):
    def __init__(self, workers: int | None = None, initializer: Callable[..., None] | None = None,
                 initargs: tuple = (), **_: Any) -> None:
        self.workers = workers or default_workers()
        if self.workers < 1:
            raise ExecutorError(f"--workers must be >= 1, got {self.workers}")
        self._ctx = get_context("spawn")
        self._init = (initializer, initargs)
        self._pool = [_Worker(self._ctx, *self._init) for _ in range(self.workers)]
        self._queue: deque[tuple[str, Callable, Any]] = deque()

    @property
    def in_flight(self) -> int:
        return len(self._queue) + sum(w.task_id is not None for w in self._pool)

    def submit(self, task_id, fn, arg):
        self._queue.append((task_id, fn, arg))
        self._dispatch()

    def _dispatch(self) -> None:
        for i, worker in enumerate(self._pool):
            if not self._queue:
                return
            if worker.task_id is not None:
                continue
            if not worker.proc.is_alive():
                worker = self._pool[i] = _Worker(self._ctx, *self._init)
            task_id, fn, arg = self._queue.popleft()
            try:
                worker.conn.send((task_id, fn, arg))
            except (BrokenPipeError, ConnectionError):  # died while idle: replace it and hand it the task
                worker = self._pool[i] = _Worker(self._ctx, *self._init)
                worker.conn.send((task_id, fn, arg))
            worker.task_id = task_id

    def wait(self, timeout=None):
        busy = [w for w in self._pool if w.task_id is not None]
        if not busy:
            return []
        ready = set(connection.wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout))
        outcomes = []
        for i, worker in enumerate(self._pool):
            if worker.task_id is None:
                continue
            if worker.conn in ready or worker.conn.poll():
                try:
                    task_id, ok, value, error = worker.conn.recv()
                    outcomes.append(Outcome(task_id, ok, value, error))
                    worker.task_id = None
                    continue
                except (EOFError, OSError):
                    pass  # died while answering: handled as a death below
            if worker.proc.sentinel in ready or not worker.proc.is_alive():
                worker.proc.join(timeout=5)
                outcomes.append(Outcome(worker.task_id, False, error=(
                    f"worker process {worker.proc.pid} died with {_describe_exit(worker.proc.exitcode)} "
                    "while running this cell (out of memory, a crash in native code, or killed)")))
                worker.conn.close()
                worker.task_id = None  # the slot is refilled by _dispatch when there is work for it
        self._dispatch()
        return outcomes

    def shutdown(self, *, kill: bool = False) -> None:
        self._queue.clear()
        for worker in self._pool:
            if kill or worker.task_id is not None or not worker.proc.is_alive():
                worker.proc.kill()
                continue
            try:
                worker.conn.send(None)
            except (OSError, ValueError):
                worker.proc.kill()
        deadline = time.monotonic() + 2.0
        for worker in self._pool:
            # An idle worker holds no work: one still importing at start-up is not worth waiting for.
            worker.proc.join(timeout=max(0.0, deadline - time.monotonic()))
            if worker.proc.is_alive():
                worker.proc.kill()
                worker.proc.join(timeout=5)
            worker.conn.close()
        self._pool = []


# -- ray --------------------------------------------------------------------------------------------------
def _with_plugins(runtime_env: dict | None) -> dict | None:
    """`runtime_env` plus GENBENCH_PLUGINS in its env_vars, so tasks on other nodes load the driver's plugins
    (local pool workers inherit the variable; a Ray worker on another machine does not)."""
    from genlib.plugins import ENV_VAR, env_modules

    if not env_modules():
        return runtime_env
    runtime_env = dict(runtime_env or {})
    runtime_env["env_vars"] = {ENV_VAR: ",".join(env_modules()), **runtime_env.get("env_vars", {})}
    return runtime_env


def _ray_task(initializer, initargs, fn, arg):
    if initializer is not None:
        initializer(*initargs)
    return fn(arg)


@EXECUTORS.register("ray", help="plain Ray tasks: RAY_ADDRESS / --ray-address for a cluster, else a local one")
class RayExecutor(Executor):
    def __init__(self, workers: int | None = None, initializer: Callable[..., None] | None = None,
                 initargs: tuple = (), address: str | None = None, runtime_env: dict | None = None,
                 **_: Any) -> None:
        try:
            import ray
        except ImportError:
            raise ExecutorError("the ray executor needs Ray: pip install 'genbench[ray]'") from None
        self._ray = ray
        address = address or os.environ.get("RAY_ADDRESS") or None
        self._started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"address": address, "include_dashboard": False, "log_to_driver": False,
                                      "configure_logging": False}
            if address is None:
                kwargs["num_cpus"] = workers or default_workers()
            runtime_env = _with_plugins(runtime_env)
            if runtime_env:  # e.g. {"working_dir": ".", "env_vars": {...}} for code the workers must import
                kwargs["runtime_env"] = runtime_env
            ray.init(**kwargs)
            self._started = True
        self.workers = workers or int(ray.cluster_resources().get("CPU", 1))
        self._remote = ray.remote(num_cpus=1, max_retries=0)(_ray_task)
        self._init = (initializer, initargs)
        self._refs: dict[Any, str] = {}
        self._queue: deque[tuple[str, Callable, Any]] = deque()

    @property
    def in_flight(self) -> int:
        return len(self._refs) + len(self._queue)

    def _dispatch(self) -> None:
        # Keep at most `workers` tasks submitted so interruption abandons little work.
        while self._queue and len(self._refs) < self.workers:
            task_id, fn, arg = self._queue.popleft()
            self._refs[self._remote.remote(*self._init, fn, arg)] = task_id

    def submit(self, task_id, fn, arg):
        self._queue.append((task_id, fn, arg))
        self._dispatch()

    def wait(self, timeout=None):
        if not self._refs:
            return []
        ready, _ = self._ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        outcomes = []
        for ref in ready:
            task_id = self._refs.pop(ref)
            try:
                outcomes.append(Outcome(task_id, True, self._ray.get(ref)))
            except Exception as exc:  # RayTaskError carries the remote traceback; WorkerCrashedError a death
                outcomes.append(Outcome(task_id, False, error=f"{type(exc).__name__}: {exc}"))
        self._dispatch()
        return outcomes

    def shutdown(self, *, kill: bool = False) -> None:
        self._queue.clear()
        for ref in list(self._refs):
            try:
                self._ray.cancel(ref, force=True)
            except Exception:
                pass
        self._refs.clear()
        if self._started:
            self._ray.shutdown()


def make_executor(name: str, workers: int | None = None, **options: Any) -> Executor:
    """An executor by registry name (local, ray, serial); unknown names get a did-you-mean."""
    return EXECUTORS.get(name)(workers=workers, **options)
