"""An exact reference for ODE samplers: 1-D Gaussian data N(m, s^2), whose optimal eps is closed form and whose
probability-flow ODE is solved exactly. In EDM's variables x~ = x_t / sqrt(abar), sigma = sqrt((1 - abar) /
abar), the flow keeps (x~ - m) / sqrt(s^2 + sigma^2) constant, so a sampler's error against it is its own
discretisation error, with no network in the way."""
from __future__ import annotations

import torch

from genlib.diffusion import NoiseSchedule


class GaussianODE:
    def __init__(self, schedule: NoiseSchedule, m: float, s: float) -> None:
        self.schedule, self.m, self.s = schedule, m, s

    def eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """E[eps | x_t] for x0 ~ N(m, s^2): sqrt(1 - abar) (x_t - sqrt(abar) m) / (abar s^2 + 1 - abar)."""
        ab = self.schedule.alpha_bar.to(x.dtype)[t].reshape(-1, *([1] * (x.ndim - 1)))
        return (1 - ab).sqrt() * (x - ab.sqrt() * self.m) / (ab * self.s**2 + 1 - ab)

    def solve(self, x_T: torch.Tensor, steps: int) -> torch.Tensor:
        """The exact flow from the sampler's first timestep t_{S-1} down to its last, t_0, followed by the
        final step every sampler here takes (x0_hat at t_0), so only the integration error differs."""
        sched, _ = self.schedule.respaced(steps)
        ab = sched.alpha_bar.to(x_T.dtype)
        sigma = ((1 - ab) / ab).sqrt()
        x_tilde = x_T / ab[-1].sqrt()
        at_t0 = self.m + (self.s**2 + sigma[0] ** 2).sqrt() / (self.s**2 + sigma[-1] ** 2).sqrt() * (x_tilde - self.m)
        return self.m + self.s**2 / (self.s**2 + sigma[0] ** 2) * (at_t0 - self.m)  # x0_hat = D(x~; sigma_0)


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b) ** 2).mean().sqrt())
