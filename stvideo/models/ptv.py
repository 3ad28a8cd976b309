"""PyTorchVideo's model zoo (X3D, Slow, SlowFast, MViT, R(2+1)D, CSN) as stvideo architectures.

The networks are PyTorchVideo's own, built by its ``create_*`` builders with the model zoo's
settings (``pytorchvideo.models.hub``); nothing is re-implemented here. What this module adds is
the model protocol (:mod:`stvideo.models.protocol`) around them:

* the class count, dropout and drop-path come from MODEL.* as for the ViTs; the heads return logits
  (the zoo's X3D and R(2+1)D builders default to a softmax head, which training must not see);
* the head's pooling window follows DATA.NUM_FRAMES and DATA.TRAIN_CROP_SIZE (the zoo hard-codes it
  for its recipe), and a larger test crop is tested fully convolutionally, as PySlowFast does: the
  window slides and the head averages its outputs;
* SlowFast takes one (B, C, T, H, W) clip, the fast pathway, and packs the slow one from it
  (every SLOWFAST.ALPHA-th frame, PySlowFast's ``PackPathway`` index choice), so the data path,
  mixup, erasing and multi-view testing handle one tensor and one decode serves both pathways. A
  ``[slow, fast]`` list (PyTorchVideo's own input) is accepted as well.

The wrapped network sits under ``net.``; :func:`checkpoint_filter_fn` loads the zoo's ``.pyth``
files (state dict under ``model_state``, PyTorchVideo's key names) into it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from fvcore.common.config import CfgNode
from torch import Tensor, nn

with warnings.catch_warnings():  # pytorchvideo.models imports fvcore.nn, which jit-scripts a focal loss
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    from pytorchvideo.models import hub
    from pytorchvideo.models.csn import create_csn
    from pytorchvideo.models.r2plus1d import create_r2plus1d
    from pytorchvideo.models.resnet import create_resnet
    from pytorchvideo.models.slowfast import create_slowfast
    from pytorchvideo.models.x3d import create_x3d

from .build import register_model
from .weights import LoadReport

_CLIP = Tensor | list[Tensor]


def pack_pathways(fast: Tensor, alpha: int) -> list[Tensor]:
    """[slow, fast] from the fast clip (B, C, T, H, W): slow takes T // alpha evenly spaced frames."""
    t = fast.shape[2]
    index = torch.linspace(0, t - 1, max(t // alpha, 1), device=fast.device).long()
    return [fast.index_select(2, index), fast]


class PTVNet(nn.Module):
    """A PyTorchVideo network behind stvideo's model protocol: a clip in, logits out."""

    def __init__(self, net: nn.Module, slowfast_alpha: int = 0):
        super().__init__()
        self.net = net
        self.slowfast_alpha = slowfast_alpha  # > 0: a two-pathway SlowFast fed from one clip

    def forward(self, clip: _CLIP) -> Tensor:
        if self.slowfast_alpha and isinstance(clip, Tensor):
            clip = pack_pathways(clip, self.slowfast_alpha)
        return self.net(clip)

    def no_weight_decay(self) -> set[str]:
        """MViT's position embeddings and cls token are exempt from weight decay (as in PySlowFast)."""
        return {n for n, _ in self.named_parameters() if "pos_embed" in n or "cls_token" in n}


def _steps(size: int, strides: tuple[int, ...]) -> int:
    """Feature size after a chain of padded strided layers (each rounds up)."""
    for s in strides:
        size = math.ceil(size / s)
    return size


def _spatial(cfg: CfgNode) -> int:
    """Spatial size of the last CNN stage at the training crop (every zoo CNN downsamples by 32)."""
    return _steps(cfg.DATA.TRAIN_CROP_SIZE, (2, 2, 2, 2, 2))


def _head(cfg: CfgNode) -> dict[str, Any]:
    """Head settings shared by the ResNet-style builders: class count, dropout, logits out."""
    return dict(
        model_num_class=cfg.MODEL.NUM_CLASSES,
        dropout_rate=cfg.MODEL.DROPOUT_RATE,
        head_activation=None,
    )


def _x3d(cfg: CfgNode, variant: str) -> PTVNet:
    depth_factor = {"xs": 2.2, "s": 2.2, "m": 2.2, "l": 5.0}[variant]  # the zoo's X3D-XS/S/M/L
    return PTVNet(
        create_x3d(
            input_clip_length=cfg.DATA.NUM_FRAMES,
            input_crop_size=cfg.DATA.TRAIN_CROP_SIZE,
            depth_factor=depth_factor,
            **_head(cfg),
        )
    )


def _slow(cfg: CfgNode, variant: str) -> PTVNet:
    s = _spatial(cfg)
    return PTVNet(
        create_resnet(  # the zoo's slow_r50
            model_depth=50,
            stem_conv_kernel_size=(1, 7, 7),
            head_pool_kernel_size=(cfg.DATA.NUM_FRAMES, s, s),
            **_head(cfg),
        )
    )


def _slowfast(cfg: CfgNode, variant: str) -> PTVNet:
    alpha = cfg.SLOWFAST.ALPHA
    if variant != "t" and alpha != {"r50_4x16": 8}.get(variant, 4):
        raise ValueError(
            f"PTV.VARIANT {variant} is trained with SLOWFAST.ALPHA {8 if '4x16' in variant else 4}"
        )
    depth, fusion_kernel = {"r50": (50, 7), "r101": (101, 5), "t": (50, 7)}[variant.split("_")[0]]
    if variant == "r50_4x16":
        fusion_kernel = 5  # PySlowFast's SLOWFAST_4x16_R50 fusion kernel
    t_fast, s = cfg.DATA.NUM_FRAMES, _spatial(cfg)
    t_slow = max(t_fast // alpha, 1)
    width = dict(stem_dim_outs=(16, 2)) if variant == "t" else {}  # the synthetic-size variant
    return PTVNet(
        create_slowfast(
            model_depth=depth,
            slowfast_fusion_conv_kernel_size=(fusion_kernel, 1, 1),
            slowfast_fusion_conv_stride=(alpha, 1, 1),
            head_pool_kernel_sizes=((t_slow, s, s), (t_fast, s, s)),
            **width,
            **_head(cfg),
        ),
        slowfast_alpha=alpha,
    )


_MVIT_T = dict(  # the synthetic-size MViT: 4 blocks, 2 pooling stages, width 48
    depth=4,
    patch_embed_dim=48,
    num_heads=1,
    embed_dim_mul=[[1, 2.0], [2, 2.0]],
    atten_head_mul=[[1, 2.0], [2, 2.0]],
    pool_q_stride_size=[[1, 1, 2, 2], [2, 1, 2, 2]],  # none in the last block: only its cls token is read
    pool_kv_stride_adaptive=[1, 4, 4],
    pool_kvq_kernel=[3, 3, 3],
)


def _mvit(cfg: CfgNode, variant: str) -> PTVNet:
    builder = {"b_16x4": hub.mvit_base_16x4, "b_32x3": hub.mvit_base_32x3, "t": hub.mvit_base_16x4}[variant]
    return PTVNet(
        builder(
            pretrained=False,
            spatial_size=cfg.DATA.TRAIN_CROP_SIZE,
            temporal_size=cfg.DATA.NUM_FRAMES,
            head_num_classes=cfg.MODEL.NUM_CLASSES,
            head_dropout_rate=cfg.MODEL.DROPOUT_RATE,
            droppath_rate_block=cfg.MODEL.DROP_PATH_RATE,
            **(_MVIT_T if variant == "t" else {}),
        )
    )


def _r2plus1d(cfg: CfgNode, variant: str) -> PTVNet:
    s = _spatial(cfg)
    t = _steps(cfg.DATA.NUM_FRAMES, (1, 1, 2, 2))  # the zoo's r2plus1d_r50 temporal strides
    return PTVNet(create_r2plus1d(model_depth=50, head_pool_kernel_size=(t, s, s), **_head(cfg)))


def _csn(cfg: CfgNode, variant: str) -> PTVNet:
    s = _spatial(cfg)
    t = _steps(cfg.DATA.NUM_FRAMES, (1, 2, 2, 2))  # the zoo's csn_r101 temporal strides
    return PTVNet(
        create_csn(model_depth=101, stem_pool=nn.MaxPool3d, head_pool_kernel_size=(t, s, s), **_head(cfg))
    )


# arch -> (builder, variants; the first is the default for PTV.VARIANT "")
FAMILIES: dict[str, tuple[Callable[[CfgNode, str], PTVNet], tuple[str, ...]]] = {
    "x3d": (_x3d, ("m", "xs", "s", "l")),
    "slow": (_slow, ("r50",)),
    "slowfast": (_slowfast, ("r50_8x8", "r50_4x16", "r101_8x8", "t")),
    "mvit": (_mvit, ("b_16x4", "b_32x3", "t")),
    "r2plus1d": (_r2plus1d, ("r50",)),
    "csn": (_csn, ("r101",)),
}


def build_ptv(arch: str, cfg: CfgNode) -> PTVNet:
    """The PyTorchVideo network of ``arch`` in PTV.VARIANT (a ValueError names the valid variants)."""
    builder, variants = FAMILIES[arch]
    variant = cfg.PTV.VARIANT or variants[0]
    if variant not in variants:
        raise ValueError(f"PTV.VARIANT {variant!r} is not a {arch} variant; use one of {', '.join(variants)}")
    return builder(cfg, variant)


def checkpoint_filter_fn(
    sd: dict[str, Tensor], model: nn.Module, cfg: CfgNode | None, report: LoadReport
) -> dict[str, Tensor]:
    """PyTorchVideo-family filter: a zoo ``.pyth`` (PyTorchVideo key names) under this wrapper's ``net.``.

    A classifier of another class count is dropped; any other shape mismatch raises, naming the key.
    """
    report.format = "pytorchvideo"
    own = model.state_dict()
    classifier = set(list(own)[-2:])  # every zoo network ends on its classifier's weight and bias
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        key = key if key.startswith("net.") else f"net.{key}"
        if key in own and value.shape != own[key].shape:
            if key in classifier:
                report.dropped.append(f"{key} {tuple(value.shape)} (model {tuple(own[key].shape)})")
                continue
            raise ValueError(f"checkpoint {key}: {tuple(value.shape)} vs model {tuple(own[key].shape)}")
        out[key] = value
    return out


def _register(arch: str, doc: str) -> None:
    """Register ``arch`` (fvcore's registry keys a builder by its function name)."""

    def builder(cfg: CfgNode) -> PTVNet:
        return build_ptv(arch, cfg)

    builder.__name__ = builder.__qualname__ = arch
    builder.__doc__ = doc
    register_model(checkpoint_filter=checkpoint_filter_fn)(builder)


for _arch, _doc in {
    "x3d": "PyTorchVideo X3D (PTV.VARIANT xs, s, m, l).",
    "slow": "PyTorchVideo Slow-only ResNet-50.",
    "slowfast": "PyTorchVideo SlowFast (PTV.VARIANT r50_8x8, r50_4x16, r101_8x8, t), slow pathway packed.",
    "mvit": "PyTorchVideo Multiscale Vision Transformer (PTV.VARIANT b_16x4, b_32x3, t).",
    "r2plus1d": "PyTorchVideo R(2+1)D-50.",
    "csn": "PyTorchVideo channel-separated network, ir-CSN-101.",
}.items():
    _register(_arch, _doc)
