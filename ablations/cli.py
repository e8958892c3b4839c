"""`genbench grid plan|run|status|list`: plan, run, resume and inspect ablation grids from the shell.

A GRID argument is a YAML file or the name of a bundled study (beta, warmup, refinement, steps,
baselines). `run` resumes by design: run the same command again after any interruption.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when a command runs: building the parser must not import torch
    from ablations.spec import GridSpec

GRIDS_DIR = Path(__file__).resolve().parent / "grids"

EPILOG = """examples:
  genbench grid list                                        bundled studies and their claims
  genbench grid plan beta                                   trainings and evaluations, nothing runs
  genbench grid plan refinement --no-share                  what training once per cell would cost
  genbench grid run refinement --set data.name=idx:DIR --store mine.db    a bundled study on your own data
  genbench grid run beta --set train.steps=200 --set eval.n=200 --store r.db    every cell, smaller
  genbench grid run beta warmup --store results.db          quick profiles, one worker per core
  genbench grid run my_grid.yaml --store r.db --profile full --workers 4 --max-failures 3
  genbench grid run steps --store r.db --executor ray       Ray: RAY_ADDRESS or a local cluster
  genbench grid run steps --store r.db --retry-failed       rerun only the failed cells
  genbench grid status beta --store results.db              done / failed / running / pending

Interrupt a run at any point (Ctrl-C, SIGTERM, even SIGKILL) and run the same command again: committed
cells are kept and never rerun, cells that were in flight rerun from scratch.
"""


def bundled_grids() -> dict[str, Path]:
    return {p.stem: p for p in sorted(GRIDS_DIR.glob("*.yaml"))}


def resolve_grid(text: str) -> Path:
    """A path to a grid file, or the name of a bundled study."""
    path = Path(text)
    if path.is_file():
        return path
    bundled = bundled_grids()
    name = path.stem if path.suffix in (".yaml", ".yml") and len(path.parts) == 1 else text
    if name in bundled:
        return bundled[name]
    from genlib.registry import suggest

    from ablations.spec import GridError
    raise GridError(f"grid '{text}' is neither a file nor a bundled study{suggest(name, list(bundled))} "
                    f"(bundled: {', '.join(bundled)})")


def check_runnable(plan) -> None:
    """What the command line checks of a plan before any cell runs, beyond the plan's own validation: the
    metrics fit each cell's data and n (the CLI scores with genlib.metrics), and the execution providers of
    timed cells exist on this machine. GridError names the grid file and what to change."""
    from ablations.plan import check_metrics
    from ablations.spec import GridError

    check_metrics(plan)
    wanted = {p for c in plan.timed_cells for p in c.eval_config["timing"].get("providers", ())}
    if "cuda" in wanted:
        from bench.runtime import cuda_provider_usable

        usable, reason = cuda_provider_usable()
        if not usable:
            where = f"grid '{plan.spec.path}'" if plan.spec.path else f"grid '{plan.study}'"
            raise GridError(f"{where}: study '{plan.study}': timing.providers lists 'cuda', which is not usable on "
                            f"this machine ({reason}); its {len(plan.timed_cells)} timed cells would fail: use "
                            "providers: [cpu] here, or run the grid on a CUDA machine")


def _plans(args, share: bool = True):
    from ablations.plan import plan_grid
    from ablations.spec import load_grid
    overrides = _overrides(getattr(args, "overrides", None) or [])
    plans = [plan_grid(apply_overrides(load_grid(resolve_grid(g), args.profile), overrides), share=share)
             for g in args.grids]
    for plan in plans:
        check_runnable(plan)
    for plan in plans:
        for warning in plan.warnings:
            print(f"genbench grid: warning: {warning}", file=sys.stderr)
    return plans


def _overrides(texts: list[str]) -> dict[str, Any]:
    """Parse `--set KEY=VALUE` items (the dotted grammar of `genbench train`) and check each key."""
    from genlib.config import ConfigError, parse_override

    from ablations.spec import GridError, check_key

    out: dict[str, Any] = {}
    for text in texts:
        try:
            key, value = parse_override(text)
        except ConfigError as exc:
            raise GridError(f"--set: {exc}") from None
        if key == "seed":
            raise GridError("--set seed: a study runs every seed of its profile; choose them with --profile "
                            "(or a copy of the grid with its own 'seeds' list)")
        if key == "data.name" and isinstance(value, str):  # a path is recorded absolute, in axes too
            from genlib.data import absolute_name
            value = absolute_name(value)
        out[check_key(key, "--set")] = value
    return out


def _flat(overrides: dict[str, Any]) -> dict[str, Any]:
    """{'data': {'name': 'x'}} -> {'data.name': 'x'}: dotted leaf keys, as --set keys are written."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if isinstance(value, dict) and value:
            out.update({f"{key}.{k}": v for k, v in _flat(value).items()})
        else:
            out[key] = value
    return out


