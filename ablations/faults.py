"""Named fault points for crash-injection tests: die like SIGKILL at an exact place in the driver.

GENBENCH_FAULT=POINT[:N] makes the N-th pass (default 1st) through `fault_point(POINT)` call
`os._exit(FAULT_EXIT_CODE)`: no cleanup, no finally blocks, no flushed buffers, as a kill would.
Points: after_artifact (a cell's artifact is in place, nothing committed), mid_commit (inside the
store transaction, the run row written but not committed), after_commit (committed, nothing after).
Unset, a fault point costs one dictionary lookup.
"""
from __future__ import annotations

import os

FAULT_ENV = "GENBENCH_FAULT"
FAULT_EXIT_CODE = 86
FAULT_POINTS = ("after_artifact", "mid_commit", "after_commit")

_passes: dict[str, int] = {}


def _parse(value: str) -> tuple[str, int]:
    point, _, count = value.partition(":")
    if point not in FAULT_POINTS:
        raise ValueError(f"{FAULT_ENV}={value!r}: unknown fault point '{point}' (known: {', '.join(FAULT_POINTS)})")
    try:
        n = int(count) if count else 1
    except ValueError:
        raise ValueError(f"{FAULT_ENV}={value!r}: the count after ':' must be an integer") from None
    return point, n


def check_fault_env() -> None:
    """Fail fast on a malformed GENBENCH_FAULT instead of silently never firing."""
    value = os.environ.get(FAULT_ENV)
    if value:
        _parse(value)


def fault_point(point: str) -> None:
    value = os.environ.get(FAULT_ENV)
    if not value:
        return
    target, n = _parse(value)
    if target != point:
        return
    _passes[point] = _passes.get(point, 0) + 1
    if _passes[point] == n:
        os._exit(FAULT_EXIT_CODE)
