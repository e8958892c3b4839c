"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Alg. 2): a multistep second-order solver of the diffusion
ODE in data prediction (x0) over S respaced steps of an eps network.

With alpha = sqrt(abar), sigma = sqrt(1 - abar), lambda = log(alpha / sigma) and h = lambda_prev - lambda_cur,
the first-order update x_prev = (sigma_prev / sigma) x - alpha_prev (e^{-h} - 1) D (eq. 8) is DDIM; the 2M
update uses D = x0_hat + (1 / 2r) (x0_hat - x0_hat_last), r = h_last / h (the midpoint form of diffusers'
DPMSolverMultistepScheduler, solver_order 2). The first step has no history and the last step, which ends at
sigma = 0, is first order (diffusers: lower_order_final, final sigma zero). The state carries x0_hat_last.
"""
from __future__ import annotations

import torch

from genlib.diffusion import NoiseSchedule
from genlib.models.base import PeerSampler, SampleConfig
from genlib.models.ddpm import diffusion_program, diffusion_sampler, respaced_steps
from genlib.samplers import Denoise, Index, SamplerProgram, State, clip_of, solver_program, take, timestep_at, x0_eps_at


def dpm_solver_2m_tables(schedule: NoiseSchedule, steps: int, *, dtype: torch.dtype = torch.float32,
                         device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Per-step tables (S,) indexed by the respaced step i (run from S-1 down to 0), computed in float64.

    coef_x = sigma_prev / sigma; coef_d = alpha_prev - coef_x alpha (= alpha_prev (1 - e^{-h}), finite at the
    last step where sigma_prev = 0); coef_history = 1 / (2 r_i) on second-order steps, 0 on the first and last.
    """
    sched, ts = schedule.respaced(steps)
    ab = sched.alpha_bar.to(torch.float64)
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
    alpha_prev, sigma_prev = ab_prev.sqrt(), (1 - ab_prev).sqrt()
    coef_x = sigma_prev / sigma
    coef_d = alpha_prev - coef_x * alpha
    h = torch.log(alpha_prev / sigma_prev) - torch.log(alpha / sigma)  # h[i]: from t_i to t_{i-1}; h[0] = inf
    coef_history = torch.zeros_like(h)
    for i in range(1, steps - 1):  # second order; h[i + 1] is the step just taken (from t_{i+1} to t_i)
        coef_history[i] = 0.5 * h[i] / h[i + 1]  # 1 / (2 r), r = h_last / h
    tables = {"sqrt_alpha_bar": alpha, "sqrt_one_minus_alpha_bar": sigma, "coef_x": coef_x, "coef_d": coef_d,
              "coef_history": coef_history}
    out = {"timesteps": ts.to(torch.int64), **{k: v.to(dtype) for k, v in tables.items()}}
    return {k: v.to(device) for k, v in out.items()} if device is not None else out


def dpm_solver_2m_step(denoise: Denoise, tables: dict[str, torch.Tensor], i: Index, state: State,
                       noise: torch.Tensor | None = None) -> State:
    """One DPM-Solver++(2M) step from state (x_t, x0_hat of the previous step), each (B, ...); returns
    (x_prev, x0_hat). The x0 clip box in `tables` (clip_low, clip_high), if any, applies to x0_hat."""
    x, x0_last = state
    eps = torch.as_tensor(denoise(x, timestep_at(tables["timesteps"], i, x))).to(x)
    x0, _ = x0_eps_at(tables["sqrt_alpha_bar"], tables["sqrt_one_minus_alpha_bar"], i, x, eps, clip_of(tables))
    d = x0 + take(tables["coef_history"], i) * (x0 - x0_last)  # 2M: D0 + D1 / 2, D1 = (x0 - x0_last) / r
    return take(tables["coef_x"], i) * x + take(tables["coef_d"], i) * d, x0  # eq. 8 with D


def dpm_solver_2m_program(denoise: Denoise, schedule: NoiseSchedule, steps: int, x_like: torch.Tensor,
                          **kwargs) -> SamplerProgram:
    """The solver over any eps callable; x_like (1, *shape) gives the tables' dtype and device."""
    tables = dpm_solver_2m_tables(schedule, steps, dtype=x_like.dtype, device=x_like.device)
    return solver_program(dpm_solver_2m_step, denoise, tables, x_like, history=1, **kwargs)


def _program(model, cfg: SampleConfig) -> SamplerProgram:
    steps = respaced_steps(model.cfg, cfg)
    return diffusion_program(model, cfg, lambda net, like, **kw: dpm_solver_2m_program(net, model.schedule, steps,
                                                                                       like, **kw))


def diffusers_dpm_solver_2m(model, cfg: SampleConfig):
    """diffusers' DPMSolverMultistepScheduler (dpmsolver++, order 2, midpoint, final sigma zero) on genlib's
    respaced timesteps, as a diffusers user writes it: stateful, set_timesteps per generation, step() per t.
    It steps in float32 whatever the input dtype; it has no x0 clip box (its thresholding is dynamic)."""
    import numpy as np
    from diffusers import DPMSolverMultistepScheduler

    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=model.schedule.T, trained_betas=model.schedule.betas.numpy().astype(np.float64),
        solver_order=2, algorithm_type="dpmsolver++", solver_type="midpoint", lower_order_final=True,
        final_sigmas_type="zero", prediction_type="epsilon")
    _, ts = model.schedule.respaced(respaced_steps(model.cfg, cfg))
    timesteps = [int(t) for t in reversed(ts.tolist())]

    def call(x_T: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        scheduler.set_timesteps(timesteps=timesteps, device=x_T.device)
        x = x_T
        for t in scheduler.timesteps:
            x = scheduler.step(model.net(x, t.expand(x.shape[0])), t, x).prev_sample
        return x

    return call


diffusion_sampler("dpm_solver_2m", "DPM-Solver++(2M): multistep 2nd-order ODE solver in x0 (Lu et al. 2022)",
                  _program, settings=(), label=lambda cfg: "dpm-solver++(2M)",
                  peer=PeerSampler(library="diffusers", install="pip install 'diffusers>=0.30'",
                                   build=diffusers_dpm_solver_2m, note="diffusers steps in float32; no x0 clip box"))
