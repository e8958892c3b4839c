"""Run the tiny grid in its own process, as `genbench grid run` would: the target of crash tests.

usage: python grid_driver.py STORE [--executor local|serial] [--workers N] [--retry-failed] [--grid JSON]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from grid_helpers import ToyEvaluation, tiny_grid  # noqa: E402


def main() -> int:
    from ablations import parse_grid, plan_grid, run_plan
    from ablations.driver import Terminated

    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("--executor", default="serial")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--retry-failed", action="store_true")
    ap.add_argument("--grid", default=None, help="JSON of tiny_grid keyword changes")
    args = ap.parse_args()
    grid = tiny_grid(**json.loads(args.grid)) if args.grid else tiny_grid()
    plan = plan_grid(parse_grid(grid))
    try:
        summary = run_plan(plan, args.store, executor=args.executor, workers=args.workers, threads=1,
                           retry_failed=args.retry_failed, evaluation=ToyEvaluation(), progress=False)
    except Terminated:
        return 143
    except KeyboardInterrupt:
        return 130
    print(json.dumps({"done": summary.done, "failed": summary.failed, "already_done": summary.already_done}))
    return 0 if summary.complete else 1


if __name__ == "__main__":
    sys.exit(main())
