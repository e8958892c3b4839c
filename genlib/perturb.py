"""Controlled errors on a denoiser's output: the error a sampler must live with, set by hand.

A perturbation wraps the eps network a diffusion sampler calls (`genlib.models.ddpm.diffusion_program`), so the
torch loop, the exported sampler graph and every timing backend run the same perturbed denoiser. Kinds, each with
a size d (SampleConfig.perturb, written "kind:d"):
  scale: eps_hat = (1 + d) eps                      (a relative error, e.g. a mis-set output scale)
  bias:  eps_hat = eps + d u                         (u a fixed direction with unit RMS per dimension)
  field: eps_hat = eps + d f(x_t)                    (f a fixed smooth random field with unit RMS per dimension:
                                                      random Fourier features, Rahimi & Recht 2007)
All three are fixed functions (seeded, the same at every step and sample). Two kinds are real errors, realised
where the network is loaded (the step by `genlib.train.load_run(at_step=)`, the precision by `bench.perturb`),
never by this wrapper:
  precision: the denoiser's exported ONNX graph at a lower precision, e.g. precision:int8_dynamic
  step:      the weights saved at an earlier step of the same training (train.save_at), e.g. step:500
This module does not know samplers or schedules.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from genlib.registry import suggest

PERTURB_KINDS = ("none", "scale", "bias", "field", "precision", "step")
REAL_KINDS = ("precision", "step")  # realised by whoever loads the network, not by PerturbedDenoiser
FIELD_FEATURES = 64  # random Fourier features of the `field` kind
PERTURB_SEED = 1234  # the fixed draw of the bias direction and the field


@dataclass(frozen=True)
class Perturbation:
    """A parsed `SampleConfig.perturb`: kind and size d (relative for scale, eps units per dimension otherwise)."""

    kind: str = "none"
    size: float = 0.0
    arg: str | None = None  # a real kind's argument: the precision name, or the training step as text

    @property
    def spec(self) -> str:
        if self.kind == "none":
            return "none"
        return f"{self.kind}:{self.arg}" if self.arg is not None else f"{self.kind}:{self.size:g}"

    @property
    def real(self) -> bool:
        """Whether the error is a real network's (realised where the network is loaded)."""
        return self.kind in REAL_KINDS

    @property
    def step(self) -> int | None:
        return int(self.arg) if self.kind == "step" else None

    @property
    def precision(self) -> str | None:
        return self.arg if self.kind == "precision" else None


SPELLINGS = "none, scale:D, bias:D, field:D, precision:P (P one of fp16, int8_dynamic, int8_static) or step:N"


def parse_perturb(spec: str) -> Perturbation:
    """'none', 'kind:size' with kind in scale, bias, field and a finite size (e.g. 'scale:0.1', 'bias:-0.05'),
    'precision:P' with P a precision below fp32, or 'step:N' with N >= 1; ValueError with the spellings and a
    did-you-mean otherwise."""
    if not isinstance(spec, str):
        raise ValueError(f"perturb must be a string like 'scale:0.1' or 'none', got {spec!r}")
    if spec == "none":
        return Perturbation()
    kind, sep, size_text = spec.partition(":")
    if kind not in PERTURB_KINDS[1:]:
        raise ValueError(f"unknown perturbation kind '{kind}'{suggest(kind, list(PERTURB_KINDS))} "
                         f"(write one of {SPELLINGS})")
    if kind == "precision":
        from genlib.precisions import PRECISIONS
        lower = [p for p in PRECISIONS if p != "fp32"]
        if size_text not in lower:
            raise ValueError(f"perturb '{spec}': precision '{size_text}'{suggest(size_text, lower)} is not a "
                             f"precision below fp32 (one of {', '.join(lower)})")
        return Perturbation(kind, 0.0, size_text)
    if kind == "step":
        if not (size_text.isdigit() and int(size_text) >= 1):
            raise ValueError(f"perturb '{spec}' needs a training step N >= 1 after the colon, e.g. 'step:500' "
                             f"(one of the run's train.save_at)")
        return Perturbation(kind, 0.0, str(int(size_text)))
    try:
        size = float(size_text) if sep else float("nan")
    except ValueError:
        size = float("nan")
    if not math.isfinite(size):
        raise ValueError(f"perturb '{spec}' needs a finite size after the colon, e.g. '{kind}:0.1'")
    return Perturbation(kind, size)


