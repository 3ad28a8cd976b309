"""ViT-L/H: sizes for every ViT-based arch, layer splits that scale with depth, the shipped L configs,
VideoMAE ViT-L/H checkpoints (state dicts made here in VideoMAE's layout) and the closed-form FLOPs.

Full-size models are built on the meta device (shapes, no memory); weights are loaded for real at the
full L/H width and head count with the depth cut to 2 layers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stvideo.analysis.flops import vit_flops
from stvideo.config import ConfigError, get_cfg, load_config
from stvideo.models import MODEL_REGISTRY, build_model
from stvideo.models.build import SIZES
from stvideo.models.evo import EvoViT
from stvideo.models.vit import VideoViT, checkpoint_filter_fn, sinusoid_table
from stvideo.models.weights import LoadReport, load_state_into
from tests.test_registry import tiny_cfg
from tests.test_weights import videomae_state

K400 = Path(__file__).resolve().parents[1] / "configs" / "k400"
VIT_ARCHS = sorted(n for n, _ in MODEL_REGISTRY if isinstance(build_model(tiny_cfg(n)), VideoViT))


def _meta(arch: str, size: str, *opts: str) -> VideoViT:
    cfg = load_config(None, ["MODEL.ARCH", arch, "MODEL.SIZE", size, *opts])
    with torch.device("meta"):
        return build_model(cfg)


def vit_params(dim: int, depth: int, tokens: int, classes: int = 400, volume: int = 3 * 2 * 16 * 16) -> int:
    """Closed-form parameter count of a mean-pooled video ViT with a cls token (MLP ratio 4)."""
    block = 12 * dim * dim + 13 * dim  # qkv, proj, fc1, fc2 (+ biases) and two layer norms
    embed = dim * volume + dim + (tokens + 1) * dim + dim  # tube conv, position table, cls token
    return depth * block + embed + 2 * dim + dim * classes + classes  # fc_norm, head


def test_vit_archs_are_found() -> None:
    assert {"vit", "stvit", "stvit_r", "evovit", "random_drop", "uniform_pool"} <= set(VIT_ARCHS)


@pytest.mark.parametrize("arch", VIT_ARCHS)
@pytest.mark.parametrize("size", ["large", "huge"])
def test_large_and_huge_build_for_every_vit_arch(arch: str, size: str) -> None:
    dim, depth, heads = SIZES[size]
    model = _meta(arch, size)
    assert (model.embed_dim, model.depth, len(model.blocks)) == (dim, depth, depth)
    assert (model.blocks[0].attn.num_heads, model.blocks[0].attn.head_dim) == (heads, dim // heads)
    assert model.grid == (8, 14, 14)
    if arch == "vit":
        assert sum(p.numel() for p in model.parameters()) == vit_params(dim, depth, 1568)


@pytest.mark.parametrize(
    "size,start,evo_stages", [("base", 4, (4, 8)), ("large", 8, (8, 16)), ("huge", 10, (10, 21))]
)
def test_layer_splits_scale_with_depth(size: str, start: int, evo_stages: tuple[int, int]) -> None:
    depth = SIZES[size][1]
    stvit = _meta("stvit", size)
    assert stvit.layer_roles == ["full"] * start + ["gen1", "gen2"] + ["semantic"] * (depth - start - 2)
    evo = _meta("evovit", size)
    assert (evo.start_layer, [s for s, _ in evo.stagewise_segments]) == (start, list(evo_stages))
    assert evo.stagewise_segments[-1][1] == depth
    for arch in ("random_drop", "uniform_pool"):
        assert _meta(arch, size).start_layer == start
    # STViT-R: NUM_SEMANTIC_LAYERS -1 fits NUM_UNITS dumbbells after the start layers.
    roles = _meta("stvit_r", size, "STVIT.NUM_UNITS", "2").layer_roles
    unit = (depth - start - 1) // 2
    assert roles[:start] == ["full"] * start and roles.count("restore") == 2
    assert roles[start : start + unit] == ["gen1", "gen2"] + ["semantic"] * (unit - 3) + ["restore"]
    # Explicit values still win.
    assert _meta(
        "stvit", size, "STVIT.START_LAYER", "2", "STVIT.NUM_SEMANTIC_LAYERS", str(depth - 4)
    ).layer_roles[:3] == ["full", "full", "gen1"]


@pytest.mark.parametrize("name,arch", [("vit_l", "vit"), ("stvit_l", "stvit"), ("evovit_l", "evovit")])
def test_k400_large_configs(name: str, arch: str) -> None:
    cfg = load_config(str(K400 / f"{name}.yaml"))
    assert (cfg.MODEL.ARCH, cfg.MODEL.SIZE, cfg.MODEL.ACT_CHECKPOINT) == (arch, "large", True)
    with torch.device("meta"):
        shipped = build_model(cfg)
    derived = _meta(arch, "large")  # the -1 defaults derive the same split
    assert shipped.depth == 24 and shipped.act_checkpoint
    if arch == "stvit":
        assert shipped.layer_roles == derived.layer_roles
    if arch == "evovit":
        assert shipped.stagewise_segments == derived.stagewise_segments
        assert shipped.start_layer == derived.start_layer


def test_swin_has_no_large_size_and_act_checkpoint_needs_a_supporting_arch() -> None:
    with pytest.raises(ValueError, match="MODEL.SIZE 'large': Video Swin comes in"):
        build_model(load_config(None, ["MODEL.ARCH", "swin", "MODEL.SIZE", "large"]))
    cfg = tiny_cfg("x3d")
    cfg.MODEL.ACT_CHECKPOINT = True
    with pytest.raises(ConfigError, match="MODEL.ACT_CHECKPOINT: MODEL.ARCH x3d would ignore it"):
        build_model(cfg)


@pytest.mark.parametrize("size", ["large", "huge"])
def test_videomae_l_and_h_checkpoints_load(size: str) -> None:
    """Full width and heads (1024/16, 1280/16) at depth 2: values through the filter; then the full-depth
    key and shape mapping on the meta device."""
    dim, depth, heads = SIZES[size]
    geo = dict(num_classes=5, num_frames=4, img_size=32, patch_size=16, embed_dim=dim, num_heads=heads)
    torch.manual_seed(0)
    src = VideoViT(depth=2, cls_token=False, **geo).eval()
    with torch.no_grad():  # VideoMAE: no key bias, fixed sinusoidal positions
        for blk in src.blocks:
            blk.attn.qkv.bias[dim : 2 * dim] = 0
        src.pos_embed.copy_(sinusoid_table(8, dim))
    model = VideoViT(depth=2, cls_token=False, **geo).eval()
    report = load_state_into(model, videomae_state(src), checkpoint_filter_fn)
    assert report.format == "videomae" and report.missing == [] and report.unexpected == []
    x = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x), rtol=1e-5, atol=1e-5)
    evo = EvoViT(depth=2, start_layer=1, stage_layers=(1,), **geo)  # VideoMAE has no cls: evo adds one
    assert "cls_token" in load_state_into(evo, videomae_state(src), checkpoint_filter_fn).missing

    with torch.device("meta"):
        full_src = VideoViT(num_classes=400, depth=depth, embed_dim=dim, num_heads=heads, cls_token=False)
        target = VideoViT(num_classes=400, depth=depth, embed_dim=dim, num_heads=heads)
    cfg = get_cfg()
    sd = checkpoint_filter_fn(videomae_state(full_src), target, cfg, LoadReport(format="auto"))
    want = target.state_dict()
    assert set(want) - set(sd) == {"cls_token"}  # the k400 configs keep a cls token VideoMAE lacks
    assert not set(sd) - set(want)
    assert all(sd[k].shape == want[k].shape for k in sd)
    assert len([k for k in sd if k.endswith("attn.qkv.bias")]) == depth


def test_vit_l_and_h_closed_form_flops() -> None:
    """ViT-L 16x224: the usual ~597 GFLOPs/view (1 multiply-add = 1 FLOP); ViT-H 1192. fvcore's count of
    the built models equals these (docs/flops.md); the closed form itself is checked against fvcore at a
    small size in tests/test_flops.py."""
    large = vit_flops(1568, 1024, 24, 400, 3 * 2 * 16 * 16)
    huge = vit_flops(1568, 1280, 32, 400, 3 * 2 * 16 * 16)
    assert large == 597_674_873_856  # 597.67 G
    assert huge == 1_192_522_901_760  # 1192.52 G
