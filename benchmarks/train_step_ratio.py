#!/usr/bin/env python
"""Training-step time of configs side by side, to extrapolate a config's training time from another's.

    python benchmarks/train_step_ratio.py configs/synth/vit_t.yaml configs/synth/vit_t_16x64.yaml [--steps 4]

Each config's model takes AdamW steps (forward, the protocol's loss, backward, step) on a random batch of
TRAIN.BATCH_SIZE clips of its own shape; the steps are interleaved (config 1, 2, 1, 2, ...) after one
untimed step each, so background load slows all alike and the ratio of median step times stays
meaningful on a shared machine. Data loading is not timed (configs reading the same videos decode alike).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from stvideo.config import load_config
from stvideo.models import build_model, protocol


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per config")
    args = parser.parse_args()
    runs = []
    for path in args.configs:
        cfg = load_config(path)
        torch.manual_seed(0)
        model = build_model(cfg).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        size = cfg.DATA.TRAIN_CROP_SIZE
        x = torch.randn(cfg.TRAIN.BATCH_SIZE, 3, cfg.DATA.NUM_FRAMES, size, size)
        y = torch.randint(0, cfg.MODEL.NUM_CLASSES, (cfg.TRAIN.BATCH_SIZE,))
        runs.append((path, model, opt, x, y, []))

    def step(model, opt, x, y) -> None:
        opt.zero_grad(set_to_none=True)
        protocol.classification_loss(model(x), y).backward()
        opt.step()

    for _, model, opt, x, y, _ in runs:
        step(model, opt, x, y)
    for _ in range(args.steps):
        for _, model, opt, x, y, times in runs:
            t0 = time.perf_counter()
            step(model, opt, x, y)
            times.append(time.perf_counter() - t0)
    base = statistics.median(runs[0][5])
    print(f"{torch.get_num_threads()} threads, {args.steps} interleaved steps per config after 1 untimed")
    for path, _, _, x, _, times in runs:
        med = statistics.median(times)
        print(
            f"{path}: batch {tuple(x.shape)}, median step {med:.3f} s ({med / base:.2f}x the first), "
            f"all {[round(t, 3) for t in times]}"
        )


if __name__ == "__main__":
    main()
