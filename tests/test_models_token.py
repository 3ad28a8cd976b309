"""Token-efficient video ViTs: STViT, STViT-R, Evo-ViT and the random-drop / uniform-pool controls.

Tiny models (width 48, 3 heads, 4 frames of 32x32 with 2x8x8 tubes = 2x4x4 = 32 tokens + cls).
Checks token counts at every layer (through forward hooks on the blocks, as the FLOP counter sees
them), token order after Evo-ViT's gather/scatter, the dense STViT-R
output and the shipped configs. Gradients, determinism, round trips and FLOPs of every registered
arch are in tests/test_registry.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from stvideo.config import get_cfg, load_config
from stvideo.models import build_model
from stvideo.models.controls import RandomDropViT, UniformPoolViT
from stvideo.models.evo import EvoViT, stagewise_epoch
from stvideo.models.stvit import STViT, layer_roles, pool_centers
from stvideo.models.vit import VideoViT

REPO = Path(__file__).resolve().parents[1]
TINY = dict(num_classes=5, num_frames=4, img_size=32, patch_size=8, embed_dim=48, num_heads=3)
GRID = (2, 4, 4)  # token grid of TINY
N = 32  # patch tokens of TINY


def _video(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, 4, 32, 32, generator=torch.Generator().manual_seed(seed))


def _record_tokens(model: torch.nn.Module) -> tuple[list[tuple[int, int]], list]:
    """Hook every block; each call appends (query tokens, key tokens)."""
    calls: list[tuple[int, int]] = []

    def hook(mod, args, kwargs):
        x = args[0]
        ctx = kwargs.get("context")
        calls.append((x.shape[1], x.shape[1] if ctx is None else ctx.shape[1]))

    handles = [b.register_forward_pre_hook(hook, with_kwargs=True) for b in model.blocks]
    return calls, handles


def _cfg(arch: str, **over):
    cfg = get_cfg()
    cfg.MODEL.ARCH = arch
    cfg.MODEL.NUM_CLASSES = 5
    cfg.MODEL.DROP_PATH_RATE = 0.0
    cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE = 4, 32
    cfg.VIT.EMBED_DIM, cfg.VIT.NUM_HEADS, cfg.VIT.DEPTH, cfg.VIT.PATCH_SIZE = 48, 3, 6, 8
    cfg.STVIT.GRID = [2, 2, 2]
    cfg.STVIT.START_LAYER, cfg.STVIT.NUM_SEMANTIC_LAYERS = 2, 2  # 2 full, 2 generation, 2 semantic
    cfg.CONTROL.START_LAYER = cfg.EVO.START_LAYER = 2
    cfg.EVO.STAGE_LAYERS = [2, 4]
    for k, v in over.items():
        node = cfg
        *path, leaf = k.split(".")
        for p in path:
            node = node[p]
        node[leaf] = v
    return cfg


# ----------------------------------------------------------------------------- pooling / layout
def test_pool_centers_slice_and_joint():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 32, 1)  # value = token index
    slice_max = pool_centers(x, GRID, (2, 2, 2), "slice", "max").flatten().tolist()
    assert slice_max == [5, 7, 13, 15, 21, 23, 29, 31]  # bottom-right of every 2x2 block, per slice
    slice_avg = pool_centers(x, GRID, (2, 2, 2), "slice", "avg").flatten().tolist()
    assert slice_avg == [2.5, 4.5, 10.5, 12.5, 18.5, 20.5, 26.5, 28.5]
    joint = pool_centers(x, GRID, (1, 2, 2), "joint", "avg").flatten().tolist()
    assert joint == [10.5, 12.5, 18.5, 20.5]  # averages both slices
    with pytest.raises(ValueError, match="in slice mode needs one grid per temporal slice"):
        pool_centers(x, GRID, (1, 2, 2), "slice", "max")
    with pytest.raises(ValueError, match="finer than the token grid"):
        pool_centers(x, GRID, (2, 8, 8), "joint", "max")


def test_layer_roles_stvit_and_dumbbells():
    assert layer_roles(12, 4, 6, 1, False) == ["full"] * 4 + ["gen1", "gen2"] + ["semantic"] * 6
    unit = ["gen1", "gen2", "semantic", "semantic", "restore"]
    assert layer_roles(12, 1, 2, 2, True) == ["full"] + unit + ["full"] + unit
    assert layer_roles(8, 1, 1, 1, True) == ["full", "gen1", "gen2", "semantic", "restore"] + ["full"] * 3
    with pytest.raises(ValueError, match="NUM_SEMANTIC_LAYERS"):
        layer_roles(12, 4, 5, 1, False)
    with pytest.raises(ValueError, match="depth is 8"):
        layer_roles(8, 1, 2, 2, True)


# ----------------------------------------------------------------------------- STViT / STViT-R
def test_stvit_token_counts_per_layer():
    model = STViT(depth=12, semantic_grid=(2, 2, 2), **TINY).eval()
    calls, handles = _record_tokens(model)
    out = model.forward_tokens(*model.embed(_video()))
    for h in handles:
        h.remove()
    full, m = 1 + N, 1 + 8  # cls + tokens
    assert calls == [(full, full)] * 4 + [(m, full), (m, m + N)] + [(m, m)] * 6
    assert out.shape == (2, m, 48)
    assert model(_video()).shape == (2, 5)


def test_stvit_r_dense_features_and_token_counts():
    model = STViT(
        depth=12,
        semantic_grid=(2, 2, 2),
        start_layer=1,
        num_semantic_layers=2,
        num_units=2,
        restore=True,
        **TINY,
    ).eval()
    calls, handles = _record_tokens(model)
    tokens = model.forward_tokens(*model.embed(_video()))
    for h in handles:
        h.remove()
    full, m = 1 + N, 1 + 8
    unit = [(m, full), (m, m + N), (m, m), (m, m), (full, m)]
    assert calls == [(full, full)] + unit + [(full, full)] + unit
    dense = model.dense_features(_video())
    assert dense.shape == (2, 48, 2, 4, 4)
    # position (t, h, w) of the dense map is token 1 + t*16 + h*4 + w (time-major, after cls)
    for t, h, w in [(0, 0, 0), (1, 2, 3), (0, 3, 1)]:
        torch.testing.assert_close(dense[:, :, t, h, w], tokens[:, 1 + t * 16 + h * 4 + w])
    # as a backbone: a per-location loss sends gradients to the patch embedding and global centers
    model.train()
    model.return_dense = True
    model(_video()).square().mean().backward()
    assert model.patch_embed.proj.weight.grad.abs().sum() > 0
    assert model.global_centers.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="RETURN_DENSE needs STViT-R"):
        STViT(depth=12, semantic_grid=(2, 2, 2), return_dense=True, **TINY)


def test_stvit_layer_scale_only_on_new_roles():
    model = STViT(depth=12, semantic_grid=(2, 2, 2), stvit_layer_scale=1e-5, **TINY)
    gammas = {i: b.ls1.gamma[0].item() for i, b in enumerate(model.blocks) if hasattr(b.ls1, "gamma")}
    assert sorted(gammas) == [4, 5] and all(g == pytest.approx(1e-5) for g in gammas.values())


# ----------------------------------------------------------------------------- Evo-ViT
def test_evovit_keep_all_equals_plain_vit():
    """Keep ratio 1 still sorts, gathers and un-permutes every token: the output must equal the ViT's."""
    evo = EvoViT(depth=6, start_layer=2, stage_layers=(2, 4), keep_ratio=1.0, **TINY).eval()
    vit = VideoViT(depth=6, **TINY).eval()
    vit.load_state_dict(evo.state_dict(), strict=False)
    x = _video()
    torch.testing.assert_close(evo.forward_features(x), vit.forward_features(x), rtol=0, atol=1e-5)


