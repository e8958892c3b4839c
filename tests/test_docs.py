"""Docs that cannot drift: the profile sizes the READMEs quote are the ones `genbench grid plan` prints.

Every markdown table row of README.md and ablations/README.md that names a bundled study (`beta`) and
has a column headed by one of its profiles (quick, standard, full) must give that profile's size as
"T / E" or "T trainings, E evaluations"; the planner's figures are read live, so a changed grid fails
here until its README line is updated.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ablations.cli import bundled_grids
from genlib.cli import main

REPO = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "ablations/README.md")
PROFILES = ("quick", "standard", "full")
SIZE = re.compile(r"^(\d+)\s*(?:trainings?)?\s*[/,]\s*(\d+)\s*(?:evaluations?)?$")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def quoted_sizes(path: Path) -> list[tuple[int, str, str, str]]:
    """(line number, study, profile, size text) for each profile column of each study row of each table."""
    out = []
    header: list[str] | None = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.lstrip().startswith("|"):
            header = None
            continue
        cells = _cells(line)
        if header is None:
            header = [c.lower() for c in cells]
            continue
        study = re.fullmatch(r"`([\w-]+)`", cells[0])
        if not study or study.group(1) not in bundled_grids():
            continue
        for name, cell in zip(header, cells):
            if name in PROFILES:
                out.append((number, study.group(1), name, cell))
    return out


def planned_sizes(capsys, profile: str) -> dict[str, tuple[int, int]]:
    """{study: (trainings, evaluations)} as `genbench grid plan --profile P --json` prints them."""
    capsys.readouterr()
    code = main(["grid", "plan", *bundled_grids(), "--profile", profile, "--json"])
    out = capsys.readouterr().out
    assert code == 0, f"genbench grid plan --profile {profile} failed:\n{out}"
    return {s["study"]: (s["trainings"], s["evaluations"]) for s in json.loads(out)}


def test_readme_profile_sizes_match_grid_plan(capsys):
    quoted = {doc: quoted_sizes(REPO / doc) for doc in DOCS}
    assert quoted["ablations/README.md"], "no study table with quick/full columns found in ablations/README.md"
    table_studies = {study for _, study, _, _ in quoted["ablations/README.md"]}
    assert table_studies == set(bundled_grids()), (
        f"the study table of ablations/README.md lists {sorted(table_studies)}, "
        f"the bundled studies are {sorted(bundled_grids())}")
    planned = {profile: planned_sizes(capsys, profile) for profile in PROFILES}
    diff = []
    for doc, rows in quoted.items():
        for number, study, profile, text in rows:
            want = planned[profile][study]
            match = SIZE.match(text)
            have = (int(match.group(1)), int(match.group(2))) if match else None
            if have != want:
                diff.append(f"{doc}:{number}: {study} {profile}: README says {text!r}, `genbench grid plan "
                            f"{study} --profile {profile}` prints {want[0]} trainings / {want[1]} evaluations "
                            f"(write '{want[0]} / {want[1]}')")
    assert not diff, "README profile sizes differ from the planner:\n" + "\n".join(diff)


@pytest.mark.parametrize("text, sizes", [("27 / 27", (27, 27)), ("18 trainings, 18 evaluations", (18, 18)),
                                         ("9/189", (9, 189)), ("1 training, 2 evaluations", (1, 2))])
def test_size_formats_the_readmes_use_are_parsed(text, sizes):
    match = SIZE.match(text)
    assert match and (int(match.group(1)), int(match.group(2))) == sizes


def test_quoted_sizes_are_found_with_their_line(tmp_path, capsys):
    doc = tmp_path / "README.md"
    doc.write_text("text\n\n| study | claim | quick | full |\n| --- | --- | --- | --- |\n"
                   "| `beta` | large beta collapses | 1 / 2 | 3 trainings, 4 evaluations |\n\nmore text\n")
    assert quoted_sizes(doc) == [(5, "beta", "quick", "1 / 2"), (5, "beta", "full", "3 trainings, 4 evaluations")]
