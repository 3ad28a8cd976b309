"""Dataset registry and ``build_loader``: datasets by name, rank sharding, collation.

Sharding (no torch DistributedSampler, whose padding repeats samples):

* train: one permutation per epoch from ``torch.Generator`` seeded with RNG_SEED + epoch, cut to a
  multiple of the world size so every rank runs the same number of steps; rank r takes perm[r::world].
* val / test: rank r takes videos r, r + world, ... in order, unpadded, so each video is seen once.

Per-rank batch size is TRAIN.BATCH_SIZE // world (global batch) for train and val, and
max(1, TEST.BATCH_SIZE // world) videos for test. Call ``loader.sampler.set_epoch(epoch)`` at the
start of every epoch: it reshuffles and passes the epoch to the dataset (workers are not persistent,
so they pick it up).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import torch
from fvcore.common.config import CfgNode
from fvcore.common.registry import Registry
from torch.utils.data import DataLoader, Sampler
from torch.utils.data._utils.collate import default_collate

from ..utils.distributed import get_rank, get_world_size
from .kinetics import Kinetics
from .ssv2 import SSv2
from .video_dataset import VideoDataset

DATASET_REGISTRY = Registry("DATASET")
DATASET_REGISTRY.__doc__ = (
    "Video datasets by TRAIN.DATASET / TEST.DATASET name: fn(cfg, mode, split) -> dataset."
)

SPLITS = ("train", "val", "test")


@DATASET_REGISTRY.register()
def kinetics(cfg: CfgNode, mode: str, split: str) -> VideoDataset:
    """Kinetics-400/600/700 or any ``path label`` csv dataset."""
    return Kinetics(cfg, mode, split)


@DATASET_REGISTRY.register()
def ssv2(cfg: CfgNode, mode: str, split: str) -> VideoDataset:
    """Something-Something-v2 from the official json files."""
    return SSv2(cfg, mode, split)


@DATASET_REGISTRY.register()
def synth(cfg: CfgNode, mode: str, split: str) -> VideoDataset:
    """The synthetic dataset (Kinetics layout), generated into DATA.PATH_TO_DATA_DIR if empty."""
    from .synth import ensure_synthetic_dataset

    ensure_synthetic_dataset(cfg)
    return Kinetics(cfg, mode, split)


def build_dataset(cfg: CfgNode, split: str) -> VideoDataset:
    """The dataset of ``split`` ("train", "val" or "test"); test reads annotation split TEST.SPLIT."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    name = cfg.TEST.DATASET if split == "test" else cfg.TRAIN.DATASET
    if name not in DATASET_REGISTRY:
        key = "TEST.DATASET" if split == "test" else "TRAIN.DATASET"
        raise KeyError(f"{key} {name!r} is not a dataset; known: {sorted(n for n, _ in DATASET_REGISTRY)}")
    return DATASET_REGISTRY.get(name)(cfg, split, cfg.TEST.SPLIT if split == "test" else split)


class ShardSampler(Sampler[int]):
    """Indices of this rank: shuffled per epoch (train) or strided in order (val/test); see module doc."""

    def __init__(self, dataset: VideoDataset, rank: int, world_size: int, shuffle: bool, seed: int = 0):
        self.dataset = dataset
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch`` and tell the dataset (it seeds per-sample augmentation with it)."""
        self.epoch = epoch
        self.dataset.set_epoch(epoch)

    def indices(self) -> list[int]:
        """This rank's indices for the current epoch."""
        n = len(self.dataset)
        if not self.shuffle:
            return list(range(self.rank, n, self.world_size))
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(n, generator=g).tolist()
        perm = perm[: n - n % self.world_size]
        return perm[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        n = len(self.dataset)
        if self.shuffle:
            return n // self.world_size
        return len(range(self.rank, n, self.world_size))


def collate_train(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack train items; repeated-augmentation items (k, C, T, H, W) are flattened to B*k clips."""
    if items[0]["video"].dim() == 4:
        return default_collate(items)
    k = items[0]["video"].shape[0]
    return {
        "video": torch.cat([it["video"] for it in items]),
        "label": torch.cat([it["label"] for it in items]),
        "index": torch.tensor([it["index"] for it in items]).repeat_interleave(k),
        "erase": torch.cat([it["erase"] for it in items]),
        "skipped": torch.tensor([it["skipped"] for it in items]),
        "damaged": torch.tensor([it["damaged"] for it in items]),
    }


def collate_eval(items: list[dict[str, Any]], empty_video: torch.Tensor) -> dict[str, Any]:
    """Stack decodable val videos (test: list their decoded frames and crop corners, ``views_of_test_batch``);
    undecodable ones go to ``skipped`` (index, video_id, path, error,
    and ``damage`` when left out as damaged); ``damage`` lists, per stacked video, None or its
    ``{"path", "reason"}`` (damaged, used: DATA.ON_DAMAGED warn)."""
    good = [it for it in items if "error" not in it]
    keys = ("index", "video_id", "path", "error", "damage")
    skipped = [{k: it[k] for k in keys if k in it} for it in items if "error" in it]
    if empty_video.ndim == 6:  # test: per video its decoded frames and crop corners, not stacked views
        videos = {"frames": [it["frames"] for it in good], "crops": [it["crops"] for it in good]}
    else:
        videos = {"video": torch.stack([it["video"] for it in good]) if good else empty_video}
    return {
        **videos,
        "label": torch.tensor([it["label"] for it in good], dtype=torch.long),
        "index": torch.tensor([it["index"] for it in good], dtype=torch.long),
        "video_id": [it["video_id"] for it in good],
        "skipped": skipped,
        "damage": [it.get("damage") for it in good],
    }


def build_loader(cfg: CfgNode, split: str) -> DataLoader:
    """DataLoader of ``split`` for this rank (see module docstring for sharding and batch sizes)."""
    dataset = build_dataset(cfg, split)
    rank, world = get_rank(), get_world_size()
    sampler = ShardSampler(dataset, rank, world, shuffle=split == "train", seed=cfg.RNG_SEED)
    batch_size = max(1, (cfg.TEST.BATCH_SIZE if split == "test" else cfg.TRAIN.BATCH_SIZE) // world)
    if split == "train":
        collate = collate_train
    else:
        collate = functools.partial(collate_eval, empty_video=dataset.empty_eval_video())
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=cfg.DATA_LOADER.NUM_WORKERS,
        collate_fn=collate,
        pin_memory=cfg.DATA_LOADER.PIN_MEMORY and torch.cuda.is_available(),
        drop_last=split == "train" and cfg.MIXUP.ENABLE,  # timm Mixup needs even batches
        persistent_workers=False,
    )