def _related(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def apply_overrides(spec: GridSpec, overrides: dict[str, Any]) -> GridSpec:
    """`spec` with dotted `overrides` applied to every cell: after the base, the profile and each block's
    fixed settings, so they win over all three. A key the study varies (an axis, a zip group or a
    variant) is refused: fixing it would collapse the comparison the study exists for."""
    import dataclasses

    from genlib.config import ConfigError, set_dotted

    from ablations.spec import GridError, is_eval_key

    if not overrides:
        return spec
    base, eval_cfg, blocks = spec.base, spec.eval, list(spec.blocks)
    for key, value in overrides.items():
        for block in spec.blocks:
            varied = [*block.axes, *(k for group in block.zip for k in group),
                      *(k for options in block.variants.values() for o in options.values() for k in o)]
            clash = next((k for k in varied if _related(key, k)), None)
            if clash is not None:
                raise GridError(f"--set '{key}': study '{spec.study}' varies '{clash}' (an axis of its grid "
                                f"{spec.path}); a fixed value would collapse the comparison. Drop the --set, or "
                                f"copy the grid and edit its axes")
        # Blocks that fix the key to different values (or only some blocks fixing it) vary it across blocks.
        fixed = {b.name: {k: v for k, v in _flat(b.set).items() if _related(key, k)} for b in spec.blocks}
        if len(spec.blocks) > 1 and len({repr(sorted(f.items())) for f in fixed.values()}) > 1:
            shown = ", ".join(f"{name}: {', '.join(f'{k}={v}' for k, v in f.items()) or 'the base value'}"
                              for name, f in fixed.items())
            raise GridError(f"--set '{key}': study '{spec.study}' varies it across its blocks ({shown}; grid "
                            f"{spec.path}); a fixed value would collapse the comparison. Drop the --set, or copy "
                            "the grid and edit its blocks")
        try:
            if is_eval_key(key):
                eval_cfg = set_dotted({"eval": eval_cfg}, key, value)["eval"]
            else:
                base = set_dotted(base, key, value)
        except ConfigError as exc:
            raise GridError(f"--set: {exc}") from None
        # A block that fixes this key itself would override the base: the --set goes after its settings.
        blocks = [dataclasses.replace(b, set={**b.set, key: value}) if any(_related(key, k) for k in b.set) else b
                  for b in blocks]
    return dataclasses.replace(spec, base=base, eval=eval_cfg, blocks=tuple(blocks))


def _test_text(test) -> str:
    """One claim test in a line: `fd higher at method=ae_standard than at method=vae_diagonal (block=digits),
    margin 2`."""
    def show(v):
        return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)

    where = ", ".join(f"{k}={show(v)}" for k, v in test.where)
    by = test.interaction
    what = (f"{test.metric} {test.direction} at {test.axis}={show(test.treatment)} than at "
            f"{test.axis}={show(test.reference)}" if by is None else
            f"interaction: ({test.metric} at {test.axis}={show(test.treatment)} - at {test.axis}="
            f"{show(test.reference)}) {test.direction} at {by.axis}={show(by.treatment)} than at "
            f"{by.axis}={show(by.reference)}")
    return what + (f" ({where})" if where else "") + f", margin {test.margin:g}"


