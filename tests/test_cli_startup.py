"""The `genbench` entry point: parsing imports nothing heavy, --version, subcommand usage on unknown options,
and the documented exit statuses (2 for a user error in one line, 70 with a traceback for a crash)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from genlib import cli

HEAVY = ("torch", "pandas", "scipy", "matplotlib", "onnx", "onnxruntime", "sklearn")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_building_the_parser_imports_nothing_heavy():
    # Every subcommand's parser is built (all entry points loaded), in a fresh interpreter.
    proc = _python("import sys, genlib.cli; parser = genlib.cli.build_parser(); "
                   "assert {'train', 'grid', 'eval', 'export', 'bench', 'report', 'claims', 'demo'} <= "
                   "set(parser._subparsers._group_actions[0].choices); "
                   f"print(sorted(m for m in sys.modules if m.split('.')[0] in {set(HEAVY)!r}))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_the_check_sees_a_heavy_import():
    # The probe above is falsifiable: the same expression reports torch once something imports it.
    proc = _python("import sys, genlib.cli; genlib.cli.build_parser(); import genlib.train; "
                   f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))")
    assert "torch" in proc.stdout, proc.stderr


@pytest.mark.parametrize("argv", [["--help"], ["grid", "run", "--help"], ["eval", "--help"], ["export", "--help"]])
def test_help_runs_without_heavy_imports(argv):
    proc = _python("import sys, genlib.cli\ntry:\n    genlib.cli.main(%r)\nexcept SystemExit:\n    pass\n"
                   "print('HEAVY', sorted({m.split('.')[0] for m in sys.modules} & %r))" % (argv, set(HEAVY)))
    assert proc.returncode == 0, proc.stderr
    assert "usage: genbench" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("genbench 0.")


def test_unknown_option_shows_the_subcommand_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["grid", "run", "refinement", "--store", "x.db", "--sett", "data.name=digits"])
    assert exc.value.code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("usage: genbench grid run ")
    assert "genbench grid run: error: unrecognized arguments: --sett data.name=digits" in err


def test_exit_statuses_are_documented_in_help():
    text = cli.build_parser().format_help()
    for code in (cli.EXIT_OK, cli.EXIT_CELLS_FAILED, cli.EXIT_USAGE, cli.EXIT_CRASH):
        assert f"\n  {code} " in text
    assert len({cli.EXIT_OK, cli.EXIT_CELLS_FAILED, cli.EXIT_USAGE, cli.EXIT_CRASH}) == 4


def _with_handler(monkeypatch, handler):
    """`genbench models` with its handler replaced: the exception path of main() without a heavy command."""
    build = cli.build_parser

    def patched():
        parser = build()
        parser._subparsers._group_actions[0].choices["models"].set_defaults(func=handler)
        return parser

    monkeypatch.setattr(cli, "build_parser", patched)


def test_a_crash_exits_70_with_its_traceback(monkeypatch, capsys):
    def crash(args):
        raise ZeroDivisionError("division by zero")

    _with_handler(monkeypatch, crash)
    assert cli.main(["models"]) == cli.EXIT_CRASH == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err and "bug in genbench" in err


@pytest.mark.parametrize("error,needle", [
    (cli.UserError("--out 'x' is not writable"), "genbench models: error: --out 'x' is not writable"),
    (PermissionError(13, "Permission denied", "/ro/file"), "genbench models: error: cannot access '/ro/file': "
                                                           "Permission denied"),
])
def test_expected_errors_are_one_line_with_exit_2(monkeypatch, capsys, error, needle):
    def fail(args):
        raise error

    _with_handler(monkeypatch, fail)
    assert cli.main(["models"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.strip() == needle


def test_export_part_names_match_the_registry():
    from bench.cli import EXPORT_PARTS
    from genlib.models import part_names

    assert sorted(EXPORT_PARTS) == sorted(part_names())
