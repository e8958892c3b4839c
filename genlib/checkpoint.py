"""Run directories: resolved config, weights, history and provenance, written atomically.

A run directory holds `config.yaml` (the resolved RunConfig), `history.csv` (the logged training
curves), `meta.json` (run key, provenance, timings) and `model.pt` (weights, written last: its presence
marks a finished run). Every file goes to a temporary name and is renamed into place, so a crash never
leaves a partial file under a final name. Weights load with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import json
import os
import pickle  # only for its exception type: loading is weights-only
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

CHECKPOINT_FORMAT = "genbench-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(RuntimeError):
    """A run directory or checkpoint file is missing, corrupt or incompatible; the message names the file."""


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call write(tmp_path) on a temporary file beside `path`, fsync it and rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def save_weights(path: str | Path, payload: dict[str, Any]) -> Path:
    """Save {'state_dict': ..., plus plain metadata} as a versioned genbench checkpoint."""
    data = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    return atomic_write(path, lambda p: torch.save(data, p))


def load_weights(path: str | Path) -> dict[str, Any]:
    """Load a genbench checkpoint safely (weights_only=True); raise CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist (is the run finished? model.pt is written last)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/garbage/unsafe files
        if isinstance(exc, pickle.UnpicklingError):
            why = "it holds objects that safe (weights-only) loading refuses, or is not a torch file"
        else:
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else 'unreadable'}"
        raise CheckpointError(f"checkpoint '{path}' is corrupt or not a genbench checkpoint ({why})") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint '{path}' is not a genbench checkpoint (no '{CHECKPOINT_FORMAT}' header)")
    if data.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint '{path}' has format version {data.get('version')}; "
                              f"this genbench reads version {CHECKPOINT_VERSION}")
    return data


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"'{path}' does not exist") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"'{path}' is not valid JSON: {exc}") from None
