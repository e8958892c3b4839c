"""Grid specs and the train-once planner: structure errors, profiles, axes, sharing, the record contract."""
from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

import ablations.spec as spec_module
from ablations import GridError, load_grid, parse_grid, plan_grid
from ablations.cli import bundled_grids
from ablations.spec import EVAL_FIELDS
from genlib import records
from reports.load import setting_value
from genlib.study_schema import PlotEntry
from genlib.train import load_run_config


def _plan(grid: dict, **kw):
    return plan_grid(parse_grid(grid, **kw))


# -- the planner splits cells and shares checkpoints ---------------------------------------------------
def test_planner_trains_once_per_training_config(tiny):
    plan = _plan(tiny)
    # 2 learning rates x 2 seeds trainings; x 3 sampling step counts evaluations; one floor per seed.
    assert len(plan.train_cells) == 4
    assert len(plan.eval_cells) == 12
    assert len(plan.floor_cells) == 2
    assert plan.train_axes == ("train.lr",) and plan.eval_axes == ("eval.steps",)
    train_keys = {c.key for c in plan.train_cells}
    for cell in plan.train_cells:
        assert cell.key == load_run_config(cell.config).run_key  # the run key is the training config's hash
        assert cell.config["name"] == "tiny"
    children = plan.children()
    assert all(len(v) == 3 for v in children.values())
    for cell in plan.eval_cells:
        assert cell.parent in train_keys
        assert cell.train_config == next(t.config for t in plan.train_cells if t.key == cell.parent)
        # every field, less those left out while they hold their default (so older results keep their keys)
        assert set(cell.eval_config) <= set(EVAL_FIELDS)
        assert set(EVAL_FIELDS) - set(cell.eval_config) <= {"perturb", "precision"}
        assert cell.eval_config["steps"] == cell.axes["eval.steps"]
        assert cell.seed == cell.train_config["seed"]


def test_no_share_trains_once_per_evaluation(tiny):
    shared, unshared = _plan(tiny), plan_grid(parse_grid(tiny), share=False)
    assert len(unshared.train_cells) == len(unshared.eval_cells) == len(shared.eval_cells)
    assert {c.key for c in unshared.eval_cells} == {c.key for c in shared.eval_cells}  # same evaluations
    assert len({c.key for c in unshared.train_cells}) == 12
    assert all(c.unshared_for for c in unshared.train_cells)


def test_plan_is_deterministic(tiny):
    a, b = _plan(tiny), _plan(dict(reversed(list(tiny.items()))))
    assert [c.key for c in a.cells] == [c.key for c in b.cells]


def test_record_config_contract(tiny):
    plan = _plan(tiny)
    ev = plan.eval_cells[0].record_config()
    assert set(ev) == {"train", "eval", "axes", "profile", "sampler_info"}
    assert ev["profile"] == "quick" and ev["axes"] == {"train.lr": 0.001, "eval.steps": 2}
    assert ev["eval"]["n"] == 64 and ev["eval"]["sampler"] == "auto"
    # what the sampler's registry entry says of the setting ('auto' resolved), left out of config_key
    assert ev["sampler_info"]["name"] == "ddpm" and ev["sampler_info"]["steps"] == 2
    assert ev["sampler_info"]["step_setting"] == "steps" and ev["sampler_info"]["label"] == "ddpm small"
    tr = plan.train_cells[0].record_config()
    assert tr["eval"] is None and tr["axes"] == {"train.lr": 0.001}
    fl = plan.floor_cells[0].record_config()
    assert fl["train"] is None and fl["eval"] == {"n": 64, "metrics": None} and fl["data"]["name"] == "moons"


def test_profiles_replace_seeds_and_axes(tiny):
    full = _plan(tiny, profile="full")
    assert len(full.train_cells) == 6 and full.spec.profile == "full"
    tiny["profiles"]["quick"] = {"axes": {"eval.steps": [5]}, "set": {"eval.n": 32, "train.steps": 7}}
    quick = _plan(tiny)
    assert len(quick.eval_cells) == 4
    assert all(c.eval_config["n"] == 32 and c.train_config["train"]["steps"] == 7 for c in quick.eval_cells)
    tiny["profiles"]["quick"] = {"axes": {"eval.steps": None}}  # null drops an axis
    assert len(_plan(tiny).eval_cells) == 4


