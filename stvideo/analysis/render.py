"""Draw token maps over the clip's frames: a PNG grid (rows: input and each map; columns: frames) and
an animated MP4 (each frame: the input next to every map).

A map on the (T', H', W') token grid covers the T x H x W clip by nearest-neighbour upsampling: token
slice t' covers frames [t' T / T', (t' + 1) T / T'), token (h', w') its H/H' x W/W' pixel patch.
``groups`` maps colour each token by its group (tab20 colours) with its weight as opacity, ``mask``
maps darken the dropped tokens, ``heat`` maps blend the inferno colour map of the score.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from stvideo.data.video_writer import write_video

from .token_maps import TokenMap

LABEL_WIDTH = 140  # pixels left of each PNG row for its title


def _palette(n: int) -> np.ndarray:
    """(n, 3) float RGB in [0, 1]: matplotlib's tab20, repeated when n > 20."""
    from matplotlib import colormaps

    colours = np.asarray(colormaps["tab20"].colors, dtype=np.float32)
    return colours[np.arange(n) % len(colours)]


def upsample(grid_values: np.ndarray, num_frames: int, height: int, width: int) -> np.ndarray:
    """(T', H', W', ...) token-grid array -> (T, H, W, ...) by nearest neighbour (see the module doc)."""
    t, h, w = grid_values.shape[:3]
    ti = np.arange(num_frames) * t // num_frames
    hi = np.arange(height) * h // height
    wi = np.arange(width) * w // width
    return grid_values[ti][:, hi][:, :, wi]


def overlay(frames: np.ndarray, tmap: TokenMap) -> np.ndarray:
    """(T, H, W, 3) uint8 frames with ``tmap`` drawn over them, uint8 of the same shape."""
    t, h, w, _ = frames.shape
    img = frames.astype(np.float32) / 255.0
    values = upsample(tmap.values.numpy().astype(np.float32), t, h, w)[..., None]
    if tmap.kind == "groups":
        labels = tmap.labels.numpy()
        colour = upsample(_palette(int(labels.max()) + 1)[labels], t, h, w)
        alpha = 0.25 + 0.6 * values
        out = img * (1 - alpha) + colour * alpha
    elif tmap.kind == "mask":
        out = img * (0.45 + 0.55 * values) + np.array([0.0, 0.05, 0.3], np.float32) * (1 - values)
    else:
        from matplotlib import colormaps

        heat = colormaps["inferno"](values[..., 0])[..., :3].astype(np.float32)
        out = 0.4 * img + 0.6 * heat
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def _scale(frames: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour upscale of (T, H, W, 3) frames so the shorter side is at least ``size`` (even)."""
    factor = max(1, -(-size // min(frames.shape[1:3])))
    out = frames.repeat(factor, axis=1).repeat(factor, axis=2)
    return out[:, : out.shape[1] // 2 * 2, : out.shape[2] // 2 * 2]


def panels(frames: np.ndarray, maps: list[TokenMap], size: int = 96) -> tuple[list[str], list[np.ndarray]]:
    """Titles and (T, S, S, 3) uint8 panels: the input frames, then each map's overlay, upscaled."""
    titles = ["input"] + [m.title for m in maps]
    big = [_scale(frames, size)] + [_scale(overlay(frames, m), size) for m in maps]
    return titles, big


def write_grid_png(path: str | Path, frames: np.ndarray, maps: list[TokenMap], size: int = 96) -> Path:
    """PNG with one row per panel (input, then maps) and one column per frame, titles on the left."""
    titles, rows = panels(frames, maps, size)
    t, ph, pw, _ = rows[0].shape
    gap = 2
    canvas = np.full((len(rows) * (ph + gap), LABEL_WIDTH + t * (pw + gap), 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for f in range(t):
            y, x = r * (ph + gap), LABEL_WIDTH + f * (pw + gap)
            canvas[y : y + ph, x : x + pw] = row[f]
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=13)
    for r, title in enumerate(titles):
        draw.text((4, r * (ph + gap) + ph // 2 - 7), title, fill=(0, 0, 0), font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)
    return path


def write_animation(
    path: str | Path, frames: np.ndarray, maps: list[TokenMap], size: int = 96, fps: int = 4
) -> Path:
    """H.264 MP4 whose frame f shows the input frame f next to every map's overlay of it."""
    _, rows = panels(frames, maps, size)
    strip = np.concatenate(rows, axis=2)  # T, S, S * panels, 3
    return write_video(path, np.ascontiguousarray(strip), fps=fps, codec="h264", options={"crf": "18"})


def clip_frames(view: torch.Tensor) -> np.ndarray:
    """(C, T, H, W) uint8 view -> (T, H, W, 3) uint8 frames."""
    return view.permute(1, 2, 3, 0).contiguous().numpy()
