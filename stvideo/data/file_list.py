"""Test-mode dataset over arbitrary video files, decoded exactly as the configured test split is.

``predict`` and ``visualize_tokens`` score files that are in no annotation list. They reuse
:class:`~stvideo.data.video_dataset.VideoDataset` in ``test`` mode (same decode, frame sampling, crops
and view order as testing), with the temporal sampling of the configured TEST.DATASET (dense for
Kinetics-style datasets, segment for SSv2), so a file scores the same here as in a test run.
"""

from __future__ import annotations

import os
from pathlib import Path

from fvcore.common.config import CfgNode

from .kinetics import Kinetics
from .ssv2 import SSv2
from .video_dataset import Sample, VideoDataset

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg")
UNLABELLED = -1  # label of a file that is in no annotation list


def expand_inputs(inputs: list[str]) -> list[str]:
    """Files as given, and folders expanded (recursively, sorted) to their files with a video extension.

    A path that does not exist is kept: the dataset reports it per file instead of stopping the run.
    """
    out: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(str(p) for p in Path(item).rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)
            out += found
        else:
            out.append(item)
    return out


class FileListDataset(VideoDataset):
    """``test``-mode items (all views of one decode) of the given files, labelled ``UNLABELLED``."""

    def __init__(self, cfg: CfgNode, paths: list[str]):
        base = SSv2 if cfg.TEST.DATASET == "ssv2" else Kinetics  # synth videos are Kinetics-style
        self.default_sampling = base.default_sampling
        self.allow_plain_flip = base.allow_plain_flip
        samples = [Sample(os.path.abspath(p), UNLABELLED, p) for p in paths]
        super().__init__(cfg, "test", samples)