def _print_claims(spec, indent: str) -> None:
    for claim in spec.claims:
        print(f"{indent}claim {claim.id}: {claim.text}")
        print(f"{indent}  primary:   {_test_text(claim.primary)}")
        for test in claim.secondary:
            print(f"{indent}  secondary: {_test_text(test)}")


def _print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


def cmd_plan(args) -> int:
    plans = _plans(args, share=not args.no_share)
    out = []
    for plan in plans:
        summary = plan.summary()
        summary["grid"] = str(plan.spec.path)
        summary["claims"] = [c.to_dict() for c in plan.spec.claims]
        if args.store:
            from ablations.driver import plan_status
            from genlib.store import ResultsStore
            with ResultsStore(args.store, readonly=True) as store:
                summary["status"] = plan_status([plan], store)
        out.append(summary)
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    for plan, summary in zip(plans, out):
        spec = plan.spec
        print(f"study {spec.study}  (profile {spec.profile}; {spec.path})")
        _print_claims(spec, "  ")
        print(f"  training axes:  {', '.join(plan.train_axes) or '-'}")
        print(f"  inference axes: {', '.join(plan.eval_axes) or '-'}")
        print(f"  seeds: {', '.join(map(str, spec.seeds))}")
        shared = "one per evaluation (--no-share)" if args.no_share else "shared by inference-time axes"
        print(f"  trainings:   {summary['trainings']:5d}   ({shared})")
        print(f"  evaluations: {summary['evaluations']:5d}" + (f"   ({summary['timed']} timed: export, parity, latency)"
                                                             if summary.get("timed") else ""))
        print(f"  floors:      {summary['floors']:5d}   (data-versus-data reference rows)")
        print(f"  cells:       {summary['cells']:5d}")
        if "status" in summary:
            for row in summary["status"]:
                print(f"  {row['kind']:6s} done {row['done']}, failed {row['failed']}, running {row['running']}, "
                      f"pending {row['pending']}")
    if len(plans) > 1:
        print(f"total: {sum(s['trainings'] for s in out)} trainings, {sum(s['evaluations'] for s in out)} "
              f"evaluations, {sum(s['cells'] for s in out)} cells")
    return 0


