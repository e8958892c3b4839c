"""The `feedback` study (claims 11 and 7c): it plans at every profile, trains the steps study's configs plus the
early weights it samples (train.save_at), its interaction tests are read and checked when the grid file is read, a
wrong interaction is refused naming the key, and a real perturbation nothing can realise is refused at planning."""
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
def test_feedback_samples_the_steps_studys_checkpoints_and_their_early_weights(profile):
    feedback, steps = _plan("feedback", profile), _plan("steps", profile)
    moons = [t for t in feedback.train_cells if t.config["data"]["name"] == "moons"]
    assert moons and all(list(t.config["train"]["save_at"]) == [500] for t in moons)
    assert {t.key for t in moons} <= {t.key for t in steps.train_cells}  # one training serves both studies
    perturbs = {c.eval_config.get("perturb") for c in feedback.eval_cells}
    assert {"precision:int8_dynamic", "step:500"} <= perturbs
    assert not any(c.axes.get("block") == "oracle" and c.eval_config.get("perturb") in ("step:500", "precision:int8_dynamic")
                   for c in feedback.eval_cells)


def _tiny_grid(perturb: str, **extra) -> dict:
    return {"study": "tiny", "base": {"model": {"family": "ddpm", "hidden": [8], "time_dim": 4, "noise": {"T": 50}},
                                      "data": {"name": "moons"}, "train": {"steps": 100, **extra.pop("train", {})}},
            "eval": {"n": 200, "metrics": ["swd"], "sampler": "ddim", "steps": 5},
            "axes": {"eval.perturb": ["none", perturb]}, "seeds": [0], **extra}


@pytest.mark.parametrize("perturb, extra, message", [
    ("step:50", {}, r"eval.perturb 'step:50' samples the weights saved at step 50, but train.save_at is \[\]; "
                    r"add 50 to train.save_at"),
    ("step:50", {"train": {"save_at": [20]}}, r"train.save_at is \[20\]"),
    ("precision:int8_dynamic", {"base": {"model": {"family": "oracle", "noise": {"T": 50}}, "data": {"name": "8gaussians"}}},
     r"'precision:int8_dynamic' is a trained network's error, but family 'oracle' has no trained weights"),
    ("precision:int8_dynamic", {"timing": {"where": {"eval.steps": 5}, "backends": ["ort_graph"], "batches": [2]}},
     r"is realised in the torch sampler, not in a timed cell's exported graph"),
])
def test_a_real_perturbation_nothing_realises_is_refused_when_planned(perturb, extra, message):
    grid = _tiny_grid(perturb, **{k: v for k, v in extra.items() if k != "base"})
    if "base" in extra:
        grid["base"] = {**grid["base"], **extra["base"]}
    with pytest.raises(GridError, match=message):
        plan_grid(parse_grid(grid, profile=None))
    ok = _tiny_grid(perturb, train={"save_at": [50]}) if perturb.startswith("step") else None
    if ok is not None:
        assert len(plan_grid(parse_grid(ok, profile=None)).eval_cells) == 2


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


def test_real_perturbations_run_in_a_grid_and_say_what_network_ran(tmp_path, monkeypatch):
    """A tiny grid samples one training clean, with its step-50 weights and with its int8 denoiser: three
    different SWDs from the same noise, and each perturbed row records what its network was."""
    import json

    from ablations import run_plan
    from genlib.store import ResultsStore

    monkeypatch.setenv("GENBENCH_NODE_CACHE", str(tmp_path / "node"))
    grid = _tiny_grid("step:50", train={"save_at": [50], "batch_size": 64})
    grid["axes"]["eval.perturb"] = ["none", "step:50", "precision:int8_dynamic"]
    plan = plan_grid(parse_grid(grid, profile=None))
    summary = run_plan(plan, tmp_path / "r.db", executor="serial", threads=1, progress=False)
    assert summary.complete and summary.done == len(plan.cells) and len(plan.eval_cells) == 3
    with ResultsStore(tmp_path / "r.db", readonly=True) as store:
        runs = store.read_table("runs").set_index("run_key")
        metrics = store.read_table("metrics")
    swd = metrics[metrics["name"] == "swd"].set_index("run_key")
    by_perturb = {json.loads(runs.loc[k, "config_json"])["eval"].get("perturb", "none"): k for k in swd.index}
    assert set(by_perturb) == {"none", "step:50", "precision:int8_dynamic"}
    values = {p: float(swd.loc[k, "value"]) for p, k in by_perturb.items()}
    assert len(set(values.values())) == 3, values
    facts = {p: json.loads(swd.loc[k, "extra_json"]).get("perturb_facts") for p, k in by_perturb.items()}
    assert facts["none"] is None
    assert facts["step:50"] == {"kind": "step", "step": 50, "weights": "model.step50.pt", "of_steps": 100}
    assert facts["precision:int8_dynamic"]["precision_facts"]["method"] == "dynamic"
    assert facts["precision:int8_dynamic"]["provider"] == "CPUExecutionProvider"
