"""Heun (Karras et al. 2022, Alg. 1): one step is an Euler step to x0_hat (DDIM's), its error against the exact
flow of Gaussian data falls at second order, and S steps call the network 2S - 1 times."""
from __future__ import annotations

import pytest
import torch

from genlib.diffusion import NoiseSchedule, NoiseScheduleConfig
from genlib.models import SAMPLERS, SampleConfig
from genlib.models.ddpm import DDPMConfig
from genlib.samplers import run_program, sample_ddim
from genlib.solvers.heun import heun_program

from .solver_oracle import GaussianODE, rms

LINEAR = NoiseSchedule.from_config(NoiseScheduleConfig(kind="linear", T=1000))


def _heun(eps, x_T, steps):
    return run_program(heun_program(eps, LINEAR, steps, x_T[:1]), x_T)


def _x_T(n: int = 4000) -> torch.Tensor:
    return torch.randn(n, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_one_step_is_the_euler_step_to_x0_hat():
    ode = GaussianODE(LINEAR, 1.5, 0.5)
    x_T = _x_T()
    torch.testing.assert_close(_heun(ode.eps, x_T, 1), sample_ddim(ode.eps, x_T, LINEAR, 1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("m, s", [(0.0, 1.0), (1.5, 0.5)])
def test_error_against_the_exact_flow_falls_at_second_order(m, s):
    ode = GaussianODE(LINEAR, m, s)
    x_T = _x_T()
    err = {S: rms(_heun(ode.eps, x_T, S), ode.solve(x_T, S)) for S in (20, 40, 80)}
    ddim = {S: rms(sample_ddim(ode.eps, x_T, LINEAR, S), ode.solve(x_T, S)) for S in (20, 40, 80)}
    assert err[20] / err[40] > 3.5 and err[40] / err[80] > 3.5, err
    assert all(err[S] < 0.2 * ddim[S] for S in err), (err, ddim)


def test_s_steps_call_the_network_2s_minus_1_times():
    ode = GaussianODE(LINEAR, 0.0, 1.0)
    calls = []

    def counted(x, t):
        calls.append(int(t[0]))
        return ode.eps(x, t)

    _heun(counted, _x_T(8), 6)
    assert len(calls) == 11
    assert SAMPLERS.get("heun").network_evaluations(DDPMConfig(), SampleConfig(sampler="heun", steps=6)) == 11
    _, ts = LINEAR.respaced(6)
    assert calls[:3] == [int(ts[5]), int(ts[4]), int(ts[4])]  # t_i, then the Euler step's end t_{i-1}
