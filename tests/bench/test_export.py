"""ONNX export: parity of every part at two batch sizes, the whole-sampler graph against the torch
sampler on the same noise, float16, the sidecar record, and the parity gate catching a broken graph."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from genlib.cli import UserError
from genlib.models import SAMPLERS, SampleConfig
from genlib.samplers import run_program, sample_ddim, sample_ddpm, sample_vae

from bench.export import export_part
from bench.onnx_files import NotOnnxFileError, UnexpectedInputsError, read_export, sidecar_path
from bench.parity import check_parity
from bench.parts import ExportConfig, ExportError, build_part
from bench.runtime import make_session

from .conftest import PARITY_BATCHES


def _ort(path):
    return make_session(path)


def _box(res):
    """The x0 clip box an export resolved and recorded, as the samplers' clip_x0 argument."""
    cfg = res.info["export_config"]["sample"]
    return tuple(cfg["clip_low"]), tuple(cfg["clip_high"])


def _assert_close(got, want, atol):
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= atol, np.max(np.abs(got - want))


@pytest.mark.parametrize("name,part,outputs", [
    ("vae", "decoder", ["x"]),
    ("vae", "encoder", ["mu", "L"]),
    ("vae_full", "encoder", ["mu", "L"]),
    ("ae", "decoder", ["x"]),
    ("ae", "encoder", ["z"]),
    ("ddpm", "denoiser", ["eps"]),
    ("chain", "chain", ["x_prev"]),
])
def test_part_matches_torch_at_two_batch_sizes(exported, runs, name, part, outputs):
    res = exported(name, ExportConfig(part=part))
    assert res.valid, res.parity.reason
    assert {r["batch"] for r in res.parity.per_batch} == set(PARITY_BATCHES)
    sess = _ort(res.path)
    assert [o.name for o in sess.get_outputs()] == outputs
    net = runs(name).model.net
    gen = torch.Generator().manual_seed(5)
    for batch in PARITY_BATCHES:  # checked here independently of the recorded verdict
        shape = runs(name).model.sample_shape
        if part == "decoder":
            feeds = {"z": torch.randn(batch, runs(name).config.model.latent_dim, generator=gen)}
            want = [net.decode(feeds["z"])]
        elif part == "encoder":
            feeds = {"x": torch.rand(batch, *shape, generator=gen)}
            enc = net.encode(feeds["x"])
            if name == "vae":  # diagonal std is exported as L = diag(std)
                want = [enc[0], torch.diag_embed(enc[1])]
            else:
                want = list(enc) if isinstance(enc, tuple) else [enc]
        else:
            feeds = {"x_t": torch.randn(batch, *shape, generator=gen), "t": torch.randint(0, 100, (batch,), generator=gen)}
            feeds["t"] = feeds["t"] % runs(name).model.schedule.T
            want = [net(feeds["x_t"], feeds["t"])]
        with torch.no_grad():
            got = sess.run(None, {k: v.numpy() for k, v in feeds.items()})
            for g, w in zip(got, want):
                _assert_close(g, w.detach().numpy(), 1e-4)


def test_sidecar_records_exporter_opset_size_time_and_config(exported, runs):
    res = exported("vae", ExportConfig(part="decoder"))
    info = json.loads(sidecar_path(res.path).read_text())
    assert info["exporter"].startswith("torch.onnx.export(dynamo=True)")
    assert info["opset"] == 18 and info["node_count"] == len(onnx.load(res.path).graph.node)
    assert info["file_size_bytes"] == res.path.stat().st_size
    assert 0 < info["export_time_s"] < 120
    assert info["run"]["run_key"] == runs("vae").config.run_key
    assert info["run"]["config"]["model"]["latent_dim"] == 4
    assert info["parity"]["valid"] is True and info["parity"]["max_abs_err"] <= info["parity"]["tolerance"]
    assert info["inputs"] == [{"name": "z", "dtype": "float32", "shape": ["batch", 4]}]
    assert info["provenance"]["git_commit"] and "onnxruntime" in json.dumps(info["provenance"]["versions"])
    opset = {o.domain: o.version for o in onnx.load(res.path).opset_import}[""]
    assert opset >= 18


