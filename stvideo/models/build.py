"""Model registry: ``MODEL.ARCH`` names a builder ``fn(cfg) -> nn.Module`` and its checkpoint filter.

fvcore's registry keys builders by function name, so a builder is named after its arch. What a
built model must provide is written in :mod:`stvideo.models.protocol`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fvcore.common.config import CfgNode
from fvcore.common.registry import Registry
from torch import nn

SIZES = {  # (embed_dim, depth, num_heads), as in DeiT / ViT; MODEL.SIZE names one
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "huge": (1280, 32, 16),
}


Builder = TypeVar("Builder", bound=Callable[[CfgNode], nn.Module])
MODEL_REGISTRY = Registry("MODEL")
MODEL_REGISTRY.__doc__ = "Video models by MODEL.ARCH; each entry is called with the config."
_CHECKPOINT_FILTERS: dict[str, Callable[..., Any]] = {}


def register_model(checkpoint_filter: Callable[..., Any]) -> Callable[[Builder], Builder]:
    """Register a builder under its function name, with its family's filter for foreign checkpoints."""

    def deco(builder: Builder) -> Builder:
        MODEL_REGISTRY.register(builder)
        _CHECKPOINT_FILTERS[builder.__name__] = checkpoint_filter
        return builder

    return deco


def checkpoint_filter(arch: str) -> Callable[..., Any]:
    """The checkpoint filter (:data:`stvideo.models.weights.CheckpointFilter`) registered for ``arch``."""
    return _CHECKPOINT_FILTERS[arch]


def vit_depth(cfg: CfgNode) -> int:
    """Number of transformer layers of a ViT-based arch: VIT.DEPTH, else MODEL.SIZE's."""
    return cfg.VIT.DEPTH or SIZES[cfg.MODEL.SIZE][1]


def depth_split(value: int, depth: int, fraction: float) -> int:
    """A layer index from the config: ``value`` when >= 0, else ``int(fraction * depth)`` (-1 = scale
    with depth). Token methods place their reduction layers at a fixed share of the depth: the
    12-layer values (start 4, Evo-ViT stages 4 and 8) are thirds, giving 8 / 16 at ViT-L's 24 layers
    and 10 / 21 at ViT-H's 32."""
    return value if value >= 0 else int(fraction * depth)


def vit_kwargs(cfg: CfgNode) -> dict[str, Any]:
    """Constructor arguments of :class:`~stvideo.models.vit.VideoViT` from the config.

    Every ViT-based arch (plain, STViT, Evo-ViT, controls) builds from these, so MODEL.SIZE,
    VIT.* and the input size mean the same thing for all of them.
    """
    dim, _, heads = SIZES[cfg.MODEL.SIZE]
    return dict(
        num_classes=cfg.MODEL.NUM_CLASSES,
        num_frames=cfg.DATA.NUM_FRAMES,
        img_size=cfg.DATA.TRAIN_CROP_SIZE,
        in_chans=cfg.DATA.INPUT_CHANNEL_NUM,
        patch_size=cfg.VIT.PATCH_SIZE,
        tubelet_size=min(cfg.VIT.TUBELET_SIZE, cfg.DATA.NUM_FRAMES),
        embed_dim=cfg.VIT.EMBED_DIM or dim,
        depth=vit_depth(cfg),
        num_heads=cfg.VIT.NUM_HEADS or heads,
        mlp_ratio=cfg.VIT.MLP_RATIO,
        qkv_bias=cfg.VIT.QKV_BIAS,
        drop_rate=cfg.MODEL.DROPOUT_RATE,
        drop_path_rate=cfg.MODEL.DROP_PATH_RATE,
        attn_drop_rate=cfg.VIT.ATTN_DROP,
        layer_scale_init=cfg.VIT.LAYER_SCALE_INIT,
        pos_embed=cfg.VIT.POS_EMBED,
        pos_embed_init=cfg.VIT.POS_EMBED_INIT,
        cls_token=cfg.VIT.CLS_TOKEN,
        head_pool=cfg.VIT.HEAD_POOL,
        patch_embed=cfg.MODEL.PATCH_EMBED,
        stem_width=cfg.MODEL.STEM_WIDTH,
        act_checkpoint=cfg.MODEL.ACT_CHECKPOINT,
    )


def build_model(cfg: CfgNode) -> nn.Module:
    """Build ``cfg.MODEL.ARCH`` and load ``MODEL.PRETRAINED`` weights if given."""
    name = cfg.MODEL.ARCH
    if name not in MODEL_REGISTRY:
        known = ", ".join(sorted(k for k, _ in MODEL_REGISTRY))
        raise KeyError(f"Unknown MODEL.ARCH {name!r}; registered: {known}")
    model = MODEL_REGISTRY.get(name)(cfg)
    if cfg.MODEL.ACT_CHECKPOINT and not getattr(model, "act_checkpoint", False):
        from stvideo.config import ConfigError

        raise ConfigError(
            f"MODEL.ACT_CHECKPOINT: MODEL.ARCH {name} would ignore it (ViT-based archs and Video Swin "
            "support it); set MODEL.ACT_CHECKPOINT False"
        )
    if cfg.MODEL.PRETRAINED:
        from .weights import load_pretrained

        load_pretrained(model, cfg.MODEL.PRETRAINED, cfg)
    return model
