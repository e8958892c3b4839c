"""The contract every registered sampler meets, run over `SAMPLERS` itself: a sampler registered tomorrow is
covered without editing this file.

For each sampler with a step program: its inputs are drawn in one order (the torch loop from a generator and
the graph's feeds from `draw_inputs` give identical samples), its whole-sampler ONNX graph passes the parity
gate at two batch sizes in the unrolled and the Loop form, the ONNX-network loop (`ort_net_loop`: the program
over the family's exported network parts) equals the torch loop on identical noise, and a grid that evaluates
and times it shows it in the quality-vs-steps data and the Pareto table. Samplers without a program draw
reproducibly. A registration missing a piece is an error.
"""
from __future__ import annotations

import pytest
import torch

from bench.backends import BACKENDS
from bench.parts import ExportConfig, sampler_program
from bench.suite import targets_for_run
from genlib.models import SAMPLERS, SampleConfig, SamplerSpec
from genlib.models.base import samplers_of
from genlib.samplers import draw_inputs, run_program


from .conftest import PARITY_BATCHES, TINY_RUNS

# The tiny runs of tests/bench/conftest.py in the order a sampler looks for a family it applies to (2-D toys first).
RUN_ORDER = ("ddpm", "chain", "vae_full", "vae", "ae")


def run_for(sampler: str) -> str:
    for name in RUN_ORDER:
        if sampler in samplers_of(TINY_RUNS[name]["model"]["family"]):
            return name
    raise AssertionError(f"sampler '{sampler}' applies to none of the test runs {RUN_ORDER}: add a run of its family")


def exercising(spec: SamplerSpec) -> SampleConfig:
    """A setting that exercises what the sampler reads: few steps, noise injected where it can be, passes."""
    changes = {"steps": 6, "eta": 0.5, "passes": 2, "reencode": "sample"}
    return SampleConfig(sampler=spec.name, **{k: v for k, v in changes.items() if k in spec.settings})


PROGRAMS = [n for n in SAMPLERS.names() if SAMPLERS.get(n).has_program]


def _history(name: str) -> bool:
    """Whether the sampler's program carries history (asked of a tiny ddpm model, the family every
    history-carrying sampler here applies to; False where it does not apply)."""
    from genlib.models import build_model
    from genlib.models.ddpm import DDPMConfig

    if name not in samplers_of("ddpm"):
        return False
    model = build_model(DDPMConfig(hidden=(4,), time_dim=4), (2,), "toy")
    return SAMPLERS.get(name).program(model, exercising(SAMPLERS.get(name))).history > 0
PLAIN = [n for n in SAMPLERS.names() if not SAMPLERS.get(n).has_program]


def test_every_sampler_has_a_family_and_the_new_solvers_are_registered():
    assert {"ddpm", "ddim", "dpm_solver_2m", "heun", "chain", "vae"} <= set(PROGRAMS)
    for name in SAMPLERS.names():
        run_for(name)


def test_a_registration_missing_a_piece_is_an_error():
    with pytest.raises(ValueError, match="exactly one of program"):
        SamplerSpec(name="x")
    with pytest.raises(ValueError, match="needs steps"):
        SamplerSpec(name="x", program=lambda model, cfg: None, net_parts=("denoiser",))
    with pytest.raises(ValueError, match="net_parts"):
        SamplerSpec(name="x", program=lambda model, cfg: None, steps=lambda m, c: 1)
    with pytest.raises(ValueError, match="step_setting 'passes' is not one of its settings"):
        SamplerSpec(name="x", run=lambda *a: None, settings=("steps",), step_setting="passes")


@pytest.mark.parametrize("name", PROGRAMS)
def test_noise_order_is_one_order(runs, name):
    """The torch loop drawing from a generator step by step equals the program run on `draw_inputs`' feeds
    from the same seed: the start, then each noisy step's draw, in one order for every consumer."""
    spec = SAMPLERS.get(name)
    model = runs(run_for(name)).model
    cfg = exercising(spec)
    torch_path = spec.generate(model, 5, cfg, torch.Generator().manual_seed(3))
    program = spec.program(model, cfg)
    feeds = draw_inputs(program, 5, torch.Generator().manual_seed(3))
    laid_out = program.finish(run_program(program, feeds[program.start], noise=feeds.get("noise")))
    assert torch.equal(torch_path, laid_out)
    if program.noisy:  # the noise matters: other draws give other samples
        other = dict(feeds, noise=torch.randn_like(feeds["noise"]))
        moved = program.finish(run_program(program, other[program.start], noise=other["noise"]))
        assert not torch.allclose(moved, laid_out)


@pytest.mark.parametrize("name", PLAIN)
def test_samplers_without_a_program_draw_reproducibly(runs, name):
    spec = SAMPLERS.get(name)
    model = runs(run_for(name)).model
    a = spec.generate(model, 7, exercising(spec), torch.Generator().manual_seed(1))
    b = spec.generate(model, 7, exercising(spec), torch.Generator().manual_seed(1))
    assert a.shape == (7, *model.sample_shape) and torch.equal(a, b)