def _stage_io(model: EvoViT, x: torch.Tensor, start: int, end: int):
    """Stage input in original order, the slow sequence entering / leaving the stage, and the output."""
    seen = {}
    h1 = model.blocks[start - 1].register_forward_hook(lambda m, a, o: seen.__setitem__("stage_in", o))
    h2 = model.blocks[start].register_forward_pre_hook(lambda m, a: seen.__setitem__("slow_in", a[0]))
    h3 = model.blocks[end - 1].register_forward_hook(lambda m, a, o: seen.__setitem__("slow_out", o))
    out = model.forward_tokens(*model.embed(x))
    for h in (h1, h2, h3):
        h.remove()
    return seen["stage_in"], seen["slow_in"], seen["slow_out"], out


@pytest.mark.parametrize("fast_update", ["representative", "identity"])
def test_evovit_slow_fast_paths_and_order(fast_update):
    model = EvoViT(depth=6, start_layer=3, stage_layers=(3,), fast_update=fast_update, **TINY).eval()
    stage_in, slow_in, slow_out, out = _stage_io(model, _video(), 3, 6)
    k = N // 2
    rep = fast_update == "representative"
    assert slow_in.shape == (2, 1 + k + rep, 48) and out.shape == (2, 1 + N, 48)
    for b in range(2):
        # which original positions took the slow path: rows of the stage input gathered unchanged
        match = (stage_in[b, 1:, None] == slow_in[b, None, 1 : 1 + k]).all(-1)  # (N, k)
        assert match.sum(0).eq(1).all()
        kept = match.any(1)
        assert kept.sum() == k
        pos = match.float().argmax(0)  # original position of each slow token
        torch.testing.assert_close(out[b, 1 + pos], slow_out[b, 1 : 1 + k])  # back in place
        delta = out[b, 1:][~kept] - stage_in[b, 1:][~kept]
        if rep:  # every placeholder got the representative token's residual
            rep_delta = slow_out[b, -1] - slow_in[b, -1]
            torch.testing.assert_close(delta, rep_delta.expand_as(delta))
        else:
            assert torch.equal(delta, torch.zeros_like(delta))


