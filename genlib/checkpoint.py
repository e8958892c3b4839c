"""Run directories: resolved config, weights, history and provenance, written atomically.

A run directory holds `config.yaml` (the resolved RunConfig), `history.csv` (the logged training
curves), `meta.json` (run key, provenance, timings) and `model.pt` (weights, written last). A run is
built in a temporary sibling (`DIR.tmp-*`) and renamed into place whole, so a crash never mixes the
files of two runs. Weights load with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import errno
import glob
import io
import json
import os
import pickle  # only for its exception type: loading is weights-only
import shutil
import tarfile
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable

import torch

CHECKPOINT_FORMAT = "genbench-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(RuntimeError):
    """A run directory or checkpoint file is missing, corrupt or incompatible; the message names the file."""


class ArtifactWriteError(CheckpointError):
    """An artifact could not be written because of the medium (full disk, quota, read-only file system);
    the message names the path and says that nothing half-written was left."""


# errno -> what the medium says, for the failures a user fixes by freeing space or choosing another place.
MEDIUM_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                 errno.EROFS: "the file system is read-only"}


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: restore it at once
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call write(tmp_path) on a temporary file beside `path`, fsync it and rename it onto `path`.

    The temporary file is `.NAME.<pid>-<random>.tmp`; those of dead processes (a SIGKILL mid-write) are removed
    by the next write to the same path. A full disk, quota or read-only file system raises ArtifactWriteError
    naming `path`; `path` is then left as it was."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _clean_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _medium_error(path, exc) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open() would honour the umask
        write(tmp_path)
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except OSError as exc:
        raise _medium_error(path, exc) from None
    finally:
        tmp_path.unlink(missing_ok=True)
    return path


def _medium_error(path: Path, exc: OSError) -> OSError | ArtifactWriteError:
    """ArtifactWriteError for a full disk, quota or read-only medium; `exc` itself otherwise."""
    reason = MEDIUM_ERRNOS.get(exc.errno)
    if reason is None:
        return exc
    return ArtifactWriteError(f"cannot write '{path}': {reason} ({exc.strerror}); nothing half-written was left "
                              "and any previous file there is unchanged; free space (or choose another place) and "
                              "run again")


def _clean_stale_temps(path: Path) -> None:
    """Remove `.NAME.<pid>-*.tmp` files beside `path` whose writing process no longer runs."""
    prefix = f".{path.name}."
    for sibling in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = sibling.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            sibling.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


# -- whole run directories ----------------------------------------------------------------------------
RUN_FILES = ("config.yaml", "model.pt", "meta.json", "history.csv")


def holds_run(path: Path) -> bool:
    """True when `path` is a directory holding any file of a run (a finished or a half-written one)."""
    return path.is_dir() and any((path / name).exists() for name in RUN_FILES)


def _run_files(path: Path) -> list[str]:
    """The files genbench wrote in run directory `path`: RUN_FILES and any that its meta.json lists."""
    try:
        listed = json.loads((path / "meta.json").read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        listed = []
    return [*RUN_FILES, *(f for f in listed if isinstance(f, str))]


def check_run_target(path: str | Path, *, overwrite: bool) -> None:
    """Refuse to write a run onto `path` when it is a file, a directory of other things, or (unless
    `overwrite`) an existing run. An absent path or an empty directory is fine."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"run directory '{path}' is an existing file; choose another --out")
    if holds_run(path):
        if not overwrite:
            raise CheckpointError(f"run directory '{path}' already holds a run; pass --overwrite to replace it")
        foreign = sorted(set(os.listdir(path)) - set(_run_files(path)))
        if foreign:  # replacing the directory would delete them: genbench replaces only what it wrote
            raise CheckpointError(f"run directory '{path}' also holds '{foreign[0]}', which genbench did not write "
                                  f"({len(foreign)} such entr{'y' if len(foreign) == 1 else 'ies'}); --overwrite "
                                  "replaces a whole run directory, so move them out first or choose another --out")
    elif path.is_dir() and any(path.iterdir()):
        raise CheckpointError(f"'{path}' is a non-empty directory that is not a genbench run; choose another --out")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


