"""Grid validation gaps that used to pass silently: duplicate YAML keys, duplicate axis values, an
exclude rule that matches nothing (a warning), and worker or thread counts of 0."""
from __future__ import annotations

import pytest
import yaml

from ablations import GridError, load_grid, parse_grid, plan_grid
from genlib.cli import main


@pytest.fixture
def tiny(tiny) -> dict:
    """The shared tiny grid without its claim: these tests are about structure, not claims."""
    return {k: v for k, v in tiny.items() if not k.startswith(("claim", "decided_by"))}


def _write(tmp_path, grid: dict, name: str = "grid.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


# -- duplicate keys ------------------------------------------------------------------------------------
def test_a_duplicate_key_in_a_grid_file_is_refused_naming_key_and_line(tmp_path, tiny):
    text = yaml.safe_dump(tiny, sort_keys=False)
    assert "\nseeds:" in text
    path = tmp_path / "dup.yaml"
    path.write_text(text + "seeds: [5]\n")  # safe_load would silently keep the last 'seeds'
    line = len(text.splitlines()) + 1
    first = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith("seeds:"))
    with pytest.raises(GridError, match=rf"^config file '{path}': duplicate key 'seeds' at line {line} "
                                        rf"\(first at line {first}\)"):
        load_grid(path)


def test_a_duplicate_nested_key_is_refused_too(tmp_path):
    path = tmp_path / "nested.yaml"
    path.write_text("base:\n  model: {family: ddpm}\n  train:\n    steps: 10\n    lr: 0.001\n    steps: 20\n")
    with pytest.raises(GridError, match=r"duplicate key 'steps' at line 6 \(first at line 4\)"):
        load_grid(path)


