"""A perturbed denoiser (SampleConfig.perturb) reaches the exported whole-sampler graph: the graph passes the parity
gate against the perturbed torch loop, and its samples differ from the clean graph's."""
from __future__ import annotations

import pytest

from bench.parts import ExportConfig
from genlib.models import SampleConfig


@pytest.mark.parametrize("perturb", ["scale:0.3", "field:0.2"])
def test_the_exported_sampler_runs_the_perturbed_denoiser(exported, perturb):
    def sampler(p: str):
        return exported("ddpm", ExportConfig(part="sampler", sample=SampleConfig(sampler="ddim", steps=5, perturb=p)))

    clean, perturbed = sampler("none"), sampler(perturb)
    parity = perturbed.info["parity"]
    assert parity["valid"] and parity["max_abs_err"] < 1e-4  # ONNX Runtime equals the perturbed torch loop
    # same feeds, same weights: only the perturbation separates the two graphs' samples
    assert abs(parity["metric"]["onnx"] - clean.info["parity"]["metric"]["onnx"]) > 1e-3


# -- real errors: the denoiser's int8 graph and an early checkpoint (bench.perturb) ---------------------------

def test_the_int8_denoiser_is_a_small_measured_error_and_recorded(runs, tmp_path):
    import torch

    from bench.perturb import realise_perturbation
    from genlib.train import generate

    run = runs("ddpm")
    spec = "precision:int8_dynamic"
    realised, facts = realise_perturbation(run, spec, tmp_path / "exports")
    cfg = SampleConfig(sampler="ddim", steps=10, eta=0.0)
    clean = generate(run.model, 256, cfg, seed=3)
    int8 = generate(realised.model, 256, SampleConfig(sampler="ddim", steps=10, eta=0.0, perturb=spec), seed=3)
    distance = (int8 - clean).norm(dim=1)
    # identical noise, the same sampler: the int8 network's error alone moves the samples, a little
    assert 1e-5 < float(distance.mean()) < 0.2 * float(clean.norm(dim=1).mean())
    assert facts["precision"] == "int8_dynamic" and facts["export_key"]
    assert facts["precision_facts"]["method"] == "dynamic" and facts["max_abs_err"] > 0
    assert run.model.net is not realised.model.net and isinstance(run.model.net, torch.nn.Module)  # untouched
    # the same name again reuses the cached export: the same network, the same samples
    again, facts_again = realise_perturbation(run, spec, tmp_path / "exports")
    assert facts_again["export_key"] == facts["export_key"]
    assert torch.equal(generate(again.model, 256, SampleConfig(sampler="ddim", steps=10, eta=0.0, perturb=spec),
                                seed=3), int8)


def test_a_real_perturbation_is_refused_where_nothing_realises_it(runs, tmp_path):
    from bench.perturb import realise_perturbation
    from genlib.perturb import PerturbationNotRealised
    from genlib.train import generate

    run = runs("ddpm")
    for spec in ("precision:int8_dynamic", "step:10"):
        with pytest.raises(PerturbationNotRealised, match=f"perturb '{spec}' is a real network's error"):
            generate(run.model, 4, SampleConfig(sampler="ddim", steps=5, perturb=spec))
    realised, _ = realise_perturbation(run, "precision:fp16", tmp_path)
    with pytest.raises(PerturbationNotRealised, match="realises perturb 'precision:fp16', asked to sample it as "
                                                      "the clean denoiser"):
        generate(realised.model, 4, SampleConfig(sampler="ddim", steps=5))
    with pytest.raises(PerturbationNotRealised, match="does not realise it"):  # realised as fp16, asked as int8
        generate(realised.model, 4, SampleConfig(sampler="ddim", steps=5, perturb="precision:int8_dynamic"))
    from genlib.checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match=r"saved no weights at step 10 \(its train.save_at: none\)"):
        realise_perturbation(run, "step:10", tmp_path)