def cmd_run(args) -> int:
    import importlib.util

    from ablations.driver import Terminated, run_plans
    from ablations.spec import GridError

    if args.executor == "ray" and importlib.util.find_spec("ray") is None:  # before the store is created
        raise GridError("--executor ray needs Ray, which is not installed: pip install 'genbench[ray]', or use "
                        "--executor local")
    plans = _plans(args, share=not args.no_share)
    options = {"address": args.ray_address} if args.ray_address else {}
    try:
        summary = run_plans(plans, args.store, executor=args.executor, workers=args.workers,
                            retry_failed=args.retry_failed, max_failures=args.max_failures, threads=args.threads,
                            progress=not args.no_progress, executor_options=options)
    except Terminated:
        print("genbench grid: terminated; run the same command again to resume", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("genbench grid: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    print(f"{', '.join(summary.studies)}: {summary.done} cells done and {summary.failed} failed in this run "
          f"({summary.already_done} were already done, {summary.skipped_failed} failed earlier and skipped, "
          f"{summary.not_run} not run because their training failed) in {summary.wall_s:.1f} s; store {args.store}")
    if summary.stopped_early:
        print(f"stopped early after {summary.failed} failures (--max-failures)", file=sys.stderr)
    if summary.failed or summary.skipped_failed or summary.not_run:
        print("see the failures with `genbench grid status ... --failed`; rerun them with --retry-failed",
              file=sys.stderr)
    return 0 if summary.complete else 1


def cmd_status(args) -> int:
    from ablations.driver import failed_cells, plan_status, store_status
    from genlib.store import ResultsStore
    with ResultsStore(args.store, readonly=True) as store:
        if args.grids:
            plans = _plans(args)
            rows = plan_status(plans, store)
            failures = failed_cells(plans, store) if args.failed else []
        else:
            rows = store_status(store)
            failures = []
            if args.failed:
                runs = store.read_table("runs")
                for _, r in runs[runs["status"] == "failed"].iterrows():
                    lines = [ln for ln in (r["error"] or "").strip().splitlines() if ln.strip()]
                    failures.append({"study": r["study"], "name": r["name"], "run_key": r["run_key"],
                                     "error": lines[-1].strip() if lines else ""})
    if args.json:
        print(json.dumps({"status": rows, "failed": failures}, indent=2, default=str))
        return 0
    if not rows:
        print(f"no grid cells in '{args.store}' yet")
        return 0
    _print_table(rows, ["study", "profile", "kind", "done", "failed", "running", "pending", "total"])
    if any(r["running"] for r in rows):
        print("(running: in flight now, or left by a run that was killed; the next run reruns them)")
    for r in rows:
        if r.get("configs", 1) > 1:
            print(f"{r['study']} ({r['kind']}): {r['configs']} configurations share a cell's settings, differing in "
                  f"{r['differs'] or 'their stored configuration'}; reports show them as separate rows")
    for f in failures:
        print(f"failed {f['run_key']} {f['name']}: {f['error']}")
    return 0


def cmd_list(args) -> int:
    from ablations.spec import load_grid
    for name, path in bundled_grids().items():
        spec = load_grid(path, None)
        print(f"{name}  (profiles: {', '.join(spec.profiles)}; {path})")
        _print_claims(spec, "  ")
    return 0


def add_parser(subparsers) -> None:
    from genlib.cli import positive_int

    parser = subparsers.add_parser(
        "grid", help="plan, run, resume and inspect ablation grids",
        description="Ablation grids: a YAML file (or a bundled study name) with a base run config, axes and "
                    "profiles. Training-time axes make checkpoints; inference-time axes (eval.*) fan out from a "
                    "checkpoint without retraining. Results go to a SQLite results store; run directories to "
                    "<store stem>.artifacts/ beside it.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="grid_command", metavar="ACTION", required=True)

    def common(p, store_required: bool, grids: str = "+", json_output: bool = True) -> None:
        p.add_argument("grids", nargs=grids, metavar="GRID", help="grid YAML file or bundled study name")
        p.add_argument("--profile", default=None,
                       help="profile defined in the grid file (default: quick when defined)")
        p.add_argument("--store", required=store_required, metavar="DB", help="results store (SQLite file)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value in every cell (repeatable; the dotted grammar of "
                            "`genbench train`), e.g. --set data.name=idx:DIR or --set eval.n=200")
        if json_output:
            p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("plan", help="count trainings and evaluations before anything runs",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    common(p, store_required=False)
    p.add_argument("--no-share", action="store_true", help="count one training per evaluation (the naive plan)")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("run", help="run (or resume) grids; the store records every cell exactly once",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    common(p, store_required=True, json_output=False)
    p.add_argument("--executor", default="local", help="local (process pool), ray, or serial (default: local)")
    p.add_argument("--workers", type=positive_int, default=None, help="cells in parallel (default: the number of cores)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch threads per cell (default: cores / workers); keep it fixed across resumes")
    p.add_argument("--retry-failed", action="store_true", help="rerun cells recorded as failed")
    p.add_argument("--max-failures", type=int, default=None, metavar="N", help="stop once N cells failed")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else local)")
    p.add_argument("--no-share", action="store_true",
                   help="train once per evaluation instead of sharing checkpoints (a benchmark baseline)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="done / failed / running / pending per study",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    common(p, store_required=True, grids="*")
    p.add_argument("--failed", action="store_true", help="list failed cells with their error")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("list", help="bundled studies, their claims and profiles")
    p.set_defaults(func=cmd_list)
