"""Convolutional tube embedding (MODEL.PATCH_EMBED conv): the token grid of linear tubes, ViT and Swin."""

from __future__ import annotations

import pytest
import timm
import torch

from stvideo.config import get_cfg
from stvideo.models.build import build_model
from stvideo.models.stem import ConvStem3D
from stvideo.models.swin import VideoSwin
from stvideo.models.vit import VideoViT, checkpoint_filter_fn
from stvideo.models.weights import load_state_into


@pytest.mark.parametrize(("tubelet", "patch", "frames"), [(1, 2, 3), (2, 8, 8), (3, 4, 6), (4, 16, 8)])
def test_stem_output_grid_equals_linear_tubes(tubelet, patch, frames):
    stem = ConvStem3D(3, 24, tubelet, patch, width=4)
    out = stem(torch.randn(2, 3, frames, 2 * patch, 3 * patch))
    assert out.shape == (2, 24, frames // tubelet, 2, 3)
    convs = [m for m in stem.modules() if isinstance(m, torch.nn.Conv3d)]
    assert len(convs) == patch.bit_length()  # log2(patch) strided convs + the 1x1x1 projection
    assert [c.out_channels for c in convs[:-1]] == [4 * 2**i for i in range(len(convs) - 1)]


@pytest.mark.parametrize("patch", [1, 6, 12])
def test_stem_rejects_patch_sizes_that_are_not_powers_of_two(patch):
    with pytest.raises(ValueError, match="power-of-two patch size"):
        ConvStem3D(3, 24, 2, patch, width=4)


def test_vit_with_conv_stem_sees_time_and_trains_end_to_end():
    torch.manual_seed(0)
    model = VideoViT(
        num_classes=4, num_frames=4, img_size=16, patch_size=8, embed_dim=32, depth=2, num_heads=2,
        patch_embed="conv", stem_width=4,
    )  # fmt: skip
    clip = torch.randn(2, 3, 4, 16, 16)
    tokens, grid = model.patch_embed(clip)
    assert grid == (2, 2, 2) and tokens.shape == (2, 8, 32)
    model.eval()
    with torch.no_grad():  # reversing time must change the tokens: the stem mixes frames
        assert not torch.allclose(model.patch_embed(clip)[0], model.patch_embed(clip.flip(2))[0])
    model.train()
    model(clip).logsumexp(1).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not no_grad


def test_build_model_reads_patch_embed_keys_for_vit_and_swin():
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.PATCH_EMBED", "conv", "MODEL.STEM_WIDTH", 8, "MODEL.NUM_CLASSES", 3])
    cfg.merge_from_list(["DATA.NUM_FRAMES", 4, "DATA.TRAIN_CROP_SIZE", 32, "VIT.PATCH_SIZE", 8])
    cfg.merge_from_list(["VIT.EMBED_DIM", 32, "VIT.DEPTH", 1, "VIT.NUM_HEADS", 2])
    vit = build_model(cfg)
    assert isinstance(vit.patch_embed.proj, ConvStem3D)
    assert vit.patch_embed.proj.layers[0].out_channels == 8
    cfg.merge_from_list(["MODEL.ARCH", "swin", "SWIN.EMBED_DIM", 16, "SWIN.DEPTHS", [2, 2]])
    cfg.merge_from_list(["SWIN.NUM_HEADS", [1, 2], "SWIN.WINDOW_SIZE", [2, 4, 4]])
    swin = build_model(cfg)
    assert isinstance(swin.patch_embed.proj, ConvStem3D)
    assert swin(torch.randn(1, 3, 4, 32, 32)).shape == (1, 3)


def test_swin_conv_stem_needs_square_patches():
    with pytest.raises(ValueError, match="square spatial patch"):
        VideoSwin(patch_size=(2, 4, 2), depths=(2,), num_heads=(1,), embed_dim=8, patch_embed="conv")


def test_timm_checkpoint_into_conv_stem_drops_the_patchify_weights_and_loads_the_rest():
    ref = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=48, depth=2,
        num_heads=3, num_classes=5,
    )  # fmt: skip
    model = VideoViT(
        num_classes=5, num_frames=2, img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3,
        patch_embed="conv", head_pool="cls",
    )  # fmt: skip
    report = load_state_into(model, ref.state_dict(), checkpoint_filter_fn)
    assert report.dropped == [
        "patch_embed.proj.weight (model uses a conv stem)",
        "patch_embed.proj.bias (model uses a conv stem)",
    ]
    assert all(k.startswith("patch_embed.proj.layers.") for k in report.missing)
    torch.testing.assert_close(model.blocks[1].attn.qkv.weight, ref.blocks[1].attn.qkv.weight)
