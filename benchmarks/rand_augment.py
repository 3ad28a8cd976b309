#!/usr/bin/env python
"""RandAugment cost on one 16x3x224x224 uint8 clip, one thread: v2.RandAugment vs ClipRandAugment.

Per op (median of ``--repeats`` calls at magnitude bin 7 of 11, per-frame statistics as in torchvision)
and for ``rand-m7-n4`` chains (mean over ``--seeds`` seeds, the same ops for all; ClipRandAugment also
with whole-clip statistics, the training pipeline's default). The clip is a RandomResizedCrop-like
224x224 resize of textured 340x256 frames, channels-last as the training pipeline's crop leaves it.

    python benchmarks/rand_augment.py --repeats 15 --seeds 100
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode

from stvideo.data.rand_augment import OPS, ClipRandAugment, apply_op, op_magnitude
from stvideo.data.video_writer import textured_frames


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` in ms after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def main(argv: list[str] | None = None) -> None:
    """Print a per-op table and the chained means."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=15, help="calls per op")
    p.add_argument("--seeds", type=int, default=100, help="rand-m7-n4 chains")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # as in a DataLoader worker

    frames = torch.from_numpy(textured_frames(16, 256, 340, seed=0)).permute(0, 3, 1, 2)
    clip = v2.functional.resized_crop(frames, 10, 20, 200, 300, [224, 224], antialias=True)
    reference = v2.RandAugment(num_magnitude_bins=11)
    print("| op | torchvision ms | ClipRandAugment ms |\n|---|---|---|")
    for op in OPS:
        magnitude = op_magnitude(op, 7, 11, 224, 224)

        def torchvision_op(op: str = op, magnitude: float = magnitude) -> torch.Tensor:
            return reference._apply_image_or_video_transform(
                clip, op, magnitude, interpolation=InterpolationMode.NEAREST, fill=reference._fill
            )

        def clip_op(op: str = op, magnitude: float = magnitude) -> torch.Tensor:
            return apply_op(clip, op, magnitude, clip_statistics=False)

        ms_torchvision, ms_clip = median_ms(torchvision_op, args.repeats), median_ms(clip_op, args.repeats)
        print(f"| {op} | {ms_torchvision:.1f} | {ms_clip:.1f} |")

    for name, augment in (
        ("v2.RandAugment", v2.RandAugment(num_ops=4, magnitude=7, num_magnitude_bins=11)),
        (
            "ClipRandAugment",
            ClipRandAugment(num_ops=4, magnitude=7, num_magnitude_bins=11, clip_statistics=False),
        ),
        (
            "ClipRandAugment, clip statistics (the pipeline's default)",
            ClipRandAugment(num_ops=4, magnitude=7, num_magnitude_bins=11, clip_statistics=True),
        ),
    ):
        augment(clip)  # warm-up (ClipRandAugment caches its gather maps)
        total = 0.0
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            t = time.perf_counter()
            augment(clip)
            total += time.perf_counter() - t
        print(f"{name} rand-m7-n4: {1e3 * total / args.seeds:.1f} ms per clip (mean of {args.seeds} seeds)")


if __name__ == "__main__":
    main()
