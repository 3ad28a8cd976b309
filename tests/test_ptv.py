"""PyTorchVideo model-zoo archs: the zoo's networks, zoo checkpoints, SlowFast from one clip, engine runs.

Architecture-independent checks (gradients, determinism, round trips, FLOPs) run for these archs in
tests/test_registry.py; here: equality with PyTorchVideo's own hub builders, loading zoo-format
``.pyth`` files through MODEL.PRETRAINED, the slow pathway's frames, and train -> multi-view test ->
exact resume through tools/run_net.py on real synthetic videos.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch
from pytorchvideo.models import hub

from stvideo.analysis.flops import VideoFlopCountAnalysis, model_flops
from stvideo.config import get_cfg, load_config
from stvideo.engine import checkpoint as ckpt
from stvideo.models import build_model
from stvideo.models.ptv import PTVNet, pack_pathways
from tests.test_engine_e2e import _run, kill_after_first_epoch

# (arch, PTV.VARIANT, frames, crop, the zoo's hub builder)
ZOO = [
    ("x3d", "xs", 4, 160, hub.x3d_xs),
    ("x3d", "m", 16, 224, hub.x3d_m),
    ("x3d", "l", 16, 312, hub.x3d_l),
    ("slow", "r50", 8, 224, hub.slow_r50),
    ("slowfast", "r50_8x8", 32, 224, hub.slowfast_r50),
    ("slowfast", "r101_8x8", 32, 224, hub.slowfast_r101),
    ("mvit", "b_16x4", 16, 224, hub.mvit_base_16x4),
    ("mvit", "b_32x3", 32, 224, hub.mvit_base_32x3),
    ("r2plus1d", "r50", 16, 224, hub.r2plus1d_r50),
    ("csn", "r101", 32, 224, hub.csn_r101),
]
PTV_TINY = ["DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_CROP_SIZE", "32", "MODEL.DROPOUT_RATE", "0.0"]


def _cfg(arch: str, variant: str, frames: int, crop: int, classes: int = 400):
    cfg = get_cfg()
    cfg.MODEL.ARCH, cfg.PTV.VARIANT, cfg.MODEL.NUM_CLASSES = arch, variant, classes
    cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE, cfg.DATA.TEST_CROP_SIZE = frames, crop, crop
    return cfg


@pytest.mark.parametrize(("arch", "variant", "frames", "crop", "builder"), ZOO)
def test_zoo_variant_is_the_hub_network(arch, variant, frames, crop, builder) -> None:
    """Same modules, parameter names and shapes as PyTorchVideo's hub builder, under ``net.``."""
    # Built without memory where the builder allows it (MViT's drop-path schedule calls .item()).
    with torch.device("meta") if arch != "mvit" else contextlib.nullcontext():
        ours = build_model(_cfg(arch, variant, frames, crop))
        theirs = builder(pretrained=False)
    assert isinstance(ours, PTVNet)
    assert {k: v.shape for k, v in ours.net.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()
    }
    assert ours.slowfast_alpha == (4 if arch == "slowfast" else 0)
    heads = [m for m in ours.modules() if isinstance(m, torch.nn.AvgPool3d)]
    zoo_heads = [m for m in theirs.modules() if isinstance(m, torch.nn.AvgPool3d)]
    assert [m.kernel_size for m in heads] == [m.kernel_size for m in zoo_heads]  # the zoo's own windows
    assert not any(isinstance(m, torch.nn.Softmax) for m in ours.modules())  # logits out


def _zoo_slowfast(classes: int) -> torch.nn.Module:
    """PyTorchVideo's slowfast_r50 at stem widths 16/2 (PTV.VARIANT t), head windows for 4x32x32 clips."""
    torch.manual_seed(1)
    net = hub.slowfast_r50(
        pretrained=False,
        model_num_class=classes,
        dropout_rate=0.0,
        head_pool_kernel_sizes=((1, 1, 1), (4, 1, 1)),
        stem_dim_outs=(16, 2),
    ).eval()
    with torch.no_grad():  # BN statistics and weights away from their initial values
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net


