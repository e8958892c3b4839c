"""Solvers: samplers beyond DDPM and DDIM for the `ddpm` family's eps network, one module each.

Every module of this package is imported by `genlib.models` after the families, so a solver registers itself
by existing: its plan (per-step coefficient tables), its pure step and its `diffusion_sampler` registration
live in its own file, and its test beside the others. Nothing in bench/ or reports/ names a solver.
"""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
