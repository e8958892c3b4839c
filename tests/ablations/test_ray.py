"""The Ray executor on a local Ray cluster gives the same records as the local process pool."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from grid_helpers import ToyEvaluation, tiny_grid

from ablations import parse_grid, plan_grid, run_plan

pytestmark = pytest.mark.ray

HERE = Path(__file__).resolve().parent


def _table(db: Path, query: str, order: list[str]) -> pd.DataFrame:
    with sqlite3.connect(db) as conn:
        return pd.read_sql_query(query, conn).sort_values(order).reset_index(drop=True)


def test_ray_executor_matches_the_local_pool(tmp_path):
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'genbench[ray]')")
    plan = plan_grid(parse_grid(tiny_grid(seeds=[0])))
    local, ray_db = tmp_path / "local.db", tmp_path / "ray.db"
    common = {"workers": 2, "threads": 1, "evaluation": ToyEvaluation(), "progress": False}
    assert run_plan(plan, local, executor="local", **common).complete
    summary = run_plan(plan, ray_db, executor="ray", **common,
                       executor_options={"runtime_env": {"env_vars": {"PYTHONPATH": str(HERE)}}})
    assert summary.complete and summary.done == len(plan.cells)
    runs_q = "SELECT run_key, kind, study, name, parent_key, status, config_json, seed FROM runs"
    pd.testing.assert_frame_equal(_table(local, runs_q, ["run_key"]), _table(ray_db, runs_q, ["run_key"]))
    metrics_q = "SELECT run_key, name, split, value, unit, higher_is_better FROM metrics"
    pd.testing.assert_frame_equal(_table(local, metrics_q, ["run_key", "name"]),
                                  _table(ray_db, metrics_q, ["run_key", "name"]))
