"""The bundled studies' profiles: every study plans at quick, standard and full; `standard` keeps only what
the claims read and holds at least as many seeds as `quick`; the quick profile stays demo-sized; `claims
--profile standard` is accepted by the command line.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ablations.cli import bundled_grids
from ablations.plan import plan_grid
from ablations.spec import load_grid
from genlib import records
from genlib.cli import main
from reports.claims import study_claims
from reports.load import StoreData

STUDIES = ("beta", "warmup", "refinement", "steps", "baselines", "feedback")
PROFILES = ("quick", "standard", "full")
# The demo's studies must fit about 5.5 minutes on 2 cores (the demo's 8 minutes less timing and the report);
# per-cell costs measured on the quick profile put that at about this many cells and training steps.
# feedback adds 28 cells: 24 evaluations (60 s with 2 workers, measured on a shared 2-core machine at load 3.6)
# and 4 trainings that are the steps study's own (the same run keys, done once) and the oracle's (no steps);
# steps adds 36: DPM-Solver++(2M) and Heun at S in {5, 20, 50} (12 of them timed) and the timed DDIM cells at
# fp16, int8_dynamic and int8_static (18). feedback's real errors add 8 evaluations (moons, S = T, the int8
# denoiser and the step-500 weights, 2 samplers, 2 seeds; the weights are the shared trainings' own).
QUICK_MAX_CELLS = 353
QUICK_MAX_TRAIN_STEPS = 130_000


def _plan(study: str, profile: str):
    return plan_grid(load_grid(bundled_grids()[study], profile))


def test_every_study_is_bundled():
    assert set(STUDIES) <= set(bundled_grids())


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("study", STUDIES)
def test_every_bundled_study_plans_at_every_profile(study, profile):
    plan = _plan(study, profile)
    assert plan.spec.profile == profile
    assert plan.train_cells and plan.eval_cells
    assert not plan.warnings, plan.warnings
    # each claim's primary test is decidable: parse-time checks found cells on both sides, and they are planned
    for claim in plan.spec.claims:
        axis = claim.primary.axis
        values = {repr(c.axes.get(axis)) for c in plan.eval_cells}
        assert repr(claim.primary.treatment) in values and repr(claim.primary.reference) in values, claim.id


@pytest.mark.parametrize("study", STUDIES)
def test_standard_has_at_least_the_quick_seeds_and_every_claim(study):
    quick, standard = _plan(study, "quick"), _plan(study, "standard")
    assert len(standard.spec.seeds) >= len(quick.spec.seeds)
    assert [c.id for c in standard.spec.claims] == [c.id for c in quick.spec.claims]


@pytest.mark.parametrize("study", ["refinement", "steps"])
def test_standard_keeps_per_seed_only_a_part_of_full(study):
    # standard buys seeds with the cells no claim reads: fewer evaluations per seed than the paper-sized grid
    standard, full = _plan(study, "standard"), _plan(study, "full")
    per_seed = {p.spec.profile: len(p.eval_cells) / len(p.spec.seeds) for p in (standard, full)}
    assert per_seed["standard"] < per_seed["full"] / 2, per_seed


def test_quick_profile_stays_demo_sized():
    plans = [_plan(s, "quick") for s in STUDIES]
    cells = sum(len(p.cells) for p in plans)
    trained = {c.key: c.config["train"]["steps"] for p in plans for c in p.train_cells
               if c.config["model"]["family"] != "oracle"}  # a training two studies share runs once
    steps = sum(trained.values())
    assert cells <= QUICK_MAX_CELLS, f"quick profile has {cells} cells (budget {QUICK_MAX_CELLS})"
    assert steps <= QUICK_MAX_TRAIN_STEPS, f"quick profile trains {steps} steps (budget {QUICK_MAX_TRAIN_STEPS})"


@pytest.mark.parametrize("command", ["claims", "demo"])
def test_standard_profile_is_accepted_on_the_command_line(command, tmp_path, capsys):
    # an unknown study is refused after argument parsing, so nothing runs: the profile itself was accepted
    argv = [command, "--profile", "standard", "--store", str(tmp_path / "r.db"), "--studies", "beta,nope"]
    argv += ["--out", str(tmp_path / "out")]
    if command == "demo":
        argv.remove("--store")
        argv.remove(str(tmp_path / "r.db"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown studies nope" in err and "invalid choice" not in err


def test_a_misspelt_profile_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["claims", "--profile", "standrd", "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert "invalid choice: 'standrd'" in capsys.readouterr().err


def _planned_store(plan) -> StoreData:
    """What a run of `plan` would store, every metric its claims read drawn at random per cell, as a report
    reads it: the study row (its claims) and one done evaluation row per planned cell, with the cell's own
    record config and config key."""
    rng = np.random.default_rng(0)
    metrics = {t.metric for c in plan.spec.claims for t in (c.primary, *c.secondary)}
    study = {"run_key": "study", "kind": "study", "study": plan.spec.study, "status": "done",
             "config": plan.spec.record_config(), "seed": None}
    runs, rows = [study], []
    for cell in plan.eval_cells:
        config = cell.record_config()
        run = {"run_key": cell.key, "kind": "eval", "study": plan.spec.study, "status": "done", "config": config,
               "seed": cell.seed, "config_key": records.config_key("eval", config), "axes": records.axes(config),
               "name": cell.label, "parent_key": cell.parent}
        runs.append(run)
        rows += [{**run, "metric": m, "split": "", "value": float(rng.normal()), "unit": "", "extra": {},
                  "higher_is_better": False} for m in sorted(metrics)]
    return StoreData(path=None, runs=pd.DataFrame(runs), metrics=pd.DataFrame(rows))


@pytest.mark.parametrize("profile", ["quick", "standard"])
@pytest.mark.parametrize("study", STUDIES)
def test_every_claim_test_reads_one_configuration_per_side(study, profile):
    """Each claim test the profile plans is decidable from its cells: each side holds one configuration (its
    seeds) and the sides differ only in the test's axis. A new axis in a profile (the quick profile's
    eval.precision) that the tests' `where` does not fix would leave them undecided ('never pooled')."""
    data = _planned_store(_plan(study, profile))
    for claim in study_claims(data):
        for test in (claim.primary, *claim.secondary):
            got = test.measure(data)
            if got.why.startswith("no stored cells") and test is not claim.primary:
                continue  # a secondary test the profile does not plan (standard keeps what the primaries read)
            assert got.difference is not None, f"claim {claim.id}: {test.describe()}: {got.why}"
