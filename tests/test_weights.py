"""Pretrained weights: timm ViT/DeiT image checkpoints and VideoMAE-style video checkpoints.

State dicts come from ``timm.create_model(..., pretrained=False)`` (random weights, no download) or
from stvideo's own models re-keyed the way VideoMAE saves them. With one frame and tubelet 1 the
video ViT must reproduce timm's image model exactly.
"""

from __future__ import annotations

import logging

import pytest
import timm
import torch
from timm.layers import resample_abs_pos_embed

from stvideo.config import get_cfg
from stvideo.models.build import MODEL_REGISTRY, checkpoint_filter
from stvideo.models.evo import EvoViT
from stvideo.models.vit import VideoViT, checkpoint_filter_fn, sinusoid_table
from stvideo.models.weights import load_pretrained, load_state_into

TINY = dict(embed_dim=48, depth=2, num_heads=3, patch_size=8)


def _timm(
    name: str = "vit_tiny_patch16_224", global_pool: str = "token", num_classes: int = 5, img: int = 32
):
    torch.manual_seed(0)
    model = timm.create_model(
        name, pretrained=False, img_size=img, num_classes=num_classes, global_pool=global_pool, **TINY
    ).eval()
    with torch.no_grad():  # timm zero-inits some tensors (cls, biases): make every weight count
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model