def test_zip_variants_blocks_and_exclude(tiny):
    tiny["axes"] = {"eval.steps": [2, None]}
    tiny["zip"] = [{"eval.sampler": ["ddpm", "ddpm", "ddim"], "eval.variance": ["small", "large", "small"]}]
    tiny["variants"] = {"width": {"narrow": {"model.hidden": [8]}, "wide": {"model.hidden": [32, 32]}}}
    tiny["exclude"] = [{"eval.sampler": "ddim", "eval.steps": None}]
    tiny["seeds"] = [0]
    plan = _plan(tiny)
    assert len(plan.train_cells) == 2  # the width variant makes checkpoints
    assert len(plan.eval_cells) == 2 * (2 * 3 - 1)
    assert "width" in plan.train_axes and "eval.sampler" in plan.eval_axes
    assert not any(c.eval_config["sampler"] == "ddim" and c.eval_config["steps"] is None for c in plan.eval_cells)
    tiny["blocks"] = {"moons": {"set": {"data.name": "moons"}}, "rings": {"set": {"data.name": "rings"}}}
    blocks = _plan(tiny)
    assert len(blocks.train_cells) == 4
    assert {c.axes["data.name"] for c in blocks.eval_cells} == {"moons", "rings"}
    assert {c.axes["block"] for c in blocks.eval_cells} == {"moons", "rings"}
    assert len(blocks.floor_cells) == 2  # one per dataset (x one seed)


def test_variant_with_only_eval_keys_is_an_inference_axis(tiny):
    tiny["axes"] = {}
    tiny["variants"] = {"sampler": {"ddpm": {"eval.sampler": "ddpm"}, "ddim": {"eval.sampler": "ddim", "eval.eta": 1.0}}}
    plan = _plan(tiny)
    assert plan.eval_axes == ("sampler",) and len(plan.train_cells) == 2 and len(plan.eval_cells) == 4


# -- errors name the key and suggest the nearest valid one ---------------------------------------------
@pytest.mark.parametrize("change, message", [
    ({"axis": {"train.lr": [1]}}, "unknown key 'axis'; did you mean 'axes'?"),
    ({"axes": {"train.lrr": [1]}}, "did you mean 'train.lr'?"),
    ({"axes": {"eval.pases": [1]}}, "unknown key 'eval.pases'; did you mean 'eval.passes'?"),
    ({"axes": {"modle.hidden": [[8]]}}, "did you mean 'model'?"),
    ({"axes": {"model.latnt_dim": [8]}}, "'model.latnt_dim'"),
    ({"axes": {"loss.beta": []}}, "'axes'.loss.beta must be a non-empty list"),
    ({"axes": {"eval.sampler": ["dim"]}}, "did you mean 'ddim'?"),
    ({"axes": {"eval.sampler": ["vae"]}}, "does not apply to model family 'ddpm'"),
    ({"axes": {"eval.steps": [2, 50]}}, "exceeds the training steps model.noise.T=10; add an 'exclude' rule"),
    ({"zip": [{"eval.steps": [2, 5], "eval.eta": [0.0]}]}, "zipped lists must have equal lengths"),
    ({"zip": [{"eval.eta": [0.0, 1.0], "train.lr": [0.1, 0.2]}]}, "'train.lr' is varied by both"),
    ({"seeds": [0, 0]}, "repeated seeds"),
    ({"axes": {"seed": [1, 2]}}, "vary seeds with the top-level 'seeds' list"),
    ({"exclude": [{"eval.stesp": 2}]}, "exclude rule key 'eval.stesp'"),
    ({"exclude": [{"train.lr": [0.001, 0.002]}]}, "no cells"),
    ({"decided_by": {"metric": "swd"}}, "key 'decided_by' was replaced by 'claims[].primary'"),
    ({"eval": {"n": 0}}, "'eval.n' must be an integer >= 1"),
])
def test_grid_errors_name_the_key(tiny, change, message):
    tiny.update(change)
    with pytest.raises(GridError) as info:
        _plan(tiny)
    assert message in str(info.value)


def test_unknown_profile_suggests(tiny):
    with pytest.raises(GridError, match="defines no profile 'quik'; did you mean 'quick'"):
        _plan(tiny, profile="quik")


def test_load_grid_errors_name_the_file(tmp_path, tiny):
    path = tmp_path / "mine.yaml"
    tiny.pop("study")
    tiny["axes"]["train.lrr"] = [1]
    path.write_text(yaml.safe_dump(tiny))
    with pytest.raises(GridError, match="mine.yaml"):
        plan_grid(load_grid(path))
    path.write_text("base: [unclosed")
    with pytest.raises(GridError, match="not valid YAML"):
        load_grid(path)
    del tiny["axes"]["train.lrr"]
    path.write_text(yaml.safe_dump(tiny))
    assert load_grid(path).study == "mine"  # the study is named after the file