def clean_stale_siblings(path: str | Path) -> int:
    """Remove `DIR.tmp-*` / `DIR.trash-*` siblings of `path` left by a killed process; returns how many.

    A process killed between the two renames of `publish_dir` leaves no `DIR` but its old run under a
    trash name: that run is renamed back. Siblings of a process still running are left alone."""
    path = Path(path)
    if not path.parent.is_dir():
        return 0
    removed = 0
    for sibling in path.parent.iterdir():
        for marker in (".tmp-", ".trash-"):
            prefix = f"{path.name}{marker}"
            if not sibling.name.startswith(prefix):
                continue
            pid = sibling.name[len(prefix):].split("-", 1)[0]
            if pid.isdigit() and _pid_alive(int(pid)):
                continue
            if marker == ".trash-" and sibling.is_dir() and not os.path.lexists(path):
                os.replace(sibling, path)
                continue
            shutil.rmtree(sibling, ignore_errors=True) if sibling.is_dir() else sibling.unlink(missing_ok=True)
            removed += 1
    return removed


def make_temp_sibling(path: str | Path) -> Path:
    """Create an empty directory `DIR.tmp-<pid>-<random>` beside `path` (creating the parent);
    CheckpointError naming `path` when it cannot be written."""
    path = Path(path)
    tmp = path.parent / f"{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(parents=True)
    except OSError as exc:
        raise CheckpointError(f"cannot write run directory '{path}': {exc.strerror or exc}") from None
    return tmp


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish_dir(tmp: str | Path, final: str | Path) -> Path:
    """Rename the finished directory `tmp` onto `final`. An existing `final` is first renamed to a trash
    name and deleted only after the new directory is in place, so `final` is always one whole run."""
    tmp, final = Path(tmp), Path(final)
    _fsync_dir(tmp)
    if final.exists():
        trash = final.parent / f"{final.name}.trash-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.replace(final, trash)
        try:
            os.replace(tmp, final)
        except BaseException:
            os.replace(trash, final)  # put the old run back rather than leave no run at all
            raise
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(final.parent)
    return final


# -- directories as bytes (artifacts that travel between machines) ----------------------------------------
def pack_dir(path: str | Path) -> bytes:
    """The regular files of directory `path` (recursively) as one uncompressed tar, in sorted order, with no
    owner, time or mode of the writing machine: the same files give the same bytes."""
    path = Path(path)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink()):
            info = tarfile.TarInfo(file.relative_to(path).as_posix())
            info.size = file.stat().st_size
            info.mode = 0o644
            with open(file, "rb") as fh:
                tar.addfile(info, fh)
    return buf.getvalue()


def unpack_dir(data: bytes, final: str | Path, *, replace: bool = True) -> Path:
    """Unpack `pack_dir` bytes into the directory `final`, built in a temporary sibling and renamed into place
    (`publish_dir`), so `final` is always whole. replace=False keeps an existing `final` (a cache another
    process filled first) and discards the new copy. Members outside the directory are refused."""
    final = Path(final)
    if not replace and final.is_dir():
        return final
    tmp = make_temp_sibling(final)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar.getmembers():
                name = Path(member.name)
                if not member.isfile() or name.is_absolute() or ".." in name.parts:
                    raise CheckpointError(f"refusing to unpack '{member.name}' into '{final}': not a plain "
                                          "file inside the directory")
                target = tmp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        if replace:
            return publish_dir(tmp, final)
        try:
            os.rename(tmp, final)  # fails when another process published `final` first: keep theirs
        except OSError:
            if not final.is_dir():
                raise
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_weights(path: str | Path, payload: dict[str, Any]) -> Path:
    """Save {'state_dict': ..., plus plain metadata} as a versioned genbench checkpoint."""
    data = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    buffer = io.BytesIO()  # serialised first: a failed write is then a plain OSError with its errno,
    torch.save(data, buffer)  # not torch's "unexpected pos" RuntimeError
    return atomic_write(path, lambda p: p.write_bytes(buffer.getbuffer()))


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
