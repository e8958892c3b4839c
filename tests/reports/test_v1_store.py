"""A results store written by genbench before schema v2 (v1 layouts, tests/genlib/v1_store.py) opens and
reports; the report reads it read-only, so the file is left exactly as it was."""
from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

GENLIB_TESTS = Path(__file__).resolve().parents[1] / "genlib"
if str(GENLIB_TESTS) not in sys.path:
    sys.path.insert(0, str(GENLIB_TESTS))

from v1_store import write_v1_store  # noqa: E402


def test_report_of_a_v1_store(tmp_path):
    from reports import build_report
    path = tmp_path / "r.db"
    write_v1_store(path)
    before = path.read_bytes()
    out = build_report(path, tmp_path / "report", formats=("md", "csv"))
    md = out["md"].read_text()
    assert "Study toy" in md and "swd" in md
    assert path.read_bytes() == before  # report opens read-only: no migration written, no user_version change
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()


def test_genbench_report_on_a_migrated_v1_store(tmp_path):
    from genlib.store import ResultsStore
    from reports import build_report
    path = tmp_path / "r.db"
    write_v1_store(path)
    with ResultsStore(path):  # a writer migrates in place
        pass
    out = build_report(path, tmp_path / "report", formats=("md",))
    assert "Study toy" in out["md"].read_text()