@pytest.mark.parametrize("graph", ["unrolled", "loop"])
def test_ddim_sampler_graph_equals_the_torch_sampler(exported, runs, graph):
    run = runs("ddpm")
    res = exported("ddpm", ExportConfig(part="sampler", graph=graph, sample=SampleConfig(steps=20)))
    assert res.valid, res.parity.reason
    assert res.parity.metric["agree"] is True
    assert [v.name for v in onnx.load(res.path).graph.input] == ["x_T"]  # deterministic DDIM: no noise input
    # toys clip x0 to the training data's box plus a margin, recorded as numbers (2 dimensions)
    low, high = _box(res)
    assert len(low) == len(high) == 2 and all(lo < -1 and hi > 1 for lo, hi in zip(low, high))
    assert res.info["details"]["clip_low"] == list(low)
    sess = _ort(res.path)
    for batch in (1, 7):
        x_T = torch.randn(batch, 2, generator=torch.Generator().manual_seed(batch))
        want = sample_ddim(run.model.net, x_T, run.model.schedule, 20, clip_x0=(low, high))
        x0, x = sess.run(["x0", "x"], {"x_T": x_T.numpy()})
        _assert_close(x0, want.numpy(), 1e-4)
        _assert_close(x, want.numpy(), 1e-4)  # toy data: data space is model space


@pytest.mark.parametrize("sampler,eta", [("ddpm", 0.0), ("ddim", 0.7)])
def test_stochastic_sampler_graph_uses_the_supplied_noise(exported, runs, sampler, eta):
    run = runs("ddpm")
    S = 10
    res = exported("ddpm", ExportConfig(part="sampler", sample=SampleConfig(sampler=sampler, steps=S, eta=eta)))
    assert res.valid, res.parity.reason
    sess = _ort(res.path)
    gen = torch.Generator().manual_seed(3)
    x_T, noise = torch.randn(5, 2, generator=gen), torch.randn(S, 5, 2, generator=gen)
    if sampler == "ddpm":
        want = sample_ddpm(run.model.net, x_T, run.model.schedule, S, noise=noise, clip_x0=_box(res))
    else:
        want = sample_ddim(run.model.net, x_T, run.model.schedule, S, eta=eta, noise=noise, clip_x0=_box(res))
    got = sess.run(["x0"], {"x_T": x_T.numpy(), "noise": noise.numpy()})[0]
    _assert_close(got, want.numpy(), 1e-4)
    other = sess.run(["x0"], {"x_T": x_T.numpy(), "noise": (noise * 0).numpy()})[0]
    assert np.max(np.abs(other - got)) > 1e-3  # the noise input really drives the graph


def test_chain_sampler_graph_runs_all_T_steps(exported, runs):
    run = runs("chain")
    res = exported("chain", ExportConfig(part="sampler"))
    assert res.valid and res.info["details"]["steps"] == run.model.schedule.T == 8
    with pytest.raises(ExportError, match="runs all T=8 steps"):
        export_part(run, ExportConfig(part="sampler", sample=SampleConfig(steps=4)), res.path.with_name("bad.onnx"))


def test_vae_refinement_graph_with_sampled_reencoding(exported, runs):
    run = runs("vae_full")
    res = exported("vae_full", ExportConfig(part="sampler", sample=SampleConfig(passes=2, reencode="sample")))
    assert res.valid, res.parity.reason
    sess = _ort(res.path)
    z = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    pass_gen = torch.Generator().manual_seed(11)
    noise = torch.stack([torch.randn(4, 4, generator=pass_gen) for _ in range(2)])
    want = sample_vae(run.model.net.decode, run.model.net.encode, z, passes=2, reencode="sample",
                      generator=torch.Generator().manual_seed(11))
    got = sess.run(None, {"z": z.numpy(), "noise": noise.numpy()})[0]
    _assert_close(got, want.numpy(), 1e-4)


def test_float16_variant_is_validated_with_its_own_tolerance(exported):
    res = exported("ddpm", ExportConfig(part="denoiser", precision="fp16"))
    fp32 = exported("ddpm", ExportConfig(part="denoiser"))
    assert res.valid, res.parity.reason
    model = onnx.load(res.path)
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    assert [v.type.tensor_type.elem_type for v in model.graph.input] == [onnx.TensorProto.FLOAT, onnx.TensorProto.INT64]
    assert res.parity.atol == 1e-2 and fp32.parity.atol == 1e-4
    assert res.parity.max_abs_err > fp32.parity.max_abs_err  # half precision really is in the graph


