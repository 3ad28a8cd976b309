"""Registry entry for the plain video ViT baseline."""

from fvcore.common.config import CfgNode

from .build import MODEL_REGISTRY, vit_kwargs
from .vit import VideoViT


@MODEL_REGISTRY.register()
def vit(cfg: CfgNode) -> VideoViT:
    """Plain video ViT (the baseline every token method is compared with)."""
    return VideoViT(**vit_kwargs(cfg))
