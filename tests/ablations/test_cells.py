"""Grid cell bodies: an evaluation records the device its loaded network ran on (read back from the model,
never where a device preference would have put it), and finished artifacts are published with genlib's rule."""
from __future__ import annotations

import torch

import genlib.provenance
from ablations import cells
from ablations.plan import EvalCell
from ablations.executors import Shared
from genlib.checkpoint import pack_dir, publish_dir, unpack_dir
from genlib.train import load_run_config, train

TINY = {"name": "tiny",
        "model": {"family": "ddpm", "hidden": [16, 16], "time_dim": 8, "noise": {"T": 20, "scaled": False}},
        "data": {"name": "8gaussians", "n_train": 500, "n_test": 300},
        "train": {"steps": 5, "batch_size": 32, "log_every": 5, "device": "cpu"}}


def _eval_cell(parent: str) -> EvalCell:
    return EvalCell(key="e1", study="s", profile="quick", seed=0, label="l", parent=parent, train_config={},
                    eval_config={"sampler": "ddim", "steps": 5, "n": 200, "metrics": ["swd"]}, axes={})


def test_an_eval_cell_records_the_device_its_loaded_network_is_on(tmp_path, monkeypatch):
    art = tmp_path / "artifacts"
    train(load_run_config(TINY), art / "t1", progress=False)
    # a device preference that resolves elsewhere must not be what the row says: the model loaded on cpu
    monkeypatch.setattr(genlib.provenance, "select_device", lambda preference="auto": torch.device("cuda:7"))
    evaluation = cells.MetricsEvaluation()
    evaluation.device = "cpu"
    data = pack_dir(art / "t1")
    checkpoint = Shared(cells.share_key("t1", data), data=data)
    node = tmp_path / "node"
    ctx = cells.CellContext(evaluation=evaluation, cache_dir=node)
    result = cells._run_eval(_eval_cell("t1"), ctx, checkpoint)
    assert result.device == "cpu" == evaluation.ran_on
    assert [m.name for m in result.metrics] == ["swd"]
    # the samples come back as bytes; the worker wrote nothing beside the driver's checkpoint
    unpack_dir(result.artifact, tmp_path / "published" / "e1")
    assert (tmp_path / "published" / "e1" / "samples.npy").is_file()
    assert sorted(p.name for p in art.iterdir()) == ["t1"] and result.artifact_path is None
    assert (node / "checkpoints" / checkpoint.key / "model.pt").is_file()  # unpacked once into the node cache
    assert not list((node / "scratch").iterdir())


def test_cells_publish_with_genlibs_rule_and_clean_its_trash(tmp_path):
    assert not hasattr(cells, "publish")  # one implementation: genlib.checkpoint.publish_dir
    art = tmp_path / "artifacts"
    for content in ("old", "new"):
        tmp = cells._tmp_dir(art, "k")
        (tmp / "f").write_text(content)
        publish_dir(tmp, art / "k")
    assert (art / "k" / "f").read_text() == "new" and sorted(p.name for p in art.iterdir()) == ["k"]
    (art / "k.trash-999999-0123abcd").mkdir()  # what a process killed between publish_dir's renames leaves
    (art / ".tmp-k-999999-89abcdef").mkdir()
    assert cells.clean_partial(art) == 2 and sorted(p.name for p in art.iterdir()) == ["k"]