class PerturbedDenoiser(torch.nn.Module):
    """forward(x_t (B, *shape), t (B,)) -> the perturbed eps (B, *shape) of `net`. Pure torch, so it exports."""

    def __init__(self, net: Callable, perturbation: Perturbation, sample_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.net = net  # a module (registered, its weights shared) or any callable (an ONNX Runtime part)
        self.kind, self.size = perturbation.kind, float(perturbation.size)
        dim = math.prod(sample_shape)
        gen = torch.Generator().manual_seed(PERTURB_SEED)
        u = torch.randn(dim, generator=gen)
        self.register_buffer("direction", (u / u.square().mean().sqrt()).reshape(sample_shape))  # unit RMS
        # f(x) = sqrt(2 / K) cos(x W + phi) A: W (D, K) ~ N(0, 1/D), so x W varies on the scale of |x| ~ sqrt(D)
        # (smooth in x); A (K, D) ~ N(0, 1), so each output dimension has E[f_j^2] = 1
        self.register_buffer("freqs", torch.randn(dim, FIELD_FEATURES, generator=gen) / math.sqrt(dim))
        self.register_buffer("phases", 2 * math.pi * torch.rand(FIELD_FEATURES, generator=gen))
        self.register_buffer("mix", torch.randn(FIELD_FEATURES, dim, generator=gen))

    def field(self, x_t: torch.Tensor) -> torch.Tensor:
        """The unit-RMS smooth random field f(x_t), (B, *shape)."""
        x = x_t.reshape(x_t.shape[0], -1).to(self.freqs.dtype)  # (B, D)
        feats = math.sqrt(2.0 / FIELD_FEATURES) * torch.cos(x @ self.freqs + self.phases)  # (B, K)
        return (feats @ self.mix).reshape(x_t.shape)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = torch.as_tensor(self.net(x_t, t)).to(x_t)
        if self.kind == "scale":
            return (1.0 + self.size) * eps
        if self.kind == "bias":
            return eps + self.size * self.direction.to(eps)
        if self.kind == "field":
            return eps + self.size * self.field(x_t).to(eps)
        return eps


class PerturbationNotRealised(ValueError):
    """A real perturbation (precision, step) asked of a network that does not realise it."""


REALISES = "genbench_realises"  # the attribute a network realising a real perturbation carries: its spec


def mark_realised(net: Callable, spec: str) -> Callable:
    """Mark `net` (a module or a callable) as the network of the real perturbation `spec`; returns it."""
    setattr(net, REALISES, parse_perturb(spec).spec)
    return net


def perturb_denoiser(net: Callable, spec: str, sample_shape: tuple[int, ...]) -> Callable:
    """`net` itself for 'none' and for a real kind it realises (`mark_realised`), else the PerturbedDenoiser
    around it (on the device of `net`'s parameters or buffers when it is a module). A real kind the network
    does not realise is refused: sampling the clean network under its name would record it as perturbed."""
    perturbation = parse_perturb(spec)
    if perturbation.kind == "none":
        if getattr(net, REALISES, None) is not None:
            raise PerturbationNotRealised(f"this network realises perturb '{getattr(net, REALISES)}', "
                                          f"asked to sample it as the clean denoiser")
        return net
    if perturbation.real:
        if getattr(net, REALISES, None) != perturbation.spec:
            where = ("an evaluation (grid cell) exports the denoiser at that precision and samples through it"
                     if perturbation.kind == "precision" else
                     "an evaluation loads the weights the run saved at that step (train.save_at)")
            raise PerturbationNotRealised(
                f"perturb '{perturbation.spec}' is a real network's error, realised where the network is loaded "
                f"({where}); this network does not realise it")
        return net
    wrapped = PerturbedDenoiser(net, perturbation, tuple(sample_shape))
    if isinstance(net, torch.nn.Module):
        tensor = next(iter([*net.parameters(), *net.buffers()]), None)
        if tensor is not None:
            wrapped.to(tensor.device)  # the wrapper's buffers follow the net (eps is cast to x_t's dtype)
    return wrapped


__all__ = ["FIELD_FEATURES", "PERTURB_KINDS", "REAL_KINDS", "PerturbedDenoiser", "Perturbation",
           "PerturbationNotRealised", "mark_realised", "parse_perturb", "perturb_denoiser"]