def _same(a, b) -> bool:
    return a is b if isinstance(a, bool) or isinstance(b, bool) else a == b


# -- the bundled studies ---------------------------------------------------------------------------------
STUDIES = ("beta", "warmup", "refinement", "steps", "baselines")


def test_bundled_studies_exist():
    assert set(STUDIES) <= set(bundled_grids())


@pytest.mark.parametrize("study", STUDIES)
def test_bundled_study_plans_and_states_its_claim(study):
    path = bundled_grids()[study]
    quick, full = plan_grid(load_grid(path, "quick")), plan_grid(load_grid(path, "full"))
    for plan, min_seeds in ((quick, 2), (full, 3)):
        spec = plan.spec
        assert spec.study == study and spec.claims and all(len(c.text) > 20 for c in spec.claims)
        assert len(spec.seeds) >= min_seeds  # intervals over seeds need replicates
        assert all(c.eval_config["metrics"] for c in plan.eval_cells)
        for test in [t for c in spec.claims for t in (c.primary, *c.secondary)]:
            assert test.margin > 0 and test.axis in plan.train_axes + plan.eval_axes
            # The planner agrees with the parse-time check: cells exist and measure the metric.
            # (a `where` key reads as a report reads it: an axis, else the cell's config, defaults included)
            cells = [c for c in plan.eval_cells
                     if all(_same(setting_value(c.record_config(), k), v) for k, v in test.where)]
            for side in (test.treatment, test.reference):
                chosen = [c for c in cells if _same(c.axes.get(test.axis), side)]
                assert chosen and all(test.metric in c.eval_config["metrics"] for c in chosen), (test, side)
        assert plan.floor_cells
    assert len(full.eval_cells) >= len(quick.eval_cells)


def test_share_saves_at_least_5x_trainings_on_fan_out_studies():
    for study in ("refinement", "steps"):
        path = bundled_grids()[study]
        shared = plan_grid(load_grid(path, "full"))  # the paper-sized grid: quick is trimmed to few fan-outs
        unshared = plan_grid(load_grid(path, "full"), share=False)
        assert len(unshared.train_cells) >= 5 * len(shared.train_cells), study


def test_the_autoencoder_is_trained_once_for_both_priors():
    plan = plan_grid(load_grid(bundled_grids()["baselines"], "full"))  # every method (quick leaves out vae_full)
    by_method = {}
    for cell in plan.eval_cells:
        by_method.setdefault((cell.axes["data.name"], cell.seed), {})[cell.axes["method"]] = cell
    for cells in by_method.values():
        standard, fitted = cells["ae_standard"], cells["ae_fitted"]
        assert standard.parent == fitted.parent
        assert (standard.eval_config["prior"], fitted.eval_config["prior"]) == ("standard", "fitted")
        train = next(t for t in plan.train_cells if t.key == standard.parent)
        assert train.axes["method"] == ["ae_standard", "ae_fitted"]
    seeds = len(plan.spec.seeds)
    assert len(plan.train_cells) == 2 * seeds * 5  # datasets x seeds x (ae, vae diag, vae full, chain, ddpm)


# -- claims: parsed, validated against the grid, stored with the study ------------------------------------
def _claim(**primary) -> dict:
    test = {"metric": "swd", "direction": "lower", "axis": "eval.steps", "treatment": None, "reference": 2,
            "margin": 0.05, **primary}
    return {"claims": [{"id": "7", "text": "more sampling steps give samples closer to the data", "primary": test}]}


@pytest.mark.parametrize("primary, message", [
    ({"metric": "swdd"}, "claims[0].primary.metric: unknown metric 'swdd'; did you mean 'swd'?"),
    ({"axis": "eval.stepz"}, "claims[0].primary.axis: 'eval.stepz' is not an axis of the grid; did you mean "
                             "'eval.steps'?"),
    ({"treatment": 7}, "claims[0].primary.treatment: 7 is not a value of axis 'eval.steps' (values: 2, 5, null)"),
    ({"reference": None}, "treatment and reference are the same setting of 'eval.steps'"),
    ({"margin": None}, "claims[0].primary.margin must be a number > 0"),
    ({"margin": -1}, "claims[0].primary.margin must be a number > 0"),
    ({"direction": "down"}, "claims[0].primary.direction must be one of higher, lower"),
    ({"where": {"train.lr": 0.5}}, "claims[0].primary.where.train.lr: 0.5 is not produced by the grid "
                                   "(values: 0.001, 0.002)"),
    ({"where": {"train.lrr": 0.001}}, "claims[0].primary.where: 'train.lrr' is not a setting of the grid; did you "
                                      "mean 'train.lr'?"),
    ({"colour": 1}, "claims[0].primary: unknown key 'colour'"),
])
def test_claim_errors_name_the_file_and_key(tmp_path, tiny, primary, message):
    tiny.update(_claim(**primary))
    _assert_one_line_error(tmp_path, tiny, message)


