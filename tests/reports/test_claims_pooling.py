"""Never pool in claims and plots: a study rerun into the same store with only train.steps changed (300 -> 400)
leaves each claim side with two configurations; the test is not decided from pooled values and names
train.steps, and a plot's points keep the two configurations apart."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ablations"))

from grid_helpers import ToyEvaluation, tiny_grid  # noqa: E402

from ablations import parse_grid, plan_grid, run_plan  # noqa: E402
from genlib import records  # noqa: E402
from genlib.store import ResultsStore  # noqa: E402
from reports.claims import Comparison, evaluate_claims  # noqa: E402
from reports.load import open_store, setting_value  # noqa: E402
from reports.plots import points, study_plots  # noqa: E402
from reports.tables import grid_metrics  # noqa: E402

CLAIM = {"id": "1", "text": "Five sampling steps beat two.",
         "primary": {"metric": "swd", "direction": "lower", "axis": "eval.steps", "treatment": 5, "reference": 2,
                     "margin": 0.01}}


def _grid(steps: int) -> dict:
    grid = tiny_grid(axes={"eval.steps": [2, 5]}, seeds=[0, 1, 2], claims=[CLAIM])
    grid["base"]["train"]["steps"] = steps
    return grid


def _run(store: Path, steps: int) -> None:
    summary = run_plan(plan_grid(parse_grid(_grid(steps))), store, executor="serial", threads=1, progress=False,
                       evaluation=ToyEvaluation())
    assert summary.complete


@pytest.fixture(scope="module")
def rerun_store(tmp_path_factory) -> Path:
    """The tiny grid run at train.steps 300, then rerun with 400 into the same store (same study name)."""
    path = tmp_path_factory.mktemp("pool") / "r.db"
    _run(path, 300)
    _run(path, 400)
    return path


def test_one_run_decides_the_claim_from_its_own_seeds(tmp_path):
    path = tmp_path / "one.db"
    _run(path, 300)
    [result] = evaluate_claims(open_store(path))
    test = result.tests[0]
    assert test.difference is not None and test.difference.n == 3
    assert test.treatment.n == 3 and test.reference.n == 3


def test_a_rerun_with_other_train_steps_is_not_decided_and_names_the_key(rerun_store):
    data = open_store(rerun_store)
    [result] = evaluate_claims(data)
    [test] = result.tests
    assert result.verdict == "inconclusive" and test.verdict == "inconclusive"
    assert test.difference is None and test.treatment is None  # nothing computed from pooled values
    assert "2 configurations that differ in train.steps" in test.measured
    assert "never pooled" in test.measured
    # each configuration alone is one side per axis value, so narrowing `where` decides it again
    for steps in (300, 400):
        narrowed = Comparison.from_stored("tiny", {**CLAIM["primary"], "where": {"train.steps": steps}})
        got = narrowed.measure(data)
        assert got.difference is not None and got.difference.n == 3 and not got.undecided


def test_sides_that_differ_beyond_the_axis_are_not_compared(tmp_path):
    """Treatment stored only at train.steps 400, reference only at 300: one configuration per side, but a
    difference between them would be train.steps's as much as the axis's."""
    path = tmp_path / "r.db"
    train = {"name": "s", "data": {"name": "moons"}, "model": {"family": "ddpm"}, "train": {"steps": 0}}
    with ResultsStore(path) as store:
        store.commit_run(*records.build("study", run_key="study-s", study="s", device=None,
                                        config={"study": "s", "profile": "quick", "claims": [CLAIM]}))
        for seed in (0, 1, 2):
            for eval_steps, train_steps, swd in ((5, 400, 0.1), (2, 300, 0.3)):
                cfg = {"train": {**train, "seed": seed, "train": {"steps": train_steps}},
                       "eval": {"steps": eval_steps, "n": 64}, "axes": {"eval.steps": eval_steps}, "profile": "quick"}
                store.commit_run(*records.build(
                    "eval", run_key=f"e{eval_steps}-{seed}", config=cfg, study="s", seed=seed, device="cpu",
                    metrics=[records.metric("eval", "swd", swd + 0.01 * seed)]))
    [result] = evaluate_claims(open_store(path))
    assert result.verdict == "inconclusive" and result.tests[0].difference is None
    assert "differ in train.steps besides eval.steps" in result.tests[0].measured


def test_a_plot_keeps_the_two_configurations_apart(rerun_store):
    data = open_store(rerun_store)
    ev = grid_metrics(data, "tiny", "eval")
    ev = ev[[setting_value(c, "eval.steps") == 5 for c in ev["config"]]]
    frame = points(ev, "swd", lambda cfg: setting_value(cfg, "eval.steps"))
    assert len(frame) == 2 and list(frame["n"]) == [3, 3]
    assert sorted(frame["configuration"]) == ["train.steps=300", "train.steps=400"]
    for row in frame.itertuples(index=False):
        steps = int(row.configuration.split("=")[1])
        own = ev[np.array([setting_value(c, "train.steps") == steps for c in ev["config"]]) & (ev["metric"] == "swd")]
        assert row.mean == pytest.approx(float(np.mean(own["value"])))
    assert frame["mean"].iloc[0] != pytest.approx(frame["mean"].iloc[1])
    [plot] = study_plots(data, "tiny")  # the overview: one bar per setting and configuration
    assert plot.png.startswith(b"\x89PNG")
