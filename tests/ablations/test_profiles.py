"""The bundled studies' profiles: every study plans at quick, standard and full; `standard` keeps only what
the claims read and holds at least as many seeds as `quick`; the quick profile stays demo-sized; `claims
--profile standard` is accepted by the command line.
"""
from __future__ import annotations

import pytest

from ablations.cli import bundled_grids
from ablations.plan import plan_grid
from ablations.spec import load_grid
from genlib.cli import main

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
