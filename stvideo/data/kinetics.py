"""Kinetics-400/600/700 (and any dataset in the same layout) from ``{train,val,test}.csv`` lists.

Each non-empty line is ``path label``, ``path,label`` or ``path<TAB>label``. The separator is
DATA.PATH_LABEL_SEPARATOR, or detected per line when that is "" (the first of tab, comma and the
last run of whitespace that leaves an integer label), and the label is always the last field, so
paths may contain spaces and commas. A first line whose label is not an integer is taken as a
header and skipped.
"""

from __future__ import annotations

import logging
import os

from fvcore.common.config import CfgNode

from .video_dataset import Sample, VideoDataset, resolve_path

logger = logging.getLogger("stvideo.data")


def split_line(line: str, separator: str = "") -> tuple[str, str]:
    """(path, label text) of one annotation line, splitting at the last separator.

    Without ``separator``, the first of tab, comma and whitespace that leaves an integer label wins,
    so ``clip, take 2.mp4 3`` is path ``clip, take 2.mp4``; a line where none does (a header) splits
    at the first of them present.
    """
    if separator:
        parts = line.rsplit(separator, 1)
    else:
        present = [line.rsplit(sep, 1) for sep in ("\t", ",", None) if sep is None or sep in line]
        parts = next((p for p in present if len(p) == 2 and _is_int(p[1])), present[0])
    if len(parts) != 2 or not parts[0].strip():
        raise ValueError("expected 'path label', 'path,label' or 'path<TAB>label'")
    return parts[0].strip(), parts[1].strip()


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def read_csv_annotations(path: str, separator: str = "") -> list[tuple[str, int]]:
    """(video path as written, label) pairs of a Kinetics-style list; errors name file and line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"annotation file {path} not found (DATA.PATH_TO_DATA_DIR?)")
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            try:
                video, label = split_line(line, separator)
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: {e}, got {line!r}") from None
            try:
                out.append((video, int(label)))
            except ValueError:
                if lineno == 1:
                    logger.info("%s: first line %r has no integer label, read as a header", path, line)
                    continue
                raise ValueError(f"{path}:{lineno}: label {label!r} is not an integer") from None
    return out


class Kinetics(VideoDataset):
    """Kinetics-style dataset: dense fps-aware sampling, flips allowed."""

    default_sampling = "dense"
    allow_plain_flip = True

    def __init__(self, cfg: CfgNode, mode: str, split: str | None = None):
        split = split or mode
        csv = os.path.join(cfg.DATA.PATH_TO_DATA_DIR, f"{split}.csv")
        pairs = read_csv_annotations(csv, cfg.DATA.PATH_LABEL_SEPARATOR)
        samples = [Sample(resolve_path(cfg, p), label, p) for p, label in pairs]
        super().__init__(cfg, mode, samples)
