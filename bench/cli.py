"""`genbench export` and `genbench bench`: ONNX export behind a parity gate, and side-by-side timings.

Registered as plugins in pyproject.toml ([project.entry-points."genbench.commands"]); each adds its
subparser and a handler returning the exit code. User mistakes (a run that is not a run, a file that
is not ONNX, a graph with unexpected inputs, an unavailable provider) raise named errors that
genlib.cli prints as one line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from genlib.cli import UserError, check_store_writable, check_writable, existing_path, int_list, str_list
from genlib.precisions import PRECISIONS
from genlib.registry import suggest

# The parts of the shipped families (each family declares its own: genlib.models), spelled out for --help so
# that building the parser does not import torch and onnx (a test keeps the two equal).
EXPORT_PARTS = {"decoder": "z -> x", "encoder": "x -> mu, L (or z)", "denoiser": "x_t, t -> eps",
                "chain": "x_t, t -> x_{t-1}", "sampler": "the whole loop as one graph"}

EXPORT_EPILOG = """examples:
  genbench export --run runs/vae --part decoder --out vae_decoder.onnx
  genbench export --run runs/ddpm --part sampler --steps 50 --out ddim50.onnx     # whole DDIM loop, one graph
  genbench export --run runs/ddpm --part sampler --sampler ddpm --steps 100 --out ddpm100.onnx
  genbench export --run runs/vae --part sampler --passes 2 --out vae_refine2.onnx
  genbench export --run runs/ddpm --part denoiser --fp16 --out eps_fp16.onnx      # float16 for GPUs
  genbench export --run runs/ddpm --part sampler --sampler dpm_solver_2m --steps 10 --out dpm10.onnx
  genbench export --run runs/ddpm --part sampler --precision int8_static --out s_int8.onnx   # calibrated on
                                                                  # the step's inputs at each of its steps

