"""A timed grid with a precision axis and a quality gate, end to end: each precision's cell draws its samples
through its own graph, the Pareto table has a precision column and states the gate, and the Precision section
has one row per precision with fidelity (0 at fp32), speed-up (1 at fp32, measured below) and size."""
from __future__ import annotations

import pytest


GATE = {"metric": "swd", "max_increase": 0.02, "relative_to": "fp32"}


@pytest.fixture(scope="module")
def precision_store(tmp_path_factory, tiny_timed_grid):
    from ablations import parse_grid, plan_grid, run_plan

    grid = tiny_timed_grid("shipping", {"n": 128, "metrics": ["swd"], "sampler": "ddim", "steps": 4},
                           {"eval.precision": ["fp32", "int8_dynamic"]}, {"eval.steps": 4}, seeds=(0, 1), gate=GATE)
    db = tmp_path_factory.mktemp("precision") / "results.db"
    summary = run_plan(plan_grid(parse_grid(grid)), db, executor="serial", progress=False)
    assert summary.complete, summary.failures
    return db


def test_pareto_table_has_a_precision_column_and_states_the_gate(precision_store):
    from reports.load import open_store
    from reports.pareto import pareto_report

    [table], _ = pareto_report(open_store(precision_store))
    assert {row["precision"] for row in table.rows} == {"fp32", "int8_dynamic"}
    assert {row["gate"] for row in table.rows if row["precision"] == "fp32"} == {"-"}
    assert {row["gate"] for row in table.rows if row["precision"] != "fp32"} <= {"pass", "fail"}
    assert all(row["front"] == "" for row in table.rows if row["gate"] == "fail")  # off the front
    assert any("Quality gate: swd may worsen by at most 0.02" in n for n in table.notes)


def test_precision_section_rows_come_from_each_graph(precision_store):
    from reports.load import open_store
    from reports.precision import precision_report

    [table], [plot] = precision_report(open_store(precision_store))
    rows = {row["precision"]: row for row in table.rows}
    assert set(rows) == {"fp32", "int8_dynamic"}
    assert rows["fp32"]["fidelity"].mean == 0.0 and rows["fp32"]["speedup"].mean == 1.0
    assert rows["int8_dynamic"]["fidelity"].mean > 0 and rows["int8_dynamic"]["speedup"].n == 2  # one per seed
    assert rows["int8_dynamic"]["size"].value > 0 and len(rows["int8_dynamic"]["run_keys"].split()) == 2
    assert plot.png.startswith(b"\x89PNG")


def test_a_precision_below_fp32_on_an_untimed_cell_is_refused():
    from ablations import GridError, parse_grid, plan_grid

    grid = {"study": "x", "base": {"data": {"name": "moons"}, "model": {"family": "ddpm", "noise": {"T": 50}}},
            "eval": {"n": 128, "metrics": ["swd"], "precision": "int8_static"}, "seeds": [0], "floor": False}
    with pytest.raises(GridError, match="eval.precision 'int8_static' needs a timed cell"):
        plan_grid(parse_grid(grid))
    with pytest.raises(GridError, match="gate.max_increase: needs a number > 0"):
        parse_grid({**grid, "eval": {"n": 128}, "gate": {"metric": "swd", "max_increase": 0}})
