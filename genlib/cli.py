"""The `genbench` command line: core subcommands here, the rest discovered as plugins.

Subcommands of the other packages (grid, export, bench, report, claims, ...) register through the
`genbench.commands` entry-point group in pyproject.toml, so genlib never imports them. An entry point
names a function `add_parser(subparsers)` that adds its subparser and sets `func=handler(args) -> int`.
Building the parser imports nothing heavy (no torch, pandas, ...): each handler imports what it needs.
`--plugin MODULE`, accepted before or after any subcommand, imports a user's module that registers model
families, samplers, metrics, datasets or backends (see `genlib.plugins`).
"""
from __future__ import annotations

import argparse
import sys
import traceback
from importlib import metadata
from pathlib import Path

# Exit statuses (documented in `genbench --help`).
EXIT_OK = 0
EXIT_CELLS_FAILED = 1  # grid, claims, demo: some cells failed (recorded; rerun with --retry-failed)
EXIT_USAGE = 2  # a bad argument, config, path or file: fix it and run again (argparse uses 2 as well)
EXIT_CRASH = 70  # an unexpected error, a bug in genbench (EX_SOFTWARE of sysexits.h)
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_TERMINATED = 143  # SIGTERM (grid runs)

EPILOG = """examples:
  genbench datasets                                    list datasets
  genbench models                                      list model families and samplers
  genbench train vae_digits --out runs/vae --set loss.beta=4          (a shipped example)
  genbench sample --run runs/vae --n 64 --out vae.png
  genbench sample --run runs/ddpm --n 64 --sampler ddim --steps 50 --out ddim.png
  genbench grid run refinement --set data.name=idx:path/to/mnist --store mine.db   a study on your data

exit status:
  0    success
  1    some grid cells failed (grid run, claims, demo); they are recorded, rerun with --retry-failed
  2    usage or input error: a bad option, config key, path or file (one line on stderr says which)
  70   unexpected error (a bug in genbench): the traceback is printed; please report it
  130  interrupted (Ctrl-C); 143 terminated (SIGTERM). A grid run resumes when run again.

plugins:
  Installed packages that declare a "genbench.plugins" entry point load by themselves. A module of your own
  on the Python path loads with --plugin MODULE (before or after the subcommand, repeatable) or
  GENBENCH_PLUGINS=mod1,mod2; grid workers load the same ones. `genbench models` and `genbench datasets`
  name the plugin of each entry it added.
"""

PLUGIN_HELP = ("import MODULE (on the Python path) first: it registers model families, samplers, metrics, "
               "datasets or timing backends (repeatable; also GENBENCH_PLUGINS=mod1,mod2)")

# Expected-error classes by defining module. An exception can only be an instance of a class whose
# module is loaded, so the handler looks them up in sys.modules instead of importing torch or pandas.
_USER_ERRORS = (("genlib.checkpoint", "CheckpointError"), ("genlib.config", "ConfigError"),
                ("genlib.data", "DataError"), ("genlib.registry", "UnknownNameError"),
                ("genlib.store", "StoreError"), ("genlib.train", "TrainingDivergedError"),
                ("genlib.metrics.base", "MetricError"), ("genlib.metrics.features", "ExtractorError"),
                ("genlib.plugins", "PluginError"), ("genlib.perturb", "PerturbationNotRealised"))


class UserError(Exception):
    """An error the user can fix; printed as one line without a traceback (exit status 2)."""


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception classes printed as one line: UserError (and its subclasses in bench and ablations)
    and genlib's config, data, checkpoint, registry, store and metric errors that are loaded."""
    found = [getattr(sys.modules[mod], name, None) for mod, name in _USER_ERRORS if mod in sys.modules]
    return (UserError, *(cls for cls in found if isinstance(cls, type)))


def _plugins() -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group="genbench.commands"), key=lambda ep: ep.name)