Every export is checked against torch at two batch sizes (a sampler against the torch sampler on
the same noise, plus a sample metric). The verdict, exporter, opset, node count, file size and
export time go to FILE.onnx.json. An fp32 export over tolerance is written but marked invalid (exit 1); a
lower precision (fp16, int8_dynamic, int8_static) is measured, not gated: its error against torch, the
conversion and its calibration (source, size, method) are recorded in the sidecar.
Sampler graphs take the noise as inputs: x_T (B, ...) and, for stochastic samplers, noise (S, B, ...);
they return x0 (model space, as genlib's samplers) and x (data space).
"""

BENCH_EPILOG = """examples:
  genbench bench --run runs/ddpm                                   # denoiser + DDIM-50 sampler, all backends
  genbench bench --run runs/vae --batch 1,256 --threads 1 --store results.db
  genbench bench --run runs/ddpm --parts sampler --steps 50 --batch 1 --backends torch_loop,ort_step_loop,ort_graph
  genbench bench --onnx ddim50.onnx --providers cuda               # on a GPU machine: IO binding, device time only
  genbench bench --run runs/ddpm --parts sampler --precisions fp32,int8_dynamic,int8_static --batch 1,256

Backends (compared in one process, p50 latency with speed-ups over the torch baseline):
  parts:    torch (eager), torch_compile, ort (each provider)
  samplers: torch_loop (genlib sampler), ort_net_loop (genlib sampler calling an ONNX network per step),
            ort_step_loop (Python loop over the exported step graph), ort_graph (the whole-sampler graph),
            peer (the sampler in a peer library, e.g. diffusers' scheduler, on the same network; needs it installed)
Exports that fail parity on a provider are not timed there (unless --allow-invalid; then stored as failed).
"""


def _common_export_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampler graph (part 'sampler')")
    g.add_argument("--sampler", default="auto",
                   help="which loop to export, a registered sampler of the run's family (auto: ddim for ddpm runs, "
                        "else the family's own; list: genbench models)")
    g.add_argument("--steps", type=int, default=None, metavar="S", help="sampling steps for ddim/ddpm (default 50)")
    g.add_argument("--passes", type=int, default=0, metavar="K", help="VAE refinement passes (default 0)")
    g.add_argument("--eta", type=float, default=0.0, help="DDIM stochasticity (noise input when > 0)")
    g.add_argument("--variance", choices=["small", "large"], default="small", help="DDPM reverse variance")
    g.add_argument("--reencode", choices=["mean", "sample"], default="mean", help="VAE re-encoding (sample needs noise)")
    g.add_argument("--graph", choices=["auto", "unrolled", "loop"], default="auto",
                   help="loop: ONNX Loop, size constant in S; unrolled: faster (t-only work is constant-folded); "
                        "auto: unrolled up to 256 steps")
    q = p.add_argument_group("int8 (--precision int8_dynamic / int8_static)")
    q.add_argument("--calibration-method", choices=["minmax", "entropy", "percentile"], default="minmax",
                   help="int8_static: how activation ranges are set from the calibration data (default minmax)")
    q.add_argument("--calibration-size", type=int, default=64, metavar="N",
                   help="int8_static: calibration samples (a sampler: N trajectories, the step's inputs at each of "
                        "its own steps; a denoiser: N draws of q(x_t | x0) over all t; a decoder: N prior draws)")
    q.add_argument("--per-channel", action="store_true", help="int8: one weight scale per output channel")
    q.add_argument("--reduce-range", action="store_true",
                   help="int8: 7-bit weights (for CPUs without VNNI, where 8-bit products can saturate)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 18)")
    p.add_argument("--parity-batches", type=int_list, default=[1, 64], metavar="B1,B2",
                   help="batch sizes of the parity check (default 1,64)")
    p.add_argument("--atol", type=float, default=None, help="parity tolerance override (absolute)")
    p.add_argument("--rtol", type=float, default=None, help="parity tolerance override (relative to max |torch|)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu",
                   help="device for the torch side (export and reference); default cpu")


PRECISION_CHOICES = PRECISIONS


def _checked_precisions(names: list[str], flag: str) -> tuple[str, ...]:
    """Known precisions the installed ONNX Runtime can produce, refused in one line before any export."""
    from bench.precision import PrecisionError, check_available

    for name in names:
        if name not in PRECISION_CHOICES:
            raise UserError(f"{flag}: unknown precision '{name}'{suggest(name, list(PRECISION_CHOICES))} "
                            f"(expected one of: {', '.join(PRECISION_CHOICES)})")
        try:
            check_available(name)
        except PrecisionError as exc:
            raise UserError(f"{flag}: {exc}") from None
    if len(set(names)) != len(names):
        raise UserError(f"{flag}: repeated values in {','.join(names)}")
    return tuple(names)


def _precision(args: argparse.Namespace) -> str:
    if args.fp16 and args.precision not in (None, "fp16"):
        raise UserError(f"--fp16 contradicts --precision {args.precision}")
    return _checked_precisions([args.precision or ("fp16" if args.fp16 else "fp32")], "--precision")[0]


def _precisions(args: argparse.Namespace) -> tuple[str, ...]:
    if args.precisions and args.fp16:
        raise UserError("give --precisions or --fp16, not both")
    return _checked_precisions(list(args.precisions or (["fp32", "fp16"] if args.fp16 else ["fp32"])), "--precisions")


def _verdict(parity: dict) -> str:
    """'valid' / 'INVALID' for a gated (fp32) export; 'measured' for a lower precision (never gated)."""
    if parity.get("gated", True) is False:
        return "measured (not gated)"
    return "valid" if parity.get("valid") else "INVALID"


def _export_config(args: argparse.Namespace, part: str, precision: str):
    from genlib.models import SampleConfig

    from bench.parts import ExportConfig

    try:
        sample = SampleConfig(sampler=args.sampler, steps=args.steps, eta=args.eta, variance=args.variance,
                              passes=args.passes, reencode=args.reencode)
        return ExportConfig(part=part, sample=sample, graph=args.graph, precision=precision, opset=args.opset,
                            parity_batches=tuple(args.parity_batches), atol=args.atol, rtol=args.rtol,
                            calibration_method=args.calibration_method, calibration_size=args.calibration_size,
                            per_channel=args.per_channel, reduce_range=args.reduce_range)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _load_run(path: Path, device: str):
    from genlib.train import load_run

    try:
        return load_run(path, device)
    except RuntimeError as exc:  # select_device: cuda requested without CUDA
        if type(exc) is RuntimeError:
            raise UserError(str(exc)) from None
        raise


# -------------------------------------------------------------------------------------- export
def add_export_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export a trained run's decoder/encoder/denoiser/chain or whole sampler to ONNX",
        description="Export one part of a trained run to ONNX with the torch.export-based exporter, check it "
                    "against torch (parity gate) and record exporter, opset, node count, size and export time.",
        epilog=EXPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=existing_path, required=True, metavar="DIR", help="a training run directory")
    p.add_argument("--part", required=True, metavar="PART",
                   help="a part the run's family declares; shipped: "
                        + "; ".join(f"{n}: {what}" for n, what in EXPORT_PARTS.items()))
    p.add_argument("--out", type=Path, required=True, metavar="FILE.onnx", help="where to write the graph")
    p.add_argument("--precision", choices=PRECISION_CHOICES, default=None,
                   help="fp32 (default); fp16 (network in half, float32 inputs/outputs); int8_dynamic (int8 weights, "
                        "activations quantized at run time); int8_static (QDQ int8 weights and activations, "
                        "calibrated on the sampler's own steps). Lower precisions are measured against torch, "
                        "never refused for their error")
    p.add_argument("--fp16", action="store_true", help="shorthand for --precision fp16")
    p.add_argument("--store", type=Path, default=None, metavar="DB", help="also record the export in this results store")
    _common_export_args(p)
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from bench.export import export_part
    from bench.parts import ExportError

    if args.out.suffix != ".onnx":
        raise ExportError(f"--out '{args.out}' must end in .onnx")
    check_writable(args.out, "--out", directory=False)
    if args.store is not None:
        check_store_writable(args.store)
    run = _load_run(args.run, args.device)
    cfg = _export_config(args, args.part, _precision(args))
    result = export_part(run, cfg, args.out)
    info = result.info
    print(f"wrote {result.path} ({info['file_size_bytes'] / 1024:.1f} KiB, {info['node_count']} nodes, opset "
          f"{info['opset']}, exported in {info['export_time_s']:.2f} s by {info['exporter']})")
    if result.step_model is not None:
        print(f"wrote {result.path.with_name(result.path.stem + '.step.onnx')} (the single step, for per-step loops)")
    p = result.parity
    batches = ', '.join(str(b) for b in cfg.parity_batches)
    if p.gated:
        status = "valid" if p.valid else "INVALID"
        print(f"parity {status} on {p.provider}: max abs error {p.max_abs_err:.3g} (tolerance {p.tolerance:.3g}) at "
              f"batches {batches}")
    else:
        print(f"{cfg.precision} measured against torch fp32 on {p.provider} (not gated): max abs error "
              f"{p.max_abs_err:.3g} at batches {batches}")
        cal = (info.get("precision_facts") or {}).get("calibration")
        if cal:
            print(f"calibration: {cal['size']} samples, {cal['method']}, {cal['runs']} runs: {cal['source']}")
    if p.metric and p.metric.get("onnx") is not None:
        m = p.metric
        verdict = ('agree' if m['agree'] else 'DISAGREE') if p.gated else 'measured'
        print(f"sample metric {m['name']}: onnx {m['onnx']:.5g} vs torch {m['torch']:.5g} "
              f"({verdict}, tolerance {m['tolerance']:.2g})")
    if args.store is not None:
        from genlib.store import ResultsStore

        from bench.results import store_export

        with ResultsStore(args.store) as store:
            key = store_export(store, info)
        print(f"recorded export {key} in {args.store}")
    if not p.valid:
        print(f"genbench export: the export is marked invalid: {p.reason}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------------------- bench
def add_bench_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="time torch, torch.compile and ONNX Runtime (CPU/CUDA) side by side, incl. whole samplers",
        description="Time a run's exported parts and samplers on every backend in one process (warm-up, enough "
                    "rounds for stable p50/p90/p99, batch and thread sweeps) and record provider, versions and "
                    "git commit with every result.",
        epilog=BENCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=existing_path, metavar="DIR", help="a training run directory (exports as needed)")
    src.add_argument("--onnx", type=Path, metavar="FILE", help="an exported .onnx file (ONNX Runtime backends only)")
    p.add_argument("--batch", type=int_list, default=[1, 16, 256], metavar="1,16,256", help="batch sizes")
    p.add_argument("--threads", type=int_list, default=None, metavar="1,2",
                   help="thread counts (torch threads / ORT intra-op); default 1 and all cores")
    p.add_argument("--providers", type=str_list, default=None, metavar="cpu,cuda",
                   help="ONNX Runtime providers (default: every usable one; an explicit unusable one is an error)")
    p.add_argument("--backends", type=str_list, default=None, metavar="NAMES", help="subset of backends (see below)")
    p.add_argument("--parts", type=str_list, default=None, metavar="NAMES",
                   help="parts of the run to time (default: the family's own, e.g. vae decoder,encoder,sampler; "
                        "ddpm denoiser,sampler; denoiser_chain chain,sampler; ae decoder,encoder)")
    p.add_argument("--precisions", type=str_list, default=None, metavar="fp32,int8_static",
                   help=f"export and time each of these precisions (of: {', '.join(PRECISION_CHOICES)}); default fp32")
    p.add_argument("--fp16", action="store_true", help="shorthand for --precisions fp32,fp16")
    p.add_argument("--out-dir", type=Path, default=None, metavar="DIR",
                   help="where exports go (default RUN/onnx); matching exports are reused")
    p.add_argument("--store", type=Path, default=None, metavar="DB", help="record results in this results store")
    p.add_argument("--study", default=None, help="study name stored with the rows")
    p.add_argument("--csv", type=Path, default=None, metavar="FILE", help="also write every row as CSV")
    p.add_argument("--warmup", type=int, default=10, help="untimed rounds before timing")
    p.add_argument("--min-rounds", type=int, default=30, help="at least this many timed rounds")
    p.add_argument("--target-s", type=float, default=1.0, help="and at least this many seconds of timed rounds")
    p.add_argument("--allow-invalid", action="store_true", help="time exports that failed parity (stored as failed)")
    p.add_argument("--cuda-graph", action="store_true", help="CUDA provider: capture parts in CUDA graphs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _common_export_args(p)
    p.set_defaults(func=run_bench_command)


def run_bench_command(args: argparse.Namespace) -> int:
    from bench.runtime import resolve_providers
    from bench.suite import BenchConfig, rows_frame, run_benchmarks, speed_table, target_for_onnx, targets_for_run
    from bench.timing import TimingConfig

    try:
        cfg = BenchConfig(batches=tuple(args.batch), threads=tuple(args.threads or ()),
                          providers=tuple(args.providers) if args.providers else None,
                          backends=tuple(args.backends) if args.backends else None,
                          timing=TimingConfig(warmup_rounds=args.warmup, min_rounds=args.min_rounds,
                                              target_s=args.target_s),
                          allow_invalid=args.allow_invalid, cuda_graph=args.cuda_graph)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    resolve_providers(list(cfg.providers) if cfg.providers else None)  # fail before any export
    precisions = _precisions(args)
    if args.out_dir is not None:
        check_writable(args.out_dir, "--out-dir", directory=True)
    if args.csv is not None:
        check_writable(args.csv, "--csv", directory=False)
    if args.store is not None:
        check_store_writable(args.store)
    if args.onnx is not None:
        targets = [target_for_onnx(args.onnx)]
    else:
        run = _load_run(args.run, args.device)
        base = _export_config(args, "decoder", "fp32")
        out_dir = args.out_dir or (Path(args.run) / "onnx")
        targets = targets_for_run(run, args.parts, base, out_dir, precisions=precisions)
        for t in targets:
            s = t.info.sidecar or {}
            par = s.get("parity") or {}
            print(f"{t.part}: {t.onnx_path.name} ({s.get('node_count')} nodes, export {s.get('export_time_s', 0):.2f} s) "
                  f"parity {_verdict(par)} (max abs err {par.get('max_abs_err', float('nan')):.3g})")
    rows = run_benchmarks(targets, cfg, progress=not args.no_progress)
    table = speed_table(rows)
    if not table.empty:
        import pandas as pd

        with pd.option_context("display.width", 200, "display.max_columns", 50, "display.float_format", "{:.3f}".format):
            print("p50 latency (ms) and speed-up (x) over the torch baseline:")
            print(table.to_string(index=False))
    for r in rows:
        if r.status != "ok":
            print(f"{r.status}: {r.part} {r.backend} {r.provider} b{r.batch} t{r.threads}: {r.reason}")
    if args.csv is not None:
        rows_frame(rows).to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    if args.store is not None:
        from genlib.store import ResultsStore

        from bench.results import store_bench_rows, store_export

        with ResultsStore(args.store) as store:
            for t in targets:
                if t.info.sidecar and t.info.sidecar.get("run"):
                    store_export(store, t.info.sidecar, study=args.study)
            n = store_bench_rows(store, rows, cfg, study=args.study)
        print(f"recorded {n} timing rows in {args.store}")
    return 0
