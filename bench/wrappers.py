"""Explicit export wrappers: the exact function each ONNX graph computes, as small nn.Modules.

Network parts (decoder, denoiser, ...) are declared by each model family (`genlib.models.PartSpec`). A
sampler's step is its registry entry's program (`genlib.samplers.SamplerProgram`): `ProgramStep` holds the
program's tables as buffers and calls the very step function the torch loop (`genlib.samplers.run_program`)
calls, for every sampler alike; this module holds no noise-process arithmetic and names no sampler, only
indexing. A step maps (x, h0 .., i, noise) -> (x_next, h0_next .., out), `out` being finish(x_next) in data
space; `bench.onnx_graph` composes S of them.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from genlib.samplers import SamplerProgram


def noise_at(noise: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """noise[i] (B, ...) from the (slots, B, ...) noise input, for a (1,) int64 index."""
    return noise.index_select(0, i)[0]


class ProgramStep(nn.Module):
    """One step of a sampler program: forward(x, *history, i[, noise]) -> (x_next, *history_next, out).

    `net` is the module holding the weights the program's step calls (registered here, so export and
    `.to(device)` see them); the program's tables become buffers (they follow the module's device). A
    program that injects noise reads noise[i] at every step: slots of steps without noise hold zeros, which
    the steps multiply by a zero coefficient, as the torch loop adds none. Build one with `program_step`,
    which picks the subclass whose forward has the program's exact inputs (torch.export needs a fixed
    signature, not *args).
    """

    def __init__(self, program: SamplerProgram, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self._program = program
        self._tables = tuple(program.tables)
        for name, table in program.tables.items():
            self.register_buffer(name, table.clone())

    def tables(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in self._tables}

    def run(self, x: torch.Tensor, history: tuple[torch.Tensor, ...], i: torch.Tensor, noise: torch.Tensor | None):
        z = noise_at(noise, i) if noise is not None else None
        state = self._program.step(self.tables(), i, (x, *history), z)
        return (*state, self._program.finish(state[0]))


class _Plain(ProgramStep):
    def forward(self, x, i):
        return self.run(x, (), i, None)


class _Noisy(ProgramStep):
    def forward(self, x, i, noise):
        return self.run(x, (), i, noise)


class _History1(ProgramStep):
    def forward(self, x, h0, i):
        return self.run(x, (h0,), i, None)


class _History1Noisy(ProgramStep):
    def forward(self, x, h0, i, noise):
        return self.run(x, (h0,), i, noise)


class _History2(ProgramStep):
    def forward(self, x, h0, h1, i):
        return self.run(x, (h0, h1), i, None)


class _History2Noisy(ProgramStep):
    def forward(self, x, h0, h1, i, noise):
        return self.run(x, (h0, h1), i, noise)


_BY_SIGNATURE = {(0, False): _Plain, (0, True): _Noisy, (1, False): _History1, (1, True): _History1Noisy,
                 (2, False): _History2, (2, True): _History2Noisy}
MAX_HISTORY = 2


def program_step(program: SamplerProgram, net: nn.Module) -> ProgramStep:
    """The export module of one step of `program` (history of up to MAX_HISTORY tensors)."""
    cls = _BY_SIGNATURE.get((program.history, bool(program.noisy)))
    if cls is None:
        raise ValueError(f"a step with {program.history} history tensors has no export module (at most {MAX_HISTORY})")
    return cls(program, net)
