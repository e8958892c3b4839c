"""Executors run cell functions somewhere and hand the outcomes back to the driver.

`local` is a pool of spawned worker processes (one cell at a time each, one visible GPU each where there
are GPUs; a worker that dies is reported as a failed outcome for exactly the cell it held, then replaced).
`ray` submits plain Ray tasks to an existing cluster (`address` or RAY_ADDRESS) or to a local one it starts,
asking for the resources a task declares; a task lost with its node is retried once. `serial` runs cells in
the calling process (for debugging). Bytes many tasks read (a checkpoint) are handed over once with `share`:
inline through the pool's pipe, put once into Ray's object store. Executors never write results or
artifacts: the driver does.
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
class Resources:
    """What one task asks of a machine: CPUs, GPUs, and `whole_node` (nothing else runs on its node: timing)."""

    num_cpus: float = 1
    num_gpus: float = 0
    whole_node: bool = False

    def describe(self) -> str:
        parts = [f"{self.num_gpus:g} GPU"] if self.num_gpus else []
        return ", ".join(parts + [f"{self.num_cpus:g} CPU"] + (["a whole node"] if self.whole_node else []))


CPU_TASK = Resources()


@dataclass(frozen=True)
class Shared:
    """Bytes handed to many tasks (a checkpoint): inline (`data`: the local pool's pipe, the serial executor)
    or a Ray object reference put once (`ref`). `key` names the content, so a node's cache never mixes two
    different payloads under one name."""

    key: str
    data: bytes | None = None
    ref: Any = None

    def get(self) -> bytes:
        if self.data is not None:
            return self.data
        import ray
        return ray.get(self.ref)


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

    def submit(self, task_id: str, fn: Callable[[Any], Any], arg: Any, resources: Resources = CPU_TASK) -> None:
        raise NotImplementedError

    def share(self, key: str, data: bytes) -> Shared:
        """A handle to `data` that tasks receive in their argument and read with `.get()`; put once per key."""
        return Shared(key, data=data)

    def unshare(self, key: str) -> None:
        """No further task will be handed `key`'s payload."""

    def check_resources(self, requests: dict[str, Resources]) -> None:
        """Refuse (ExecutorError naming the resource and a task) before anything runs when no machine of this
        executor can ever satisfy a task's request. `requests`: task label -> resources."""
        gpus = len(visible_gpus())
        for label, res in requests.items():
            if res.num_gpus > gpus:
                raise ExecutorError(f"{label} asks for {res.num_gpus:g} GPU (its train.device is cuda) but this "
                                    f"machine offers {gpus} (CUDA_VISIBLE_DEVICES / torch.cuda); run it where "
                                    "there is a GPU, or set train.device=cpu")

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


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as CUDA_VISIBLE_DEVICES names them (else torch's count)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch
    except ImportError:
        return []
    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


# -- serial -------------------------------------------------------------------------------------------
@EXECUTORS.register("serial", help="run cells one by one in the driver process (debugging)")
class SerialExecutor(Executor):
    def __init__(self, workers: int | None = None, initializer: Callable[..., None] | None = None,
                 initargs: tuple = (), **_: Any) -> None:
        self.workers = 1
        self._queue: deque[tuple[str, Callable, Any]] = deque()
        if initializer is not None:
            initializer(*initargs)

    def submit(self, task_id, fn, arg, resources=CPU_TASK):
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
    def __init__(self, ctx, initializer, initargs, gpu: str | None = None) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, os.getpid(), initializer, initargs),
                                daemon=True, name="genbench-grid-worker")
        # A spawned child takes the environment at start: pin its one device for the whole of its life.
        previous = os.environ.get("CUDA_VISIBLE_DEVICES")
        if gpu is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        try:
            self.proc.start()
        finally:
            if gpu is not None:
                if previous is None:
                    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                else:
                    os.environ["CUDA_VISIBLE_DEVICES"] = previous
        child.close()
        self.gpu = gpu
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
        gpus = visible_gpus()  # worker i sees only device i mod #GPUs: cells never share a device unasked
        self._gpus = [gpus[i % len(gpus)] if gpus else None for i in range(self.workers)]
        self._pool = [_Worker(self._ctx, *self._init, gpu=g) for g in self._gpus]
        self._queue: deque[tuple[str, Callable, Any]] = deque()

    @property
    def in_flight(self) -> int:
        return len(self._queue) + sum(w.task_id is not None for w in self._pool)

    def submit(self, task_id, fn, arg, resources=CPU_TASK):
        self._queue.append((task_id, fn, arg))
        self._dispatch()

    def _dispatch(self) -> None:
        for i, worker in enumerate(self._pool):
            if not self._queue:
                return
            if worker.task_id is not None:
                continue
            if not worker.proc.is_alive():
                worker = self._pool[i] = _Worker(self._ctx, *self._init, gpu=self._gpus[i])
            task_id, fn, arg = self._queue.popleft()
            try:
                worker.conn.send((task_id, fn, arg))
            except (BrokenPipeError, ConnectionError):  # died while idle: replace it and hand it the task
                worker = self._pool[i] = _Worker(self._ctx, *self._init, gpu=self._gpus[i])
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
            # No address: a new local cluster ("local"), never one that `ray start` left running on this machine
            # (Ray's default would join it, and then refuses num_cpus).
            kwargs: dict[str, Any] = {"address": address or "local", "include_dashboard": False,
                                      "log_to_driver": False, "configure_logging": False}
            if address is None:
                kwargs["num_cpus"] = workers or default_workers()
            runtime_env = _with_plugins(runtime_env)
            if runtime_env:  # e.g. {"working_dir": ".", "env_vars": {...}} for code the workers must import
                kwargs["runtime_env"] = runtime_env
            ray.init(**kwargs)
            self._started = True
        self.workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        # Cells are idempotent (they return bytes; only the driver writes), so a task whose worker or node was
        # lost is retried once by Ray; an exception raised by the cell itself is never retried.
        self._remote = ray.remote(max_retries=1, retry_exceptions=False)(_ray_task)
        self._init = (initializer, initargs)
        self._refs: dict[Any, str] = {}
        self._queue: deque[tuple[str, Callable, Any, Resources]] = deque()
        self._shared: dict[str, Shared] = {}

    @property
    def in_flight(self) -> int:
        return len(self._refs) + len(self._queue)

    def _nodes(self) -> list[dict[str, float]]:
        """The total resources of each alive node."""
        return [dict(n.get("Resources") or {}) for n in self._ray.nodes() if n.get("Alive")]

    def _options(self, res: Resources) -> dict[str, Any]:
        cpus = res.num_cpus
        if res.whole_node:  # every CPU of the largest node that can hold it: Ray then places nothing beside it
            fits = [n.get("CPU", 0) for n in self._nodes() if n.get("GPU", 0) >= res.num_gpus]
            cpus = max([cpus, *fits])
        return {"num_cpus": cpus, "num_gpus": res.num_gpus}

    def _dispatch(self) -> None:
        # Keep at most `workers` tasks submitted so interruption abandons little work.
        while self._queue and len(self._refs) < self.workers:
            task_id, fn, arg, res = self._queue.popleft()
            self._refs[self._remote.options(**self._options(res)).remote(*self._init, fn, arg)] = task_id

    def submit(self, task_id, fn, arg, resources=CPU_TASK):
        self._queue.append((task_id, fn, arg, resources))
        self._dispatch()

    def share(self, key: str, data: bytes) -> Shared:
        # One object per payload for the whole run: every task reading it borrows the same reference, and
        # each node fetches it at most once into its object store.
        if key not in self._shared:
            self._shared[key] = Shared(key, ref=self._ray.put(data))
        return self._shared[key]

    def unshare(self, key: str) -> None:
        """Drop the run's reference to a payload no further task needs (tasks in flight keep theirs)."""
        self._shared.pop(key, None)

    def check_resources(self, requests: dict[str, Resources]) -> None:
        nodes = self._nodes()
        for label, res in requests.items():
            if not any(n.get("CPU", 0) >= res.num_cpus and n.get("GPU", 0) >= res.num_gpus for n in nodes):
                offered = "; ".join(f"node {i}: {n.get('CPU', 0):g} CPU, {n.get('GPU', 0):g} GPU"
                                    for i, n in enumerate(nodes)) or "no alive node"
                what = (f"{res.num_gpus:g} GPU (its train.device is cuda)" if res.num_gpus
                        else f"{res.num_cpus:g} CPU")
                raise ExecutorError(f"{label} asks for {what} but no node of the Ray cluster offers it ({offered}); "
                                    "add a node that does (ray start --num-gpus N), or set train.device=cpu")

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
        self._shared.clear()
        if self._started:
            self._ray.shutdown()


def make_executor(name: str, workers: int | None = None, **options: Any) -> Executor:
    """An executor by registry name (local, ray, serial); unknown names get a did-you-mean."""
    return EXECUTORS.get(name)(workers=workers, **options)
