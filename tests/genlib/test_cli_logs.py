"""Logs: progress on a non-terminal stderr is plain lines (no carriage-return frames), and a grid worker
killed at an interruption leaves no 'leaked semaphore' warning behind."""
from __future__ import annotations

import io
import subprocess
import sys

from genlib.progress import NON_TERMINAL_INTERVAL_S, tqdm

GENBENCH = [sys.executable, "-c", "import sys; from genlib.cli import main; sys.exit(main())"]


def test_progress_into_a_file_is_plain_lines():
    buf = io.StringIO()
    bar = tqdm(range(40), file=buf, desc="train vae", leave=True)
    assert bar.mininterval == NON_TERMINAL_INTERVAL_S
    bar.mininterval = 0  # every update, to see each frame become its own line
    for _ in bar:
        pass
    text = buf.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) >= 2 and all(line.startswith("train vae:") for line in lines)
    assert "40/40" in lines[-1]


def test_training_into_a_pipe_writes_no_carriage_returns(tmp_path):
    proc = subprocess.run([*GENBENCH, "train", "ddpm_8gaussians", "--out", str(tmp_path / "run"),
                           "--set", "train.steps=200", "--set", "train.device=cpu"],
                          capture_output=True, timeout=300)  # bytes: text mode would turn \r into \n
    assert proc.returncode == 0, proc.stderr
    assert b"\r" not in proc.stderr
    assert b"train ddpm:" in proc.stderr  # the first progress line is still there


# A worker that drew a progress bar (tqdm creates its lock on the first bar), then killed as an
# interrupted grid kills its workers. Run as `python -c`: spawned workers re-import no main module.
_KILLED_WORKER = """
import tqdm
from ablations.executors import LocalExecutor
executor = LocalExecutor(workers=1)
executor.submit("bar", tqdm.tqdm, [])
outcomes = []
while not outcomes:
    outcomes = executor.wait(timeout=120)
executor.shutdown(kill=True)
print("worker killed")
"""


def test_a_killed_grid_worker_leaks_no_semaphores():
    proc = subprocess.run([sys.executable, "-c", _KILLED_WORKER], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "worker killed" in proc.stdout, proc.stderr
    assert "leaked semaphore" not in proc.stderr
