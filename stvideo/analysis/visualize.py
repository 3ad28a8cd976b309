"""Token maps of one video file: decode its test views, run the model on the center view, draw the maps.

The clip is the one testing scores: ``FileListDataset`` decodes the file with the config's test
protocol and the center view (middle temporal clip, middle spatial crop) is used, preprocessed as the
evaluator does. ``visualize_file`` writes ``tokens.png`` (frames x maps), ``tokens.mp4`` and
``maps.json`` (titles, kinds, kept counts, the top class) into the output folder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from fvcore.common.config import CfgNode
from torch import nn

from stvideo.data.file_list import FileListDataset
from stvideo.data.preprocessor import ClipPreprocessor
from stvideo.data.transforms import cut_views

from .render import clip_frames, write_animation, write_grid_png
from .token_maps import TokenMaps, extract_token_maps


def center_view(cfg: CfgNode, path: str) -> torch.Tensor:
    """(C, T, S, S) uint8 center test view of ``path`` (DecodeError and friends on a bad file)."""
    item = FileListDataset(cfg, [path]).load_test(0)
    views = cut_views(item["frames"], item["crops"], cfg.DATA.TEST_CROP_SIZE)
    t, s = cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS
    return views[(t // 2) * s + s // 2]  # views are temporal-major: view = clip * S + crop


def file_token_maps(
    model: nn.Module, cfg: CfgNode, path: str, layers: Sequence[int] | None = None
) -> tuple[torch.Tensor, TokenMaps]:
    """(center view, its token maps) of ``path``."""
    view = center_view(cfg, path)
    device = next(model.parameters()).device
    clip = ClipPreprocessor(cfg, device)(view[None])
    return view, extract_token_maps(model, cfg.MODEL.ARCH, clip, layers)


def visualize_file(
    model: nn.Module,
    cfg: CfgNode,
    path: str,
    out_dir: str | Path,
    layers: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
    size: int = 96,
) -> dict[str, Any]:
    """Write the token maps of ``path`` into ``out_dir`` (panels ``size`` pixels high); returns the
    summary written to maps.json."""
    view, result = file_token_maps(model, cfg, path, layers)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    top = int(result.logits[0].argmax())
    summary: dict[str, Any] = {
        "video": path,
        "arch": cfg.MODEL.ARCH,
        "grid": list(result.grid) if result.grid else None,
        "top_class": top,
        "top_name": names[top] if names else str(top),
        "maps": [
            {
                "title": m.title,
                "kind": m.kind,
                "kept": int(m.values.gt(0).sum()) if m.kind == "mask" else None,
            }
            for m in result.maps
        ],
        "note": result.note,
    }
    if result.maps:
        frames = clip_frames(view)
        summary["png"] = str(write_grid_png(out_dir / "tokens.png", frames, result.maps, size))
        summary["mp4"] = str(write_animation(out_dir / "tokens.mp4", frames, result.maps, size))
    (out_dir / "maps.json").write_text(json.dumps(summary, indent=2))
    return summary
