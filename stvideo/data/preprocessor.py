"""The per-pixel float work of the data path, run on whole batches on the device that trains.

Data-loader workers hand over uint8 clips plus the random-erasing *parameters* of each clip; here
they become normalised float clips and the boxes get their noise. A uint8 clip is a quarter of a
float32 one through shared memory, pinned memory and the host-to-device copy, and the cast and the
normalisation leave the workers (2-4 ms of a 16x224 clip on one core, measured). mmaction2's
``ActionDataPreprocessor`` and detectron2's in-model pixel normalisation make the same split.
"""

from __future__ import annotations

import torch
from fvcore.common.config import CfgNode
from torchvision.transforms import v2

ERASE_FIELDS = 5  # (top, left, height, width, noise seed) of one clip's box; height 0 = no erasing


class ErasingSampler:
    """Draws ``v2.RandomErasing(p, value="random")``'s decision and box for one clip in the worker.

    Only the box and a seed for its noise are returned; ``ClipPreprocessor`` writes the noise, so
    the erased clip equals torchvision's up to which generator drew the N(0, 1) noise.
    """

    def __init__(self, probability: float):
        self.eraser = v2.RandomErasing(p=probability, value=0)

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        """(T, C, H, W) clip -> (ERASE_FIELDS,) int64, drawn from torch's global generator."""
        if self.eraser.p == 0 or torch.rand(()) >= self.eraser.p:
            return torch.zeros(ERASE_FIELDS, dtype=torch.int64)
        box = self.eraser.make_params([clip])
        if box["v"] is None:  # no box fitted in torchvision's 10 tries: nothing erased
            return torch.zeros(ERASE_FIELDS, dtype=torch.int64)
        seed = int(torch.randint(2**62, ()))
        return torch.tensor([box["i"], box["j"], box["h"], box["w"], seed], dtype=torch.int64)


class ClipPreprocessor:
    """uint8 clips on any device -> ``(x / 255 - DATA.MEAN) / DATA.STD`` float32 on ``device``,
    with random-erasing boxes filled by N(0, 1) noise (the same noise in every frame of a clip)."""

    def __init__(self, cfg: CfgNode, device: torch.device | str):
        self.device = torch.device(device)
        std = torch.tensor(cfg.DATA.STD, dtype=torch.float32)
        shape = (-1, 1, 1, 1)  # channel dim of a (..., C, T, H, W) clip
        self.scale = (1.0 / (255.0 * std)).reshape(shape).to(self.device)
        self.shift = (torch.tensor(cfg.DATA.MEAN, dtype=torch.float32) / std).reshape(shape).to(self.device)

    def __call__(self, video: torch.Tensor, erase: torch.Tensor | None = None) -> torch.Tensor:
        """(..., C, T, H, W) uint8 -> float32 on the device; ``erase`` (N, 5) for N = video.shape[0]."""
        if video.dtype != torch.uint8:
            raise TypeError(f"ClipPreprocessor takes uint8 clips, got {video.dtype}")
        x = video.to(self.device, non_blocking=True).to(torch.float32).mul_(self.scale).sub_(self.shift)
        if erase is not None:
            for clip, (top, left, height, width, seed) in zip(x, erase.tolist(), strict=True):
                if height > 0:
                    generator = torch.Generator(self.device).manual_seed(seed)
                    noise = torch.randn(clip.shape[0], height, width, generator=generator, device=self.device)
                    clip[:, :, top : top + height, left : left + width] = noise[:, None]
        return x
