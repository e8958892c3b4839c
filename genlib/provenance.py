"""What a result depends on besides its config: device, library versions, git commit, machine.

`select_device` picks CUDA when present (or when asked) and says clearly when it is not;
`provenance()` returns the dict stored beside every checkpoint (commit and versions from genlib.records).
"""
from __future__ import annotations

import os
import platform
import sys

import torch

from genlib.records import git_commit, library_versions  # the one provenance source (torch-free)


def select_device(preference: str = "auto") -> torch.device:
    """`auto` -> cuda when available else cpu; `cuda` when unavailable is an error, not a silent fallback."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{preference}' was requested but torch sees no CUDA device "
                           f"(torch {torch.__version__}); use device=auto or cpu")
    return torch.device(preference)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()}"


def provenance(device: torch.device | None = None) -> dict:
    """Device, versions, commit and machine facts to store beside a result."""
    device = device or torch.device("cpu")
    return {
        "device": str(device),
        "device_name": device_name(device),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "versions": library_versions(),
        "argv": sys.argv[1:],
    }
