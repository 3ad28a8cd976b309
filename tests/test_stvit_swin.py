"""STViT-local on Video Swin: the generation wiring of each released variant (classification /
detection) against a brute-force reference, the as-released defaults, and LayerScale options.

The reference is written from the papers' and released codes' description, not from the module:
it loops over windows, collects each query's key set by coordinates, and runs attention by hand.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from stvideo.analysis.flops import block_flops, count_flops
from stvideo.config import load_config
from stvideo.config.load import ConfigError
from stvideo.models import build_model
from stvideo.models.stvit import STViT, pool_centers
from stvideo.models.stvit_swin import SemanticSwinStage, STViTSwin, cross_block, window_neighbourhoods
from stvideo.models.swin import window_partition
from stvideo.models.vit import Attention, Block

C, HEADS = 8, 2
MAP = (4, 4, 6)  # stage feature map (T, H, W)
WINDOW = (2, 2, 3)  # 2 x 2 x 2 = 8 windows of 12 tokens
GRID = (1, 2, 2)  # 4 semantic tokens per window
CTX1 = (2, 3, 4)  # layer-1 neighbourhood: 24 tokens
CTX2 = (4, 4, 5)  # detection layer-2 neighbourhood: 80 tokens


def _stage(variant: str, shortcut: bool, g: bool, **kw) -> SemanticSwinStage:
    torch.manual_seed(0)
    stage = SemanticSwinStage(
        C, C, 5, HEADS, WINDOW, downsample=False, window_grid=GRID, context=CTX1, context2=CTX2,
        variant=variant, shortcut=shortcut, global_centers=g, layer_scale=0.5, **kw,
    )  # fmt: skip
    with torch.no_grad():  # LayerScale 0.5 (not 1e-5) so a wrong residual or key set shows in the output
        for p in stage.parameters():
            if p.dim() == 1 and p.shape[0] == C and not torch.all(p == 0.5):
                p.add_(0.1 * torch.randn_like(p))  # non-trivial norms and biases
    return stage


# ----------------------------------------------------------------------------- brute-force reference
def _ln(norm: torch.nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def _attend(blk: Block, queries: torch.Tensor, keys: torch.Tensor, residual: bool) -> torch.Tensor:
    """Pre-norm block on (N, C) queries and (M, C) keys, attention written out by hand."""
    w, b = blk.attn.qkv.weight, blk.attn.qkv.bias
    qn, kn = _ln(blk.norm1, queries), _ln(blk.norm1, keys)
    q, k, v = qn @ w[:C].T + b[:C], kn @ w[C : 2 * C].T + b[C : 2 * C], kn @ w[2 * C :].T + b[2 * C :]
    d = C // HEADS
    out = []
    for h in range(HEADS):
        s = slice(h * d, (h + 1) * d)
        out.append(torch.softmax(q[:, s] @ k[:, s].T / d**0.5, dim=-1) @ v[:, s])
    a = blk.attn.proj(torch.cat(out, dim=-1)) * blk.ls1.gamma
    x = queries + a if residual else a
    return x + blk.ls2.gamma * blk.mlp(_ln(blk.norm2, x))


def _windows():
    """Window origins (t, h, w), in the order windows are batched (t slowest)."""
    return list(itertools.product(*(range(0, n, w) for n, w in zip(MAP, WINDOW, strict=True))))


def _neighbourhood(x: torch.Tensor, origin, ctx) -> torch.Tensor:
    """(T, H, W, C) map -> the ``ctx`` block around the window at ``origin``: centred on the window,
    moved inward until it lies inside the map (the classification code's unfold at the borders)."""
    lo = [min(max(o - (k - w) // 2, 0), n - k) for o, w, k, n in zip(origin, WINDOW, ctx, MAP, strict=True)]
    return x[lo[0] : lo[0] + ctx[0], lo[1] : lo[1] + ctx[1], lo[2] : lo[2] + ctx[2]].reshape(-1, C)


def _centers(x: torch.Tensor, origin) -> torch.Tensor:
    """Max of each cell of the window's GRID: cells are 2x1x? slices (window 2x2x3, grid 1x2x2)."""
    t, h, w = origin
    win = x[t : t + 2, h : h + 2, w : w + 3]
    cells = [
        win[:, i, cols] for i in range(2) for cols in (slice(0, 2), slice(1, 3))
    ]  # adaptive: [0,2),[1,3)
    return torch.stack([c.reshape(-1, C).amax(0) for c in cells])


def reference_generation(stage: SemanticSwinStage, x: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
    """(B, T, H, W, C) -> (B * windows, 4, C) semantic tokens, as the released code of the variant."""
    l1, l2 = stage.blocks[1], stage.blocks[2]
    out = []
    for xb in x:
        s1 = []
        for o in _windows():
            p = _centers(xb, o)
            nb = _neighbourhood(xb, o, CTX1)
            keys = torch.cat([p, nb]) if stage.variant == "classification" else nb
            s1.append(_attend(l1, p, keys, residual=stage.shortcut))
        if stage.variant == "classification":  # global: all semantic tokens vs [all semantic; all image]
            sem = torch.cat(s1)
            q = sem if g is None else sem + g.repeat(len(s1), 1)
            out += list(_attend(l2, q, torch.cat([sem, xb.reshape(-1, C)]), residual=True).split(4))
        else:  # per window: S1 (+ G) vs the larger image-only neighbourhood
            for o, s in zip(_windows(), s1, strict=True):
                q = s if g is None else s + g
                out.append(_attend(l2, q, _neighbourhood(xb, o, CTX2), residual=True))
    return torch.stack(out)


@pytest.mark.parametrize("variant", ["classification", "detection"])
@pytest.mark.parametrize("shortcut", [False, True])
@pytest.mark.parametrize("use_g", [False, True])
def test_generation_matches_brute_force_reference(variant, shortcut, use_g):
    stage = _stage(variant, shortcut, use_g).eval()
    torch.manual_seed(1)
    x = torch.randn(2, *MAP, C)
    centers = pool_centers(window_partition(x, WINDOW).flatten(0, 1), WINDOW, GRID, "joint", "max")
    g = stage.global_centers[0] if use_g else None
    with torch.no_grad():
        got = stage.generate(stage.blocks[1], stage.blocks[2], x, centers, g)
        want = reference_generation(stage, x, g)
    assert got.shape == (16, 4, C)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # the reference is sensitive to each wiring choice: flipping one changes the result
    other = _stage(variant, not shortcut, use_g).eval()
    with torch.no_grad():
        assert not torch.allclose(reference_generation(other, x, g), want, atol=1e-3)


def _record_attention(model):
    calls = []
    hooks = [
        m.register_forward_hook(lambda m, a, kw, out, n=n: calls.append((n, a, kw)), with_kwargs=True)
        for n, m in model.named_modules()
        if isinstance(m, Attention)
    ]
    return calls, hooks


@pytest.mark.parametrize("variant", ["classification", "detection"])
def test_query_and_key_sets_per_variant(variant):
    """Shapes of every attention call in a semantic stage: which tokens are queries and keys."""
    stage = _stage(variant, variant == "detection", False).eval()
    calls, hooks = _record_attention(stage)
    with torch.no_grad():
        out = stage(torch.randn(2, *MAP, C))
    for h in hooks:
        h.remove()
    shapes = {}
    for name, args, kw in calls:
        ctx = args[1] if len(args) > 1 else kw.get("context")
        shapes[name.split(".")[1]] = (tuple(args[0].shape), None if ctx is None else tuple(ctx.shape))
    nw, m, n = 8, 4, 96
    if variant == "classification":
        assert shapes["1"] == ((2 * nw, m, C), (2 * nw, m + 24, C))  # [P; 24-token neighbourhood]
        assert shapes["2"] == ((2, nw * m, C), (2, nw * m + n, C))  # global: [all S1; all image]
    else:
        assert shapes["1"] == ((2 * nw, m, C), (2 * nw, 24, C))  # neighbourhood only
        assert shapes["2"] == ((2 * nw, m, C), (2 * nw, 80, C))  # larger neighbourhood, no semantic keys
    assert shapes["3"] == ((2 * nw, m, C), None) and shapes["4"] == ((2, nw * m, C), None)  # local, global
    assert out.shape == (2, 2, 4, 4, C)  # windows (2, 2, 2) x grid (1, 2, 2)


@pytest.mark.parametrize("variant", ["classification", "detection"])
def test_flops_count_each_variants_queries_and_keys(variant):
    torch.manual_seed(0)
    model = STViTSwin(
        num_classes=3, patch_size=(2, 4, 4), embed_dim=C, depths=(1, 1, 4, 1), num_heads=(1, 1, HEADS, 2),
        window_size=(2, 2, 2), semantic_stages=(2,), window_grid=(1, 2, 2), context=(2, 3, 3),
        context2=(4, 4, 4), variant=variant, drop_path_rate=0.0,
    )  # fmt: skip
    report = count_flops(model.eval(), torch.randn(1, 3, 8, 64, 64))  # stage 2: 4x4x4 map, 8 windows
    rows = {r.name: r for r in report.layers}
    c, nw, m, n = 4 * C, 8, 4, 64
    gen1, gen2 = rows["layers.2.blocks.1"], rows["layers.2.blocks.2"]
    if variant == "classification":
        assert (
            gen1.key_tokens == [m + 18] and gen2.query_tokens == [nw * m] and gen2.key_tokens == [nw * m + n]
        )
        assert gen1.flops == nw * block_flops(m, c, m + 18)
        assert gen2.flops == block_flops(nw * m, c, nw * m + n)
    else:
        assert gen1.key_tokens == [18] and gen2.query_tokens == [nw * m] and gen2.key_tokens == [64]
        assert gen1.flops == nw * block_flops(m, c, 18)
        assert gen2.flops == nw * block_flops(m, c, 64)
    assert report.unsupported == {}


# ----------------------------------------------------------------------------- config and defaults
def _cfg(*opts):
    base = ["MODEL.ARCH", "stvit_swin", "MODEL.NUM_CLASSES", "3", "SWIN.EMBED_DIM", "8"]
    base += ["SWIN.DEPTHS", "[1, 1, 4, 1]", "SWIN.NUM_HEADS", "[1, 1, 2, 2]", "SWIN.WINDOW_SIZE", "[2, 2, 2]"]
    return load_config(None, base + ["SWIN.SEMANTIC_WINDOW_GRID", "[1, 2, 2]", *opts])


def test_auto_flags_resolve_as_released_and_explicit_values_override():
    cls = build_model(_cfg("SWIN.STVIT_VARIANT", "classification")).layers[2]
    det = build_model(_cfg("SWIN.STVIT_VARIANT", "detection")).layers[2]
    assert (cls.variant, cls.shortcut, cls.global_centers) == ("classification", False, None)
    assert (det.variant, det.shortcut, det.global_centers) == ("detection", True, None)
    on = build_model(_cfg("SWIN.STVIT_SHORTCUT", "add", "SWIN.STVIT_GLOBAL_CENTERS", "add")).layers[2]
    assert on.shortcut and on.global_centers.shape == (1, 4, 32)  # one unit, grid 1x2x2, width 4 x 8
    off = build_model(_cfg("SWIN.STVIT_VARIANT", "detection", "SWIN.STVIT_SHORTCUT", "none")).layers[2]
    assert not off.shortcut


def test_invalid_values_name_the_key():
    with pytest.raises(ConfigError, match="SWIN.STVIT_VARIANT must be one of"):
        _cfg("SWIN.STVIT_VARIANT", "windowed")
    with pytest.raises(ConfigError, match="SWIN.STVIT_SHORTCUT must be one of"):
        _cfg("SWIN.STVIT_SHORTCUT", "yes")
    with pytest.raises(ConfigError, match="SWIN.STVIT_GLOBAL_CENTERS expects str"):
        _cfg("SWIN.STVIT_GLOBAL_CENTERS", "True")
    with pytest.raises(ValueError, match="SWIN.STVIT_VARIANT must be one of"):
        STViTSwin(variant="windowed")
    with pytest.raises(ValueError, match=r"SWIN.SEMANTIC_CONTEXT_GEN2 must be three positive sizes"):
        STViTSwin(context2=(4, 4))


@pytest.mark.parametrize("variant", ["classification", "detection"])
def test_gradients_reach_g_and_layer_scales(variant):
    model = build_model(
        _cfg(
            "SWIN.STVIT_VARIANT",
            variant,
            "SWIN.STVIT_GLOBAL_CENTERS",
            "add",
            "STVIT.SEMANTIC_LAYER_SCALE",
            "True",
        )
    ).train()
    model(torch.randn(2, 3, 8, 64, 64)).logsumexp(-1).sum().backward()
    stage = model.layers[2]
    assert stage.global_centers.grad.abs().sum() > 0
    for blk in stage.blocks[1:]:
        assert blk.ls1.gamma.grad.abs().sum() > 0 and blk.ls2.gamma.grad.abs().sum() > 0
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_semantic_layer_scale_option_swin_and_vit():
    def scaled(blocks):
        return [
            i
            for i, b in enumerate(blocks)
            if not isinstance(getattr(b, "ls1", torch.nn.Identity()), torch.nn.Identity)
        ]

    assert scaled(_stage("classification", False, False).blocks) == [1, 2]  # gen1, gen2
    assert scaled(_stage("classification", False, False, semantic_layer_scale=True).blocks) == [1, 2, 3, 4]
    tiny = dict(num_classes=5, num_frames=4, img_size=32, patch_size=16, embed_dim=32, num_heads=2)
    vit = STViT(depth=12, semantic_grid=(2, 2, 2), semantic_layer_scale=True, **tiny)
    assert scaled(vit.blocks) == list(range(4, 12))  # gen1, gen2 and the six semantic layers
    assert all(b.ls1.gamma[0].item() == pytest.approx(1e-5) for b in vit.blocks[4:])
    assert scaled(STViT(depth=12, semantic_grid=(2, 2, 2), **tiny).blocks) == [4, 5]


def test_shortcut_off_makes_layer1_independent_of_the_center_values_residual():
    """Without the shortcut, adding a constant to one center changes S1 only through attention:
    with uniform attention weights (zero q/k projections) S1 does not depend on the centers at all
    in the detection wiring (keys are image tokens only)."""
    stage = _stage("detection", False, False).eval()
    blk = stage.blocks[1]
    with torch.no_grad():
        blk.attn.qkv.weight[: 2 * C].zero_()
        blk.attn.qkv.bias[: 2 * C].zero_()
    torch.manual_seed(2)
    x = torch.randn(1, *MAP, C)
    ctx = window_neighbourhoods(x, WINDOW, CTX1)
    p = torch.randn(8, 4, C)
    with torch.no_grad():
        a, b = cross_block(blk, p, ctx, shortcut=False), cross_block(blk, p + 3.0, ctx, shortcut=False)
        torch.testing.assert_close(a, b)
        c, d = cross_block(blk, p, ctx, shortcut=True), cross_block(blk, p + 3.0, ctx, shortcut=True)
        assert not torch.allclose(c, d)


def test_synth_and_k400_configs_build_both_variants():
    for path in ("configs/synth/stvit_swin_t.yaml", "configs/k400/stvit_swin_t.yaml"):
        for variant in ("classification", "detection"):
            cfg = load_config(path, ["SWIN.STVIT_VARIANT", variant])
            stage = build_model(cfg).layers[cfg.SWIN.SEMANTIC_STAGES[0]]
            assert stage.variant == variant and stage.shortcut == (variant == "detection")