def _assert_one_line_error(tmp_path, grid: dict, message: str) -> None:
    """Loading `grid` from a file fails with one line that names the file and contains `message`."""
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(grid))
    with pytest.raises(GridError) as info:
        load_grid(path)
    text = str(info.value)
    assert message in text and "mine.yaml" in text and "\n" not in text


def test_missing_margin_is_an_error(tiny):
    claims = _claim()
    del claims["claims"][0]["primary"]["margin"]
    tiny.update(claims)
    with pytest.raises(GridError, match="claims\\[0\\].primary: missing required key 'margin' \\(the smallest effect"):
        _plan(tiny)


def test_undecidable_tests_are_errors(tiny):
    # every cell with eval.steps=2 is excluded when train.lr is 0.002: the filter leaves one side empty
    tiny.update(_claim(where={"train.lr": 0.002}), exclude=[{"train.lr": 0.002, "eval.steps": 2}])
    with pytest.raises(GridError, match="undecidable: no planned cell has eval.steps=2 together with train.lr=0.002"):
        _plan(tiny)
    tiny.update(_claim(), exclude=[], eval={"n": 64, "metrics": ["mmd"]})
    with pytest.raises(GridError, match="undecidable: the cells with eval.steps=null do not measure 'swd'"):
        _plan(tiny)
    # a profile that drops the reference value leaves the claim undecidable in that profile only
    tiny.update(_claim(), eval={"n": 64}, profiles={"quick": {"axes": {"eval.steps": [5, None]}}, "full": {}})
    with pytest.raises(GridError, match="reference: 2 is not a value of axis 'eval.steps'"):
        _plan(tiny, profile="quick")
    assert _plan(tiny, profile="full").spec.claims[0].id == "7"


def test_claims_round_trip_into_the_study_record(tiny):
    secondary = {"metric": "mmd", "direction": "lower", "axis": "train.lr", "treatment": 0.002, "reference": 0.001,
                 "margin": 0.01, "where": {"eval.steps": 5}, "note": "a faster learning rate"}
    claims = _claim()
    claims["claims"][0]["secondary"] = [secondary]
    claims["claims"].append({"text": "a second claim about the same grid", "primary": secondary})
    tiny.update(claims)
    spec = _plan(tiny).spec
    assert [c.id for c in spec.claims] == ["7", "tiny.2"]  # ids default to <study>.<k>
    record = spec.record_config()
    assert record["study"] == "tiny" and record["claims"][0]["secondary"][0] == secondary
    assert record["claims"][0]["primary"]["where"] == {}
    records.check_layout("study", record)
    assert json.loads(json.dumps(record)) == record  # stored as JSON, read back unchanged


def test_a_secondary_test_can_be_limited_to_the_profiles_that_measure_it(tiny):
    # quick drops eval.steps=5, so a secondary test reading it is only part of the claim in `full`
    secondary = {"metric": "swd", "direction": "lower", "axis": "eval.steps", "treatment": 5, "reference": 2,
                 "margin": 0.05, "profiles": ["full"]}
    claims = _claim()
    claims["claims"][0]["secondary"] = [secondary]
    tiny.update(claims, profiles={"quick": {"axes": {"eval.steps": [2, None]}}, "full": {}})
    assert _plan(tiny, profile="quick").spec.claims[0].secondary == ()
    (kept,) = _plan(tiny, profile="full").spec.claims[0].secondary
    assert kept.treatment == 5
    secondary["profiles"] = ["fulll"]
    with pytest.raises(GridError, match="secondary\\[0\\].profiles: no profile 'fulll' in the grid; did you mean "
                                        "'full'\\?"):
        _plan(tiny, profile="full")
    secondary["profiles"] = ["full"]
    claims["claims"][0]["primary"]["profiles"] = ["full"]
    with pytest.raises(GridError, match="the primary test decides the claim in every profile"):
        _plan(tiny, profile="full")


