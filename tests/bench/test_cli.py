"""`genbench export` and `genbench bench` through the real command line, including the named errors."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from genlib.cli import main
from genlib.store import ResultsStore

import bench.runtime as rt

QUICK = ["--warmup", "1", "--min-rounds", "3", "--target-s", "0", "--no-progress", "--threads", "1"]


def test_export_writes_graph_sidecar_and_store_row(run_dirs, tmp_path, capsys):
    out = tmp_path / "ddim.onnx"
    code = main(["export", "--run", str(run_dirs("ddpm")), "--part", "sampler", "--steps", "8", "--out", str(out),
                 "--parity-batches", "2,5", "--store", str(tmp_path / "r.db")])
    text = capsys.readouterr().out
    assert code == 0, text
    assert out.is_file() and out.with_name("ddim.step.onnx").is_file()
    assert "parity valid" in text and "sample metric sliced_wasserstein" in text
    info = json.loads(out.with_name("ddim.onnx.json").read_text())
    assert info["details"]["steps"] == 8 and info["details"]["sampler"] == "ddim"
    with ResultsStore(tmp_path / "r.db") as store:
        runs = store.read_table("runs")
    assert list(runs.kind) == ["export"] and runs.status.iloc[0] == "done"


def test_bench_on_a_run_prints_speedups_and_stores_rows(run_dirs, tmp_path, capsys):
    code = main(["bench", "--run", str(run_dirs("vae")), "--parts", "decoder", "--batch", "1,8",
                 "--backends", "torch,ort", "--out-dir", str(tmp_path / "onnx"), "--store", str(tmp_path / "r.db"),
                 "--csv", str(tmp_path / "rows.csv"), "--parity-batches", "2,5", *QUICK])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "x ort/cpu" in text and "recorded 4 timing rows" in text
    with ResultsStore(tmp_path / "r.db") as store:
        kinds = store.read_table("runs").kind.value_counts().to_dict()
    assert kinds == {"bench": 4, "export": 1}
    assert (tmp_path / "rows.csv").read_text().count("\n") == 5


def test_bench_on_an_onnx_file(run_dirs, tmp_path, capsys):
    out = tmp_path / "dec.onnx"
    assert main(["export", "--run", str(run_dirs("vae")), "--part", "decoder", "--out", str(out),
                 "--parity-batches", "2,5"]) == 0
    capsys.readouterr()
    assert main(["bench", "--onnx", str(out), "--batch", "4", *QUICK]) == 0
    assert "ort/cpu" in capsys.readouterr().out


def _fail(args, capsys) -> str:
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    return err


def test_a_file_that_is_not_onnx_is_a_named_error(tmp_path, capsys):
    junk = tmp_path / "model.onnx"
    junk.write_text("these are not the bytes you are looking for")
    assert "is not an ONNX model" in _fail(["bench", "--onnx", str(junk), *QUICK], capsys)


def test_a_graph_with_unexpected_inputs_is_a_named_error(tmp_path, capsys):
    g = helper.make_graph([helper.make_node("Relu", ["pixels"], ["y"])], "g",
                          [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), path)
    err = _fail(["bench", "--onnx", str(path), *QUICK], capsys)
    assert "inputs ['pixels'], which match no genbench part" in err


@pytest.mark.skipif(rt.cuda_provider_usable()[0], reason="CUDA is usable here")
def test_an_unavailable_provider_requested_explicitly_is_a_named_error(run_dirs, capsys):
    err = _fail(["bench", "--run", str(run_dirs("vae")), "--providers", "cuda", *QUICK], capsys)
    assert "provider 'cuda' was requested but is unavailable" in err


def test_wrong_part_and_bad_output_name(run_dirs, tmp_path, capsys):
    err = _fail(["export", "--run", str(run_dirs("ddpm")), "--part", "encoder", "--out", str(tmp_path / "e.onnx")], capsys)
    assert "part 'encoder' does not exist for model family 'ddpm' (its parts: denoiser, sampler)" in err
    err = _fail(["export", "--run", str(run_dirs("vae")), "--part", "decoder", "--out", str(tmp_path / "e.pt")], capsys)
    assert "must end in .onnx" in err
    err = _fail(["bench", "--run", str(run_dirs("vae")), "--backends", "onnx", *QUICK], capsys)
    assert "unknown backend 'onnx'" in err


def test_export_of_an_invalid_graph_exits_nonzero(run_dirs, tmp_path, capsys):
    # An impossible tolerance makes the (correct) export fail the gate: written, marked invalid, exit 1.
    out = tmp_path / "strict.onnx"
    code = main(["export", "--run", str(run_dirs("ddpm")), "--part", "denoiser", "--out", str(out), "--atol", "0",
                 "--rtol", "0", "--parity-batches", "64,256"])
    captured = capsys.readouterr()
    info = json.loads(out.with_name("strict.onnx.json").read_text())
    if info["parity"]["max_abs_err"] == 0.0:
        pytest.skip("ONNX Runtime matched torch bit for bit on this machine")
    assert code == 1 and "INVALID" in captured.out and "marked invalid" in captured.err
    assert info["parity"]["valid"] is False
