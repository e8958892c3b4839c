"""Ablation grids: YAML specs, a train-once planner, resumable execution (local pool or Ray), the studies.

    spec = load_grid("ablations/grids/beta.yaml", "quick")   # GridSpec (errors name key and file)
    plan = plan_grid(spec)                                   # train cells + eval cells + floor cells
    run_plan(plan, "results.db")                             # resumable; the driver writes the store

See ablations/README.md for the grid file format, the record contract and the resume guarantee.
"""
from __future__ import annotations

from genlib import lazy

# Loaded on first use (PEP 562), so that `genbench --help` imports no torch or pandas.
_EXPORTS = {
    "CellContext": "ablations.cells",
    "Evaluation": "ablations.cells",
    "MetricsEvaluation": "ablations.cells",
    "GridRunError": "ablations.driver",
    "RunSummary": "ablations.driver",
    "artifacts_dir_for": "ablations.driver",
    "plan_status": "ablations.driver",
    "run_plan": "ablations.driver",
    "run_plans": "ablations.driver",
    "EXECUTORS": "ablations.executors",
    "make_executor": "ablations.executors",
    "EvalCell": "ablations.plan",
    "FloorCell": "ablations.plan",
    "Plan": "ablations.plan",
    "TrainCell": "ablations.plan",
    "plan_grid": "ablations.plan",
    "GridError": "ablations.spec",
    "GridSpec": "ablations.spec",
    "load_grid": "ablations.spec",
    "parse_grid": "ablations.spec",
}

__all__ = ["load_grid", "parse_grid", "GridSpec", "GridError", "plan_grid", "Plan", "TrainCell",
           "EvalCell", "FloorCell", "run_plan", "run_plans", "RunSummary", "GridRunError",
           "plan_status", "artifacts_dir_for", "Evaluation", "MetricsEvaluation", "CellContext",
           "EXECUTORS", "make_executor"]

__getattr__, __dir__ = lazy.lazy_exports(globals(), _EXPORTS, __all__)