# -- plots: declared in the grid file beside the claims, checked against the grid, stored with the study ---
@pytest.mark.parametrize("entry, message", [
    ({"kind": "line", "x": "eval.steps"}, "plots[0].kind: unknown plot kind 'line'; did you mean 'lines'?"),
    ({"x": "eval.steps"}, "plots[0].kind: missing (kinds: lines, trade_off, training_curves, bars)"),
    ({"kind": "lines"}, "plots[0]: kind lines needs 'x' (the setting on the x axis"),
    ({"kind": "lines", "x": "eval.stepz"}, "plots[0].x: 'eval.stepz' is not an axis of the grid; did you mean "
                                           "'eval.steps'?"),
    ({"kind": "lines", "x": "eval.steps", "color": "train.lr"}, "plots[0] (kind lines): unknown key 'color'; did you "
                                                                "mean 'colour'?"),
    ({"kind": "lines", "x": "eval.steps", "columns": "train.lrr"}, "plots[0].columns: 'train.lrr' is not a setting "
                                                                   "of the grid; did you mean 'train.lr'?"),
    ({"kind": "lines", "x": "eval.steps", "metrics": ["swdd"]}, "plots[0].metrics: unknown metric 'swdd'; did you "
                                                                "mean 'swd'?"),
    ({"kind": "lines", "x": "eval.steps", "x_scale": "logg"}, "plots[0].x_scale must be one of linear, log, symlog, "
                                                              "got 'logg'; did you mean 'log'?"),
    ({"kind": "trade_off", "metrics": ["swd"], "along": "train.lr"}, "plots[0].metrics: kind trade_off draws two "
                                                                     "metrics"),
    ({"kind": "bars", "x": "eval.steps"}, "plots[0] (kind bars): unknown key 'x'"),
])
def test_plot_errors_are_one_line_naming_the_file_and_key(tmp_path, tiny, entry, message):
    tiny["plots"] = [entry]
    _assert_one_line_error(tmp_path, tiny, message)


def test_plots_round_trip_into_the_study_record(tiny):
    tiny["plots"] = [{"kind": "lines", "x": "eval.steps", "colour": "train.lr", "x_scale": "log"},
                     {"kind": "lines", "x": "train.lr", "metrics": ["swd"], "title": "by learning rate"},
                     {"kind": "bars"}]
    spec = parse_grid(tiny)
    record = spec.record_config()
    assert record["plots"] == [
        {"kind": "lines", "name": "lines-1", "x": "eval.steps", "colour": ["train.lr"], "x_scale": "log"},
        {"kind": "lines", "name": "lines-2", "title": "by learning rate", "x": "train.lr", "metrics": ["swd"]},
        {"kind": "bars", "name": "bars"}]
    assert json.loads(json.dumps(record)) == record
    assert tuple(PlotEntry.from_dict(p) for p in record["plots"]) == spec.plots
    tiny["plots"] = [{"kind": "bars", "name": "same"}, {"kind": "lines", "x": "eval.steps", "name": "same"}]
    with pytest.raises(GridError, match=r"plots\[1\].name: 'same' is used by another plot"):
        parse_grid(tiny)


def test_every_bundled_grid_declares_plots_that_parse_in_every_profile():
    for name, path in bundled_grids().items():
        for profile in load_grid(path).profiles:
            spec = load_grid(path, profile)
            assert spec.plots, f"{name} declares no plots"
            assert spec.record_config()["plots"] == [p.to_dict() for p in spec.plots]


def test_the_claim_test_keys_are_declared_once():
    """ablations.spec validates and reports.claims reads a test by the one declaration in genlib.study_schema."""
    from genlib import study_schema
    from reports.claims import Comparison

    stored = {f.name for f in dataclasses.fields(study_schema.ClaimTest)}
    assert set(study_schema.TEST_KEYS) == stored | set(study_schema.TEST_GRID_KEYS)
    assert spec_module.ClaimTest is study_schema.ClaimTest and issubclass(Comparison, study_schema.ClaimTest)
    assert {f.name for f in dataclasses.fields(Comparison)} == stored | {"study"}
    test = study_schema.ClaimTest(metric="swd", direction="lower", axis="eval.steps", treatment=5, reference=2,
                                  margin=0.05, where=(("train.lr", 0.001),), note="n")
    assert Comparison.from_stored("tiny", test.to_dict()) == Comparison(study="tiny", **{
        f.name: getattr(test, f.name) for f in dataclasses.fields(test)})
