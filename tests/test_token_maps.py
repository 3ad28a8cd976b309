"""Token maps come from the model's real forward: Evo-ViT's kept set is the one it ran, STViT's
assignments cover every image token, hooked attention is what SDPA used; PNG / MP4 decode and show
the clip."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import av
import numpy as np
import pytest
import torch
from PIL import Image

from stvideo.analysis.token_maps import (
    EXTRACTORS,
    TokenMap,
    TokenMaps,
    attention_probs,
    extract_token_maps,
    register_extractor,
    tracing,
)
from stvideo.analysis.visualize import file_token_maps, visualize_file
from stvideo.config import load_config
from stvideo.data.kinetics import read_csv_annotations
from stvideo.data.synth import CLASS_NAMES
from stvideo.models import build_model
from stvideo.models.evo import EvoViT
from stvideo.models.rlt import RLTViT
from stvideo.models.stvit import STViT
from stvideo.models.tome import ToMeViT
from stvideo.models.vit import Attention, VideoViT
from tests.conftest import REPO, SYNTH_CFG
from tests.videos import write_not_video

TINY = dict(
    num_classes=10, num_frames=4, img_size=32, patch_size=8, tubelet_size=2, embed_dim=24, num_heads=2
)
GRID = (2, 4, 4)  # 4 frames / tubelet 2, 32 px / patch 8
N = math.prod(GRID)


def _clip(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, 4, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_hooked_attention_is_what_sdpa_used():
    torch.manual_seed(0)
    attn = Attention(16, num_heads=1).eval()
    x, ctx = torch.randn(1, 5, 16), torch.randn(1, 9, 16)
    with attention_probs({0: attn}) as probs:
        out = attn(x, ctx)
    p = probs[0][0]
    assert p.shape == (1, 5, 9)
    torch.testing.assert_close(p.sum(-1), torch.ones(1, 5))
    _, _, v = attn.qkv_heads(x, ctx)
    torch.testing.assert_close(attn.proj(p @ v[:, 0]), out)  # one head: the output from these weights


@pytest.mark.parametrize("fast_update", ["representative", "identity"])
def test_evo_kept_set_is_the_models_selection(fast_update):
    torch.manual_seed(0)
    model = EvoViT(
        depth=4, start_layer=1, stage_layers=(1, 3), keep_ratio=0.25, fast_update=fast_update, **TINY
    )
    model.eval()
    seen = {}
    h0 = model.blocks[0].register_forward_hook(lambda m, a, out: seen.__setitem__("x", out))
    h1 = model.blocks[1].register_forward_pre_hook(lambda m, a: seen.__setitem__("slow", a[0]))
    try:
        maps = extract_token_maps(model, "evovit", _clip())
    finally:
        h0.remove(), h1.remove()
    assert [m.title for m in maps.maps] == ["L1 slow 8/32", "L1 class attn", "L3 slow 8/32", "L3 class attn"]
    kept = set(maps.maps[0].values.flatten().nonzero()[:, 0].tolist())
    # The tokens that entered block 1 on the slow path are rows of block 0's output: find which.
    x, slow = seen["x"][0, 1:], seen["slow"][0, 1 : 1 + 8]
    ran = {int((x == row).all(dim=1).nonzero()[0, 0]) for row in slow}
    assert kept == ran and len(ran) == 8
    heat = maps.maps[1].values.flatten()
    assert set(heat.topk(8).indices.tolist()) == kept  # kept = top class attention
    assert maps.maps[2].values.sum() == 8 and not torch.equal(maps.maps[1].values, maps.maps[3].values)


@pytest.mark.parametrize("restore", [False, True])
def test_stvit_assignment_covers_every_image_token(restore):
    torch.manual_seed(0)
    extra = dict(num_units=1, restore=True) if restore else {}
    model = STViT(
        depth=5 if restore else 4,
        start_layer=1,
        num_semantic_layers=1,
        semantic_grid=(2, 2, 2),
        **extra,
        **TINY,
    )
    p = model.num_prefix_tokens
    gen1 = model.layer_roles.index("gen1")
    with attention_probs({gen1: model.blocks[gen1].attn}) as probs:
        maps = extract_token_maps(model, "stvit_r" if restore else "stvit", _clip())
    titles = [m.title for m in maps.maps]
    assert titles == (["L1 gen-1 assignment", "L4 restore attention"] if restore else ["L1 gen-1 assignment"])
    m = maps.maps[0]
    assert m.kind == "groups" and m.labels.shape == GRID  # one entry per image token in every token frame
    assert m.labels.min() >= 0 and m.labels.max() < 8
    assert torch.bincount(m.labels.flatten(), minlength=8).sum() == N
    full = probs[gen1][0][0]  # (p + M, p + N) rows over [cls; image tokens]
    torch.testing.assert_close(full.sum(-1), torch.ones(p + 8))
    torch.testing.assert_close(m.weights, full[p:, p:])
    torch.testing.assert_close(m.labels.flatten(), full[p:, p:].argmax(0))
    assert m.values.max() == 1.0 and m.values.min() > 0
    if restore:
        r = maps.maps[1]
        assert r.labels.shape == GRID and r.weights.shape == (8, N)
        assert (r.weights.sum(0) <= 1 + 1e-6).all()  # each image token's attention over semantic tokens


def test_arch_without_maps_says_so():
    model = build_model(
        load_config(SYNTH_CFG, ["VIT.DEPTH", "2", "VIT.EMBED_DIM", "24", "VIT.NUM_HEADS", "2"])
    )
    maps = extract_token_maps(model, "x3d", torch.randn(1, 3, 8, 32, 32))
    assert maps.maps == [] and "no token maps are available for MODEL.ARCH x3d" in maps.note
    assert {"vit", "stvit", "stvit_r", "evovit", "random_drop", "uniform_pool", "tome", "rlt"} <= set(
        EXTRACTORS
    )


@pytest.mark.parametrize("arch", ["vit", "evovit", "random_drop", "uniform_pool", "tome", "rlt"])
def test_pictures_decode_and_follow_the_video(tiny_synth_opts, tmp_path, arch):
    opts = [*tiny_synth_opts, "MODEL.ARCH", arch, "VIT.DEPTH", "3", "EVO.START_LAYER", "1", "TOME.R", "[2]"]
    opts += ["EVO.STAGE_LAYERS", "[1, 2]", "CONTROL.START_LAYER", "1", "STVIT.GRID", "[2, 1, 1]"]
    cfg = load_config(SYNTH_CFG, opts)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    root = cfg.DATA.PATH_TO_DATA_DIR
    videos = [f"{root}/{p}" for p, _ in read_csv_annotations(f"{root}/test.csv")][:2]
    pngs, summaries = [], []
    for i, video in enumerate(videos):
        summary = visualize_file(model, cfg, video, tmp_path / str(i))
        summaries.append(summary)
        png = np.asarray(Image.open(summary["png"]).convert("RGB"))
        rows = len(summary["maps"]) + 1
        assert png.shape[0] >= rows * 96 and png[:, 140:].std() > 10  # not blank
        pngs.append(png)
        with av.open(summary["mp4"]) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) == cfg.DATA.NUM_FRAMES
        assert frames[0].shape[1] == rows * frames[0].shape[0]  # input + every map side by side
        assert all(f.std() > 10 for f in frames) and not np.array_equal(frames[0], frames[-1])
    assert pngs[0].shape == pngs[1].shape and not np.array_equal(pngs[0], pngs[1])

    def what_shown(v: str) -> torch.Tensor:  # values, and group ids for groups maps
        maps = file_token_maps(model, cfg, v)[1].maps
        return torch.stack([m.values if m.labels is None else m.labels.float() + m.values for m in maps])

    values = [what_shown(v) for v in videos]
    if arch in ("uniform_pool", "random_drop"):  # fixed grid / fixed eval subset; the others follow the clip
        assert torch.equal(values[0], values[1])
    elif arch != "tome":  # an untrained ToMe's merges of 8 tokens follow the position embedding, not the clip
        assert not torch.equal(values[0], values[1])


def test_tome_groups_are_the_merges_the_model_ran():
    torch.manual_seed(0)
    model = ToMeViT(depth=3, r=[5], **TINY).eval()  # 5 merges per layer: 27, 22, 17 patch groups
    maps = extract_token_maps(model, "tome", _clip(), layers=[0, 2])
    assert [m.title for m in maps.maps] == ["L0 27 groups / 32", "L2 17 groups / 32"]
    for m in maps.maps:
        counts = torch.bincount(m.labels.flatten())
        assert counts.sum() == N and (counts > 0).all() and m.weights.shape == (len(counts), N)
        torch.testing.assert_close(m.values.flatten(), 1.0 / counts[m.labels.flatten()].float())
    # The last map's groups are the tokens the forward averaged into one: the (unmerged) output rows of
    # a group are equal and rows of different groups differ.
    with torch.no_grad():
        feats = model.forward_features(_clip())[0, model.num_prefix_tokens :]
    labels = maps.maps[1].labels.flatten()
    for g in labels.unique():
        rows = feats[labels == g]
        assert torch.equal(rows, rows[:1].expand_as(rows))
    assert len({tuple(r.tolist()) for r in feats}) == 17


def test_rlt_mask_is_the_tubes_the_model_kept():
    torch.manual_seed(0)
    model = RLTViT(depth=2, threshold=0.05, **TINY).eval()
    clip = _clip()
    clip[:, :, 2:] = clip[:, :, :2]  # the second tubelet repeats the first ...
    clip[:, :, 2:, :8, :8] += 1.0  # ... except at one patch
    (m,) = extract_token_maps(model, "rlt", clip).maps
    assert m.title == "kept 17/32" and int(model.tokens_kept[0]) == 17
    expected = torch.zeros(GRID)
    expected[0], expected[1, 0, 0] = 1.0, 1.0
    assert torch.equal(m.values, expected)


@pytest.mark.parametrize("restore", [False, True])
def test_stvit_swin_assignment_covers_the_stage_map(restore):
    cfg = load_config(str(SYNTH_CFG).replace("vit_t", "stvit_swin_t"), ["SWIN.RESTORE", str(restore)])
    torch.manual_seed(0)
    model = build_model(cfg)
    maps = extract_token_maps(model, "stvit_swin", torch.randn(1, 3, 8, 32, 32))
    assert [m.title for m in maps.maps] == ["S1 L1 gen-1 assignment"] + (
        ["S1 L5 restore attention"] if restore else []
    )
    m = maps.maps[0]
    assert maps.grid == (4, 4, 4) and m.labels.shape == (4, 4, 4)
    # 2 windows (2x4x4) x 8 semantic tokens; every token is read by some window's neighbourhood
    assert m.labels.min() >= 0 and m.labels.max() < 16 and len(m.labels.unique()) > 1
    assert torch.isfinite(m.values).all() and m.values.min() > 0 and m.values.max() == 1.0


def test_visualize_tokens_cli(tiny_synth_opts, tmp_path):
    opts = [*tiny_synth_opts, "MODEL.ARCH", "stvit", "VIT.DEPTH", "4", "STVIT.START_LAYER", "1"]
    opts += ["STVIT.NUM_SEMANTIC_LAYERS", "1", "STVIT.GRID", "[2, 1, 1]"]
    cfg = load_config(SYNTH_CFG, opts)
    torch.manual_seed(0)
    torch.save({"model": build_model(cfg).state_dict()}, tmp_path / "k.pyth")
    (tmp_path / "c.yaml").write_text(cfg.dump())
    root = cfg.DATA.PATH_TO_DATA_DIR
    video = f"{root}/{read_csv_annotations(f'{root}/test.csv')[0][0]}"
    cmd = [sys.executable, str(REPO / "tools/visualize_tokens.py"), "--cfg", str(tmp_path / "c.yaml")]
    cmd += ["--checkpoint", str(tmp_path / "k.pyth"), "--out", str(tmp_path / "maps")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([*cmd, "--video", video], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert [m["title"] for m in summary["maps"]] == ["L1 gen-1 assignment"] and summary["grid"] == [2, 2, 2]
    assert summary["top_name"] in CLASS_NAMES and os.path.getsize(summary["mp4"]) > 0
    bad = write_not_video(tmp_path / "bad.mp4")
    proc = subprocess.run([*cmd, "--video", str(bad)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1 and proc.stderr.strip().startswith(f"Error: {bad}")


def test_a_new_arch_needs_one_extractor():
    class Grouping(VideoViT):  # a stand-in token method that records a per-token grouping
        def forward_tokens(self, x, grid):
            x = super().forward_tokens(x, grid)
            self.record("groups", x[:, 1:, 0].argsort(dim=1) % 3)
            return x

    def grouping_maps(model, clip, layers):
        with tracing(model) as trace:
            logits = model(clip)
        groups = trace["groups"][0][0].view(model.grid)
        return TokenMaps(
            "grouping", logits, model.grid, [TokenMap("groups", "groups", torch.ones(GRID), groups)]
        )

    register_extractor("test_grouping")(grouping_maps)
    try:
        with pytest.raises(KeyError, match="already registered"):
            register_extractor("test_grouping")(grouping_maps)
        torch.manual_seed(0)
        model = Grouping(depth=2, **TINY)
        maps = extract_token_maps(model, "test_grouping", _clip())
        expected = model.forward_features(_clip())[0, 1:, 0].argsort() % 3
        assert torch.equal(maps.maps[0].labels.flatten(), expected) and model.trace is None
    finally:
        del EXTRACTORS["test_grouping"]