def _images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(("head_pool", "global_pool"), [("cls", "token"), ("mean", "avg")])
def test_one_frame_video_vit_reproduces_timm(head_pool, global_pool):
    ref = _timm(global_pool=global_pool)
    model = VideoViT(num_classes=5, num_frames=1, tubelet_size=1, img_size=32, head_pool=head_pool, **TINY)
    report = load_state_into(model.eval(), ref.state_dict(), checkpoint_filter_fn)
    assert (report.format, report.missing, report.unexpected, report.dropped) == ("timm", [], [], [])
    x = _images()
    torch.testing.assert_close(model(x[:, :, None]), ref(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("inflate", ["center", "average"])
def test_inflated_embedding_of_a_static_clip_equals_image_tokens(inflate):
    """A static 4-frame clip through the inflated 2x8x8 tubes gives timm's patch tokens in every slice."""
    ref = _timm()
    model = VideoViT(num_classes=5, num_frames=4, tubelet_size=2, img_size=32, **TINY).eval()
    cfg = get_cfg()
    cfg.MODEL.PRETRAINED_INFLATE = inflate
    load_state_into(model, ref.state_dict(), checkpoint_filter_fn, cfg)
    w = model.patch_embed.proj.weight
    if inflate == "center":
        assert torch.equal(w[:, :, 0], torch.zeros_like(w[:, :, 0]))
        assert torch.equal(w[:, :, 1], ref.patch_embed.proj.weight)
    x = _images()
    with torch.no_grad():
        tokens, grid = model.embed(x[:, :, None].expand(-1, -1, 4, -1, -1))
        image_tokens = ref._pos_embed(ref.patch_embed(x))  # (B, 1 + 16, C) with cls
    assert grid == (2, 4, 4)
    torch.testing.assert_close(tokens[:, :1], image_tokens[:, :1])
    for t in range(2):
        torch.testing.assert_close(
            tokens[:, 1 + 16 * t : 1 + 16 * (t + 1)], image_tokens[:, 1:], atol=1e-5, rtol=1e-5
        )


def test_position_embedding_resized_spatially_and_temporally():
    ref = _timm(img=32)  # 4x4 patch grid
    model = VideoViT(num_classes=5, num_frames=4, tubelet_size=2, img_size=48, **TINY)  # 2x6x6 grid
    report = load_state_into(model, ref.state_dict(), checkpoint_filter_fn)
    expected = resample_abs_pos_embed(ref.pos_embed.detach(), [6, 6], [4, 4], num_prefix_tokens=1)
    pos = model.pos_embed.detach()
    torch.testing.assert_close(pos[:, :1], expected[:, :1])
    for t in range(2):  # an image has no time: the same table in every slice
        torch.testing.assert_close(pos[:, 1 + 36 * t : 1 + 36 * (t + 1)], expected[:, 1:])
    assert "pos_embed (1, 4, 4) -> (2, 6, 6)" in report.remapped

    # a video table with 2 time steps into 4: linear interpolation (align_corners=False)
    video_sd = {k: v.clone() for k, v in model.state_dict().items()}
    model4 = VideoViT(num_classes=5, num_frames=8, tubelet_size=2, img_size=48, **TINY)
    load_state_into(model4, video_sd, checkpoint_filter_fn)
    src = video_sd["pos_embed"][0, 1:].view(2, 36, -1)
    got = model4.pos_embed.detach()[0, 1:].view(4, 36, -1)
    for t, (a, b) in enumerate([(1.0, 0.0), (0.75, 0.25), (0.25, 0.75), (0.0, 1.0)]):
        torch.testing.assert_close(got[t], a * src[0] + b * src[1])


def test_separable_position_embedding_from_image_checkpoint():
    ref = _timm()
    joint = VideoViT(num_classes=5, num_frames=4, img_size=32, **TINY).eval()
    sep = VideoViT(num_classes=5, num_frames=4, img_size=32, pos_embed="separable", **TINY).eval()
    load_state_into(joint, ref.state_dict(), checkpoint_filter_fn)
    load_state_into(sep, ref.state_dict(), checkpoint_filter_fn)
    assert torch.equal(sep.pos_embed_temporal, torch.zeros_like(sep.pos_embed_temporal))
    torch.testing.assert_close(sep.position_embedding(), joint.position_embedding())


def test_head_dropped_on_class_mismatch_and_report_logged(caplog):
    ref = _timm(num_classes=7)
    model = VideoViT(num_classes=5, num_frames=2, img_size=32, **TINY)
    head_before = model.head.weight.detach().clone()
    with caplog.at_level(logging.INFO, logger="stvideo.models.weights"):
        report = load_state_into(model, ref.state_dict(), checkpoint_filter_fn)
    assert report.missing == ["head.weight", "head.bias"]
    assert report.dropped == ["head.weight (7, 48) (model (5, 48))", "head.bias (7,) (model (5,))"]
    assert torch.equal(model.head.weight, head_before)
    assert "missing keys (2): head.weight, head.bias" in caplog.text
    assert "dropped keys (2)" in caplog.text


def test_distilled_deit_tokens_dropped():
    ref = _timm("deit_tiny_distilled_patch16_224")
    model = VideoViT(num_classes=5, num_frames=1, tubelet_size=1, img_size=32, head_pool="cls", **TINY).eval()
    report = load_state_into(model, ref.state_dict(), checkpoint_filter_fn)
    assert {"dist_token", "head_dist.weight", "head_dist.bias", "pos_embed[dist token]"} <= set(
        report.dropped
    )
    assert report.missing == [] and report.unexpected == []
    torch.testing.assert_close(model.pos_embed.detach()[:, 0], ref.pos_embed.detach()[:, 0])
    torch.testing.assert_close(model.pos_embed.detach()[:, 1:], ref.pos_embed.detach()[:, 2:])


def test_shape_mismatch_names_the_key():
    ref = _timm()
    model = VideoViT(
        num_classes=5, num_frames=2, img_size=32, embed_dim=96, depth=2, num_heads=3, patch_size=8
    )
    with pytest.raises(ValueError, match="cls_token: \\(1, 1, 48\\) vs model \\(1, 1, 96\\)"):
        load_state_into(model, ref.state_dict(), checkpoint_filter_fn)


def videomae_state(src: VideoViT) -> dict[str, torch.Tensor]:
    """``src`` saved the way VideoMAE pretraining does: encoder prefix, q/v biases, no pos table, decoder."""
    sd = {}
    for k, v in src.state_dict().items():
        if k == "pos_embed":
            continue
        if k.endswith("attn.qkv.bias"):
            q, _, vb = v.chunk(3)
            sd["encoder." + k.replace("qkv.bias", "q_bias")] = q
            sd["encoder." + k.replace("qkv.bias", "v_bias")] = vb
        else:
            sd["encoder." + k] = v
    sd["decoder.blocks.0.mlp.fc1.weight"] = torch.zeros(4, 4, device=v.device)
    sd["mask_token"] = torch.zeros(1, 1, src.embed_dim, device=v.device)
    return sd


def test_videomae_checkpoint_round_trip():
    torch.manual_seed(0)
    src = VideoViT(num_classes=5, num_frames=4, img_size=32, cls_token=False, **TINY).eval()
    with torch.no_grad():  # VideoMAE: no key bias, fixed sinusoidal positions
        for blk in src.blocks:
            blk.attn.qkv.bias[48:96] = 0
        src.pos_embed.copy_(sinusoid_table(32, 48))
    model = VideoViT(num_classes=5, num_frames=4, img_size=32, cls_token=False, **TINY).eval()
    report = load_state_into(model, videomae_state(src), checkpoint_filter_fn)
    assert report.format == "videomae" and report.missing == [] and report.unexpected == []
    assert set(report.dropped) == {"decoder.blocks.0.mlp.fc1.weight", "mask_token"}
    x = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(model(x), src(x), rtol=0, atol=1e-6)


def test_videomae_into_evovit_adds_a_cls_token():
    torch.manual_seed(0)
    src = VideoViT(num_classes=5, num_frames=4, img_size=32, cls_token=False, **TINY)
    evo = EvoViT(num_classes=5, num_frames=4, img_size=32, start_layer=1, stage_layers=(1,), **TINY)
    cls_before = evo.cls_token.detach().clone()
    report = load_state_into(evo, videomae_state(src), checkpoint_filter_fn)
    assert sorted(report.missing) == [
        "aux_head.bias",
        "aux_head.weight",
        "aux_norm.bias",
        "aux_norm.weight",
        "cls_token",
    ]
    assert torch.equal(evo.cls_token, cls_before)
    pos = evo.pos_embed.detach()
    assert torch.equal(pos[:, :1], torch.zeros(1, 1, 48))
    torch.testing.assert_close(pos[:, 1:], sinusoid_table(32, 48))
    torch.testing.assert_close(evo.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)


def test_sinusoid_table_matches_videomae_formula():
    table = sinusoid_table(5, 6)[0]
    for p in range(5):
        for j in range(6):
            angle = p / 10000 ** (2 * (j // 2) / 6)
            expected = torch.sin(torch.tensor(angle)) if j % 2 == 0 else torch.cos(torch.tensor(angle))
            assert table[p, j].item() == pytest.approx(expected.item(), abs=1e-6)


def test_load_pretrained_from_file_unwraps_and_uses_the_registered_filter(tmp_path):
    ref = _timm()
    path = tmp_path / "deit.pth"
    torch.save({"model": ref.state_dict(), "epoch": 3}, path)
    cfg = get_cfg()
    model = VideoViT(num_classes=5, num_frames=1, tubelet_size=1, img_size=32, head_pool="cls", **TINY).eval()
    report = load_pretrained(model, str(path), cfg)
    assert report.missing == [] and report.unexpected == []
    torch.testing.assert_close(model(_images()[:, :, None]), ref(_images()), rtol=0, atol=1e-6)
    assert checkpoint_filter(cfg.MODEL.ARCH) is checkpoint_filter_fn


def test_every_arch_names_its_family_filter():
    """Each registry entry names its family's filter; the ViT-family token methods share the ViT one."""
    from stvideo.models import ptv, swin

    for name, _ in MODEL_REGISTRY:
        if "swin" in name:
            family = swin.checkpoint_filter_fn
        elif name in ptv.FAMILIES:
            family = ptv.checkpoint_filter_fn
        else:
            family = checkpoint_filter_fn
        assert checkpoint_filter(name) is family, name