def test_zoo_checkpoint_loads_and_reproduces_the_source(tmp_path: Path) -> None:
    source = _zoo_slowfast(classes=5)
    path = tmp_path / "SLOWFAST_8x8_R50.pyth"
    torch.save({"model_state": source.state_dict(), "epoch": 196, "cfg": "MODEL:\n  ARCH: slowfast\n"}, path)
    cfg = _cfg("slowfast", "t", 4, 32, classes=5)
    cfg.MODEL.DROPOUT_RATE, cfg.MODEL.PRETRAINED = 0.0, str(path)
    model = build_model(cfg).eval()
    clip = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = source(pack_pathways(clip, 4))
        torch.testing.assert_close(model(clip), expected, rtol=0, atol=0)  # one clip, slow packed inside
        torch.testing.assert_close(model(pack_pathways(clip, 4)), expected, rtol=0, atol=0)  # the zoo's list

    cfg.MODEL.NUM_CLASSES = 7  # another class count: everything but the classifier loads
    other = build_model(cfg).eval()
    for name, tensor in source.state_dict().items():
        if not name.startswith("blocks.6.proj"):
            assert torch.equal(other.state_dict()[f"net.{name}"], tensor), name


def test_slow_pathway_takes_every_alpha_th_frame_of_the_clip() -> None:
    fast = torch.arange(32.0).view(1, 1, 32, 1, 1).expand(2, 3, 32, 4, 4)
    slow, same = pack_pathways(fast, 4)
    assert same is fast
    assert slow[0, 0, :, 0, 0].tolist() == [0, 4, 8, 13, 17, 22, 26, 31]  # PySlowFast's linspace choice
    assert pack_pathways(fast, 8)[0].shape[2] == 4
    cfg = _cfg("slowfast", "r50_4x16", 32, 224)
    with pytest.raises(ValueError, match="SLOWFAST.ALPHA 8"):
        build_model(cfg)


def test_flops_match_fvcore_on_the_hub_network() -> None:
    """count_flops' number for a zoo arch is fvcore's on PyTorchVideo's own network (same handles)."""
    cfg = _cfg("slowfast", "t", 4, 32)
    model = build_model(cfg).eval()
    clip = torch.randn(1, 3, 4, 32, 32)
    ours = model_flops(model, tuple(clip.shape)).total
    theirs = VideoFlopCountAnalysis(model.net, (pack_pathways(clip, 4),)).total()
    assert ours == theirs > 0
    x3d = model_flops(build_model(_cfg("x3d", "xs", 4, 32)).eval(), (1, 3, 4, 32, 32))
    assert x3d.unsupported == {} and x3d.zero_cost_calls["prim::PythonOp.SwishFunction"] > 0


@pytest.mark.parametrize(("arch", "variant"), [("slowfast", "t"), ("x3d", "xs"), ("mvit", "t")])
def test_train_then_multiview_test_through_run_net(tmp_path, tiny_synth_opts, arch, variant) -> None:
    out = tmp_path / arch
    _run([*tiny_synth_opts, *PTV_TINY, "MODEL.ARCH", arch, "PTV.VARIANT", variant, "OUTPUT_DIR", str(out)])
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert metrics["num_videos"] == 10 and metrics["num_views"] == 2 * 3
    assert 0.0 <= metrics["top1"] <= 100.0
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 10
    assert load_config(str(out / "config.yaml")).MODEL.ARCH == arch


def test_killed_slowfast_run_resumes_to_identical_weights(tmp_path, tiny_synth_opts) -> None:
    """BatchNorm statistics, the packed slow pathway and SGD momentum survive a kill and resume bitwise."""
    opts = [*tiny_synth_opts, *PTV_TINY, "MODEL.ARCH", "slowfast", "PTV.VARIANT", "t"]
    opts += ["SOLVER.MAX_EPOCH", "3", "TEST.ENABLE", "False", "SOLVER.OPTIMIZING_METHOD", "sgd"]
    full = tmp_path / "full"
    _run([*opts, "OUTPUT_DIR", str(full)])
    killed = tmp_path / "killed"
    resumed_opts = [*opts, "OUTPUT_DIR", str(killed)]
    kill_after_first_epoch(resumed_opts, killed)
    assert "Resumed from" in _run(resumed_opts).stdout
    a = ckpt.load(str(full / "checkpoints/last.pyth"))
    b = ckpt.load(str(killed / "checkpoints/last.pyth"))
    assert a["epoch"] == b["epoch"] == 3
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
