"""The dependency direction of STYLE.md: genlib <- bench <- ablations; reports reads only genlib.store (and
genlib.study_schema, the declaration of what a stored study definition holds).

Walks every module's imports with `ast` (static, so lazy imports inside functions count too).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "genlib": {"bench", "ablations", "reports"},
    "bench": {"ablations", "reports"},
    "reports": {"bench", "ablations"},
}
# The store, and the schema of the study definitions stored in it (claim tests, plot entries).
REPORTS_MAY_USE = ("genlib", "genlib.store", "genlib.study_schema")


def imported_modules(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_dependency_direction(package):
    bad = []
    for path in sorted((REPO / package).rglob("*.py")):
        for mod in imported_modules(path):
            top = mod.split(".")[0]
            if top in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(REPO)} imports {mod}")
            if package == "reports" and top == "genlib" and mod not in REPORTS_MAY_USE:
                bad.append(f"{path.relative_to(REPO)} imports {mod} (reports may use only "
                           f"{', '.join(REPORTS_MAY_USE[1:])})")
    assert not bad, "dependency direction violated:\n" + "\n".join(bad)


def test_walker_sees_lazy_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    import bench.cli\n    from ablations import grid\n")
    assert imported_modules(src) == {"bench.cli", "ablations"}
