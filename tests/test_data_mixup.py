"""Clip-level mixup / cutmix through timm's Mixup: one box for every frame, matching soft targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stvideo.config.defaults import get_cfg
from stvideo.data import build_mixup


def mixup_cfg(alpha: float, cutmix_alpha: float):
    cfg = get_cfg()
    cfg.MODEL.NUM_CLASSES = 5
    cfg.MIXUP.ENABLE = True
    cfg.MIXUP.ALPHA = alpha
    cfg.MIXUP.CUTMIX_ALPHA = cutmix_alpha
    cfg.MIXUP.PROB = 1.0
    cfg.MIXUP.LABEL_SMOOTH_VALUE = 0.0
    return cfg


def two_clips():
    video = torch.zeros(2, 3, 4, 16, 20)
    video[1] = 1.0
    return video, torch.tensor([1, 3])


def test_disabled_returns_none():
    assert build_mixup(get_cfg()) is None


def test_cutmix_same_box_in_every_frame():
    mix = build_mixup(mixup_cfg(0.0, 1.0))
    np.random.seed(0)
    for _ in range(5):
        video, label = two_clips()
        out, target = mix(video, label)
        assert out.shape == (2, 3, 4, 16, 20) and target.shape == (2, 5)
        box = out[0, 0, 0] == 1.0
        assert all(torch.equal(out[0, c, t] == 1.0, box) for c in range(3) for t in range(4))
        rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
        if len(rows):  # a rectangle: every pixel between its extreme rows/cols is inside
            assert box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
        lam = 1.0 - box.float().mean().item()
        assert target[0].tolist() == pytest.approx([0, lam, 0, 1 - lam, 0])
        assert torch.equal(out[1] == 0.0, out[0] == 1.0)  # clip 1 received clip 0's pixels in the same box


def test_mixup_blends_whole_clips():
    mix = build_mixup(mixup_cfg(1.0, 0.0))
    np.random.seed(4)
    video, label = two_clips()
    out, target = mix(video, label)
    lam = target[0, 1].item()
    assert 0.0 < lam < 1.0
    assert torch.allclose(out[0], torch.full_like(out[0], 1 - lam), atol=1e-6)
    assert torch.allclose(out[1], torch.full_like(out[1], lam), atol=1e-6)


def test_shape_errors():
    mix = build_mixup(mixup_cfg(1.0, 1.0))
    with pytest.raises(ValueError, match="even batch"):
        mix(torch.zeros(3, 3, 4, 8, 8), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        mix(torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]))