def test_parity_gate_marks_a_corrupted_graph_invalid(exported, runs, tmp_path):
    res = exported("vae", ExportConfig(part="decoder"))
    model = onnx.load(res.path)
    w = next(i for i in model.graph.initializer if i.name.endswith("weight"))
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * 1.01, w.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, bad)
    part = build_part(runs("vae"), ExportConfig(part="decoder"))
    verdict = check_parity(part, ExportConfig(part="decoder", parity_batches=PARITY_BATCHES), bad)
    assert not verdict.valid and "exceeds tolerance" in verdict.reason
    assert verdict.max_abs_err > verdict.tolerance


def test_wrong_part_for_the_family_is_a_named_error(runs, tmp_path):
    with pytest.raises(ExportError, match=r"part 'decoder' does not exist for model family 'ddpm' \(its parts: denoiser, sampler\)"):
        export_part(runs("ddpm"), ExportConfig(part="decoder"), tmp_path / "d.onnx")
    with pytest.raises(ExportError, match="part 'chain' does not exist for model family 'ddpm'"):
        export_part(runs("ddpm"), ExportConfig(part="chain"), tmp_path / "c.onnx")
    with pytest.raises(ExportError, match=r"sampler 'ddim' does not apply to model family 'vae' \(use one of: vae\)"):
        export_part(runs("vae"), ExportConfig(part="sampler", sample=SampleConfig(sampler="ddim")), tmp_path / "s.onnx")
    with pytest.raises(ExportError, match="must end in .onnx"):
        export_part(runs("vae"), ExportConfig(part="decoder"), tmp_path / "d.pt")
    with pytest.raises(ValueError, match="opset must be >= 18"):
        ExportConfig(opset=17)


def test_read_export_rejects_non_onnx_and_unexpected_inputs(exported, tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"certainly not protobuf \x00\xff" * 10)
    with pytest.raises(NotOnnxFileError, match="is not an ONNX model"):
        read_export(junk)
    with pytest.raises(NotOnnxFileError, match="does not exist"):
        read_export(tmp_path / "missing.onnx")
    res = exported("vae", ExportConfig(part="decoder"))
    model = onnx.load(res.path)
    model.graph.input[0].name = "latent"
    for n in model.graph.node:
        n.input[:] = ["latent" if v == "z" else v for v in n.input]
    renamed = tmp_path / "renamed.onnx"
    onnx.save(model, renamed)
    with pytest.raises(UnexpectedInputsError, match=r"claims to be a 'decoder' graph but has inputs \['latent'\]"):
        read_export(renamed)
    del model.metadata_props[:]
    onnx.save(model, renamed)
    with pytest.raises(UnexpectedInputsError, match="match no genbench part"):
        read_export(renamed)
    info = read_export(res.path)
    assert info.part == "decoder" and info.valid is True


@pytest.mark.slow
def test_unet_denoiser_and_image_sampler_graph(exported, runs):
    """Images: a conv U-Net, x0 clipping to [-1, 1] and the data-space output ((x + 1) / 2, clamped)."""
    run = runs("unet")
    den = exported("unet", ExportConfig(part="denoiser"))
    assert den.valid, den.parity.reason
    res = exported("unet", ExportConfig(part="sampler", sample=SampleConfig(steps=6)))
    assert res.valid, res.parity.reason
    x_T = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    want = sample_ddim(run.model.net, x_T, run.model.schedule, 6, clip_x0=1.0)
    x0, x = _ort(res.path).run(["x0", "x"], {"x_T": x_T.numpy()})
    _assert_close(x0, want.numpy(), 1e-4)
    _assert_close(x, run.model.to_data_space(want).numpy(), 1e-4)
    assert x.min() >= 0 and x.max() <= 1


@pytest.mark.slow
def test_float16_sampler_keeps_schedule_arithmetic_in_float32(exported):
    res = exported("ddpm", ExportConfig(part="sampler", precision="fp16", sample=SampleConfig(steps=20)))
    assert res.valid, res.parity.reason
    graph = onnx.load(res.path).graph  # converted whole: the composed graph's tables are 'w/<name>'
    tables = [i for i in graph.initializer if i.name.split("/")[-1] in ("sqrt_alpha_bar", "coef_x0", "coef_second")]
    assert tables and all(i.data_type == onnx.TensorProto.FLOAT for i in tables)
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.initializer)


