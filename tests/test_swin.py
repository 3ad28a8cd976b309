"""Video Swin and STViT-local: windows, shift masks, timm checkpoint inflation, token counts, gradients."""

from __future__ import annotations

import itertools
import math

import pytest
import timm
import torch
from timm.models.swin_transformer import SwinTransformer

from stvideo.config import get_cfg
from stvideo.models import build_model
from stvideo.models.stvit_swin import SemanticSwinStage, STViTSwin, window_neighbourhoods
from stvideo.models.swin import (
    SwinBlock3D,
    VideoSwin,
    checkpoint_filter_fn,
    effective_window,
    shift_window_mask,
    window_partition,
    window_reverse,
)
from stvideo.models.vit import Block
from stvideo.models.weights import load_state_into

TINY = dict(num_classes=5, patch_size=(2, 4, 4), embed_dim=16, drop_path_rate=0.0)


def test_window_partition_reverse_roundtrip_and_layout():
    x = torch.randn(2, 4, 8, 12, 3)
    win = window_partition(x, (2, 4, 4))
    assert win.shape == (2, 2 * 2 * 3, 32, 3)
    # window 4 is (t-block 0, h-block 1, w-block 1); its tokens are time-major inside the window
    assert torch.equal(win[:, 4], x[:, 0:2, 4:8, 4:8].reshape(2, 32, 3))
    assert torch.equal(window_reverse(win, (2, 4, 4), (4, 8, 12)), x)
    with pytest.raises(ValueError, match=r"\(4, 8, 12\) is not divisible into windows \(3, 4, 4\)"):
        window_partition(x, (3, 4, 4))


def test_effective_window_clamps_like_video_swin():
    assert effective_window((4, 8, 8), (8, 7, 7), (4, 3, 3)) == ((4, 7, 7), (0, 3, 3))
    assert effective_window((4, 4, 4), (8, 7, 7), (4, 3, 3)) == ((4, 4, 4), (0, 0, 0))
    assert effective_window((16, 56, 56), (8, 7, 7), (4, 3, 3)) == ((8, 7, 7), (4, 3, 3))


def _reference_mask(grid, window, shift):
    """Video Swin's ``compute_mask`` (slice loops), written out independently."""
    img = torch.zeros(*grid)
    cnt = 0
    slices = [(slice(-w), slice(-w, -s), slice(-s, None)) for w, s in zip(window, shift, strict=True)]
    for d, h, w in itertools.product(*slices):
        img[d, h, w] = cnt
        cnt += 1
    ids = window_partition(img[None, ..., None], window)[0, ..., 0]
    return ids[:, :, None] != ids[:, None, :]


