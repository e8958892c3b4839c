"""The `feedback` study (claims 11 and 7c): it plans at every profile, samples the steps study's checkpoints (the
same training run keys, so a store holding both trains once), its interaction tests are read and checked when the
grid file is read, and a wrong interaction is refused naming the key."""
from __future__ import annotations

import copy

import pytest
import yaml

from ablations import GridError, load_grid, parse_grid, plan_grid
from ablations.cli import bundled_grids


def _plan(study: str, profile: str):
    return plan_grid(load_grid(bundled_grids()[study], profile))


@pytest.mark.parametrize("profile", ["quick", "standard", "full"])
def test_feedback_plans_and_reads_its_interaction_tests(profile):
    plan = _plan("feedback", profile)
    claims = {c.id: c for c in plan.spec.claims}
    assert set(claims) == {"11", "7c"}
    primary = claims["11"].primary
    assert primary.interaction is not None and primary.interaction.axis == "sampler"
    assert (primary.axis, primary.treatment, primary.reference) == ("eval.perturb", "scale:0.1", "none")
    assert dict(primary.where) == {"block": "moons", "eval.steps": None}
    assert any(c.axes.get("block") == "oracle" for c in plan.eval_cells)  # the exact denoiser as control
    perturbs = {c.eval_config.get("perturb", "none") for c in plan.eval_cells}
    assert {"none", "scale:0.1"} <= perturbs


@pytest.mark.parametrize("profile", ["quick", "standard"])
def test_feedback_samples_the_steps_studys_checkpoints(profile):
    feedback, steps = _plan("feedback", profile), _plan("steps", profile)
    moons = {t.key for t in feedback.train_cells if t.config["data"]["name"] == "moons"}
    assert moons and moons <= {t.key for t in steps.train_cells}


def test_a_wrong_interaction_is_refused_by_key():
    data = yaml.safe_load(open(bundled_grids()["feedback"]).read())
    bad = copy.deepcopy(data)
    bad["claims"][0]["primary"]["interaction"]["axis"] = "samplr"
    with pytest.raises(GridError, match=r"claims\[0\]\.primary\.interaction\.axis: 'samplr' .*did you mean 'sampler'"):
        parse_grid(bad, profile="quick", path=bundled_grids()["feedback"])
    bad = copy.deepcopy(data)
    bad["claims"][0]["primary"]["interaction"]["reference"] = "ddpm_small"
    with pytest.raises(GridError, match=r"interaction\.reference: ddpm_small is not a value of axis 'sampler'"):
        parse_grid(bad, profile="quick", path=bundled_grids()["feedback"])
    bad = copy.deepcopy(data)
    del bad["claims"][0]["primary"]["interaction"]["treatment"]
    with pytest.raises(GridError, match=r"interaction: missing required key 'treatment'"):
        parse_grid(bad, profile="quick", path=bundled_grids()["feedback"])
