"""Model families (`MODELS`: ae, vae, denoiser_chain, ddpm, oracle), their samplers (`SAMPLERS`) and export parts.

How to add a family: `genlib.models.base`'s docstring.
"""
from genlib.models import ae, ddpm, oracle, vae  # noqa: F401  (registration side effects)
from genlib.models.base import (MODELS, SAMPLE_FIELDS, SAMPLERS, EvaluationConfig, GenerativeModel, ModelConfig, PartSpec,
                                SampleConfig, SamplerSpec, build_model, family_parts, part_names, resolve_sampler)

__all__ = ["MODELS", "SAMPLERS", "SAMPLE_FIELDS", "EvaluationConfig", "GenerativeModel", "ModelConfig", "PartSpec",
           "SampleConfig", "SamplerSpec", "build_model", "family_parts", "part_names", "resolve_sampler"]