@pytest.mark.parametrize(
    "grid,window,shift", [((4, 8, 8), (2, 4, 4), (1, 2, 2)), ((8, 14, 14), (4, 7, 7), (2, 3, 3))]
)
def test_shift_mask_matches_video_swin(grid, window, shift):
    mask = shift_window_mask(grid, window, shift)
    num_windows, n = math.prod(g // w for g, w in zip(grid, window, strict=True)), math.prod(window)
    assert mask.shape == (num_windows, n, n)
    assert torch.equal(torch.isinf(mask), _reference_mask(grid, window, shift))
    assert set(mask.unique().tolist()) == {0.0, float("-inf")}


def test_shifted_block_equals_brute_force_masked_attention():
    """A shifted block's attention == attention over all tokens where a pair may attend iff it shares a
    shifted window without wrap-around, with the bias looked up from rolled coordinates."""
    torch.manual_seed(0)
    grid, window, shift, heads, dim = (4, 8, 8), (2, 4, 4), (1, 2, 2), 2, 8
    blk = SwinBlock3D(dim, heads, window, shift).eval()
    torch.nn.init.normal_(blk.attn.relative_position_bias_table, std=1.0)
    x = torch.randn(1, *grid, dim)
    coords = torch.stack(torch.meshgrid(*(torch.arange(n) for n in grid), indexing="ij"), -1).view(-1, 3)
    n, w, s = torch.tensor(grid), torch.tensor(window), torch.tensor(shift)
    rolled = (coords - s) % n
    same_win = (rolled[:, None] // w == rolled[None] // w).all(-1)
    same_wrap = ((coords[:, None] < s) == (coords[None] < s)).all(-1)
    rel = rolled[:, None] - rolled[None] + (w - 1)
    index = rel[..., 0] * (2 * w[1] - 1) * (2 * w[2] - 1) + rel[..., 1] * (2 * w[2] - 1) + rel[..., 2]
    table = blk.attn.relative_position_bias_table
    bias = table[index.clamp(0, table.shape[0] - 1)].permute(2, 0, 1)  # pairs out of range get masked
    bias = bias.masked_fill(~(same_win & same_wrap), float("-inf"))
    tokens = blk.norm1(x).view(1, -1, dim)
    q, k, v = blk.attn.qkv(tokens).view(1, -1, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
    att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dim // heads) + bias, -1) @ v
    expected = blk.attn.proj(att.transpose(1, 2).reshape(1, -1, dim)).view(1, *grid, dim)
    with torch.no_grad():
        torch.testing.assert_close(blk.attention(x), expected, atol=1e-5, rtol=1e-5)


def _timm_swin() -> SwinTransformer:
    torch.manual_seed(0)
    model = SwinTransformer(
        img_size=32, patch_size=4, window_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 4), num_classes=5
    ).eval()
    with torch.no_grad():  # non-trivial weights, so the bias tables and every norm matter
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


def test_timm_checkpoint_inflates_to_identical_static_video_outputs():
    """2D Swin on an image == Video Swin on that image repeated over 8 frames, after loading the 2D state
    dict with average inflation: checks name mapping, patch merging order, the temporal repeat of the
    bias tables (temporal windows and temporal shift masks are active: 4 token slices, window t=2)."""
    timm_model = _timm_swin()
    cfg = get_cfg()
    cfg.MODEL.PRETRAINED_INFLATE = "average"
    video_model = VideoSwin(**TINY, window_size=(2, 4, 4), depths=(2, 2), num_heads=(2, 4)).eval()
    report = load_state_into(video_model, timm_model.state_dict(), checkpoint_filter_fn, cfg)
    assert (report.missing, report.unexpected, report.dropped) == ([], [], [])
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = timm_model.forward_features(image)  # B, H, W, C
        out = video_model.forward_features(image[:, :, None].repeat(1, 1, 8, 1, 1))  # B, T, H, W, C
        assert out.shape == (2, 4, 4, 4, 32)
        for t in range(4):
            torch.testing.assert_close(out[:, t], expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(video_model(image[:, :, None].repeat(1, 1, 8, 1, 1)), timm_model(image))


@pytest.mark.filterwarnings("ignore::UserWarning")  # timm's bicubic table resize warns inside torch
def test_original_layout_checkpoint_and_center_inflation_and_table_resize():
    timm_model = _timm_swin()
    sd = timm_model.state_dict()
    # Microsoft layout: downsample at the end of stage N (timm: start of N+1), classifier "head.*"
    old = {k.replace("layers.1.downsample", "layers.0.downsample"): v for k, v in sd.items()}
    old = {k.replace("head.fc.", "head."): v for k, v in old.items()}
    model = VideoSwin(**TINY, window_size=(4, 2, 2), depths=(2, 2), num_heads=(2, 4))
    report = load_state_into(model, old, checkpoint_filter_fn)  # cfg None: center inflation
    assert (report.format, report.missing, report.dropped) == ("swin (microsoft)", [], [])
    w3d, w2d = model.patch_embed.proj.weight, sd["patch_embed.proj.weight"]
    assert torch.equal(w3d[:, :, 1], w2d) and not w3d[:, :, 0].any()
    assert torch.equal(
        model.layers[1].downsample.reduction.weight, sd["layers.1.downsample.reduction.weight"]
    )
    assert torch.equal(model.head.weight, sd["head.fc.weight"])
    # 7x7 table resized to the 2x2 window (3x3 offsets), then repeated over 2*4-1 temporal offsets
    table = model.layers[0].blocks[1].attn.relative_position_bias_table
    assert table.shape == (7 * 9, 2)
    assert torch.equal(table[:9], table[27:36])


def test_state_dict_names_match_timm_swin_tiny():
    cfg = get_cfg()
    cfg.MODEL.ARCH, cfg.MODEL.NUM_CLASSES = "swin", 1000
    with torch.device("meta"):  # names only: no need to allocate and initialise 2 x 28M parameters
        ours = set(build_model(cfg).state_dict())
        theirs = timm.create_model("swin_tiny_patch4_window7_224").state_dict()
    assert ours == {k.replace("head.fc.", "head.") for k in theirs}


def test_build_model_loads_pretrained_through_weights_module(tmp_path):
    """MODEL.PRETRAINED goes through stvideo.models.weights.load_pretrained to the Swin filter."""
    sd = _timm_swin().state_dict()
    torch.save(sd, tmp_path / "swin2d.pth")
    cfg = get_cfg()
    cfg.merge_from_list(
        ["MODEL.ARCH", "swin", "MODEL.NUM_CLASSES", 5, "MODEL.PRETRAINED", str(tmp_path / "swin2d.pth")]
        + ["MODEL.PRETRAINED_INFLATE", "average", "SWIN.EMBED_DIM", 16, "SWIN.DEPTHS", [2, 2]]
        + ["SWIN.NUM_HEADS", [2, 4], "SWIN.WINDOW_SIZE", [2, 4, 4]]
    )
    model = build_model(cfg)
    torch.testing.assert_close(model.patch_embed.proj.weight.sum(2), sd["patch_embed.proj.weight"])
    assert torch.equal(model.layers[1].blocks[1].mlp.fc2.weight, sd["layers.1.blocks.1.mlp.fc2.weight"])


def test_window_neighbourhoods_shift_inward_at_borders():
    x = torch.arange(12, dtype=torch.float).view(1, 1, 1, 12, 1)  # one row of 12 tokens
    out = window_neighbourhoods(x, (1, 1, 4), (1, 1, 6))
    assert out.shape == (3, 6, 1)
    assert out[..., 0].tolist() == [[0, 1, 2, 3, 4, 5], [3, 4, 5, 6, 7, 8], [6, 7, 8, 9, 10, 11]]
    # a context smaller than the window is the window; larger than the map is the map
    assert window_neighbourhoods(x, (1, 1, 4), (1, 1, 2))[..., 0].tolist()[1] == [4, 5, 6, 7]
    assert window_neighbourhoods(x, (1, 1, 4), (4, 4, 40)).shape == (3, 12, 1)


def _stvit(restore: bool) -> STViTSwin:
    torch.manual_seed(0)
    return STViTSwin(
        **TINY,
        window_size=(2, 2, 2),
        depths=(1, 1, 6, 1),
        num_heads=(1, 2, 2, 4),
        semantic_stages=(2,),
        window_grid=(1, 2, 2),
        context=(2, 3, 3),
        restore=restore,
        variant="detection",  # generation runs Block.forward (hooked below); both: test_stvit_swin
        global_centers=True,
    )


@pytest.mark.parametrize("restore", [False, True])
def test_stvit_swin_token_counts_per_stage(restore):
    model = _stvit(restore).eval()
    stage = model.layers[2]
    assert isinstance(stage, SemanticSwinStage)
    assert stage.roles == [
        "full",
        "gen1",
        "gen2",
        "semantic",
        "semantic",
        "restore" if restore else "semantic",
    ]
    seen = []
    hooks = [
        blk.register_forward_hook(lambda m, args, kw, out: seen.append((m, args, kw, out)), with_kwargs=True)
        for blk in stage.blocks
    ]
    video = torch.randn(2, 3, 8, 64, 64)  # tokens 4x16x16 -> 4x8x8 -> stage 2: 4x4x4 = 64 tokens
    with torch.no_grad():
        outs = model.forward_stages(video)
    for h in hooks:
        h.remove()
    # stage 2: 8 windows of 2x2x2, each pooled to 1x2x2 = 4 semantic tokens (32 per clip)
    full, gen1, gen2, local, glob, last = seen[0], seen[1], seen[2], seen[3], seen[4], seen[5]
    assert isinstance(full[0], SwinBlock3D) and full[3].shape == (2, 4, 4, 4, 64)
    assert gen1[1][0].shape == (16, 4, 64) and gen1[2]["context"].shape == (16, 2 * 3 * 3, 64)
    assert gen2[1][0].shape == (16, 4, 64) and gen2[2]["context"].shape == (16, 64, 64)  # 8x21x21 clamped
    assert local[1][0].shape == (16, 4, 64) and glob[1][0].shape == (2, 32, 64)
    assert all(isinstance(s[0], Block) for s in seen[1:])
    if restore:
        assert last[1][0].shape == (2, 64, 64) and last[2]["context"].shape == (2, 32, 64)
        expected = [(4, 16, 16), (4, 8, 8), (4, 4, 4), (4, 2, 2)]
    else:
        assert last[1][0].shape == (16, 4, 64)
        expected = [(4, 16, 16), (4, 8, 8), (2, 4, 4), (2, 2, 2)]  # windows (2,2,2) x grid (1,2,2)
    assert [tuple(o.shape[1:4]) for o in outs] == expected
    assert model(video).shape == (2, 5)


@pytest.mark.parametrize("restore", [False, True])
def test_stvit_swin_gradients_reach_every_parameter(restore):
    model = _stvit(restore).train()
    model(torch.randn(2, 3, 8, 64, 64)).logsumexp(-1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        assert torch.isfinite(p.grad).all(), name
    assert "layers.2.global_centers" in model.no_weight_decay()


def test_stvit_swin_rejects_bad_layouts():
    with pytest.raises(ValueError, match=r">= 4 blocks, got depth 2"):
        STViTSwin(**TINY, depths=(2, 2, 2, 2), num_heads=(1, 1, 1, 1))
    with pytest.raises(ValueError, match=r">= 6 blocks, got depth 4"):
        STViTSwin(**TINY, depths=(2, 2, 4, 2), num_heads=(1, 1, 1, 1), restore=True)
    with pytest.raises(ValueError, match=r"SWIN.SEMANTIC_STAGES \[4\] must name stages in 0..3"):
        STViTSwin(**TINY, semantic_stages=(4,))
    model = _stvit(False)
    with pytest.raises(ValueError, match=r"feature map \(4, 3, 3\) does not divide into windows \(2, 2, 2\)"):
        model(torch.randn(1, 3, 8, 48, 48))


def test_build_from_config_and_checkpointing_match():
    cfg = get_cfg()
    cfg.merge_from_list(
        ["MODEL.ARCH", "stvit_swin", "MODEL.NUM_CLASSES", 3, "MODEL.DROP_PATH_RATE", 0.0]
        + ["SWIN.EMBED_DIM", 8, "SWIN.DEPTHS", [1, 1, 6, 1], "SWIN.NUM_HEADS", [1, 1, 2, 2]]
        + ["SWIN.WINDOW_SIZE", [2, 2, 2], "SWIN.SEMANTIC_WINDOW_GRID", [1, 2, 2], "SWIN.RESTORE", True]
    )
    torch.manual_seed(0)
    model = build_model(cfg)
    cfg.MODEL.ACT_CHECKPOINT = True
    torch.manual_seed(0)
    ckpt = build_model(cfg)
    assert isinstance(model, STViTSwin) and model.layers[2].roles[-1] == "restore"
    video = torch.randn(1, 3, 4, 32, 32)
    a, b = model(video), ckpt(video)
    torch.testing.assert_close(a, b)
    a.sum().backward()
    b.sum().backward()
    torch.testing.assert_close(model.patch_embed.proj.weight.grad, ckpt.patch_embed.proj.weight.grad)
