"""Progress bars that suit where stderr goes: tqdm on a terminal, plain lines in a log.

`tqdm` here is a drop-in for `tqdm.auto.tqdm`. When its stream is not a terminal (a CI log, a file, a
pipe), each refresh becomes one plain line, at most one every NON_TERMINAL_INTERVAL_S seconds, with no
carriage-return frames (a redirected training would otherwise write one long line of them).
"""
from __future__ import annotations

import sys
from typing import Any, TextIO

from tqdm.auto import tqdm as _tqdm

NON_TERMINAL_INTERVAL_S = 5.0


class LineWriter:
    """A file for tqdm that writes each non-empty frame as its own line (carriage returns become line ends)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        for frame in text.replace("\r", "\n").split("\n"):
            frame = frame.strip()
            if frame:
                self.stream.write(frame + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    @property
    def encoding(self) -> str:
        return getattr(self.stream, "encoding", None) or "utf-8"


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class tqdm(_tqdm):  # noqa: N801: a drop-in replacement keeps tqdm's name
    """tqdm.auto.tqdm, writing plain lines every few seconds when its stream is not a terminal."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        stream = kwargs.get("file") or sys.stderr
        if not kwargs.get("disable") and not isinstance(stream, LineWriter) and not _is_terminal(stream):
            kwargs["file"] = LineWriter(stream)
            kwargs["mininterval"] = max(kwargs.get("mininterval", 0.1), NON_TERMINAL_INTERVAL_S)
            kwargs["dynamic_ncols"] = False
            kwargs.setdefault("ncols", 100)
            kwargs.setdefault("ascii", True)
        super().__init__(*args, **kwargs)


__all__ = ["NON_TERMINAL_INTERVAL_S", "LineWriter", "tqdm"]