def test_evovit_layerwise_then_stagewise_schedule():
    model = EvoViT(depth=6, start_layer=2, stage_layers=(2, 4), stagewise_epoch=3, **TINY)
    calls, handles = _record_tokens(model)
    slow = 1 + N // 2 + 1  # cls + kept + representative
    model.train()
    model.set_epoch(2)
    assert model.segments() == [(2, 3), (3, 4), (4, 5), (5, 6)]
    out = model(_video())
    assert set(out) == {"logits", "aux_logits", "aux_weight"} and out["aux_weight"] == 0.5
    assert out["logits"].shape == out["aux_logits"].shape == (2, 5)
    model.set_epoch(3)
    assert model.segments() == [(2, 4), (4, 6)]
    model.eval()
    model.set_epoch(0)
    assert model.segments() == [(2, 4), (4, 6)]  # EVAL_SELECTION stagewise: eval is always stage-wise
    logits = model(_video())
    for h in handles:
        h.remove()
    assert logits.shape == (2, 5)
    assert calls[:6] == [(1 + N, 1 + N)] * 2 + [(slow, slow)] * 4
    assert calls[-6:] == calls[:6]  # same per-layer token counts in both modes


@pytest.mark.parametrize(
    "max_epoch, switch", [(300, 200), (36, 24), (75, 50), (40, 27), (30, 20), (3, 2), (1, 1)]
)
def test_evovit_default_schedule_follows_the_paper(max_epoch, switch):
    """Default: layer-wise for the first 2/3 of SOLVER.MAX_EPOCH (200 of 300 in the paper)."""
    cfg = get_cfg()
    cfg.SOLVER.MAX_EPOCH = max_epoch
    assert stagewise_epoch(cfg) == (switch if switch < max_epoch else None)


