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
