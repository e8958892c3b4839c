"""`genbench report`: tables, plots, sample grids and the claims verdicts of a results store, in four formats.

Registered as a `genbench.commands` entry point. It only reads the store; `genbench grid run`,
`genbench bench` or `genbench claims` fill it. Errors (no such store, empty store, unknown study,
newer schema) are ReportError / StoreError, which `genlib.cli.main` prints as one line.
"""
from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """examples:
  genbench report --store results.db --out report/                 Markdown, HTML, CSV and LaTeX
  genbench report --store results.db --out report/ --format html   one self-contained HTML file
  genbench report --store results.db --out report/ --study beta,warmup --format md,tex
  genbench report --store results.db --out report/ --claims-only   the ten claims and their evidence

What you get in --out:
  report.md + plots/*.png + samples/<study>/*.png   paste into a README or a paper draft
  report.html      everything in one file (images embedded): open it in a browser or mail it
  csv/<table>.csv  each table with mean, ci_low, ci_high, n and best per metric, and claims.csv
  tables.tex       booktabs tables (\\usepackage{booktabs}); best values bold, the floor after a rule

Every metric cell is mean +- 95% Student-t interval over seeds; arrows come from the direction stored
with each metric (up: higher is better, down: lower is better, ->v: closest to v); the floor row scores
data against data. A claim is supported when the 95% interval of the paired (by seed) difference
excludes 0 on the expected side, contradicted when it excludes 0 on the other side, else inconclusive.
"""


def _csv_list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got '{text}'")
    return items


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report", help="quality, speed and Pareto tables, plots, sample grids and claim verdicts from a store",
        description="Build the report of a results store: per-study quality tables (mean +- 95% CI over seeds, "
                    "best value marked, data-vs-data floor), the speed table with parity status, the "
                    "quality-vs-latency Pareto table, plots, sample grids and the verdict on each claim. Reads "
                    "the store only; nothing is trained or timed.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", required=True, type=Path, metavar="DB", help="results store (SQLite file)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="directory to write the report into")
    p.add_argument("--format", dest="formats", type=_csv_list, default=None, metavar="LIST",
                   help="comma-separated formats: md, html, csv, tex (default: all; with --claims-only: md,html,csv)")
    p.add_argument("--study", dest="studies", type=_csv_list, default=None, metavar="LIST",
                   help="only these studies, e.g. beta,warmup (default: every study in the store)")
    p.add_argument("--no-claims", action="store_true", help="leave the claims section out of the report")
    p.add_argument("--claims-only", action="store_true",
                   help="write only the claims report (claims.md / claims.html / claims.csv) with its evidence")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from reports.build import CLAIMS_FORMATS, FORMATS, build_claims, build_report
    from reports.load import ReportError

    if args.claims_only and (args.studies or args.no_claims):
        raise ReportError("--claims-only reads the studies its claims need; drop --study / --no-claims")
    _check_out(args.out)
    if args.claims_only:
        written = build_claims(args.store, args.out, args.formats or CLAIMS_FORMATS)
    else:
        written = build_report(args.store, args.out, args.formats or FORMATS, args.studies,
                               claims=not args.no_claims)
    for fmt, path in written.items():
        print(f"{fmt:6s} {path}")
    main = written.get("html") or written.get("md")
    if main is not None:
        print(f"open {main}")
    return 0


def _check_out(out: Path) -> None:
    """Refuse an --out the report cannot be written into before reading the store: an existing file, a
    parent that is a file, or a folder that refuses new files."""
    import tempfile

    from reports.load import ReportError

    if out.exists() and not out.is_dir():
        raise ReportError(f"--out '{out}' is an existing file; expected a directory for the report")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise ReportError(f"--out '{out}' is not writable: {exc.strerror or exc}"
                          + (f" ('{exc.filename}')" if exc.filename and str(exc.filename) != str(out) else "")) from None