def _version() -> str:
    try:
        return metadata.version("genbench")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genbench",
        description="Train, sample, ablate, export and time generative models (AE, VAE, naive denoiser "
                    "chain, DDPM/DDIM), and turn lecture claims into measured tables.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"genbench {_version()}")
    parser.add_argument("--plugin", dest="plugins_0", action="append", default=[], metavar="MODULE", help=PLUGIN_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for ep in _plugins():
        ep.load()(sub)
    _add_plugin_option(sub, depth=1)
    return parser


def _add_plugin_option(sub: argparse._SubParsersAction, depth: int) -> None:
    """`--plugin` on every subcommand (e.g. `genbench grid run ... --plugin mine`). Each nesting level has its
    own dest, because argparse copies a subparser's namespace over its parent's."""
    for parser in dict.fromkeys(sub.choices.values()):  # aliases map to the same parser
        parser.add_argument("--plugin", dest=f"plugins_{depth}", action="append", default=argparse.SUPPRESS,
                            metavar="MODULE", help=PLUGIN_HELP)
        for inner in parser._actions:
            if isinstance(inner, argparse._SubParsersAction):
                _add_plugin_option(inner, depth + 1)


def requested_plugins(args: argparse.Namespace) -> list[str]:
    """The --plugin modules given at any level of the command line, outermost first."""
    levels = sorted((int(key.rpartition("_")[2]), value) for key, value in vars(args).items()
                    if key.startswith("plugins_") and key.rpartition("_")[2].isdigit())
    return [module for _, modules in levels for module in modules]


def _leaf_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost subparser chosen by `args` (e.g. `grid run`), so errors show its usage."""
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, subs[0].dest, None) if subs else None
        if name not in (subs[0].choices if subs else {}):
            return parser
        parser = subs[0].choices[name]


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"cannot access '{exc.filename}': {exc.strerror or exc}"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        _leaf_parser(parser, args).error(f"unrecognized arguments: {' '.join(extras)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    command = _leaf_parser(parser, args).prog
    try:
        _start_plugins(requested_plugins(args))
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001: the one place that turns exceptions into exit statuses
        if isinstance(exc, user_errors()) or (isinstance(exc, OSError) and exc.filename is not None):
            print(f"{command}: error: {_one_line(exc)}", file=sys.stderr)
            return EXIT_USAGE
        traceback.print_exc()
        print(f"{command}: internal error ({type(exc).__name__}); this is a bug in genbench, please report it "
              f"with the traceback above", file=sys.stderr)
        return EXIT_CRASH


def _start_plugins(modules: list[str]) -> None:
    """Load requested plugins (--plugin, GENBENCH_PLUGINS) before the command does any work, so a broken one
    fails first; record them in GENBENCH_PLUGINS for the worker processes. Installed plugins, when nothing is
    requested, load on the first registry lookup (a command that looks nothing up does not import them)."""
    from genlib.plugins import env_modules, load_plugins, request_modules

    if modules or env_modules():
        request_modules(modules)
        load_plugins(modules)


def check_writable(path: str | Path, option: str, *, directory: bool) -> None:
    """Refuse, before any work, an output `path` that cannot be written: a file where a directory is
    needed (or the reverse), a missing parent that is a file, or a folder that refuses new files.
    Probes by creating (and removing) a temporary file, so it holds for read-only mounts and root too."""
    import tempfile

    path = Path(path)
    want = "a directory" if directory else "a file name"
    if path.exists():
        if directory != path.is_dir():
            raise UserError(f"{option} '{path}' is an existing {'directory' if path.is_dir() else 'file'}; "
                            f"expected {want}")
        folder = path if directory else path.parent
    else:
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise UserError(f"{option} '{path}' cannot be created: '{folder}' is a file, not a directory")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UserError(f"{option} '{path}' is not writable: cannot create files in '{folder}' "
                        f"({exc.strerror or exc})") from None


def check_store_writable(path: str | Path, option: str = "--store") -> None:
    """Open the results store at `path` and take its write lock once, before any work, so that an unwritable
    or foreign file fails now rather than after training or evaluating. An absent store is not created here
    (only its folder is probed), so a command refused later leaves no empty store behind."""
    import sqlite3

    from genlib.store import ResultsStore

    check_writable(path, option, directory=False)
    if not Path(path).exists():
        return  # its folder takes new files; the store is created by the first write, so a refused command leaves none
    try:
        with ResultsStore(path) as store, store.transaction():
            pass
    except sqlite3.Error as exc:
        raise UserError(f"{option} '{path}' cannot be written: {exc}") from None


def check_device(preference: str, option: str = "--device") -> str:
    """Refuse a torch device that this machine does not have (cuda without CUDA, tpu, a typo)."""
    from genlib.provenance import select_device

    try:
        select_device(preference)
    except RuntimeError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if reason.startswith("Expected one of"):  # torch's list of every device type it knows
            reason = "not a torch device type"
        raise UserError(f"{option} '{preference}' is not available here ({reason}); use auto, cpu or cuda") from None
    return preference


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


def positive_int(text: str) -> int:
    """Parse an integer >= 1 for argparse (worker and thread counts: 0 would silently mean 'the default')."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
