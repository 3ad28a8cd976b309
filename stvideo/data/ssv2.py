"""Something-Something-v2 from the official json files and ``.webm`` videos.

``something-something-v2-labels.json`` maps template -> class id, and
``something-something-v2-{train,validation}.json`` list ``{"id", "label", "template", "placeholders"}``.
The class is the entry's *template* with its square brackets removed, looked up in the labels file;
the filled-in ``label`` text ("Putting a pen on a table") is never used. Video ``<id>`` is
``<id>`` + DATA.VIDEO_EXT under DATA.PATH_PREFIX (or DATA.PATH_TO_DATA_DIR). The ``val`` and
``test`` splits both read the validation file (the official test set has no labels).
Segment (TSN) sampling by default; plain horizontal flips are off (left/right classes) unless a
DATA.FLIP_LABEL_MAP gives the label each class takes when flipped.
"""

from __future__ import annotations

import json
import os

from fvcore.common.config import CfgNode

from .video_dataset import Sample, VideoDataset, resolve_path

LABELS_FILE = "something-something-v2-labels.json"
SPLIT_FILES = {
    "train": "something-something-v2-train.json",
    "val": "something-something-v2-validation.json",
    "validation": "something-something-v2-validation.json",
    "test": "something-something-v2-validation.json",
}


def template_class(template: str) -> str:
    """Class name of an SSv2 template with its square brackets removed.

    "Putting [something] on [something]" -> "Putting something on something".
    """
    return template.replace("[", "").replace("]", "")


def read_ssv2_annotations(labels_path: str, split_path: str) -> list[tuple[str, int]]:
    """(video id, class id) pairs of one split; unknown templates raise ValueError naming the entry."""
    for p in (labels_path, split_path):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"SSv2 annotation file {p} not found (DATA.PATH_TO_DATA_DIR?)")
    with open(labels_path) as f:
        classes = {name: int(idx) for name, idx in json.load(f).items()}
    with open(split_path) as f:
        entries = json.load(f)
    out = []
    for n, entry in enumerate(entries):
        if "id" not in entry or "template" not in entry:
            raise ValueError(f"{split_path}: entry {n} lacks 'id' or 'template': {entry!r}")
        name = template_class(entry["template"])
        if name not in classes:
            raise ValueError(f"{split_path}: entry {entry['id']} has template {name!r} not in {labels_path}")
        out.append((str(entry["id"]), classes[name]))
    return out


class SSv2(VideoDataset):
    """Something-Something-v2: segment sampling, label-aware flips only."""

    default_sampling = "segment"
    allow_plain_flip = False

    def __init__(self, cfg: CfgNode, mode: str, split: str | None = None):
        split = split or mode
        if split not in SPLIT_FILES:
            raise ValueError(f"SSv2 split must be one of {sorted(SPLIT_FILES)}, got {split!r}")
        root = cfg.DATA.PATH_TO_DATA_DIR
        pairs = read_ssv2_annotations(os.path.join(root, LABELS_FILE), os.path.join(root, SPLIT_FILES[split]))
        samples = [Sample(resolve_path(cfg, vid + cfg.DATA.VIDEO_EXT), label, vid) for vid, label in pairs]
        super().__init__(cfg, mode, samples)
