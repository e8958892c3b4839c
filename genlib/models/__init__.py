"""Model families (`MODELS`), their samplers (`SAMPLERS`) and export parts: one module per family here.

Every module of this package is imported below, so a family registers itself by existing: adding one is
a new file (see `genlib.models.base`'s docstring) and its test, with no list to edit.
"""
import importlib
import pkgutil

from genlib.models.base import (MODELS, SAMPLE_FIELDS, SAMPLERS, GenerativeModel, ModelConfig, PartSpec, PeerSampler,
                                SampleConfig, SamplerSpec, build_model, families_providing, family_parts, module_device,
                                part_names, resolve_sampler, samplers_of)

for _module in pkgutil.iter_modules(__path__):  # registration side effects (ae, ddpm, oracle, vae, ...)
    importlib.import_module(f"{__name__}.{_module.name}")
importlib.import_module("genlib.solvers")  # solvers over the families' networks (DPM-Solver++, Heun, ...)

__all__ = ["MODELS", "SAMPLERS", "SAMPLE_FIELDS", "GenerativeModel", "ModelConfig", "PartSpec", "PeerSampler",
           "SampleConfig", "SamplerSpec", "build_model", "families_providing", "family_parts", "module_device",
           "part_names", "resolve_sampler", "samplers_of"]
