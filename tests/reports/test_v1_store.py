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


# The evaluation config of a v1 grid cell: the SampleConfig fields of that time, n and metrics.
V1_EVAL_FIELDS = ("sampler", "steps", "eta", "variance", "clip_x0", "passes", "reencode", "prior", "n", "metrics")


def _as_v1_store(path: Path, plan) -> int:
    """The grid `plan` as a schema-v1 store holds it after a finished run: v1 record layouts and keys (evaluation
    keys hashed over the v1 evaluation config, without the sampling settings added since)."""
    import json

    from genlib.config import config_hash
    from genlib.record_layout import V1_EVAL_ADDED
    from v1_store import V1_SCHEMA

    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(f"BEGIN IMMEDIATE; {V1_SCHEMA} PRAGMA user_version=1; COMMIT;")
    conn.execute("BEGIN")
    rows = 0

    def insert(key, kind, config, parent, seed, label, value):
        conn.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (key, kind, plan.study, label, parent, "done", json.dumps(config), seed, "39e3ff8", "{}", "cpu",
                      None, None, None, "2026-11-01T10:00:00+00:00", "2026-11-01T10:01:00+00:00"))
        conn.execute("INSERT INTO metrics VALUES (?, 'swd', '', ?, 'data units', 0, '{}')", (key, value))

    for cell in plan.train_cells:
        insert(cell.key, "train", cell.record_config(), None, cell.seed, cell.label, 0.5)
    for cell in plan.floor_cells:
        insert(cell.key, "floor", cell.record_config(), None, cell.seed, cell.label, 0.01)
    for i, cell in enumerate(plan.eval_cells):
        ev = {k: v for k, v in cell.eval_config.items() if k in V1_EVAL_FIELDS}
        assert set(cell.eval_config) - set(ev) <= set(V1_EVAL_ADDED), "a new evaluation field: add it to " \
            "genlib.record_layout.V1_EVAL_ADDED with the value v1 evaluations used"
        key = config_hash({"study": plan.study, "parent": cell.parent, "eval": ev, "seed": cell.seed})
        assert key != cell.key
        config = {"train": cell.train_config, "eval": ev, "axes": cell.axes, "profile": cell.profile}
        insert(key, "eval", config, cell.parent, cell.seed, cell.label, 0.1 + 0.01 * i)
        rows += 1
    conn.execute("COMMIT")
    conn.close()
    return rows


def test_a_resumed_v1_store_reruns_nothing_and_reports_each_row_once(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ablations"))
    from grid_helpers import tiny_grid

    from ablations import parse_grid, plan_grid, run_plan
    from ablations.cells import Evaluation
    from reports import build_report

    class NoEvaluation(Evaluation):
        def evaluate_run(self, *args, **kwargs):
            raise AssertionError("a migrated evaluation ran again")

        def evaluate_floor(self, *args, **kwargs):
            raise AssertionError("a migrated floor ran again")

    grid = tiny_grid(axes={"eval.steps": [2, 5]}, seeds=[0, 1], floor={"metrics": ["swd"]})
    plan = plan_grid(parse_grid(grid))
    path = tmp_path / "r.db"
    n_evals = _as_v1_store(path, plan)
    summary = run_plan(plan, path, executor="serial", threads=1, progress=False, evaluation=NoEvaluation())
    assert summary.done == 0 and summary.failed == 0 and summary.already_done == len(plan.cells)
    out = build_report(path, tmp_path / "report", formats=("csv",), claims=False)
    table = next(p for p in (tmp_path / "report").rglob("tiny*.csv"))
    import pandas as pd
    frame = pd.read_csv(table)
    results = frame[frame["row_type"] == "result"]
    assert sorted(results["eval.steps"].astype(int)) == [2, 5] and set(results["seeds"]) == {2}  # each setting once, 2 seeds
    assert len(results) * 2 == n_evals and out
