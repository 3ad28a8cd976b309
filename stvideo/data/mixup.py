"""Mixup / CutMix on whole clips with timm's ``Mixup``, cutting the same box in every frame.

timm's Mixup works on image batches (B, C, H, W) and cuts a box in the last two dimensions. A
clip batch (B, C, T, H, W) is viewed as (B, C*T, H, W) for the call, so the mixing weight is
shared by the whole clip and a CutMix box lands at the same place in every frame. Targets are
soft (B, K) with MIXUP.LABEL_SMOOTH_VALUE label smoothing; use a soft-target cross entropy.
timm draws lambda and the box from the global numpy RNG of the calling (main) process.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from fvcore.common.config import CfgNode
from timm.data import Mixup


class ClipMixup:
    """Callable ``(video (B,C,T,H,W), label (B,)) -> (mixed video, soft target (B, K))``; B must be even."""

    def __init__(self, mixup: Mixup):
        self.mixup = mixup

    def __call__(self, video: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if video.dim() != 5:
            raise ValueError(f"ClipMixup expects (B, C, T, H, W) clips, got shape {tuple(video.shape)}")
        if video.shape[0] % 2:
            raise ValueError(f"mixup needs an even batch, got {video.shape[0]} clips")
        b, c, t, h, w = video.shape
        flat = video.reshape(b, c * t, h, w)  # a view: timm mixes in place, so ``video`` is mixed too
        mixed, target = self.mixup(flat, label)
        return mixed.reshape(b, c, t, h, w), target


def build_mixup(
    cfg: CfgNode,
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None:
    """ClipMixup from the MIXUP section, or None when MIXUP.ENABLE is off."""
    m = cfg.MIXUP
    if not m.ENABLE:
        return None
    return ClipMixup(
        Mixup(
            mixup_alpha=m.ALPHA,
            cutmix_alpha=m.CUTMIX_ALPHA,
            prob=m.PROB,
            switch_prob=m.SWITCH_PROB,
            mode="batch",
            label_smoothing=m.LABEL_SMOOTH_VALUE,
            num_classes=cfg.MODEL.NUM_CLASSES,
        )
    )
