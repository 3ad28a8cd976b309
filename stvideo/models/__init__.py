"""Video models. Importing this package registers every architecture in MODEL_REGISTRY."""

from . import vit_arch  # noqa: F401  (registers "vit")
from .build import MODEL_REGISTRY, build_model, vit_kwargs
from .vit import VideoViT

__all__ = ["MODEL_REGISTRY", "VideoViT", "build_model", "vit_kwargs"]
