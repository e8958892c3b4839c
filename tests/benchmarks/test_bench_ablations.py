"""Ablation benchmarks (tox -e bench): the planner's saving, the executor's per-cell overhead, the CI budget.

- Planner: refinement and steps (quick) trained once per training config vs once per cell (--no-share):
  number of trainings and wall time, both measured here in one run. Targets: >= 5x fewer trainings and
  >= 3x less wall time.
- Executor overhead: trivial cells (an evaluation that returns at once) through the local pool and the
  driver's two store commits per cell; the marginal wall time per cell between 40 and 2040 cells (worker
  start-up cancels out). Target < 50 ms.
- The quick profiles of the five studies together: target <= 600 s on 2 cores.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ablations"))

from grid_helpers import TrivialEvaluation, tiny_grid  # noqa: E402

from ablations import load_grid, parse_grid, plan_grid, run_plan, run_plans  # noqa: E402
from ablations.cli import bundled_grids  # noqa: E402


def _timed_run(plans, db, **kw) -> float:
    start = time.perf_counter()
    summary = run_plans(plans, db, progress=False, **kw)
    assert summary.complete, summary.failures[:3]
    return time.perf_counter() - start


@pytest.mark.parametrize("study", ["refinement", "steps"])
def test_planner_share_vs_no_share(benchmark, tmp_path, study):
    path = bundled_grids()[study]
    shared, unshared = plan_grid(load_grid(path, "quick")), plan_grid(load_grid(path, "quick"), share=False)
    walls = {}

    def run_both():
        walls["share"] = _timed_run([shared], tmp_path / "share.db")
        walls["no_share"] = _timed_run([unshared], tmp_path / "no_share.db")

    benchmark.pedantic(run_both, rounds=1, iterations=1)
    trainings_ratio = len(unshared.train_cells) / len(shared.train_cells)
    wall_ratio = walls["no_share"] / walls["share"]
    benchmark.extra_info.update({"trainings_share": len(shared.train_cells),
                                 "trainings_no_share": len(unshared.train_cells),
                                 "evaluations": len(shared.eval_cells), "wall_s_share": round(walls["share"], 1),
                                 "wall_s_no_share": round(walls["no_share"], 1),
                                 "trainings_ratio": round(trainings_ratio, 1), "wall_ratio": round(wall_ratio, 2)})
    print(f"\n{study}: {benchmark.extra_info}")
    assert trainings_ratio >= 5
    assert wall_ratio >= 3


def test_executor_overhead_per_cell(benchmark, tmp_path):
    db = tmp_path / "results.db"
    grid = tiny_grid(seeds=[0])
    grid["axes"] = {"eval.steps": [None]}
    run_plan(plan_grid(parse_grid(grid)), db, workers=2, threads=1, evaluation=TrivialEvaluation(), progress=False)
    walls = {}

    def run(n_cells: int) -> float:
        # New inference-time values only: the checkpoint exists, so every cell is a trivial evaluation.
        grid["axes"] = {"eval.n": list(range(1000 + 1000 * n_cells, 1000 + 1000 * n_cells + n_cells))}
        grid["floor"] = False
        return _timed_run([plan_grid(parse_grid(grid))], db, workers=2, threads=1, evaluation=TrivialEvaluation())

    def measure():
        walls[40] = run(40)
        walls[2040] = run(2040)

    benchmark.pedantic(measure, rounds=1, iterations=1)
    per_cell_ms = (walls[2040] - walls[40]) / 2000 * 1000
    benchmark.extra_info.update({"wall_s_40": round(walls[40], 2), "wall_s_2040": round(walls[2040], 2),
                                 "overhead_ms_per_cell": round(per_cell_ms, 2)})
    print(f"\nexecutor overhead: {benchmark.extra_info}")
    assert per_cell_ms < 50


@pytest.mark.slow
def test_quick_profiles_fit_the_ci_budget(benchmark, tmp_path):
    plans = [plan_grid(load_grid(bundled_grids()[s], "quick"))
             for s in ("beta", "warmup", "refinement", "steps", "baselines")]
    walls = {}
    benchmark.pedantic(lambda: walls.setdefault("all", _timed_run(plans, tmp_path / "quick.db")), rounds=1,
                       iterations=1)
    benchmark.extra_info.update({"wall_s": round(walls["all"], 1), "cells": sum(len(p.cells) for p in plans)})
    print(f"\nquick profiles: {benchmark.extra_info}")
    assert walls["all"] <= 600
