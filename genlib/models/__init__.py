"""Model families, registered by name in `MODELS`: ae, vae, denoiser_chain, ddpm."""
from genlib.models import ae, ddpm, vae  # noqa: F401  (registration side effects)
from genlib.models.base import MODELS, GenerativeModel, ModelConfig, SampleConfig, build_model

__all__ = ["MODELS", "GenerativeModel", "ModelConfig", "SampleConfig", "build_model"]
