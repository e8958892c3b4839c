"""DPM-Solver++(2M): its first-order steps are DDIM's, its error against the exact flow of Gaussian data falls
at second order (DDIM's at first), it equals diffusers' DPMSolverMultistepScheduler on identical inputs, and
its tables are what the paper's update needs."""
from __future__ import annotations

import pytest
import torch

from genlib.diffusion import NoiseSchedule, NoiseScheduleConfig
from genlib.samplers import run_program, sample_ddim
from genlib.solvers.dpm_solver import dpm_solver_2m_program, dpm_solver_2m_tables

from .solver_oracle import GaussianODE, rms

LINEAR = NoiseSchedule.from_config(NoiseScheduleConfig(kind="linear", T=1000))


def _x_T(n: int = 4000, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(n, 1, generator=torch.Generator().manual_seed(0), dtype=dtype)


def _dpm(eps, x_T, steps, schedule=LINEAR):
    return run_program(dpm_solver_2m_program(eps, schedule, steps, x_T[:1]), x_T)


@pytest.mark.parametrize("steps", [1, 2])
def test_with_no_second_order_step_it_is_ddim(steps):
    # S <= 2: the first step has no history and the last is first order (final sigma zero), eq. 8 = DDIM eta 0
    ode = GaussianODE(LINEAR, 1.5, 0.5)
    x_T = _x_T()
    torch.testing.assert_close(_dpm(ode.eps, x_T, steps), sample_ddim(ode.eps, x_T, LINEAR, steps), rtol=0, atol=1e-12)


def test_tables_first_and_last_steps_are_first_order_and_the_last_lands_on_x0():
    t = dpm_solver_2m_tables(LINEAR, 10, dtype=torch.float64)
    assert t["coef_history"][0] == 0 and t["coef_history"][-1] == 0 and (t["coef_history"][1:-1] > 0).all()
    assert t["coef_x"][0] == 0 and abs(float(t["coef_d"][0]) - 1.0) < 1e-12  # sigma_prev = 0: x = D
    # coef_d = alpha_prev (1 - e^{-h}) with h = lambda_prev - lambda (eq. 8), for every step but the last
    sched, _ = LINEAR.respaced(10)
    ab = sched.alpha_bar
    ab_prev = torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])
    lam = 0.5 * torch.log(ab / (1 - ab))
    lam_prev = 0.5 * torch.log(ab_prev[1:] / (1 - ab_prev[1:]))
    h = lam_prev - lam[1:]
    torch.testing.assert_close(t["coef_d"][1:], ab_prev[1:].sqrt() * (1 - torch.exp(-h)), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(t["coef_history"][1:-1], 0.5 * h[:-1] / h[1:], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("m, s", [(0.0, 1.0), (1.5, 0.5)])
def test_error_against_the_exact_flow_falls_at_second_order(m, s):
    ode = GaussianODE(LINEAR, m, s)
    x_T = _x_T()
    err = {S: rms(_dpm(ode.eps, x_T, S), ode.solve(x_T, S)) for S in (40, 80)}
    ddim = {S: rms(sample_ddim(ode.eps, x_T, LINEAR, S), ode.solve(x_T, S)) for S in (40, 80)}
    assert err[40] / err[80] > 3.0, err  # second order: halving the step divides the error by about 4
    assert 1.6 < ddim[40] / ddim[80] < 2.4, ddim  # DDIM (first order) by about 2
    assert err[80] < 0.7 * ddim[80]


class _Float64Torch:
    """torch as diffusers' scheduler module sees it, with float32 meaning float64: its step() upcasts to float32
    whatever the input, which would bound the comparison at float32 round-off amplified by 1 / sqrt(abar_T)."""

    float32 = torch.float64

    def __getattr__(self, name):
        return getattr(torch, name)


def test_equals_diffusers_dpm_solver_multistep_on_identical_inputs(monkeypatch):
    pytest.importorskip("diffusers", reason="diffusers not installed (optional benchmark dependency)")
    import diffusers.schedulers.scheduling_dpmsolver_multistep as module

    from genlib.models.base import SampleConfig
    from genlib.solvers.dpm_solver import diffusers_dpm_solver_2m

    monkeypatch.setattr(module, "torch", _Float64Torch())
    set_timesteps = module.DPMSolverMultistepScheduler.set_timesteps

    def set_timesteps_float64(self, *args, **kwargs):  # its sigma table is cast to numpy float32 on the way
        set_timesteps(self, *args, **kwargs)
        ab = self.alphas_cumprod.to(torch.float64)[self.timesteps.long()]
        self.sigmas = torch.cat([((1 - ab) / ab).sqrt(), torch.zeros(1, dtype=torch.float64)])

    monkeypatch.setattr(module.DPMSolverMultistepScheduler, "set_timesteps", set_timesteps_float64)
    ode = GaussianODE(LINEAR, 1.5, 0.5)

    class Model:  # what the peer reads of a model: its schedule, config (T) and eps network
        schedule = LINEAR
        net = staticmethod(ode.eps)

        class cfg:
            class noise:
                T = 1000

    x_T = _x_T(256)
    for steps in (2, 3, 5, 10, 25, 50):
        ours = _dpm(ode.eps, x_T, steps)
        theirs = diffusers_dpm_solver_2m(Model, SampleConfig(sampler="dpm_solver_2m", steps=steps, clip_x0=False))(
            x_T, None)
        assert theirs.dtype == torch.float64
        assert float((ours - theirs).abs().max()) <= 1e-12, steps  # measured: 2.7e-13 at S = 2, 4e-15 at S = 50
        if steps > 2:  # a second-order step ran: DDIM differs by far more than the agreement
            assert float((ours - sample_ddim(ode.eps, x_T, LINEAR, steps)).abs().max()) > 1e-4
