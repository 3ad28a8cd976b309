"""Video models. Importing this package registers every architecture in MODEL_REGISTRY."""

from . import (
    controls,  # noqa: F401  (registers "random_drop", "uniform_pool")
    evo,  # noqa: F401  (registers "evovit")
    ptv,  # noqa: F401  (registers "x3d", "slow", "slowfast", "mvit", "r2plus1d", "csn")
    rlt,  # noqa: F401  (registers "rlt")
    stvit,  # noqa: F401  (registers "stvit", "stvit_r")
    stvit_swin,  # noqa: F401  (registers "stvit_swin")
    swin,  # noqa: F401  (registers "swin")
    tome,  # noqa: F401  (registers "tome")
    vit,  # noqa: F401  (registers "vit")
)
from .build import MODEL_REGISTRY, build_model, vit_kwargs
from .vit import VideoViT

__all__ = ["MODEL_REGISTRY", "VideoViT", "build_model", "vit_kwargs"]
