"""ONNX Runtime sessions: provider choice, session options and timed-call runners.

`make_session` builds an InferenceSession from a `SessionConfig` (provider, graph optimisation level,
intra/inter-op threads, spinning, CUDA graphs) and reports the provider that actually runs it. CUDA is
requested only after `cuda_provider_usable()` has shown, in a quiet subprocess, that the CUDA provider
really loads, so CPU machines see no wall of provider errors; asking explicitly for an unusable provider
raises `ProviderUnavailableError`. `bind_runner` turns a session and feeds into the (call, sync) pair the
timing harness needs: plain `run` on CPU, IO binding with device-resident inputs and outputs on CUDA.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from genlib.cli import UserError

PROVIDER_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
OPT_LEVELS = ("disable", "basic", "extended", "all")
CUDA_ENV = "GENBENCH_ORT_CUDA"  # "0" forbids the CUDA provider, "1" skips the probe and trusts it


class ProviderUnavailableError(UserError):
    """An execution provider was explicitly requested but cannot run on this machine."""


@dataclass(frozen=True, kw_only=True)
class SessionConfig:
    """How one ONNX Runtime session is built."""

    provider: Literal["cpu", "cuda"] = "cpu"
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    # 0 lets ONNX Runtime choose (one thread per physical core).
    intra_op_threads: int = 0
    inter_op_threads: int = 1
    # Busy-wait between ops: lower latency for small graphs, burns CPU while idle.
    allow_spinning: bool = True
    # CUDA only: capture the whole run in a CUDA graph (needs IO binding, fixed shapes, no control flow).
    cuda_graph: bool = False
    device_id: int = 0

    def __post_init__(self) -> None:
        if self.provider not in PROVIDER_NAMES:
            raise ValueError(f"provider must be one of {sorted(PROVIDER_NAMES)}, got {self.provider!r}")
        if self.graph_optimization not in OPT_LEVELS:
            raise ValueError(f"graph_optimization must be one of {OPT_LEVELS}, got {self.graph_optimization!r}")
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise ValueError("thread counts must be >= 0 (0 = ONNX Runtime's default)")
        if self.cuda_graph and self.provider != "cuda":
            raise ValueError("cuda_graph needs provider='cuda'")


_PROBE = r"""
import json, sys
import onnxruntime as ort
from onnx import TensorProto, helper
g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
so = ort.SessionOptions(); so.log_severity_level = 4
s = ort.InferenceSession(m.SerializeToString(), so, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
print(json.dumps(s.get_providers()))
"""


def _nvidia_device_present() -> bool:
    return any(Path("/dev").glob("nvidia[0-9]*")) or Path("/proc/driver/nvidia/version").exists() or sys.platform != "linux"


@lru_cache(maxsize=1)
def cuda_provider_usable() -> tuple[bool, str]:
    """(usable, reason): can ONNX Runtime's CUDA provider actually run here? Probed once per process.

    Cheap checks first (the provider is compiled in; a driver device exists), then a session is
    created in a subprocess with its output captured, so load errors never reach the user's terminal.
    """
    forced = os.environ.get(CUDA_ENV)
    if forced == "0":
        return False, f"{CUDA_ENV}=0"
    import onnxruntime as ort

    if PROVIDER_NAMES["cuda"] not in ort.get_available_providers():
        return False, f"onnxruntime {ort.__version__} was built without the CUDA provider"
    if forced == "1":
        return True, f"{CUDA_ENV}=1"
    if not _nvidia_device_present():
        return False, "no NVIDIA device (/dev/nvidia*) on this machine"
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
        providers = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else []
    except (subprocess.SubprocessError, OSError, ValueError, IndexError) as exc:
        return False, f"CUDA probe failed: {type(exc).__name__}"
    if providers and providers[0] == PROVIDER_NAMES["cuda"]:
        return True, "probe session ran on CUDAExecutionProvider"
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
    return False, f"the CUDA provider does not load (CUDA/cuDNN libraries missing?): {tail}"


def available_providers() -> list[str]:
    """Short names of the providers usable here, best first ('cuda' only when it really loads)."""
    return (["cuda"] if cuda_provider_usable()[0] else []) + ["cpu"]


def resolve_providers(requested: list[str] | None) -> list[str]:
    """Requested short names (None = all usable) checked against this machine; unknown or unusable
    explicit requests raise (never a silent fallback)."""
    if requested is None:
        return available_providers()
    out = []
    for name in requested:
        if name not in PROVIDER_NAMES:
            raise ProviderUnavailableError(f"unknown execution provider '{name}'; expected one of: "
                                           f"{', '.join(PROVIDER_NAMES)}")
        if name == "cuda":
            usable, reason = cuda_provider_usable()
            if not usable:
                raise ProviderUnavailableError(f"provider 'cuda' was requested but is unavailable: {reason}")
        out.append(name)
    return out


def session_options(cfg: SessionConfig):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[cfg.graph_optimization]
    so.intra_op_num_threads = cfg.intra_op_threads
    so.inter_op_num_threads = cfg.inter_op_threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if cfg.allow_spinning else "0")
    so.log_severity_level = 3
    return so


def make_session(model: str | Path | bytes, cfg: SessionConfig = SessionConfig()):
    """An InferenceSession for an ONNX file or serialized model. The provider that actually runs it is
    `session.get_providers()[0]`; asking for 'cuda' where it cannot load raises ProviderUnavailableError."""
    import onnxruntime as ort

    if cfg.provider == "cuda":
        usable, reason = cuda_provider_usable()
        if not usable:
            raise ProviderUnavailableError(f"provider 'cuda' was requested but is unavailable: {reason}")
        opts = {"device_id": cfg.device_id, "enable_cuda_graph": "1" if cfg.cuda_graph else "0"}
        providers: list[Any] = [(PROVIDER_NAMES["cuda"], opts), PROVIDER_NAMES["cpu"]]
    else:
        providers = [PROVIDER_NAMES["cpu"]]
    source = str(model) if isinstance(model, Path) else model
    session = ort.InferenceSession(source, session_options(cfg), providers=providers)
    if cfg.provider == "cuda" and session.get_providers()[0] != PROVIDER_NAMES["cuda"]:
        raise ProviderUnavailableError(f"the session fell back to {session.get_providers()[0]} although CUDA was requested")
    return session


@dataclass
class Runner:
    """A prepared, repeatable inference call: `call()` runs the graph, `sync()` waits for the device,
    `outputs()` fetches the last results to host memory (outside any timed region)."""

    call: Callable[[], Any]
    sync: Callable[[], None]
    outputs: Callable[[], list[np.ndarray]]
    provider: str
    io_binding: bool
    keep_alive: list = field(default_factory=list)  # device buffers that must outlive the binding


def bind_runner(session, feeds: dict[str, np.ndarray], *, io_binding: bool | None = None,
                output_shapes: dict[str, tuple[int, ...]] | None = None) -> Runner:
    """(call, sync) over `session` with fixed `feeds`.

    With IO binding (the default on CUDA) inputs are copied to the device once and outputs stay there,
    so the timed call is `run_with_iobinding` alone and `sync` waits for the device. `output_shapes`
    pre-allocates outputs (required for CUDA graphs); otherwise ONNX Runtime allocates them on the device.
    """
    import onnxruntime as ort

    provider = session.get_providers()[0]
    on_cuda = provider == PROVIDER_NAMES["cuda"]
    if io_binding is None:
        io_binding = on_cuda
    names = [o.name for o in session.get_outputs()]
    if not io_binding:
        last: list = []

        def call() -> None:
            last[:] = session.run(names, feeds)

        return Runner(call, lambda: None, lambda: [np.asarray(v) for v in last], provider, False)

    device, device_id = ("cuda", int(session.get_provider_options()[provider].get("device_id", 0))) if on_cuda else ("cpu", 0)
    binding = session.io_binding()
    keep_alive = []
    for name, value in feeds.items():
        ort_value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), device, device_id)
        keep_alive.append(ort_value)
        binding.bind_ortvalue_input(name, ort_value)
    for out in session.get_outputs():
        if output_shapes and out.name in output_shapes:
            dtype = np.float16 if out.type == "tensor(float16)" else np.float32
            ort_value = ort.OrtValue.ortvalue_from_shape_and_type(list(output_shapes[out.name]), dtype, device, device_id)
            keep_alive.append(ort_value)
            binding.bind_ortvalue_output(out.name, ort_value)
        else:
            binding.bind_output(out.name, device, device_id)
    binding.synchronize_inputs()

    def call_bound() -> None:
        session.run_with_iobinding(binding)

    def outputs() -> list[np.ndarray]:
        return [v.numpy() for v in binding.get_outputs()]

    return Runner(call_bound, binding.synchronize_outputs, outputs, provider, True, keep_alive)