def test_export_config_embeds_the_sample_config_and_records_it_nested():
    sample = SampleConfig(sampler="ddim", steps=7, eta=0.5, clip_low=(-1.0, -2.0), clip_high=(1.0, 2.0))
    cfg = ExportConfig(part="sampler", sample=sample, graph="loop")
    assert cfg.sample is sample and (cfg.part, cfg.graph) == ("sampler", "loop")
    from genlib.config import to_dict

    stored = to_dict(cfg)
    assert stored["sample"] == to_dict(sample) and "steps" not in stored  # one place per setting
    with pytest.raises(ValueError, match="unknown sampler 'dddim'; did you mean 'ddim'"):
        ExportConfig(sample=SampleConfig(sampler="dddim"))
    with pytest.raises(ValueError, match="sample must be a SampleConfig, got dict"):
        ExportConfig(sample={"sampler": "ddim"})


def test_a_version_1_sidecar_reads_in_the_current_layout(exported, tmp_path):
    res = exported("ddpm", ExportConfig(part="sampler", sample=SampleConfig(steps=4)))
    side = json.loads(sidecar_path(res.path).read_text())
    flat = {k: v for k, v in side["export_config"].items() if k != "sample"}
    old = {**side, "version": 1, "export_config": {**flat, **side["export_config"]["sample"]}}  # as version 1 wrote it
    copy = tmp_path / "old.onnx"
    copy.write_bytes(res.path.read_bytes())
    sidecar_path(copy).write_text(json.dumps(old))
    assert read_export(copy).sidecar["export_config"] == side["export_config"]
    sidecar_path(copy).write_text(json.dumps({**side, "version": 9}))
    with pytest.raises(UserError, match=r"^export sidecar '.*old.onnx.json' has version 9; this genbench reads "
                                        r"versions 1 to 2 \(export the part again or upgrade genbench\)$"):
        read_export(copy)


def test_gaussian_vae_refinement_graph_clamps_every_decode_like_torch(exported, runs):
    """A Gaussian-likelihood image VAE decodes means outside [0, 1]; its sampler (torch and the exported graph
    alike) clamps every decode, the re-encoded ones included, so a timed cell scores the torch path's samples."""
    run = runs("vae_gauss")
    z = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        raw = run.model.net.decode(z)
    assert float(raw.min()) < 0 or float(raw.max()) > 1  # unclamped means leave the data range
    res = exported("vae_gauss", ExportConfig(part="sampler", sample=SampleConfig(passes=2)))
    assert res.valid, res.parity.reason
    x = make_session(res.path).run(None, {"z": z.numpy()})[0]
    program = SAMPLERS.get("vae").program(run.model, SampleConfig(passes=2))
    with torch.no_grad():
        want = program.finish(run_program(program, z)).numpy()
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    np.testing.assert_allclose(x, want, atol=1e-4)


def test_exporter_registry_built_once_gives_the_same_graph():
    """The exporter's ATen table is built once per process (bench.export._torchlib_registry_once): a graph
    exported with a freshly built table and one exported with the kept table are byte-identical, each export
    gets its own copy of the table, and torch's hook is restored afterwards."""
    from torch.onnx._internal.exporter import _registration

    from bench import export as export_mod

    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.SiLU(), torch.nn.Linear(8, 2))
    args = ((torch.randn(4, 3),), ["x"], ["y"], ({0: torch.export.Dim("batch", min=1)},), 18)
    export_mod._REGISTRIES.clear()
    hook = _registration.ONNXRegistry.__dict__["from_torchlib"]
    fresh = export_mod.torch_export_onnx(net, *args)  # builds the table and keeps it
    assert len(export_mod._REGISTRIES) == 1
    kept = export_mod.torch_export_onnx(net, *args)   # uses the kept table
    assert len(export_mod._REGISTRIES) == 1
    assert fresh.SerializeToString() == kept.SerializeToString()
    assert _registration.ONNXRegistry.__dict__["from_torchlib"] is hook
    table = next(iter(export_mod._REGISTRIES.values()))
    with export_mod._torchlib_registry_once():
        copy = _registration.ONNXRegistry.from_torchlib()
    assert copy is not table and copy.functions == table.functions
    copy.functions.clear()
    assert table.functions  # a copy's changes never reach the kept table
