"""Interaction tests in the claims engine: a contrast on one axis compared across two levels of another, decided on
synthetic stores with and without an interaction; the four cells are never pooled."""
from __future__ import annotations

import numpy as np

from genlib import records
from genlib.store import ResultsStore, RunRecord
from genlib.study_schema import ClaimTest, Interaction
from reports.claims import Claim, Comparison, evaluate_claims
from reports.load import open_store

SEEDS = range(8)


def _eval(store: ResultsStore, key: str, seed: int, perturb: str, sampler: str, value: float, **extra) -> None:
    eta = {"eta0": 0.0, "eta1": 1.0}[sampler]
    config = {"train": {"data": {"name": "moons"}, "seed": seed}, "profile": "standard",
              "eval": {"sampler": "ddim", "eta": eta, "perturb": perturb, **extra},
              "axes": {"eval.perturb": perturb, "sampler": sampler}}
    store.commit_run(RunRecord(run_key=key, kind="eval", study="feedback", seed=seed, config=config),
                     [records.metric("eval", "swd", value)])


def _store(tmp_path, effect: dict[tuple[str, str], float], noise: float = 0.002) -> object:
    """SWD per cell = a shared per-seed level + effect[(perturb, sampler)] + small noise."""
    rng = np.random.default_rng(0)
    path = tmp_path / "f.db"
    with ResultsStore(path) as store:
        for seed in SEEDS:
            level = rng.normal(0.1, 0.03)  # a large seed effect, shared by the four cells of a seed
            for (perturb, sampler), e in effect.items():
                _eval(store, f"{perturb}-{sampler}-{seed}", seed, perturb, sampler,
                      level + e + rng.normal(0, noise))
    return open_store(path)


TEST = Comparison(study="feedback", metric="swd", direction="higher", axis="eval.perturb", treatment="scale:0.2",
                  reference="none", margin=0.02,
                  interaction=Interaction(axis="sampler", treatment="eta0", reference="eta1"))


def _decide(data) -> tuple[str, object]:
    (res,) = evaluate_claims(data, [Claim(id="11", text="feedback", primary=TEST)])
    return res.verdict, res.tests[0]


def test_a_known_interaction_is_supported(tmp_path):
    # the perturbation costs 0.10 under eta 0 and 0.02 under eta 1: interaction 0.08, margin 0.02
    verdict, test = _decide(_store(tmp_path, {("none", "eta0"): 0.0, ("scale:0.2", "eta0"): 0.10,
                                              ("none", "eta1"): 0.01, ("scale:0.2", "eta1"): 0.03}))
    assert verdict == "supported"
    iv = test.difference.interval
    assert iv.low < 0.08 < iv.high and test.difference.paired and len(test.difference.seeds) == len(SEEDS)
    assert test.mde is not None and test.mde < 0.02 and "contrast at sampler=eta0" in test.measured
    assert "interaction:" in test.description


def test_equal_contrasts_give_no_effect(tmp_path):
    # the perturbation costs 0.05 under both samplers (main effects, no interaction)
    verdict, test = _decide(_store(tmp_path, {("none", "eta0"): 0.0, ("scale:0.2", "eta0"): 0.05,
                                              ("none", "eta1"): 0.02, ("scale:0.2", "eta1"): 0.07}))
    assert verdict == "no effect"
    assert abs(test.difference.interval.mean) < 0.005 and test.difference.interval.high < 0.02


def test_a_cell_holding_two_configurations_is_never_pooled(tmp_path):
    data_path = tmp_path / "p.db"
    with ResultsStore(data_path) as store:
        for seed in SEEDS:
            for (perturb, sampler) in (("none", "eta0"), ("scale:0.2", "eta0"), ("none", "eta1"), ("scale:0.2", "eta1")):
                _eval(store, f"{perturb}-{sampler}-{seed}", seed, perturb, sampler, 0.1)
            _eval(store, f"extra-{seed}", seed, "none", "eta1", 0.5, steps=5)  # a second configuration in one cell
    verdict, test = _decide(open_store(data_path))
    assert verdict == "inconclusive" and "never pooled" in test.measured


def test_the_interaction_round_trips_through_the_stored_layout():
    stored = TEST.to_dict()
    assert stored["interaction"] == {"axis": "sampler", "treatment": "eta0", "reference": "eta1"}
    assert ClaimTest.from_dict(stored).interaction == TEST.interaction
    assert "interaction" not in ClaimTest.from_dict({**stored, "interaction": None}).to_dict()
