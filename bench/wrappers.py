"""Explicit export wrappers: the exact function each ONNX graph computes, as small nn.Modules.

Network parts (decoder, denoiser, ...) are declared by each model family (`genlib.models.PartSpec`).
Sampler steps (`DDIMStep`, `DDPMStep`, `ChainStep`, `VAEPassStep`) hold a `genlib.samplers.StepPlan`'s float32 tables as buffers and call the
very step function the torch sampler loops over (`ddim_step`, `ddpm_step`, `chain_step`, `vae_pass`):
this module holds no noise-process arithmetic, only indexing. Every step maps (x, i, noise) ->
(x_next, out), `out` being x_next in data space; `bench.onnx_graph` composes S of them.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from genlib.samplers import ClipBox, StepPlan, chain_step, clip_box, ddim_step, ddpm_step, take, vae_pass


# ----------------------------------------------------------------------------------------- steps
def noise_at(noise: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """noise[i] (B, ...) from the (S, B, ...) noise input, for a (1,) int64 index."""
    return noise.index_select(0, i)[0]


class _Step(nn.Module):
    """Common plumbing: the data-space view of a step's result."""

    def __init__(self, net: nn.Module, to_data_space: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.net = net
        self._to_data_space = to_data_space

    def finish(self, x_next: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x_next, self._to_data_space(x_next)


class _DiffusionStep(_Step):
    """A DDIM or DDPM step over a StepPlan whose tables (and clip box) are float32 buffers."""

    step: Callable[..., torch.Tensor]  # the genlib step function, set by each subclass

    def __init__(self, net: nn.Module, plan: StepPlan, to_data_space, clip_x0=None) -> None:
        super().__init__(net, to_data_space)
        self._plan = plan
        for name, table in plan.tables().items():
            self.register_buffer(name, table.clone())
        box = clip_box(clip_x0, torch.zeros((), dtype=torch.float32))
        self.has_clip = box is not None
        if box is not None:
            self.register_buffer("clip_low", box[0].clone())
            self.register_buffer("clip_high", box[1].clone())
        self.steps = plan.steps
        self.stochastic = plan.stochastic

    def plan(self) -> StepPlan:
        """The plan over this module's buffers (they follow .to(device))."""
        return self._plan.with_tables({name: getattr(self, name) for name in StepPlan.TABLES})

    def clip(self) -> ClipBox | None:
        return (self.clip_low, self.clip_high) if self.has_clip else None

    def forward(self, x: torch.Tensor, i: torch.Tensor, noise: torch.Tensor | None = None):
        plan = self.plan()
        # t has shape (1,) and broadcasts inside the network: the same values as genlib's (B,) timesteps,
        # and ONNX Runtime can constant-fold the whole time-embedding path of an unrolled graph.
        eps = self.net(x, take(plan.timesteps, i))
        z = noise_at(noise, i) if self.stochastic else None
        return self.finish(type(self).step(plan, i, x, eps, z, self.clip()))


class DDIMStep(_DiffusionStep):
    """One DDIM step (Song et al. 2021, eq. 12): `genlib.samplers.ddim_step` on a `ddim_plan`."""

    step = staticmethod(ddim_step)


class DDPMStep(_DiffusionStep):
    """One ancestral step (Ho et al. 2020, Alg. 2): `genlib.samplers.ddpm_step` on a `ddpm_plan`."""

    step = staticmethod(ddpm_step)


class ChainStep(_Step):
    """One step of the naive chain, `genlib.samplers.chain_step`: x_{t-1} = predict_prev(x_t, t), t = i.

    `net` is the module that holds the weights; `predict_prev` the family's callable over it (which may
    convert the network's output, e.g. a step-eps parameterisation, through `genlib.diffusion`).
    """

    step = staticmethod(chain_step)

    def __init__(self, net: nn.Module, predict_prev: Callable, T: int, to_data_space) -> None:
        super().__init__(net, to_data_space)
        self._predict_prev = predict_prev
        self.register_buffer("timesteps", torch.arange(T, dtype=torch.int64))
        self.steps = T

    def forward(self, x: torch.Tensor, i: torch.Tensor):
        return self.finish(type(self).step(self._predict_prev, x, take(self.timesteps, i)))


class VAEPassStep(_Step):
    """One refinement pass on the code, `genlib.samplers.vae_pass`: z -> decode -> re-encode -> z'.

    The state is the code z (B, k); `out` is decode(z'), so K composed passes give the sampler's x.
    """

    step = staticmethod(vae_pass)

    def __init__(self, net: nn.Module, passes: int, reencode: str) -> None:
        super().__init__(net, lambda z: net.decode(z))
        self.passes = passes
        self.reencode = reencode

    def forward(self, x: torch.Tensor, i: torch.Tensor, noise: torch.Tensor | None = None):
        draw = noise_at(noise, i) if self.reencode == "sample" else None
        return self.finish(type(self).step(self.net.encode, self.net.decode(x), self.reencode, draw))
