"""The regime table (perturbed - clean per setting, paired by seed), its heat map, and the forest plot of all
claims, on synthetic stores with known effects."""
from __future__ import annotations

import numpy as np
import pytest

from genlib import records
from genlib.store import ResultsStore, RunRecord
from genlib.study_schema import Interaction
from reports.claims import Claim, Comparison, evaluate_claims
from reports.load import open_store
from reports.plots import forest_rows, plot_forest, plot_regimes
from reports.regimes import degradation_frame, has_regimes, varied_settings

COST = {("eta0", 10): 0.30, ("eta1", 10): 0.05, ("eta0", None): 0.20, ("eta1", None): 0.02}


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "r.db"
    with ResultsStore(path) as store:
        for seed in range(6):
            level = rng.normal(0.1, 0.02)
            for (sampler, steps), cost in COST.items():
                for perturb in ("none", "scale:0.1"):
                    value = level + (cost if perturb != "none" else 0.0) + rng.normal(0, 0.003)
                    axes = {"block": "moons", "data.name": "moons", "eval.steps": steps, "sampler": sampler,
                            "eval.perturb": perturb}
                    config = {"train": {"data": {"name": "moons"}, "seed": seed}, "profile": "quick", "axes": axes,
                              "eval": {"steps": steps, "perturb": perturb, "eta": 0.0 if sampler == "eta0" else 1.0}}
                    store.commit_run(RunRecord(run_key=f"{sampler}-{steps}-{perturb}-{seed}", kind="eval",
                                               study="feedback", seed=seed, config=config),
                                     [records.metric("eval", "swd", value)])
    return open_store(path)


def test_degradation_per_regime_is_paired_by_seed(data):
    assert has_regimes(data, "feedback")
    frame = degradation_frame(data, "feedback", ["swd"])
    assert len(frame) == len(COST) and set(frame["perturb"]) == {"scale:0.1"}
    for row in frame.to_dict("records"):
        cost = COST[(row["sampler"], None if row["eval.steps"] != row["eval.steps"] else row["eval.steps"])]
        assert row["low"] < cost < row["high"] and row["high"] - row["low"] < 0.02  # pairing removes the seed level
        assert row["n"] == 6 and row["test"] == "paired t" and row["why"] == ""
    assert varied_settings(frame) == ["eval.steps", "sampler"]  # block and data.name do not vary
    heat = plot_regimes(frame, "feedback", varied_settings(frame), "swd")
    assert heat is not None and heat.png.startswith(b"\x89PNG")


def test_forest_rows_are_signed_effects_over_the_margin(data):
    claims = [Claim(id="11", text="t", primary=Comparison(
                  study="feedback", metric="swd", direction="higher", axis="eval.perturb", treatment="scale:0.1",
                  reference="none", margin=0.05, where=(("eval.steps", None),),
                  interaction=Interaction(axis="sampler", treatment="eta0", reference="eta1"))),
              Claim(id="x", text="t", primary=Comparison(
                  study="feedback", metric="swd", direction="lower", axis="eval.perturb", treatment="scale:0.1",
                  reference="none", margin=0.1, where=(("eval.steps", 10), ("sampler", "eta0"))))]
    results = evaluate_claims(data, claims)
    rows = {r["id"]: r for r in forest_rows(results)}
    assert rows["11"]["effect"] == pytest.approx(0.18 / 0.05, abs=0.3) and rows["11"]["verdict"] == "supported"
    # expected lower, measured +0.30: the signed effect is -3 margins, contradicted
    assert rows["x"]["effect"] == pytest.approx(-3.0, abs=0.2) and rows["x"]["verdict"] == "contradicted"
    assert rows["x"]["low"] < rows["x"]["effect"] < rows["x"]["high"]
    plot = plot_forest(results)
    assert plot is not None and plot.name == "claims-forest" and plot.png.startswith(b"\x89PNG")
    assert plot_forest([]) is None