def test_the_cli_reports_a_duplicate_key_in_one_line(tmp_path, tiny, capsys):
    path = tmp_path / "dup.yaml"
    path.write_text(yaml.safe_dump(tiny, sort_keys=False) + "study: other\n")
    assert main(["grid", "plan", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "duplicate key 'study'" in err[0] and str(path) in err[0]


# -- duplicate axis values -----------------------------------------------------------------------------
@pytest.mark.parametrize("axis, values, shown", [("train.lr", [0.001, 0.002, 0.001], "0.001"),
                                                 ("eval.steps", [2, None, 5, None], "None"),
                                                 ("model.hidden", [[16, 16], [32], [16, 16]], r"\[16, 16\]")])
def test_a_value_listed_twice_on_an_axis_is_refused(tiny, axis, values, shown):
    tiny["axes"] = {**tiny["axes"], axis: values}
    with pytest.raises(GridError, match=rf"'axes'.{axis} lists the value {shown} twice"):
        parse_grid(tiny)


def test_a_profile_axis_with_a_repeated_value_is_refused(tiny):
    tiny["profiles"]["quick"] = {"axes": {"train.lr": [0.001, 0.001]}}
    with pytest.raises(GridError, match=r"profiles.quick'.axes.train.lr lists the value 0.001 twice"):
        parse_grid(tiny, profile="quick")


def test_true_and_1_are_different_axis_values(tiny):
    tiny["axes"] = {**tiny["axes"], "model.noise.scaled": [True, False]}
    assert parse_grid(tiny).blocks[0].axes["model.noise.scaled"] == [True, False]
    tiny["axes"]["model.noise.T"] = [1, True]  # not duplicates (T=True is then refused by the config types)
    assert parse_grid(tiny).blocks[0].axes["model.noise.T"] == [1, True]


def test_zip_columns_may_repeat_but_a_whole_row_may_not(tiny):
    tiny["axes"] = {"eval.steps": [2, 5]}
    tiny["zip"] = [{"eval.sampler": ["ddpm", "ddim", "ddim"], "eval.eta": [1.0, 0.0, 1.0]}]
    spec = parse_grid(tiny)
    assert spec.blocks[0].zip[0]["eval.sampler"] == ["ddpm", "ddim", "ddim"]
    tiny["zip"] = [{"eval.sampler": ["ddpm", "ddim", "ddim"], "eval.eta": [1.0, 0.0, 0.0]}]
    with pytest.raises(GridError, match=r"'zip'\[0\] lists the combination \{'eval.sampler': 'ddim', 'eval.eta': 0.0\} "
                                        r"twice"):
        parse_grid(tiny)


# -- excludes that match nothing -----------------------------------------------------------------------
def test_an_exclude_rule_that_matches_nothing_is_a_warning(tiny):
    typo = {"train.lr": 0.003, "eval.steps": 2}  # 0.003 is on no axis
    used = {"train.lr": 0.002, "eval.steps": 5}
    tiny["exclude"] = [used, typo]
    plan = plan_grid(parse_grid(tiny))
    assert len(plan.eval_cells) == 12 - 2  # 'used' drops one cell per seed
    assert plan.warnings == [f"grid 'tiny': exclude rule {typo!r} matches no cell (a typo in a value?)"]
    assert plan.summary()["warnings"] == plan.warnings
    tiny["exclude"] = [used]
    assert plan_grid(parse_grid(tiny)).warnings == []


def test_a_top_level_exclude_used_by_one_block_only_is_no_warning(tiny):
    tiny["axes"] = {"eval.steps": [2, None]}
    tiny["blocks"] = {"slow": {"set": {"train.lr": 0.001}}, "fast": {"set": {"train.lr": 0.002}}}
    tiny["exclude"] = [{"train.lr": 0.002, "eval.steps": 2}]
    plan = plan_grid(parse_grid(tiny))
    assert plan.warnings == [] and len(plan.eval_cells) == 2 * 2 * 2 - 2
    tiny["blocks"]["slow"]["exclude"] = [{"eval.steps": 7}]
    assert plan_grid(parse_grid(tiny)).warnings == [
        "grid 'tiny', block 'slow': exclude rule {'eval.steps': 7} matches no cell (a typo in a value?)"]


def test_grid_plan_prints_the_warning_and_still_plans(tmp_path, tiny, capsys):
    tiny["exclude"] = [{"eval.steps": 3}]
    path = _write(tmp_path, tiny)
    assert main(["grid", "plan", str(path)]) == 0
    out, err = capsys.readouterr()
    assert f"genbench grid: warning: grid '{path}': exclude rule {{'eval.steps': 3}} matches no cell" in err
    assert "evaluations:    12" in out


# -- worker and thread counts --------------------------------------------------------------------------
@pytest.mark.parametrize("argv, option", [(["grid", "run", "G", "--store", "x.db", "--workers", "0"], "--workers"),
                                          (["grid", "run", "G", "--store", "x.db", "--threads", "0"], "--threads"),
                                          (["grid", "run", "G", "--store", "x.db", "--workers", "-2"], "--workers"),
                                          (["claims", "--workers", "0"], "--workers"),
                                          (["demo", "--workers", "0"], "--workers")])
def test_zero_workers_or_threads_is_a_usage_error(argv, option, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert f"argument {option}: must be an integer >= 1, got {argv[-1]}" in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()


# -- sizes and names -----------------------------------------------------------------------------------
def test_a_million_value_axis_is_refused_at_once(tiny):
    import time

    start = time.perf_counter()
    with pytest.raises(GridError, match=r"^grid: 'axes'.eval.n lists 1,000,000 values, more than the 20,000 cells"):
        parse_grid({**tiny, "axes": {"eval.n": list(range(100, 1_000_100))}})
    assert time.perf_counter() - start < 10


def test_checking_an_axis_for_repeats_is_linear(tiny):
    import time

    start = time.perf_counter()
    spec = parse_grid({**tiny, "axes": {"eval.n": list(range(100, 10_100)), "train.lr": [0.001]}, "seeds": [0]})
    assert time.perf_counter() - start < 2 and len(spec.blocks[0].axes["eval.n"]) == 10_000
    with pytest.raises(GridError, match="lists the value 1.0 twice"):  # 1 and 1.0 are one value; true is not 1
        parse_grid({**tiny, "axes": {"train.lr": [True, 1, 2, 1.0]}})


def test_axes_whose_product_is_too_large_are_refused_before_expanding(tiny):
    grid = {**tiny, "axes": {"eval.n": list(range(100, 300)), "train.lr": [i / 1000 for i in range(1, 201)]}}
    with pytest.raises(GridError, match=r"expands to 80,000 evaluation cells, more than the 20,000 a grid may plan"):
        parse_grid(grid)


@pytest.mark.parametrize("name", ["..", "a/../b", ".", "two\nlines", "tab\there", "  "])
def test_study_names_with_control_characters_or_dot_parts_are_refused(tiny, name):
    with pytest.raises(GridError, match=r"^grid: study name .* (contains the control character|is empty or has "
                                        r"a '\.' or '\.\.' part)"):
        parse_grid({**tiny, "study": name})