@pytest.fixture(scope="module")
def sampler_target(runs, tmp_path_factory):
    """name -> the sampler's timing target (its unrolled graph exported behind the parity gate, with the network
    parts its steps call), exported once per module."""
    root = tmp_path_factory.mktemp("contract")
    made: dict = {}

    def get(name: str):
        if name not in made:
            base = ExportConfig(part="sampler", sample=exercising(SAMPLERS.get(name)), parity_batches=PARITY_BATCHES)
            [made[name]] = targets_for_run(runs(run_for(name)), ["sampler"], base, root / name)
        return made[name]

    return get


def _check_parity(parity: dict, details: dict, name: str) -> None:
    spec = SAMPLERS.get(name)
    assert parity["valid"], parity["reason"]
    assert {r["batch"] for r in parity["per_batch"]} == set(PARITY_BATCHES)
    assert all(r["max_abs_ref"] > 0 for r in parity["per_batch"])  # real samples, not zeros
    assert details["sampler"] == name and details["label"] == spec.describe(exercising(spec))
    assert details["nfe"] >= details["steps"] >= 1


@pytest.mark.parametrize("name", PROGRAMS)
def test_whole_sampler_graph_passes_the_parity_gate_at_two_batch_sizes(sampler_target, name):
    target = sampler_target(name)
    assert target.info.details["graph"] == "unrolled"
    _check_parity(target.info.sidecar["parity"], target.info.details, name)


# The Loop form for every sampler; in the default run only for samplers that carry history (the composer's
# loop-carried state beyond x), the rest in `tox -e slow` (test_shared_steps runs DDPM's Loop by default).
LOOP_CASES = [pytest.param(n, marks=() if SAMPLERS.get(n).has_program and _history(n) else pytest.mark.slow)
              for n in PROGRAMS]


@pytest.mark.parametrize("name", LOOP_CASES)
def test_the_loop_form_passes_the_parity_gate_too(exported, name):
    res = exported(run_for(name), ExportConfig(part="sampler", graph="loop", sample=exercising(SAMPLERS.get(name))))
    _check_parity(res.parity.to_dict(), res.info["details"], name)


@pytest.mark.parametrize("name", PROGRAMS)
def test_the_onnx_loops_equal_the_torch_loop_on_identical_noise(sampler_target, runs, name):
    """`ort_net_loop` (the program over the exported network parts) and `ort_step_loop` (the recorded step order
    over the exported single step) give the torch loop's samples from the same inputs."""
    spec = SAMPLERS.get(name)
    run = runs(run_for(name))
    target = sampler_target(name)
    assert set(target.siblings) >= set(spec.net_parts)
    want = target.part_graph.reference(target.feeds(4))["x"]
    prepared = BACKENDS.get("ort_net_loop").prepare(target, 4, 1)
    try:
        net_loop = prepared.call()
    finally:
        prepared.close()
    final_state = BACKENDS.get("ort_step_loop").prepare(target, 4, 1).call()
    with torch.no_grad():
        step_loop = sampler_program(run, target.export_cfg).finish(torch.from_numpy(final_state))
    for got in (net_loop, step_loop):
        assert got.shape == want.shape
        assert float((got - want).abs().max()) <= 1e-4 * max(1.0, float(want.abs().max()))


# -- the report: every sampler counted in steps appears in the quality-vs-steps data and the Pareto table -----
STEP_SAMPLERS = [n for n in PROGRAMS if SAMPLERS.get(n).step_setting == "steps"]


@pytest.fixture(scope="module")
def solver_store(tmp_path_factory, tiny_timed_grid):
    """A timed grid over every sampler counted in respaced steps (one checkpoint, S in {2, 4})."""
    from ablations import parse_grid, plan_grid, run_plan

    grid = tiny_timed_grid("solvers", {"n": 128, "metrics": ["swd"]},
                           {"eval.steps": [2, 4], "eval.sampler": STEP_SAMPLERS}, {"eval.steps": [4]},
                           timing={"backends": ["ort_graph", "torch_loop"]}, batches=(2,))
    db = tmp_path_factory.mktemp("solvers") / "results.db"
    summary = run_plan(plan_grid(parse_grid(grid)), db, executor="serial", progress=False)
    assert summary.complete, summary.failures
    return db


@pytest.mark.parametrize("name", STEP_SAMPLERS)
def test_every_step_sampler_reaches_the_steps_data_and_the_pareto_table(solver_store, name):
    from reports.load import open_store
    from reports.pareto import pareto_report
    from reports.tables import sampler_setting

    data = open_store(solver_store)
    evals = data.runs[data.runs["kind"] == "eval"]
    settings = [sampler_setting(cfg) for cfg in evals["config"]]
    mine = [s for s in settings if s is not None and s.sampler == name]
    assert {s.steps for s in mine} == {2, 4}  # both S values, read as S
    assert all(s.label == SAMPLERS.get(name).describe(SampleConfig(sampler=name)) for s in mine)
    tables, _ = pareto_report(data)
    values = {str(row.get("eval.sampler")) for t in tables for row in t.rows}
    assert name in values, values