def test_evovit_explicit_epoch_and_never():
    cfg = get_cfg()
    cfg.SOLVER.MAX_EPOCH = 30
    cfg.EVO.STAGEWISE_EPOCH = 7
    assert stagewise_epoch(cfg) == 7
    cfg.EVO.STAGEWISE_EPOCH = 0
    assert stagewise_epoch(cfg) == 0
    cfg.EVO.STAGEWISE_EPOCH = -1
    cfg.EVO.STAGEWISE_FRACTION = 1.0  # never
    assert stagewise_epoch(cfg) is None
    cfg.EVO.STAGEWISE_FRACTION = 0.0
    assert stagewise_epoch(cfg) == 0
    for key, bad in (("STAGEWISE_FRACTION", 1.5), ("STAGEWISE_EPOCH", -2)):
        c = get_cfg()
        c.EVO[key] = bad
        with pytest.raises(ValueError, match=f"EVO.{key}"):
            stagewise_epoch(c)


def test_evovit_never_stays_layerwise():
    model = EvoViT(depth=6, start_layer=2, stage_layers=(2, 4), stagewise_epoch=None, **TINY).train()
    layerwise = [(2, 3), (3, 4), (4, 5), (5, 6)]
    for epoch in (0, 10, 10_000):
        model.set_epoch(epoch)
        assert model.segments() == layerwise
    never = EvoViT(
        depth=6, start_layer=2, stage_layers=(2, 4), stagewise_epoch=None, eval_selection="training", **TINY
    )
    assert never.eval().segments() == layerwise  # official eval of a never-stage-wise run: layer-wise


def test_shipped_evovit_configs_switch_at_two_thirds():
    for name, switch in (("synth/evovit_t.yaml", 24), ("k400/evovit_b.yaml", 50), ("ssv2/evovit_b.yaml", 27)):
        cfg = load_config(str(REPO / "configs" / name))
        assert stagewise_epoch(cfg) == switch, name
        assert cfg.EVO.FAST_UPDATE == "representative" and cfg.EVO.EVAL_SELECTION == "stagewise", name


@pytest.mark.parametrize("eval_selection", ["stagewise", "training"])
def test_evovit_validation_selection_follows_the_option(eval_selection):
    """A val forward during the layer-wise phase runs the layer-wise path with EVAL_SELECTION training
    (the official DeiT code), the stage-wise path with the default; after the switch both are stage-wise.
    No dropout or drop path here, so train and eval forwards on one path give bitwise the same logits."""
    cfg = _cfg("evovit", **{"SOLVER.MAX_EPOCH": 3, "EVO.EVAL_SELECTION": eval_selection})
    torch.manual_seed(0)
    model = build_model(cfg)
    assert model.stagewise_epoch == 2  # round(0.667 * 3)
    x = _video()
    with torch.no_grad():
        model.train()
        model.set_epoch(1)  # the trainer's call before epoch 1: layer-wise phase
        layerwise = model(x)["logits"]
        model.set_epoch(2)
        stagewise = model(x)["logits"]
        assert not torch.equal(layerwise, stagewise)  # the two paths differ on this input
        model.set_epoch(1)
        val = model.eval()(x)  # Trainer.validate after epoch 1
        assert torch.equal(val, layerwise if eval_selection == "training" else stagewise)
        model.set_epoch(2)
        assert torch.equal(model(x), stagewise)


def test_evovit_learnable_ema_and_validation():
    model = EvoViT(depth=6, start_layer=2, stage_layers=(2, 4), learnable_ema=True, ema_weight=0.25, **TINY)
    assert torch.sigmoid(model.ema_logit).tolist() == pytest.approx([0.25] * 6)
    assert "ema_logit" in dict(model.named_parameters())
    fixed = EvoViT(depth=6, start_layer=2, stage_layers=(2, 4), **TINY)
    assert "ema_logit" not in dict(fixed.named_parameters())  # a buffer: no optimizer state, no decay
    fixed.load_state_dict(model.state_dict(), strict=False)
    x = _video()
    assert not torch.equal(model.eval()(x), fixed.eval()(x))  # the weight changes the selection
    with pytest.raises(ValueError, match="EVO.START_LAYER"):
        EvoViT(depth=6, start_layer=0, **TINY)
    with pytest.raises(ValueError, match="EVO.STAGE_LAYERS"):
        EvoViT(depth=6, stage_layers=(4, 2), **TINY)


