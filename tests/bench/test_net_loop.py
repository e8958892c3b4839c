"""The per-step ONNX loop (`ort_net_loop`) runs the family's own step glue over the exported network: a
step_eps chain's network outputs eps, and only the family's predict_prev turns it into x_{t-1}."""
from __future__ import annotations

import torch

from genlib.models import SampleConfig
from genlib.samplers import sample_chain

import bench.backends as backends
from bench.parts import ExportConfig
from bench.suite import targets_for_run


def test_ort_net_loop_matches_the_torch_sampler_for_a_step_eps_chain(runs, tmp_path):
    run = runs("chain_eps")
    base = ExportConfig(sample=SampleConfig(), parity_batches=(2, 9))
    [target] = targets_for_run(run, ["sampler"], base, tmp_path)
    assert set(target.siblings) == {"chain"}
    prepared = backends.BACKENDS.get("ort_net_loop").prepare(target, 5, 1, provider="cpu")
    try:
        got = prepared.call()
    finally:
        prepared.close()
    feeds = target.feeds(5)
    want = target.part_graph.reference(feeds)["x0"]  # genlib's sample_chain over model.predict_prev
    assert got.shape == want.shape == (5, 2)
    assert torch.max(torch.abs(got - want)) <= 1e-4
    raw = sample_chain(run.model.net, feeds["x_T"], run.model.schedule.T)  # the network's eps taken as x_{t-1}
    assert torch.max(torch.abs(raw - want)) > 1e-2


def test_with_parts_swaps_the_network_of_a_copy_only(runs):
    model = runs("chain_eps").model
    net = model.net
    other = model.with_parts({"chain": lambda x_t, t: torch.zeros_like(x_t)})
    x_t, t = torch.ones(3, 2), torch.full((3,), 4)
    want = model.schedule.chain_prev_from_step_eps(x_t, t, torch.zeros(3, 2))
    assert torch.equal(other.predict_prev(x_t, t), want)
    assert model.net is net
