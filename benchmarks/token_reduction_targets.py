#!/usr/bin/env python
"""CPU check of the ToMe and RLT targets at ViT-B 16x224 (a benchmark, never a test).

    python benchmarks/token_reduction_targets.py [--warmup 1] [--iters 3] [--json OUT.json]

1. ToMe-B (configs/k400/tome_b.yaml, ~50 % of ViT-B's FLOPs) beside ViT-B: measured speed-up should be
   >= 0.9 x the FLOPs ratio (merging must not eat the gain).
2. RLT-B (configs/k400/rlt_b.yaml) on a static-background clip (a fixed random background, a bright
   square moving across it): tokens and FLOPs should shrink in proportion to the static tubes.
3. RLT-B on a clip with no repeats (fresh noise every frame): it should cost <= 2 % more than ViT-B.

FLOPs: fvcore at batch 1 (stvideo.analysis.flops). Time: stvideo.analysis.speed.benchmark_throughput,
the models of each check interleaved on the same input, fp32, median clips/s. Random weights
(weights change neither FLOPs nor speed; RLT's drops depend only on the clip).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from stvideo.analysis.flops import count_flops
from stvideo.analysis.speed import benchmark_throughput
from stvideo.config import load_config
from stvideo.models import build_model

REPO = Path(__file__).resolve().parents[1]
SHAPE = (1, 3, 16, 224, 224)


def static_background_clip(square: int = 48, seed: int = 0) -> torch.Tensor:
    """A fixed noise background over 16 frames with a bright ``square`` moving left to right."""
    g = torch.Generator().manual_seed(seed)
    clip = torch.randn(3, 1, 224, 224, generator=g).expand(*SHAPE[1:]).clone()
    for t in range(SHAPE[2]):
        x = 8 + t * (224 - square - 16) // (SHAPE[2] - 1)
        clip[:, t, 88 : 88 + square, x : x + square] = 3.0
    return clip[None]


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(load_config(str(REPO / f"configs/k400/{name}.yaml"))).eval()


def gflops(model: torch.nn.Module, clip: torch.Tensor) -> float:
    with torch.no_grad():
        return count_flops(model, clip).total / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--json", dest="json_out")
    args = parser.parse_args()
    models = {name: build(name) for name in ("vit_b", "tome_b", "rlt_b")}
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    static = static_background_clip()
    out: dict[str, dict] = {}

    flops = {name: gflops(m, noise) for name, m in models.items()}
    speed = benchmark_throughput(models, SHAPE, args.warmup, args.iters, "cpu", "fp32", inputs=noise)
    cps = {name: r.clips_per_s for name, r in speed.items()}
    ratio = flops["vit_b"] / flops["tome_b"]
    out["tome"] = {
        "gflops": {k: flops[k] for k in ("vit_b", "tome_b")},
        "flops_ratio": ratio,
        "speedup": cps["tome_b"] / cps["vit_b"],
        "speedup_over_flops_ratio": cps["tome_b"] / cps["vit_b"] / ratio,
        "clips_per_s": {k: cps[k] for k in ("vit_b", "tome_b")},
    }
    rlt = models["rlt_b"]
    with torch.no_grad():
        rlt(noise)
    out["rlt_no_repeats"] = {
        "tokens_kept": int(rlt.tokens_kept[0]),
        "gflops": {k: flops[k] for k in ("vit_b", "rlt_b")},
        "extra_flops": flops["rlt_b"] / flops["vit_b"] - 1,
        "extra_time": cps["vit_b"] / cps["rlt_b"] - 1,
        "clips_per_s": {k: cps[k] for k in ("vit_b", "rlt_b")},
    }

    pair = {k: models[k] for k in ("vit_b", "rlt_b")}
    speed = benchmark_throughput(pair, SHAPE, args.warmup, args.iters, "cpu", "fp32", inputs=static)
    with torch.no_grad():
        rlt(static)
    kept = int(rlt.tokens_kept[0])
    total = 8 * 14 * 14
    static_flops = gflops(rlt, static)
    out["rlt_static_background"] = {
        "tokens_kept": kept,
        "tokens_total": total,
        "token_fraction": kept / total,
        "gflops": {"vit_b": flops["vit_b"], "rlt_b": static_flops},
        "flops_fraction": static_flops / flops["vit_b"],
        "speedup": speed["rlt_b"].clips_per_s / speed["vit_b"].clips_per_s,
        "clips_per_s": {k: r.clips_per_s for k, r in speed.items()},
    }
    out["protocol"] = (
        f"CPU fp32, batch 1, {args.warmup} warm-up + {args.iters} timed iterations per model, interleaved; "
        f"{torch.get_num_threads()} threads; fvcore GFLOPs at batch 1"
    )
    print(json.dumps(out, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
