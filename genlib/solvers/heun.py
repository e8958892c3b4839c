"""Heun's second-order method (Karras et al. 2022, "EDM", Alg. 1, deterministic: S_churn = 0) on the probability-
flow ODE, over S respaced steps of an eps network.

In EDM's variables x~ = x_t / alpha (alpha = sqrt(abar)) and sigma = sqrt(1 - abar) / alpha, the ODE is
dx~/dsigma = (x~ - D(x~; sigma)) / sigma = eps_hat. A step from sigma_i to sigma_{i-1} takes an Euler step
(line 5), evaluates eps_hat again at its end (line 7) and averages the two slopes (line 8); the last step,
to sigma = 0, stays Euler (line 6). S steps cost 2S - 1 network evaluations. The x0 clip box, if any, applies
to both evaluations (eps_hat recomputed from the clipped x0).
"""
from __future__ import annotations

import torch

from genlib.diffusion import NoiseSchedule
from genlib.models.base import SampleConfig
from genlib.models.ddpm import diffusion_program, diffusion_sampler, respaced_steps
from genlib.samplers import Denoise, Index, SamplerProgram, State, clip_of, solver_program, take, timestep_at, x0_eps_at


def heun_tables(schedule: NoiseSchedule, steps: int, *, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Per-step tables (S,) indexed by the respaced step i (run from S-1 down to 0).

    *_next describe the end of step i (t_{i-1}; at i = 0 the end is sigma = 0, alpha = 1 and `second` = 0, its
    timestep a placeholder the last step never uses)."""
    sched, ts = schedule.respaced(steps)
    ab = sched.alpha_bar.to(torch.float64)
    alpha, sqrt_1mab = ab.sqrt(), (1 - ab).sqrt()
    sigma = sqrt_1mab / alpha  # EDM sigma of the VP process at t_i
    nxt = torch.cat([torch.zeros(1, dtype=torch.long), torch.arange(steps - 1)])  # i -> i - 1 (0 -> 0)
    second = torch.ones(steps, dtype=torch.float64)
    second[0] = 0.0
    sigma_next = sigma[nxt] * second
    alpha_next = torch.where(second > 0, alpha[nxt], torch.ones_like(alpha))
    tables = {"sqrt_alpha_bar": alpha, "sqrt_one_minus_alpha_bar": sqrt_1mab, "sigma": sigma,
              "sigma_next": sigma_next, "sqrt_alpha_bar_next": alpha_next,
              "sqrt_one_minus_alpha_bar_next": sqrt_1mab[nxt], "second": second}
    out = {"timesteps": ts.to(torch.int64), "timesteps_next": ts[nxt].to(torch.int64),
           **{k: v.to(dtype) for k, v in tables.items()}}
    return {k: v.to(device) for k, v in out.items()} if device is not None else out


def heun_step(denoise: Denoise, tables: dict[str, torch.Tensor], i: Index, state: State,
              noise: torch.Tensor | None = None) -> State:
    """One Heun step from x_t (B, ...) at t_i to x at t_{i-1} (to x0_hat at i = 0)."""
    x = state[0]
    clip = clip_of(tables)
    eps = torch.as_tensor(denoise(x, timestep_at(tables["timesteps"], i, x))).to(x)
    _, d = x0_eps_at(tables["sqrt_alpha_bar"], tables["sqrt_one_minus_alpha_bar"], i, x, eps, clip)  # Alg. 1 l. 4
    x_tilde = x / take(tables["sqrt_alpha_bar"], i)
    dsigma = take(tables["sigma_next"], i) - take(tables["sigma"], i)
    alpha_next = take(tables["sqrt_alpha_bar_next"], i)
    second = take(tables["second"], i)
    if not (isinstance(i, int) and float(second) == 0.0):  # a graph computes it and weighs it by 0 at i = 0
        x_euler = alpha_next * (x_tilde + dsigma * d)  # line 5, back in the VP scale
        eps2 = torch.as_tensor(denoise(x_euler, timestep_at(tables["timesteps_next"], i, x))).to(x)
        _, d2 = x0_eps_at(tables["sqrt_alpha_bar_next"], tables["sqrt_one_minus_alpha_bar_next"], i, x_euler, eps2,
                          clip)  # line 7
        d = d + second * 0.5 * (d2 - d)  # line 8: (d + d') / 2
    return (alpha_next * (x_tilde + dsigma * d),)


def heun_program(denoise: Denoise, schedule: NoiseSchedule, steps: int, x_like: torch.Tensor,
                 **kwargs) -> SamplerProgram:
    """Heun over any eps callable; x_like (1, *shape) gives the tables' dtype and device."""
    tables = heun_tables(schedule, steps, dtype=x_like.dtype, device=x_like.device)
    return solver_program(heun_step, denoise, tables, x_like, **kwargs)


def _program(model, cfg: SampleConfig) -> SamplerProgram:
    steps = respaced_steps(model.cfg, cfg)
    return diffusion_program(model, cfg, lambda net, like, **kw: heun_program(net, model.schedule, steps, like, **kw))


diffusion_sampler("heun", "Heun's 2nd-order ODE method, deterministic (Karras et al. 2022, Alg. 1); 2S-1 NFE",
                  _program, settings=(), label=lambda cfg: "heun",
                  nfe=lambda model_cfg, cfg: 2 * respaced_steps(model_cfg, cfg) - 1)