# ----------------------------------------------------------------------------- controls
def test_controls_match_stvit_token_counts():
    stvit = build_model(_cfg("stvit"))
    counts = {}
    for arch in ("stvit", "random_drop", "uniform_pool"):
        model = stvit if arch == "stvit" else build_model(_cfg(arch))
        calls, handles = _record_tokens(model.eval())
        model(_video())
        for h in handles:
            h.remove()
        counts[arch] = [q for q, _ in calls]
    assert counts["random_drop"] == counts["uniform_pool"] == [1 + N] * 2 + [1 + 8] * 4
    assert counts["stvit"] == [1 + N] * 2 + [1 + 8] * 4  # same query counts; STViT's gen layers read all


def test_random_drop_train_random_eval_fixed():
    model = RandomDropViT(depth=4, start_layer=2, keep_tokens=8, **TINY)
    idx = [model.train().keep_indices(3, N, torch.device("cpu")) for _ in range(2)]
    for i in idx:
        assert (
            i.shape == (3, 8)
            and torch.equal(i, i.sort(1).values)
            and all(len(set(r.tolist())) == 8 for r in i)
        )
    assert not torch.equal(idx[0], idx[1])
    model.eval()
    x = _video(3)
    torch.testing.assert_close(model(x)[1:2], model(x[1:2]))  # independent of the batch
    assert torch.equal(model(x), model(x))
    with pytest.raises(ValueError, match="KEEP_TOKENS"):
        RandomDropViT(depth=4, start_layer=2, keep_tokens=33, **TINY)


def test_uniform_pool_tokens_are_grid_averages():
    model = UniformPoolViT(depth=3, start_layer=1, pool_grid=(2, 2, 2), **TINY).eval()
    seen = {}
    model.blocks[0].register_forward_hook(lambda m, a, o: seen.__setitem__("before", o))
    model.blocks[1].register_forward_pre_hook(lambda m, a: seen.__setitem__("after", a[0]))
    model(_video())
    before, after = seen["before"], seen["after"]
    vol = before[:, 1:].transpose(1, 2).reshape(2, 48, 2, 4, 4)
    expected = F.avg_pool3d(vol, (1, 2, 2)).flatten(2).transpose(1, 2)
    torch.testing.assert_close(after[:, 1:], expected)
    torch.testing.assert_close(after[:, :1], before[:, :1])


# ----------------------------------------------------------------------------- configs
def test_synth_configs_build_and_share_the_recipe():
    base = load_config(str(REPO / "configs/synth/vit_t.yaml"))
    for name in ["stvit_t", "stvit_r_t", "evovit_t", "random_drop_t", "uniform_pool_t", "tome_t", "rlt_t"]:
        cfg = load_config(str(REPO / f"configs/synth/{name}.yaml"))
        for section in ("DATA", "SOLVER", "TRAIN", "TEST", "VIT", "AUG", "MIXUP"):
            assert cfg[section] == base[section], f"{name} changes {section}"
        small = load_config(str(REPO / f"configs/synth/{name}.yaml"), ["VIT.EMBED_DIM", "24"])  # fast build
        with torch.no_grad():
            logits = build_model(small).eval()(torch.zeros(1, 3, 8, 32, 32))
        assert logits.shape == (1, base.MODEL.NUM_CLASSES)


@pytest.mark.parametrize("dataset", ["k400", "ssv2"])
def test_dataset_configs_load(dataset):
    for arch in ("vit", "stvit", "stvit_r", "evovit", "tome", "rlt"):
        cfg = load_config(str(REPO / f"configs/{dataset}/{arch}_b.yaml"))
        assert cfg.MODEL.ARCH == arch and cfg.MODEL.SIZE == "base"
        assert (cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE) == (16, 224)
        views = (cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS)
        if dataset == "k400":
            assert (cfg.DATA.SAMPLING, cfg.DATA.SAMPLING_RATE, views) == ("dense", 4, (5, 3))
        else:
            assert (cfg.DATA.SAMPLING, cfg.DATA.RANDOM_FLIP, views) == ("segment", False, (2, 3))
