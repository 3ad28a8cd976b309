"""FLOP counts against closed forms, the benchmark protocol, CPU peak memory and the count_flops CLI."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from stvideo.analysis.flops import block_flops, count_flops, model_flops, vit_flops
from stvideo.analysis.memory import MiB, measure_memory
from stvideo.analysis.speed import benchmark_throughput
from stvideo.config import load_config
from stvideo.models import build_model
from stvideo.models.swin import VideoSwin
from stvideo.models.vit import Attention, VideoViT

ROOT = Path(__file__).resolve().parents[1]
K400 = ROOT / "configs" / "k400"
# Tiny versions of the shipped K400 configs: 4 frames at 64 px = a 2x4x4 grid of 32 tube tokens.
TINY = [
    "MODEL.SIZE",
    "tiny",
    "DATA.NUM_FRAMES",
    "4",
    "DATA.TRAIN_CROP_SIZE",
    "64",
    "DATA.TEST_CROP_SIZE",
    "64",
]
TINY_C, TINY_N, TINY_EMBED = 192, 32, 32 * 192 * 3 * 2 * 16 * 16  # width, patch tokens, patch-embed FLOPs


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: the counts do not depend on it, and on a busy shared CPU OpenMP
    spin-waiting made tiny ops (weight init, small matmuls) 10x slower with two threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(cfg_name: str, *opts: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(load_config(str(K400 / cfg_name), [*TINY, *opts]))


def head_flops(dim: int, classes: int) -> int:
    return 5 * dim + dim * classes  # fc_norm on the pooled vector + linear head


@pytest.mark.parametrize("cls_token,head_pool", [(True, "mean"), (False, "mean"), (True, "cls")])
def test_tiny_vit_matches_closed_form(cls_token: bool, head_pool: str) -> None:
    model = VideoViT(
        num_classes=10, num_frames=4, img_size=32, embed_dim=64, depth=2, num_heads=2,
        cls_token=cls_token, head_pool=head_pool,
    )  # fmt: skip
    report = model_flops(model, (1, 3, 4, 32, 32))
    n = 8 + cls_token
    assert report.total == vit_flops(8, 64, 2, 10, 3 * 2 * 16 * 16, cls_token=cls_token, head_pool=head_pool)
    assert report.by_operator["scaled_dot_product_attention"] == 2 * (2 * n * n * 64)
    assert report.unsupported == {}
    assert report.zero_cost_calls["aten::gelu"] == 2
    assert [r.name for r in report.layers[1:3]] == ["blocks.0", "blocks.1"]
    assert report.layers[1].query_tokens == [n] and report.layers[1].mlp_tokens == [n]


def test_sdpa_handle_counts_cross_attention_with_mask() -> None:
    class Cross(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = Attention(32, num_heads=4)

        def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
            mask = torch.ones(5, 7, dtype=torch.bool).tril()
            return self.attn(x, context=ctx, attn_mask=mask)

    report = count_flops(Cross().eval(), (torch.randn(2, 5, 32), torch.randn(2, 7, 32)))
    assert report.by_operator == {
        "scaled_dot_product_attention": 2 * 4 * 5 * 7 * (8 + 8),  # B*H*Nq*Nk*(d + d_v)
        "linear": 2 * 5 * 32 * 32 + 2 * 7 * 32 * 64 + 2 * 5 * 32 * 32,  # q, k+v (from ctx), proj
    }
    assert (report.layers[0].query_tokens, report.layers[0].key_tokens) == ([5], [7])


def test_zero_cost_ops_are_listed_and_unknown_ops_surface() -> None:
    class Select(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            idx = x.sum(-1).topk(3, dim=1).indices
            kept = torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
            return torch.cumprod(kept, dim=1) @ x.transpose(1, 2)

    report = count_flops(Select(), torch.randn(2, 6, 4))
    assert report.total == 2 * 3 * 4 * 6  # only the matmul
    assert report.zero_cost_calls == {"aten::sum": 1, "aten::topk": 1, "aten::gather": 1}
    assert report.zero_cost_elements["aten::gather"] == 2 * 3 * 4
    assert report.unsupported == {"aten::cumprod": 1}


def test_vit_b_16x224_is_180_gflops_per_view() -> None:
    model = build_model(load_config(str(K400 / "vit_b.yaml")))
    report = model_flops(model, (1, 3, 16, 224, 224))
    assert report.total == vit_flops(1568, 768, 12, 400, 3 * 2 * 16 * 16)
    assert round(report.total / 1e9, 1) == 180.6  # 12*(12*N*C^2 + 2*N^2*C), N = 1569, + embed/head/norms
    assert report.unsupported == {}
    blocks = [r for r in report.layers if r.name.startswith("blocks.")]
    assert len(blocks) == 12
    assert all(r.flops == block_flops(1569, 768) and r.query_tokens == [1569] for r in blocks)


def test_deit_s_is_4_6_gflops_timm_and_videovit() -> None:
    expected = vit_flops(196, 384, 12, 1000, 3 * 16 * 16, head_pool="cls")
    deit = timm.create_model("deit_small_patch16_224", pretrained=False)
    video = VideoViT(
        num_classes=1000, num_frames=1, tubelet_size=1, embed_dim=384, depth=12, num_heads=6, head_pool="cls"
    )
    for model, shape in ((deit, (1, 3, 224, 224)), (video, (1, 3, 1, 224, 224))):
        report = model_flops(model, shape)
        assert report.total == expected and report.unsupported == {}
    assert round(expected / 1e9, 1) == 4.6


def test_stvit_counted_at_semantic_tokens() -> None:
    model = tiny_model("stvit_b.yaml", "STVIT.GRID", "[2, 2, 2]")
    report = model_flops(model, (1, 3, 4, 64, 64))
    c, n, m = TINY_C, TINY_N + 1, 8 + 1  # image tokens + cls; semantic tokens + cls
    expected = (
        TINY_EMBED
        + 4 * block_flops(n, c)
        + block_flops(m, c, num_context=n)  # generation layer 1: centers attend to [cls; X]
        + block_flops(m, c, num_context=m + TINY_N)  # layer 2: (S1 + G) attends to [S1; X]
        + 6 * block_flops(m, c)
        + head_flops(c, 400)
    )
    assert report.total == expected and report.unsupported == {}
    rows = {r.name: (r.query_tokens, r.key_tokens) for r in report.layers}
    assert rows["blocks.3"] == ([n], [n])
    assert rows["blocks.4"] == ([m], [n]) and rows["blocks.5"] == ([m], [m + TINY_N])
    assert rows["blocks.11"] == ([m], [m])
    assert report.zero_cost_calls["aten::adaptive_max_pool3d"] == 1


def test_stvit_r_counts_restore_layers() -> None:
    model = tiny_model("stvit_r_b.yaml", "STVIT.GRID", "[2, 2, 2]")
    report = model_flops(model, (1, 3, 4, 64, 64))
    c, n, m = TINY_C, TINY_N + 1, 8 + 1
    unit = (
        block_flops(m, c, num_context=n)
        + block_flops(m, c, num_context=m + TINY_N)
        + 2 * block_flops(m, c)
        + block_flops(n, c, num_context=m)  # restore: saved tokens attend to the semantic tokens
    )
    assert report.total == TINY_EMBED + 2 * block_flops(n, c) + 2 * unit + head_flops(c, 400)
    rows = {r.name: (r.query_tokens, r.key_tokens) for r in report.layers}
    assert rows["blocks.5"] == ([n], [m]) and rows["blocks.11"] == ([n], [m])


@pytest.mark.parametrize("keep,kept", [("0.5", 16), ("0.25", 8)])
def test_evovit_counted_at_kept_tokens(keep: str, kept: int) -> None:
    model = tiny_model("evovit_b.yaml", "EVO.KEEP_RATIO", keep)
    report = model_flops(model, (1, 3, 4, 64, 64))
    c, n, slow = TINY_C, TINY_N + 1, kept + 2  # slow path: cls + kept + representative token
    # The cls attention row (a 1 x tokens product per head = tokens*C) counts where it feeds a selection:
    # layer 3 (first score) and 4-7 (EMA before the layer-8 selection). Rows of layers 0-2 (overwritten)
    # and 8-11 (no later selection) never reach the output; the JIT trace drops them as dead code.
    expected = TINY_EMBED + 4 * block_flops(n, c) + n * c + 8 * block_flops(slow, c) + 4 * slow * c
    assert report.total == expected + head_flops(c, 400)
    assert report.unsupported == {}
    rows = {r.name: r.query_tokens for r in report.layers}
    assert rows["blocks.3"] == [n] and rows["blocks.4"] == [slow] and rows["blocks.11"] == [slow]
    assert report.zero_cost_calls["aten::argsort"] == 4  # order + inverse at each stage (layers 4, 8)


def test_throughput_protocol() -> None:
    models = {
        name: VideoViT(num_classes=5, num_frames=2, img_size=32, embed_dim=32, depth=d, num_heads=2)
        for name, d in (("a", 1), ("b", 2))
    }
    res = benchmark_throughput(models, (2, 3, 2, 32, 32), warmup=1, iters=5, device="cpu")
    for r in res.values():
        assert (r.device, r.dtype, r.batch_size, r.warmup, r.iters) == ("cpu", "fp32", 2, 1, 5)
        assert len(r.times_s) == 5 and r.threads == torch.get_num_threads()
        assert r.q1_s <= r.median_s <= r.q3_s
        assert r.clips_per_s == 2 / r.median_s
        assert r.clips_per_s_iqr == (2 / r.q3_s, 2 / r.q1_s)
    with pytest.raises(ValueError, match="iters"):
        benchmark_throughput(models, (1, 3, 2, 32, 32), iters=0)


def test_cpu_peak_memory_sees_activations() -> None:
    opts = ["MODEL.SIZE", "tiny", "VIT.DEPTH", "1", "DATA.NUM_FRAMES", "8", "DATA.TRAIN_CROP_SIZE", "112"]
    cfg = load_config(str(K400 / "vit_b.yaml"), opts)
    shape = (1, 3, 8, 112, 112)
    mem = measure_memory(cfg, shape, device="cpu")
    model = build_model(cfg)
    weights = sum(p.numel() * 4 for p in model.parameters()) / MiB
    assert mem.weights_mib == pytest.approx(weights)
    # The MLP's hidden activation (197 x 768 fp32) is alive at the peak, so the peak is at least that.
    assert 197 * 768 * 4 / MiB <= mem.peak_extra_mib < 256
    input_mib = 3 * 8 * 112 * 112 * 4 / MiB
    assert mem.peak_total_mib == pytest.approx(weights + input_mib + mem.peak_extra_mib)


def load_tool():
    spec = importlib.util.spec_from_file_location("count_flops", ROOT / "tools" / "count_flops.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_count_flops_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tool = load_tool()
    metrics = tmp_path / "test_metrics.json"
    metrics.write_text(json.dumps({"top1": 61.5, "top5": 88.0}))
    out, png = tmp_path / "report.json", tmp_path / "acc.png"
    argv = [
        "--cfg", str(K400 / "vit_b.yaml"), "--compare", str(K400 / "stvit_b.yaml"), *TINY,
        "--json", str(out), "--warmup", "1", "--iters", "2", "--no-memory",
        "--plot", str(png), "--results", f"stvit_b={metrics}",
        "--opts", "STVIT.GRID", "[2,2,2]", "TEST.NUM_ENSEMBLE_VIEWS", "2",  # --opts takes the rest
    ]  # fmt: skip
    tool.main(argv)
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    vit, stvit = report["models"]
    assert (vit["name"], stvit["name"], vit["arch"], stvit["arch"]) == ("vit_b", "stvit_b", "vit", "stvit")
    assert vit["input_shape"] == [3, 4, 64, 64] and vit["views"] == 2 * 3
    assert vit["gflops_x_views"] == pytest.approx(vit["gflops_per_view"] * 6)
    assert vit["flops"] == vit_flops(TINY_N, TINY_C, 12, 400, 3 * 2 * 16 * 16)
    ratio = report["ratios"][0]
    assert ratio["flops_ratio"] == pytest.approx(vit["flops"] / stvit["flops"])
    speedup = stvit["throughput"]["clips_per_s"] / vit["throughput"]["clips_per_s"]
    assert ratio["speedup_over_flops_ratio"] == pytest.approx(speedup / ratio["flops_ratio"])
    assert report["plot"]["points"] == [{"name": "stvit_b", "gflops": stvit["gflops_per_view"], "top1": 61.5}]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for text in (
        "1 multiply-add = 1 FLOP",
        "speed-up / FLOPs ratio",
        "== stvit_b (stvit)",
        "unsupported ops",
    ):
        assert text in printed
    with pytest.raises(SystemExit, match="no model named 'nope'"):
        tool.main([*argv[: argv.index("--results")], "--results", f"nope={metrics}"])


def test_swin_layer_rows_count_every_window_and_zero_cost_window_ops() -> None:
    """Windowed attention runs as (B, windows, N, C): rows must show all tokens of a clip, keys per window."""
    model = VideoSwin(
        num_classes=5, patch_size=(2, 4, 4), window_size=(2, 4, 4), embed_dim=16, depths=(2, 2),
        num_heads=(1, 2),
    ).eval()  # fmt: skip
    report = model_flops(model, (2, 3, 4, 32, 32))  # tokens 2x8x8 = 128 in stage 0, 2x4x4 = 32 in stage 1
    rows = {r.name: (r.query_tokens, r.key_tokens, r.mlp_tokens) for r in report.layers}
    assert rows["layers.0.blocks.0"] == ([128], [32], [128])  # 4 windows of 2x4x4
    assert rows["layers.0.blocks.1"] == ([128], [32], [128])  # shifted: same windows, masked
    assert rows["layers.1.blocks.0"] == ([32], [32], [32])  # one window covers the stage
    assert report.unsupported == {}  # shift-mask construction (meshgrid, masked_fill_) costs nothing
    assert report.zero_cost_calls["aten::masked_fill_"] >= 1
