"""The `genbench` command line: core subcommands here, the rest discovered as plugins.

Subcommands of the other packages (grid, export, bench, report, claims, ...) register through the
`genbench.commands` entry-point group in pyproject.toml, so genlib never imports them. An entry point
names a function `add_parser(subparsers)` that adds its subparser and sets `func=handler(args) -> int`.
Errors users can fix (bad config keys, bad paths, corrupt checkpoints) print one line and exit 2.
"""
from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path

EPILOG = """examples:
  genbench datasets                                    list datasets
  genbench models                                      list model families and samplers
  genbench train vae_digits --out runs/vae --set loss.beta=4          (a shipped example)
  genbench sample --run runs/vae --n 64 --out vae.png
  genbench sample --run runs/ddpm --n 64 --sampler ddim --steps 50 --out ddim.png
"""


class UserError(Exception):
    """An error the user can fix; printed without a traceback."""


def user_errors() -> tuple[type[BaseException], ...]:
    from genlib.checkpoint import CheckpointError
    from genlib.config import ConfigError
    from genlib.data import DataError
    from genlib.registry import UnknownNameError
    from genlib.store import StoreError
    from genlib.train import TrainingDivergedError
    return (UserError, ConfigError, DataError, CheckpointError, UnknownNameError, StoreError,
            TrainingDivergedError, FileNotFoundError)


def _plugins() -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group="genbench.commands"), key=lambda ep: ep.name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genbench",
        description="Train, sample, ablate, export and time generative models (AE, VAE, naive denoiser "
                    "chain, DDPM/DDIM), and turn lecture claims into measured tables.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for ep in _plugins():
        ep.load()(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except user_errors() as exc:
        print(f"genbench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"genbench {args.command}: interrupted", file=sys.stderr)
        return 130


def existing_path(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"'{text}' does not exist")
    return path


def str_list(text: str) -> list[str]:
    """Parse 'a, b,c' into ['a', 'b', 'c'] for argparse; an empty list is an error."""
    items = [v.strip() for v in text.split(",") if v.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got '{text}'")
    return items


def int_list(text: str) -> list[int]:
    """Parse '1,16,256' into [1, 16, 256] for argparse."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None


if __name__ == "__main__":
    sys.exit(main())
