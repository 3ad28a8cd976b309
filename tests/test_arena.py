"""The arena sweep: knob search picks the candidate closest to the budget (checked against brute force),
RLT's cost clips keep exactly the asked token count, a plain ViT checkpoint loads into every method,
and tools/sweep_budgets.py runs end to end on a tiny checkpoint and tiny real videos."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stvideo.analysis.arena import (
    METHODS,
    CostModel,
    choose_knob,
    clip_keeping,
    closest_index,
    knob_candidates,
    method_cfg,
    parse_trained,
    rlt_thresholds,
)
from stvideo.config import get_cfg, load_config
from stvideo.engine.checkpoint import load_model_weights
from stvideo.models import build_model
from stvideo.models.rlt import RLTViT
from stvideo.utils.checkpoint_io import CheckpointError

REPO = Path(__file__).resolve().parents[1]
SYNTH_CFG = str(REPO / "configs/synth/vit_t.yaml")


def _vit_cfg():
    cfg = get_cfg()
    cfg.MODEL.NUM_CLASSES, cfg.MODEL.DROP_PATH_RATE = 5, 0.0
    cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE, cfg.DATA.TEST_CROP_SIZE = 4, 32, 32
    cfg.VIT.EMBED_DIM, cfg.VIT.NUM_HEADS, cfg.VIT.DEPTH, cfg.VIT.PATCH_SIZE = 24, 2, 4, 8
    cfg.CONTROL.START_LAYER = cfg.EVO.START_LAYER = 1
    cfg.EVO.STAGE_LAYERS = [1, 2]
    return cfg


def test_closest_index_bisects_to_the_nearest_value() -> None:
    values = [10, 9, 7, 7, 4, 2, 1]
    for target in (11, 9.6, 8.4, 7, 5.4, 5.6, 0, 1.4):
        i = closest_index(lambda j: values[j], len(values), target)
        assert abs(values[i] - target) == min(abs(v - target) for v in values), target


@pytest.mark.parametrize("method", ["tome", "evovit", "random_drop", "uniform_pool"])
def test_knob_search_hits_the_budget_as_closely_as_any_knob(method: str) -> None:
    cfg = _vit_cfg()
    costs = CostModel(cfg, (1, 3, 4, 32, 32))
    base = costs.gflops("vit", None)
    candidates = knob_candidates(method, cfg)
    for budget in (0.6,):
        knob, gflops, spread = choose_knob(method, cfg, costs, torch.zeros(1, 1, 4, 4), budget * base)
        assert spread is None and gflops == costs.gflops(method, knob)
        i = candidates.index(knob)  # costs fall along the candidates: the neighbours bracket the best
        around = [costs.gflops(method, candidates[j]) for j in (i - 1, i, i + 1) if 0 <= j < len(candidates)]
        assert around == sorted(around, reverse=True)
        assert abs(gflops - budget * base) == min(abs(g - budget * base) for g in around)
        assert abs(gflops / base - budget) < 0.1  # 32 tokens: the knob steps are this fine


def test_rlt_cost_clip_keeps_exactly_the_asked_tokens_and_the_search_hits_the_mean() -> None:
    cfg = _vit_cfg()
    cfg.DATA.TRAIN_CROP_SIZE = cfg.DATA.TEST_CROP_SIZE = 16  # 2x2x2 tubes: 4 comparable ones
    view = (1, 3, 4, 16, 16)
    model = build_model(method_cfg(cfg, "rlt", 1e-3)).eval()
    for kept in (4, 6, 8):
        with torch.no_grad():
            model(clip_keeping(view, 2, 8, kept))
        assert model.tokens_kept.tolist() == [kept]
    costs = CostModel(cfg, view)
    base = costs.gflops("vit", None)
    diffs = torch.rand(40, 1, 2, 2, generator=torch.Generator().manual_seed(0))  # 40 views
    knob, gflops, spread = choose_knob("rlt", cfg, costs, diffs, 0.8 * base)
    means = []
    for t in rlt_thresholds(diffs):
        kept = 4 + (diffs >= t).flatten(1).sum(1)
        means.append(sum(costs.rlt_gflops(int(k)) for k in kept) / len(kept))
    assert abs(gflops - 0.8 * base) == pytest.approx(min(abs(m - 0.8 * base) for m in means))
    assert spread["min"] <= gflops <= spread["max"] and spread["tokens_kept_min"] >= 4
    assert knob > 0 and spread["tokens_kept_mean"] < 8


@pytest.mark.parametrize("method", METHODS)
def test_plain_vit_checkpoint_loads_into_every_method(tmp_path, method: str) -> None:
    cfg = _vit_cfg()
    torch.manual_seed(0)
    vit = build_model(cfg).eval()
    path = tmp_path / "vit.pyth"
    torch.save({"model": vit.state_dict()}, path)
    knob = {"tome": 0, "rlt": 0.0, "evovit": 32, "random_drop": 32, "uniform_pool": [2, 4, 4]}[method]
    model = build_model(method_cfg(cfg, method, knob))
    load_model_weights(model, str(path))
    clip = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out, ref = model.eval()(clip), vit(clip)
    if method in ("tome", "rlt"):  # inactive knob: the trained ViT exactly
        assert torch.equal(out, ref)
    else:  # all tokens kept / pooled to the full grid: the same computation up to token order and sums
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_a_checkpoint_missing_required_weights_is_refused(tmp_path) -> None:
    cfg = _vit_cfg()
    sd = build_model(cfg).state_dict()
    sd.pop("head.weight")
    torch.save({"model": sd}, tmp_path / "cut.pyth")
    with pytest.raises(CheckpointError, match="head.weight"):
        load_model_weights(build_model(method_cfg(cfg, "rlt", 0.1)), str(tmp_path / "cut.pyth"))
    assert isinstance(build_model(method_cfg(cfg, "rlt", 0.1)), RLTViT)


def test_sweep_tool_end_to_end(tmp_path, tiny_synth_opts) -> None:
    opts = [*tiny_synth_opts, "VIT.DEPTH", "4", "EVO.START_LAYER", "1", "EVO.STAGE_LAYERS", "[1]"]
    opts += ["CONTROL.START_LAYER", "1", "MODEL.PATCH_EMBED", "linear", "DATA.TEST_CROP_SIZE", "32"]
    opts += ["DATA.TRAIN_CROP_SIZE", "32"]
    cfg = load_config(SYNTH_CFG, opts)
    torch.manual_seed(0)
    torch.save({"model": build_model(cfg).state_dict()}, tmp_path / "vit.pyth")
    seeds = [tmp_path / f"s{i}_test_metrics.json" for i in (0, 1)]  # a trained method over two seeds
    seeds[0].write_text(json.dumps({"top1": 30.0, "top5": 70.0}))
    seeds[1].write_text(json.dumps({"top1": 40.0, "top5": 80.0}))
    out = tmp_path / "sweep"
    cmd = [sys.executable, str(REPO / "tools/sweep_budgets.py"), "--cfg", SYNTH_CFG]
    cmd += ["--checkpoint", str(tmp_path / "vit.pyth"), "--budgets", "0.8,0.5", "--out", str(out)]
    cmd += [
        "--iters",
        "2",
        "--warmup",
        "1",
        "--trained",
        f"tome_t={REPO / 'configs/synth/tome_t.yaml'}:{seeds[0]},{seeds[1]}",
    ]
    proc = subprocess.run([*cmd, *opts], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.with_suffix(".json").read_text())
    rows = report["rows"]
    assert [r["method"] for r in rows] == ["vit"] + [m for m in METHODS for _ in (0, 1)]
    assert rows[0]["num_videos"] == 10 and all(r["num_videos"] == 10 for r in rows)
    assert all(0 < r["fraction"] <= 1 and r["clips_per_s"] > 0 and 0 <= r["top1"] <= 100 for r in rows)
    for method in METHODS:  # a smaller budget never costs more
        a, b = (r for r in rows if r["method"] == method)
        assert b["gflops"] <= a["gflops"]
    assert rows[3]["rlt_gflops"]["tokens_kept_max"] <= math.prod((2, 4, 4))
    marker = report["trained"][0]
    assert marker["arch"] == "tome" and marker["top1_runs"] == [30.0, 40.0] and marker["seeds"] == 2
    assert marker["top1"] == 35.0 and marker["top5"] == 75.0
    assert marker["top1_std"] == pytest.approx(50.0**0.5)  # sample std of 30 and 40
    table = out.with_suffix(".md").read_text()
    assert "| tome " in table and "35.0 ± 7.1 (2 seeds)" in table
    assert out.with_suffix(".png").stat().st_size > 10000


def test_trained_markers_parse_each_seed(tmp_path) -> None:
    cfg, m0, m1 = (tmp_path / n for n in ("c.yaml", "a.json", "b.json"))
    for path in (cfg, m0, m1):
        path.write_text("{}")
    (marker,) = parse_trained([f"tome={cfg}:{m0},{m1}"])
    assert marker.name == "tome" and marker.config == str(cfg) and marker.metrics == [str(m0), str(m1)]
    with pytest.raises(FileNotFoundError, match="missing.json"):
        parse_trained([f"tome={cfg}:{m0},{tmp_path / 'missing.json'}"])
    with pytest.raises(ValueError, match="NAME=CONFIG.yaml"):
        parse_trained([f"tome={cfg}"])
