"""`genbench claims` and `genbench demo`: the studies through the grid runner, then the reports.

`claims` runs the six lecture studies (resuming whatever the store already holds), stores the analytic
checks of claims 8-10 (9b included) and builds the claims report. `demo` is the main job on a fresh machine: the quick
profile of every study (the steps study times its own samplers: the Pareto table's rows), ONNX export and
timing of the default decoder and denoiser (the speed table), and the full report. Both are compositions of the other subcommands, so each step can also be run on its own.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from genlib.cli import UserError, check_writable, positive_int, str_list

STUDIES = ("beta", "warmup", "refinement", "steps", "baselines", "feedback")
FORMATTER = argparse.RawDescriptionHelpFormatter
# What the demo times besides the grid: network parts for the speed table, (example config, part, the baselines
# study's method on digits with that config's architecture). The networks timed are those the baselines study
# trained (seed 0), whose quality the report shows; without that study in the store, the example configs are
# trained here. Samplers are timed by the steps study itself (its `timing` section).
DEMO_TIMING = (("vae_digits", "decoder", "vae_diagonal"), ("ddpm_digits", "denoiser", "ddpm"))
TIMING_STUDY, TIMING_BLOCK, TIMING_SEED = "baselines", "digits", 0
INDICATIVE = ("the quick profile's claim verdicts are indicative (3 seeds, short training, trimmed grids); "
              "`genbench claims --profile standard` decides them (seeds chosen for power at each primary test's margin)")


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def _call(argv: list[str], allow: tuple[int, ...] = (0,)) -> int:
    from genlib.cli import EXIT_USAGE, main
    code = main(argv)
    if code not in allow and code != EXIT_USAGE:  # a crash (70) or an interruption keeps its own status
        print(f"genbench: `genbench {' '.join(argv)}` ended with exit status {code}", file=sys.stderr)
        raise SystemExit(code)
    if code not in allow:
        raise UserError(f"`genbench {' '.join(argv)}` failed with exit status {code}; fix it and run the same "
                        f"command again (finished work is kept)")
    return code


def _run_studies(store: Path, profile: str, workers: int | None, executor: str, studies: tuple[str, ...],
                 overrides: list[str] | tuple[str, ...] = ()) -> int:
    from ablations.analytic import record_analytic
    from genlib.store import ResultsStore

    # Plan every study first, here: a bad --set or grid is then this command's own one-line error, and nothing
    # (not even an empty store) is created before it.
    from ablations.cli import _overrides, apply_overrides, check_runnable, resolve_grid
    from ablations.plan import plan_grid
    from ablations.spec import load_grid

    sets = _overrides(list(overrides))
    for study in studies:
        check_runnable(plan_grid(apply_overrides(load_grid(resolve_grid(study), profile), sets)))
    argv = ["grid", "run", *studies, "--store", str(store), "--profile", profile, "--executor", executor]
    if workers:
        argv += ["--workers", str(workers)]
    for override in overrides:
        argv += ["--set", override]
    code = _call(argv, allow=(0, 1))  # 1: some cells failed; they are recorded and reported, the rest goes on
    with ResultsStore(store) as s:
        record_analytic(s)
    return code


def _study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", choices=["quick", "standard", "full"], default="quick",
                   help="quick: CI-sized (minutes, 3 seeds, short training; indicative verdicts); standard: only the "
                        "cells the claims read, with seeds chosen from pilot runs for 80%% power at each primary "
                        "test's margin (under 30 minutes on 2 CPU cores); full: paper-sized (3 seeds, long training)")
    p.add_argument("--workers", type=positive_int, help="parallel cells (default: one per core)")
    p.add_argument("--executor", choices=["local", "ray", "serial"], default="local", help="where cells run")
    p.add_argument("--studies", type=str_list, default=",".join(STUDIES), help=f"comma-separated subset of {', '.join(STUDIES)}")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value in every cell of the studies (repeatable), as `genbench grid run "
                        "--set`, e.g. --set data.name=idx:DIR")


def _studies(chosen: list[str]) -> tuple[str, ...]:
    unknown = [s for s in chosen if s not in STUDIES]
    if unknown:
        raise UserError(f"unknown studies {', '.join(unknown)}; choose from {', '.join(STUDIES)}")
    return tuple(chosen)


# -- claims ----------------------------------------------------------------------------------------
def add_claims_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "claims", help="run the lecture's studies and write the claims report", formatter_class=FORMATTER,
        description="Run the six studies (beta, warmup, refinement, steps, baselines, feedback) through the grid runner, "
                    "resuming whatever the store already holds, store the analytic checks (closed-form KL vs Monte "
                    "Carlo, KL asymmetry, alpha_bar_T of short schedules) and write the claims report: each claim "
                    "with its study, metric, expected direction, measured effect with a 95% interval and a verdict.",
        epilog="examples:\n  genbench claims --out claims/                       quick profile, results.db\n"
               "  genbench claims --profile full --store full.db --out claims_full/ --workers 2")
    p.add_argument("--store", type=Path, default=Path("results.db"), help="results store (default results.db)")
    p.add_argument("--out", type=Path, required=True, help="directory for claims.md / claims.html")
    _study_args(p)
    p.set_defaults(func=run_claims)


def run_claims(args: argparse.Namespace) -> int:
    from reports import build_claims

    check_writable(args.out, "--out", directory=True)
    code = _run_studies(args.store, args.profile, args.workers, args.executor, _studies(args.studies),
                        args.overrides)
    written = build_claims(args.store, args.out)
    print(f"claims report: {written.get('html') or written.get('md')}")
    if args.profile == "quick":
        print(INDICATIVE)
    return code


def study_checkpoint(store: Path, study: str, *, block: str, method: str, seed: int) -> Path | None:
    """The run directory of a finished training of `study` in `store` (the grid's artifact) whose axes are
    `block` and `method`, at `seed`; None when the store holds none (the study was not run)."""
    import json

    from genlib import records
    from genlib.store import ResultsStore

    if not store.exists():
        return None
    with ResultsStore(store, readonly=True) as s:
        runs = s.read_table("runs")
    rows = runs[(runs["study"] == study) & (runs["kind"] == "train") & (runs["status"] == "done")]
    for config_json, run_seed, artifact in zip(rows["config_json"], rows["seed"], rows["artifact_path"]):
        axes = records.axes(json.loads(config_json))
        if axes.get("block") != block or axes.get("method") != method or run_seed != seed or not artifact:
            continue
        path = Path(artifact) if Path(artifact).is_absolute() else store.parent / artifact
        if (path / "model.pt").is_file():
            return path
    return None


# -- demo ------------------------------------------------------------------------------------------
def add_demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="the main job: quick studies, ONNX timing, the full report", formatter_class=FORMATTER,
        description="On the bundled digits data and a 2-D toy: run the quick profile of every study, export the "
                    "digits VAE's decoder and DDPM's denoiser that the baselines study trained (the default VAE and "
                    "DDPM architectures; trained here when that study is left out) to ONNX (behind the parity gate), "
                    "time them against torch (the steps study exports, checks and times its own samplers), then write the full report (Markdown, HTML, CSV, "
                    "LaTeX) and the claims. Resumable: run it again after an interruption.")
    p.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output directory (default outputs/demo)")
    _study_args(p)
    p.add_argument("--skip-timing", action="store_true", help="leave out the ONNX export and timing of the decoder and "
                   "denoiser (the steps study still times its own samplers)")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from genlib.commands import example_configs
    from reports import build_report

    out: Path = args.out
    store = out / "results.db"
    started = time.perf_counter()
    t0 = _step(f"studies ({args.profile} profile) -> {store}")
    check_writable(out, "--out", directory=True)
    code = _run_studies(store, args.profile, args.workers, args.executor, _studies(args.studies), args.overrides)
    print(f"studies: {time.perf_counter() - t0:.0f} s")
    if not args.skip_timing:
        t0 = _step("ONNX export and timing of the default networks")
        for example, part, method in DEMO_TIMING:
            run_dir = study_checkpoint(store, TIMING_STUDY, block=TIMING_BLOCK, method=method, seed=TIMING_SEED)
            if run_dir is not None:
                print(f"{part}: the {TIMING_STUDY} study's {TIMING_BLOCK} {method} network (seed {TIMING_SEED}, "
                      f"run key {run_dir.name}; the architecture of the default {example})", flush=True)
            else:
                run_dir = out / "runs" / example
                if not (run_dir / "model.pt").exists():
                    _call(["train", str(example_configs()[example]), "--out", str(run_dir), "--store", str(store),
                           "--quiet"])
            _call(["bench", "--run", str(run_dir), "--parts", part, "--batch", "1,16,256", "--threads", "1",
                   "--backends", "torch,ort", "--out-dir", str(out / "onnx"), "--store", str(store), "--study", "demo",
                   "--target-s", "0.3", "--min-rounds", "20", "--no-progress"])
        print(f"timing: {time.perf_counter() - t0:.0f} s")
    t0 = _step("report")
    written = build_report(store, out / "report")
    print(f"report: {time.perf_counter() - t0:.0f} s")
    print(f"\ndone in {time.perf_counter() - started:.0f} s. outputs:")
    print(f"  results store:  {store}")
    for kind in ("md", "csv", "tex", "plots"):
        if kind in written:
            print(f"  {kind + ':':<15} {written[kind]}")
    print(f"  HTML report:    {written['html']}")
    if args.profile == "quick":
        print(INDICATIVE)
    if code:
        print("some grid cells failed; see `genbench grid status --store " + str(store) + " --failed`", file=sys.stderr)
    return code
