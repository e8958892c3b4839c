"""One sampler step, two drivers: the exported step modules call genlib's step functions (the very objects
the torch samplers loop over), bench.wrappers holds no arithmetic of its own, and the parity gate passes
for every sampler graph at two batch sizes, in the unrolled and the Loop form and as a single step graph."""
from __future__ import annotations

import ast
import dataclasses
import inspect

import numpy as np
import pytest
import torch

import bench.wrappers as wrappers
import genlib.samplers as samplers
from bench.parts import ExportConfig
from genlib.models import SampleConfig
from bench.runtime import make_session

from .conftest import PARITY_BATCHES


@pytest.mark.parametrize("case", ["ddim_eta0.5", "vae_sample"])
def test_the_export_module_calls_the_programs_own_step(runs, case):
    """program_step's forward calls the very step function the torch loop (run_program) calls: count both."""
    from bench.parts import resolve_sampler, sampler_program

    name, cfg = SAMPLER_GRAPHS[case]
    run = runs(name)
    program = sampler_program(run, resolve_sampler(run, cfg))
    calls = []

    def counted(*args):
        calls.append(args[1])
        return program.step(*args)

    spied = dataclasses.replace(program, step=counted)
    module = wrappers.program_step(spied, run.model.net)
    feeds = samplers.draw_inputs(spied, 3, torch.Generator().manual_seed(0))
    x = feeds[spied.start]
    for i in spied.indices:
        args = (x, torch.tensor([i])) + ((feeds["noise"],) if spied.noisy else ())
        x = module(*args)[0]
    graph_calls = len(calls)
    samplers.run_program(spied, feeds[spied.start], noise=feeds.get("noise"))
    assert graph_calls == len(calls) - graph_calls == len(spied.indices) > 0


@pytest.mark.parametrize("name", ["ddim_step", "ddpm_step", "chain_step", "vae_pass"])
def test_torch_samplers_loop_over_the_same_step_functions(monkeypatch, name):
    calls = []
    original = getattr(samplers, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(samplers, name, counted)
    schedule = samplers.NoiseSchedule(np.linspace(1e-4, 0.05, 40))
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    den = lambda x_t, t: 0.1 * x_t  # noqa: E731
    run = {"ddim_step": lambda: samplers.sample_ddim(den, x, schedule, 6, eta=0.5),
           "ddpm_step": lambda: samplers.sample_ddpm(den, x, schedule, 6),
           "chain_step": lambda: samplers.sample_chain(den, x, 6),
           "vae_pass": lambda: samplers.sample_vae(lambda z: z, lambda v: (v, torch.ones_like(v)), x, passes=6,
                                                   reencode="sample")}[name]
    run()
    assert len(calls) == 6


def test_wrappers_hold_no_noise_process_arithmetic():
    """Indexing and calls only: no arithmetic operator and no sqrt/clamp/exp anywhere in bench.wrappers."""
    tree = ast.parse(inspect.getsource(wrappers))
    arithmetic = [n for n in ast.walk(tree) if isinstance(n, (ast.BinOp, ast.AugAssign))
                  and isinstance(n.op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.MatMult))]
    assert not arithmetic, [ast.unparse(n) for n in arithmetic]
    math_calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                  and n.func.attr in {"sqrt", "clamp", "exp", "log", "rsqrt", "pow", "minimum", "maximum"}]
    assert not math_calls, [ast.unparse(n) for n in math_calls]


SAMPLER_GRAPHS = {
    "ddim_eta0": ("ddpm", ExportConfig(part="sampler", sample=SampleConfig(sampler="ddim", steps=12))),
    "ddim_eta0.5": ("ddpm", ExportConfig(part="sampler", sample=SampleConfig(sampler="ddim", steps=12, eta=0.5))),
    "ddpm_small": ("ddpm", ExportConfig(part="sampler", sample=SampleConfig(sampler="ddpm", steps=12))),
    "ddpm_large_loop": ("ddpm", ExportConfig(part="sampler", graph="loop",
                                             sample=SampleConfig(sampler="ddpm", steps=12, variance="large"))),
    "chain": ("chain", ExportConfig(part="sampler")),
    "vae_mean": ("vae", ExportConfig(part="sampler", sample=SampleConfig(passes=2))),
    "vae_sample": ("vae_full", ExportConfig(part="sampler", sample=SampleConfig(passes=2, reencode="sample"))),
}


@pytest.mark.parametrize("case", list(SAMPLER_GRAPHS))
def test_parity_gate_passes_for_every_sampler_graph_at_two_batch_sizes(exported, case):
    name, cfg = SAMPLER_GRAPHS[case]
    res = exported(name, cfg)
    assert res.valid, res.parity.reason
    rows = res.parity.per_batch
    assert {r["batch"] for r in rows} == set(PARITY_BATCHES)
    assert all(r["max_abs_err"] <= r["tolerance"] for r in rows)
    assert all(r["max_abs_ref"] > 0 for r in rows)  # compared against real samples, not zeros
    assert res.export_info.part == "sampler" and res.export_info.valid is True  # handed back, not re-read


@pytest.mark.parametrize("case", ["ddim_eta0.5", "vae_sample"])
def test_the_single_step_graph_driven_by_a_python_loop_equals_the_torch_sampler(exported, runs, case):
    """The exported step (what `ort_step_loop` times) is the same step: S calls reproduce genlib's sampler."""
    name, cfg = SAMPLER_GRAPHS[case]
    res, run = exported(name, cfg), runs(name)
    step = make_session(res.step_path)
    gen = torch.Generator().manual_seed(8)
    if case.startswith("vae"):
        net, K = run.model.net, cfg.sample.passes
        z, noise = torch.randn(5, 4, generator=gen), torch.randn(K, 5, 4, generator=gen)
        state, out = z.numpy(), None
        for i in range(K):
            state, out = step.run(None, {"x": state, "i": np.array([i]), "noise": noise.numpy()})
        want = samplers.sample_vae(net.decode, net.encode, z, passes=K, reencode="sample", noise=noise)
    else:
        S = cfg.sample.steps
        x_T, noise = torch.randn(5, 2, generator=gen), torch.randn(S, 5, 2, generator=gen)
        state = x_T.numpy()
        for i in reversed(range(S)):
            state, out = step.run(None, {"x": state, "i": np.array([i]), "noise": noise.numpy()})
        sample = res.info["export_config"]["sample"]
        box = tuple(sample["clip_low"]), tuple(sample["clip_high"])
        want = samplers.sample_ddim(run.model.net, x_T, run.model.schedule, S, eta=cfg.sample.eta, noise=noise,
                                    clip_x0=box)
    assert np.max(np.abs(out - want.numpy())) <= 1e-4
