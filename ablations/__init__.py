"""Ablation grids: YAML specs, a train-once planner, resumable execution (local pool or Ray), the studies.

    spec = load_grid("ablations/grids/beta.yaml", "quick")   # GridSpec (errors name key and file)
    plan = plan_grid(spec)                                   # train cells + eval cells + floor cells
    run_plan(plan, "results.db")                             # resumable; the driver writes the store

See ablations/README.md for the grid file format, the record contract and the resume guarantee.
"""
from ablations.cells import CellContext, Evaluation, MetricsEvaluation
from ablations.driver import GridRunError, RunSummary, artifacts_dir_for, plan_status, run_plan, run_plans
from ablations.executors import EXECUTORS, make_executor
from ablations.plan import EvalCell, FloorCell, Plan, TrainCell, plan_grid
from ablations.spec import GridError, GridSpec, load_grid, parse_grid

__all__ = ["load_grid", "parse_grid", "GridSpec", "GridError", "plan_grid", "Plan", "TrainCell", "EvalCell",
           "FloorCell", "run_plan", "run_plans", "RunSummary", "GridRunError", "plan_status", "artifacts_dir_for",
           "Evaluation", "MetricsEvaluation", "CellContext", "EXECUTORS", "make_executor"]
