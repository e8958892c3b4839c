"""What a result depends on besides its config: git commit, library versions, machine facts, the device.

`provenance()` is the one source of the git commit, library versions and machine facts stored with every
record (genlib.records), checkpoint (`meta.json`) and export sidecar, always in one shape. `select_device`
picks CUDA when present (or when asked) and says clearly when it is not; `device_info` names the device a
run used. Only the device functions import torch, so the torch-free record contract can import this module.
"""
from __future__ import annotations

import os
import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

TRACKED_PACKAGES = ("torch", "numpy", "scikit-learn", "scikit-image", "pandas", "onnx", "onnxscript",
                    "onnxruntime", "onnxruntime-gpu", "genbench")


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    """Python's and each installed TRACKED_PACKAGES' version."""
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


@lru_cache(maxsize=1)
def git_commit() -> str:
    """HEAD of the genbench checkout (with '+dirty' when it has uncommitted changes), or 'unknown'."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# The instruction-set features that decide int8 and fp16 speed on a CPU (ONNX Runtime's quantization guide):
# (name as reported, the /proc/cpuinfo flag; aarch64 lists 'asimddp' for its int8 dot product).
CPU_FEATURES = (("AVX2", "avx2"), ("AVX-512", "avx512f"), ("AVX512-VNNI", "avx512_vnni"), ("AVX-VNNI", "avx_vnni"),
                ("AMX", "amx_tile"), ("AVX512-BF16", "avx512_bf16"), ("AVX512-FP16", "avx512_fp16"),
                ("F16C", "f16c"), ("NEON-DOTPROD", "asimddp"))


@lru_cache(maxsize=1)
def machine_info() -> dict[str, Any]:
    """Machine facts stored with every record (pytest-benchmark's machine_info, trimmed)."""
    info: dict[str, Any] = {"node": platform.node(), "processor": platform.processor() or platform.machine(),
                            "machine": platform.machine(), "system": platform.system(),
                            "release": platform.release(), "python": platform.python_version(),
                            "cpu_count": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as fh:
            lines = fh.readlines()
        model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), None)
        if model:
            info["cpu_model"] = model
        flags = set(next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith(("flags", "Features"))), []))
        info["cpu_features"] = [name for name, flag in CPU_FEATURES if flag in flags]
    except OSError:
        pass
    if hasattr(os, "sched_getaffinity"):
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    return info


def provenance() -> dict[str, Any]:
    """{"git_commit", "versions", "machine"}: plain data, picklable from workers to the driver, JSON as is."""
    return {"git_commit": git_commit(), "versions": dict(library_versions()), "machine": dict(machine_info())}


def select_device(preference: str = "auto") -> torch.device:
    """`auto` -> cuda when available else cpu; `cuda` when unavailable is an error, not a silent fallback."""
    import torch

    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{preference}' was requested but torch sees no CUDA device "
                           f"(torch {torch.__version__}); use device=auto or cpu")
    return torch.device(preference)


def device_name(device: torch.device) -> str:
    import torch

    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()}"


def device_info(device: torch.device) -> dict[str, Any]:
    """{"device", "device_name", "torch_threads"}: the torch device a run used and its intra-op threads."""
    import torch

    return {"device": str(device), "device_name": device_name(device), "torch_threads": torch.get_num_threads()}
