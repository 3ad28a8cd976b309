"""Spatial transforms for training, validation and multi-view testing of clips, in the workers.

Clips travel as uint8 ``(T, C, H, W)`` tensors through ``torchvision.transforms.v2``, which
treats ``T`` as a batch dimension and draws its random parameters once per call, so a crop,
flip, RandAugment op or erased box is the same on every frame of a clip. Randomness is made
per-sample and reproducible by running the v2 pipeline under ``torch.random.fork_rng`` seeded
from (RNG_SEED, epoch, index, repeat); it never depends on worker processes or rank layout.
Output clips stay uint8 ``(C, T, H, W)``; ``preprocessor.ClipPreprocessor`` normalises them (and
fills the random-erasing boxes drawn here) on the training device.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

import numpy as np
import torch
from fvcore.common.config import CfgNode
from torchvision.transforms import v2

from .preprocessor import ErasingSampler
from .rand_augment import ClipRandAugment

_AA_RE = re.compile(r"^rand(-[a-z]+[0-9.]+)*$")


@dataclass(frozen=True)
class RandAugmentSpec:
    """Parsed timm RandAugment string, e.g. ``rand-m7-n4-mstd0.5-inc1``."""

    num_ops: int = 2
    magnitude: int = 9
    magnitude_std: float = 0.0


def parse_rand_augment(spec: str) -> RandAugmentSpec:
    """Parse a timm ``rand-...`` spec (m: magnitude 0-10, n: ops per clip, mstd: magnitude std).

    ``inc1`` (timm's increasing-severity op set) is what torchvision's ops already do, so it is
    accepted; ``inc0`` and unknown fields raise ValueError naming AUG.AA_TYPE.
    """
    if not _AA_RE.match(spec):
        raise ValueError(f"AUG.AA_TYPE must look like 'rand-m7-n4-mstd0.5-inc1', got {spec!r}")
    out = {"num_ops": 2, "magnitude": 9, "magnitude_std": 0.0}
    for part in spec.split("-")[1:]:
        key, value = re.match(r"([a-z]+)([0-9.]+)", part).groups()
        if key == "m":
            out["magnitude"] = int(value)
        elif key == "n":
            out["num_ops"] = int(value)
        elif key == "mstd":
            out["magnitude_std"] = float(value)
        elif key == "inc" and value == "1":
            continue
        else:
            raise ValueError(f"AUG.AA_TYPE {spec!r}: unsupported field {part!r} (m, n, mstd, inc1 are)")
    if not 0 <= out["magnitude"] <= 10:
        raise ValueError(f"AUG.AA_TYPE {spec!r}: magnitude must be in 0..10")
    return RandAugmentSpec(**out)


def load_flip_label_map(path: str) -> dict[int, int]:
    """Read DATA.FLIP_LABEL_MAP json ({"label": flipped_label}); symmetric pairs must both be listed."""
    if not path:
        return {}
    with open(path) as f:
        raw = json.load(f)
    try:
        return {int(k): int(v) for k, v in raw.items()}
    except (AttributeError, TypeError, ValueError) as e:
        raise ValueError(f"DATA.FLIP_LABEL_MAP {path}: expected a json object of integer labels") from e


def crop_offsets(length: int, size: int, num_crops: int) -> list[int]:
    """Offsets of ``num_crops`` crops of ``size`` spread evenly over ``length`` (first and last at the ends).

    Hand-written because pytorchvideo's ``uniform_crop`` only knows 3 positions and torchvision's
    FiveCrop/TenCrop take corners; for 1 and 3 crops this equals ``uniform_crop`` (ceil center).
    """
    if size > length:
        raise ValueError(f"crop size {size} is larger than the frame side {length}")
    if num_crops == 1:
        return [math.ceil((length - size) / 2)]
    return [math.ceil((length - size) * i / (num_crops - 1)) for i in range(num_crops)]


class TrainTransform:
    """Random crop (RandomResizedCrop or short-side jitter + crop), flip, RandAugment; erasing box drawn."""

    def __init__(self, cfg: CfgNode, allow_flip: bool = True):
        d = cfg.DATA
        size = d.TRAIN_CROP_SIZE
        if d.TRAIN_JITTER_SCALES_RELATIVE:
            self.crop = v2.RandomResizedCrop(
                size,
                scale=tuple(d.TRAIN_JITTER_SCALES_RELATIVE),
                ratio=tuple(d.TRAIN_JITTER_ASPECT_RELATIVE),
                antialias=True,
            )
        else:
            lo, hi = d.TRAIN_JITTER_SCALES
            self.crop = v2.Compose(
                [v2.RandomShortestSize(list(range(lo, hi + 1)), antialias=True), v2.RandomCrop(size)]
            )
        self.flip = d.RANDOM_FLIP and allow_flip
        self.flip_map = load_flip_label_map(d.FLIP_LABEL_MAP)
        self.rand_augment = parse_rand_augment(cfg.AUG.AA_TYPE) if cfg.AUG.ENABLE else None
        self.clip_statistics = cfg.AUG.RA_CLIP_STATISTICS
        self.erasing = ErasingSampler(cfg.AUG.RE_PROB if cfg.AUG.ENABLE else 0.0)

    def __call__(self, frames: torch.Tensor, label: int, seed: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        """(T, H, W, 3) uint8 frames -> ((C, T, size, size) uint8 clip, possibly flip-mapped label,
        (ERASE_FIELDS,) erasing box for ClipPreprocessor)."""
        with torch.random.fork_rng(devices=[]):
            # CPU generator only: torch.manual_seed also queues CUDA/XPU/MTIA seeding (0.24 ms per clip)
            torch.default_generator.manual_seed(seed)
            x = self.crop(frames.permute(0, 3, 1, 2))
            if self.flip and torch.rand(()) < 0.5:
                x = v2.functional.horizontal_flip(x)
                label = self.flip_map.get(label, label)
            if self.rand_augment is not None:
                ra = self.rand_augment
                magnitude = ra.magnitude
                if ra.magnitude_std > 0:
                    magnitude = min(
                        10, max(0, round(float(torch.normal(float(magnitude), ra.magnitude_std, ()))))
                    )
                x = ClipRandAugment(ra.num_ops, magnitude, 11, self.clip_statistics)(x)
            erase = self.erasing(x)
        return to_channels_first(x), label, erase


class TestTransform:
    """Resize the short side to DATA.TEST_CROP_SIZE (skipped if already decoded so), take spatial crops.

    ``num_crops`` crops cover the long side (left/center/right, or top/center/bottom for portrait).
    """

    def __init__(self, cfg: CfgNode, num_crops: int):
        self.size = cfg.DATA.TEST_CROP_SIZE
        self.num_crops = num_crops

    def crop_boxes(self, height: int, width: int) -> list[tuple[int, int]]:
        """(top, left) of every crop in a frame whose short side is already ``size``."""
        if height <= width:
            top = crop_offsets(height, self.size, 1)[0]
            return [(top, left) for left in crop_offsets(width, self.size, self.num_crops)]
        left = crop_offsets(width, self.size, 1)[0]
        return [(top, left) for top in crop_offsets(height, self.size, self.num_crops)]

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, T, H, W, 3) uint8 frames of N temporal views -> (N * num_crops, C, T, size, size) uint8
        views, temporal-major (view = n * num_crops + crop)."""
        frames = resize_short_side(frames, self.size)
        return cut_views(frames, self.crop_boxes(*frames.shape[2:4]), self.size)


def resize_short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) of a frame after :func:`resize_short_side` to ``size`` (torchvision's ``Resize``
    rule: the short side becomes ``size``, the long side ``int(size * long / short)``; unchanged when the
    short side is already ``size``, as the decoder's scaler leaves it)."""
    if min(height, width) == size:
        return height, width
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def resize_short_side(frames: torch.Tensor, size: int) -> torch.Tensor:
    """(N, T, H, W, 3) uint8 frames on any device, short side resized to ``size`` by torchvision's
    antialiased bilinear resize (the training crops' scaler); unchanged when already at ``size``."""
    if min(frames.shape[2:4]) == size:
        return frames
    n, t = frames.shape[:2]
    x = v2.functional.resize(frames.flatten(0, 1).permute(0, 3, 1, 2), [size], antialias=True)
    return x.permute(0, 2, 3, 1).unflatten(0, (n, t))


def cut_views(frames: torch.Tensor, boxes: list[tuple[int, int]] | torch.Tensor, size: int) -> torch.Tensor:
    """(N, T, H, W, C) uint8 temporal views on any device and crop corners (top, left) -> contiguous
    (N * len(boxes), C, T, size, size), temporal-major (view = n * len(boxes) + crop), in one copy.

    The test split hands workers' decoded frames and corners to the evaluator, which cuts the views on
    the model's device (``views_of_test_batch``): the worker then copies none of the 6-15 views.
    """
    boxes = boxes.tolist() if isinstance(boxes, torch.Tensor) else boxes
    if frames.device.type == "cpu":
        # One channels-first copy (numpy's transposing copy), then crops of contiguous rows: 59 against
        # 198 ms for torch's strided copies of 15 K400 views (one thread, measured).
        x = np.ascontiguousarray(frames.numpy().transpose(0, 4, 1, 2, 3))
        out = np.empty((x.shape[0], len(boxes), *x.shape[1:3], size, size), dtype=np.uint8)
        for j, (top, left) in enumerate(boxes):
            out[:, j] = x[..., top : top + size, left : left + size]
        return torch.from_numpy(out).flatten(0, 1)
    x = frames.permute(0, 4, 1, 2, 3)  # (N, C, T, H, W) view
    crops = [x[..., top : top + size, left : left + size] for top, left in boxes]
    return torch.stack(crops, dim=1).flatten(0, 1)


def views_of_test_batch(batch: dict, device: torch.device | str, size: int) -> torch.Tensor:
    """A test batch's ``frames`` (list of (N, T, H, W, 3) uint8, any short side) and ``crops`` (list of
    (S, 2), corners in the frames resized to ``size``) -> (B, N * S, C, T, size, size) uint8 views on
    ``device`` (B = 0 when no video of the batch decoded). Frames decoded at full size
    (DATA.EVAL_RESIZE torchvision) are resized here, on ``device``."""
    views = [
        cut_views(resize_short_side(frames.to(device, non_blocking=True), size), crops, size)
        for frames, crops in zip(batch["frames"], batch["crops"], strict=True)
    ]
    if not views:
        return torch.empty((0, 0, 3, 0, size, size), dtype=torch.uint8, device=device)
    return torch.stack(views)


def to_channels_first(clip: torch.Tensor) -> torch.Tensor:
    """(T, C, H, W) uint8 of any memory layout -> contiguous (C, T, H, W); numpy's transposing copy
    of a channels-last clip is 2x torch's (0.76 vs 1.63 ms for 16x3x224x224, measured)."""
    return torch.from_numpy(np.ascontiguousarray(clip.numpy().transpose(1, 0, 2, 3)))
