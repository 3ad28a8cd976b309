"""Video data: datasets (Kinetics, SSv2, synthetic), decoding, sampling, transforms, mixup, loaders."""

from .build import DATASET_REGISTRY, ShardSampler, build_dataset, build_loader
from .mixup import build_mixup

__all__ = ["DATASET_REGISTRY", "ShardSampler", "build_dataset", "build_loader", "build_mixup"]
