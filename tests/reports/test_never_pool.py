"""Never pool configurations: a grid rerun into the same store with only train.steps changed (300 -> 400)
gives two rows naming train.steps, each over its own three seeds, not one mean of six values."""
from __future__ import annotations

import pytest

from genlib import records
from genlib.store import ResultsStore

from reports.load import open_store
from reports.render import Stat
from reports.tables import differing_keys, study_tables

SWD = {300: (0.040, 0.041, 0.043), 400: (0.030, 0.031, 0.032)}


def run_config(seed: int, steps: int) -> dict:
    return {"name": "refine", "seed": seed, "data": {"name": "moons", "seed": 0},
            "model": {"family": "ddpm", "hidden": [64, 64], "noise": {"T": 100}},
            "train": {"steps": steps, "lr": 0.002}}


def write_grid(store: ResultsStore, steps: int) -> None:
    """What the grid driver commits for a one-cell study at three seeds (train and eval cells)."""
    for seed, swd in zip((0, 1, 2), SWD[steps]):
        train = run_config(seed, steps)
        tkey, ekey = f"t{steps}-{seed}", f"e{steps}-{seed}"
        store.commit_run(*records.build(
            "train", run_key=tkey, config={"train": train, "eval": None, "axes": {}, "profile": "quick"},
            study="refinement", name=f"refinement[seed={seed}]", seed=seed, device="cpu",
            metrics=[records.metric("train", "loss", 0.5, split="train")]))
        store.commit_run(*records.build(
            "eval", run_key=ekey, config={"train": train, "eval": {"sampler": "ddim", "steps": 10, "n": 500,
                                                                    "metrics": ["swd"]},
                                          "axes": {"sampler": "ddim"}, "profile": "quick"},
            study="refinement", name=f"refinement[seed={seed}]", parent_key=tkey, seed=seed, device="cpu",
            metrics=[records.metric("eval", "swd", swd, extra={"n": 500})]))


def test_a_rerun_with_other_train_steps_shows_two_rows_naming_the_key(tmp_path):
    path = tmp_path / "r.db"
    with ResultsStore(path) as store:
        write_grid(store, 300)
        write_grid(store, 400)
    [table] = study_tables(open_store(path), "refinement")
    assert [r["configuration"] for r in table.rows] == ["train.steps=300", "train.steps=400"]
    for row, steps in zip(table.rows, (300, 400)):
        stat = row["swd"]
        assert isinstance(stat, Stat) and stat.n == 3 and row["seeds"] == 3
        assert stat.mean == pytest.approx(sum(SWD[steps]) / 3)
    assert any("differ in train.steps" in note for note in table.notes)


def test_one_configuration_has_one_row_and_no_configuration_column(tmp_path):
    path = tmp_path / "r.db"
    with ResultsStore(path) as store:
        write_grid(store, 300)
    [table] = study_tables(open_store(path), "refinement")
    assert len(table.rows) == 1 and "configuration" not in [c.key for c in table.columns]
    assert table.rows[0]["swd"].n == 3


def test_differing_keys_speaks_the_override_grammar():
    a = {"train": run_config(0, 300), "eval": {"steps": 10}, "axes": {}, "profile": "quick"}
    b = {"train": run_config(1, 400), "eval": {"steps": 20}, "axes": {}, "profile": "quick"}
    assert differing_keys([a, b]) == ["eval.steps", "train.steps"]  # the seed is not a difference


def test_floors_of_two_data_configurations_are_two_reference_rows(tmp_path):
    path = tmp_path / "r.db"
    with ResultsStore(path) as store:
        write_grid(store, 300)
        for data_seed, swd in ((0, 0.010), (1, 0.020)):
            for seed in (0, 1, 2):
                store.commit_run(*records.build(
                    "floor", run_key=f"f{data_seed}-{seed}", study="refinement", seed=seed, device="cpu",
                    config={"train": None, "eval": {"n": 500, "metrics": None},
                            "data": {"name": "moons", "seed": data_seed}, "axes": {}, "profile": "quick"},
                    metrics=[records.metric("floor", "swd", swd, extra={"n": 500})]))
    [table] = study_tables(open_store(path), "refinement")
    floors = [(r["setting"], r["swd"].mean, r["seeds"]) for r in table.reference_rows]
    assert floors == [("floor: data vs data (data.seed=0)", pytest.approx(0.010), 3),
                      ("floor: data vs data (data.seed=1)", pytest.approx(0.020), 3)]
    assert any(n.startswith("Floor: Not pooled") and "data.seed" in n for n in table.notes)


def test_configuration_labels_name_axes_once_and_never_merge_two_configurations():
    """A row holding several configurations labels each by the grid axes that differ (an axis named once,
    though the record holds it under `axes` and `eval`), skips a setting a configuration lacks, and never
    gives two configurations one label (a plot keys its lines by label: that would pool them)."""
    from reports.tables import configurations

    fp16 = {"axes": {"sampler": "ddim", "eval.precision": "fp16"}, "eval": {"precision": "fp16"}, "train": {"steps": 1}}
    fp16_longer = {**fp16, "train": {"steps": 2}}
    fp32 = {"axes": {"sampler": "ddim", "eval.precision": "fp32"}, "eval": {}, "train": {"steps": 1}}
    oracle = {"axes": {"sampler": "ddim", "eval.precision": "fp32", "model.family": "oracle"}, "eval": {},
              "train": {"steps": 1}}
    row = ("ddim", 5)
    row_of = {"a": (row, "ck_a"), "b": (row, "ck_b"), "c": (row, "ck_c"), "d": (row, "ck_d")}
    _, labels, notes = configurations(row_of, {"a": fp16, "b": fp16_longer, "c": fp32, "d": oracle},
                                      ["sampler", "eval.steps"])
    assert labels[(row, "ck_c")] == "eval.precision=fp32"  # model.family: absent here, not 'None'
    assert labels[(row, "ck_d")] == "eval.precision=fp32, model.family=oracle"
    assert labels[(row, "ck_a")] == "eval.precision=fp16 (ck_a)" and labels[(row, "ck_b")] == "eval.precision=fp16 (ck_b)"
    assert len(set(labels.values())) == 4
    assert "differ in eval.precision, model.family" in notes[0] and notes[0].count("eval.precision") == 1
