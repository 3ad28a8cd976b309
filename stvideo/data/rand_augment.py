"""RandAugment for uint8 clips: torchvision's ops and sampling, run as lookup tables and pixel gathers.

Hand-written because torchvision's ``v2.RandAugment`` costs ~12 ms per op on a 16x3x224x224 uint8
clip on one core (each op round-trips the whole clip through float, Sharpness runs a grouped conv,
the geometric ops a ``grid_sample`` per plane), which halved a data-loader worker's throughput.
Here every op is one of
- a 256-entry lookup table per plane (Brightness, Posterize, Solarize, AutoContrast, Equalize,
  Contrast). Tables compose, so a run of these ops touches the pixels once, at the end;
- a nearest-neighbour gather that is the same for every plane (ShearX/Y, TranslateX/Y, Rotate);
- a 256x256 table over (pixel, grey or blurred pixel) for the blends (Color, Sharpness).
Tables and gather maps are computed with torchvision's own kernels (applied to ``arange`` images)
or its exact float32 formulas, so with per-frame statistics the result equals ``v2.RandAugment`` bit
for bit when both draw from the same torch RNG state, and with whole-clip statistics (the default)
it equals torchvision's ops on the frames stacked into one tall image (tests/test_rand_augment.py
checks both on many seeds and sizes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torchvision.transforms.v2 import RandAugment
from torchvision.transforms.v2 import functional as F

# torchvision's op set, magnitude bins and sign rule, used as is.
_SPACE = RandAugment._AUGMENTATION_SPACE
OPS: tuple[str, ...] = tuple(_SPACE)  # op names in torchvision's order (its draw indexes this)
_GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
_VALUES = torch.arange(256, dtype=torch.uint8)


class ClipRandAugment:
    """torchvision's ``v2.RandAugment(num_ops, magnitude, num_magnitude_bins)`` for a (T, 3, H, W) uint8 clip.

    Draws its ops from torch's global RNG exactly as torchvision does, so the same op and magnitude
    hit every frame. AutoContrast, Equalize and Contrast take their statistics over the whole clip
    by default (``clip_statistics``), as if the frames were one tall image, so every frame gets the
    same tone curve and changes of light over time survive; ``clip_statistics=False`` uses each
    frame's own statistics, as ``v2.RandAugment`` on a frame batch and PySlowFast/VideoMAE's per-frame
    ops do. Default interpolation (nearest) and fill (0) only, which is what the pipeline uses.
    """

    def __init__(
        self, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31, clip_statistics: bool = True
    ):
        if not 0 <= magnitude < num_magnitude_bins:
            raise ValueError(f"magnitude must be in [0, {num_magnitude_bins}), got {magnitude}")
        self.num_ops = num_ops
        self.magnitude = magnitude
        self.num_magnitude_bins = num_magnitude_bins
        self.clip_statistics = clip_statistics

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        """(T, 3, H, W) uint8 -> augmented (T, 3, H, W) uint8 (a new tensor)."""
        if clip.dtype != torch.uint8 or clip.ndim != 4 or clip.shape[1] != 3:
            raise ValueError(
                f"ClipRandAugment takes a (T, 3, H, W) uint8 clip, got {clip.dtype} {tuple(clip.shape)}"
            )
        height, width = clip.shape[-2:]
        state = _LazyClip(clip, self.clip_statistics)
        for _ in range(self.num_ops):
            op = OPS[int(torch.randint(len(OPS), ()))]
            magnitude = op_magnitude(op, self.magnitude, self.num_magnitude_bins, height, width)
            if (
                _SPACE[op][1] and torch.rand(()) <= 0.5
            ):  # signed ops all have magnitudes, as torchvision draws
                magnitude *= -1
            state.apply(op, magnitude)
        return state.result()


def op_magnitude(op: str, magnitude_bin: int, num_magnitude_bins: int, height: int, width: int) -> float:
    """torchvision's unsigned magnitude of ``op`` at ``magnitude_bin`` for an HxW image (0.0: none)."""
    magnitudes = _SPACE[op][0](num_magnitude_bins, height, width)
    return 0.0 if magnitudes is None else float(magnitudes[magnitude_bin])


def apply_op(clip: torch.Tensor, op: str, magnitude: float, clip_statistics: bool = True) -> torch.Tensor:
    """One ClipRandAugment op at a fixed signed ``magnitude`` on a (T, 3, H, W) uint8 clip (for timing)."""
    state = _LazyClip(clip, clip_statistics)
    state.apply(op, magnitude)
    return state.result()


class _LazyClip:
    """Pixels (P = T*3 planes of H*W) plus a pending per-plane lookup table, applied when needed."""

    def __init__(self, clip: torch.Tensor, clip_statistics: bool):
        self.shape = tuple(clip.shape)
        self.clip_statistics = clip_statistics  # AutoContrast/Equalize/Contrast over all frames
        self.pixels = np.ascontiguousarray(clip.numpy()).reshape(self.shape[0] * 3, -1)
        self.table: np.ndarray | None = None  # (1 or P, 256) uint8: current value of each pixel value
        self._hist: np.ndarray | None = None  # (P, 256) histogram of ``pixels``, cached

    # ------------------------------------------------------------------ dispatch
    def apply(self, op: str, magnitude: float) -> None:
        """One RandAugment op with torchvision's magnitude convention (signed, already binned)."""
        if op == "Identity":
            return
        if op in _GEOMETRIC:
            self._gather(_gather_map(op, magnitude, self.shape[-2], self.shape[-1]))
        elif op == "Brightness":
            self._compose(_pointwise_table("brightness", 1.0 + magnitude))
        elif op == "Posterize":
            self._compose(_pointwise_table("posterize", int(magnitude)))
        elif op == "Solarize":
            self._compose(_pointwise_table("solarize", 255.0 * magnitude))
        elif op == "AutoContrast":
            self._compose(self._autocontrast_tables())
        elif op == "Equalize":
            self._compose(self._equalize_tables())
        elif op == "Contrast":
            self._compose(self._contrast_tables(1.0 + magnitude))
        elif op == "Color":
            self._color(1.0 + magnitude)
        elif op == "Sharpness":
            self._sharpness(1.0 + magnitude)
        else:
            raise ValueError(f"RandAugment op {op!r} is not implemented for clips")

    def result(self) -> torch.Tensor:
        """The augmented (T, 3, H, W) uint8 clip."""
        self._materialize()
        return torch.from_numpy(self.pixels.reshape(self.shape))

    # ------------------------------------------------------------------ primitives
    def _compose(self, table: np.ndarray) -> None:
        """Apply ``table`` (1 or P rows of 256) after the pending one."""
        if self.table is None:
            self.table = table
        elif table.shape[0] == 1:
            self.table = table[0][self.table]
        else:
            self.table = np.take_along_axis(table, np.broadcast_to(self.table, table.shape), axis=1)

    def _materialize(self) -> None:
        """Write the pending table into the pixels."""
        if self.table is None:
            return
        # CPython's bytes.translate is a byte-to-byte table lookup in C, 2x faster than np.take (which
        # widens every index to int64); plane by plane it is 2x faster again than on the whole clip
        # (50 kB pieces come from the heap, one 2.4 MB result costs fresh pages; measured).
        tables = [table.tobytes() for table in self.table]
        if len(tables) == 1:
            tables *= len(self.pixels)
        planes = (plane.tobytes().translate(table) for plane, table in zip(self.pixels, tables, strict=True))
        out = np.frombuffer(bytearray().join(planes), np.uint8).reshape(self.pixels.shape)
        self.pixels, self.table, self._hist = out, None, None

    def _current_histograms(self) -> np.ndarray:
        """(P, 256) int32 histograms of the current values (pixels seen through the pending table)."""
        if self._hist is None:
            planes = torch.from_numpy(self.pixels)
            hist = torch.stack([torch.bincount(p, minlength=256) for p in planes])
            self._hist = hist.to(torch.int32).numpy()
        if self.table is None:
            return self._hist
        hist = torch.zeros(self._hist.shape, dtype=torch.int32)
        index = torch.from_numpy(np.broadcast_to(self.table, self._hist.shape).astype(np.int64))
        return hist.scatter_add_(1, index, torch.from_numpy(self._hist)).numpy()

    def _statistics_histograms(self) -> np.ndarray:
        """Current histograms per plane (P, 256), or per channel over all frames (3, 256)."""
        hist = self._current_histograms()
        return hist.reshape(self.shape[0], 3, 256).sum(0) if self.clip_statistics else hist

    def _per_plane(self, tables: np.ndarray) -> np.ndarray:
        """(P, 256) tables from per-plane ones, or from (3, 256) per-channel ones (same in every frame)."""
        return np.tile(tables, (self.shape[0], 1)) if self.clip_statistics else tables

    def _clip(self) -> torch.Tensor:
        """The current clip, materialised, as a (T, 3, H, W) tensor view."""
        self._materialize()
        return torch.from_numpy(self.pixels.reshape(self.shape))

    def _gather(self, pixel_map: _PixelMap) -> None:
        """Move every pixel as ``pixel_map`` says; pixels from outside the frame become 0."""
        if self.table is not None and self.table[:, 0].any():
            self._materialize()  # the fill must be 0 *after* the pending table
        if pixel_map.shift is not None:  # a slice copy, ~10x cheaper than a gather
            dy, dx = pixel_map.shift
            height, width = self.shape[-2:]
            src = self.pixels.reshape(-1, height, width)
            out = np.zeros_like(src)
            out[:, max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = src[
                :, max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
            ]
            out = out.reshape(self.pixels.shape)
        else:
            out = np.take(self.pixels, pixel_map.source, axis=1)
            if pixel_map.inside is not None:
                out *= pixel_map.inside
        self.pixels, self._hist = out, None

    # ------------------------------------------------------------------ ops with statistics
    def _autocontrast_tables(self) -> np.ndarray:
        """torchvision's autocontrast_image formula as one table per plane (min/max of the plane, or of
        its channel over the whole clip)."""
        if self.table is None:
            planes = torch.from_numpy(self.pixels)
            if self.clip_statistics:
                planes = planes.view(self.shape[0], 3, -1)
                minimum, maximum = planes.amin((0, 2)).unsqueeze(1), planes.amax((0, 2)).unsqueeze(1)
            else:
                minimum, maximum = planes.amin(1, keepdim=True), planes.amax(1, keepdim=True)
        else:
            present = torch.from_numpy(self._statistics_histograms() > 0)
            minimum = torch.where(present, _VALUES, 255).amin(1, keepdim=True)
            maximum = torch.where(present, _VALUES, 0).amax(1, keepdim=True)
        minimum, maximum = minimum.to(torch.float32), maximum.to(torch.float32)
        eq_idxs = maximum == minimum
        inv_scale = maximum.sub_(minimum).mul_(1.0 / 255)
        minimum[eq_idxs] = 0.0
        inv_scale[eq_idxs] = 1.0
        table = _VALUES.to(torch.float32).expand(minimum.shape[0], 256).sub(minimum)
        return self._per_plane(table.div_(inv_scale).clamp_(0, 255).to(torch.uint8).numpy())

    def _equalize_tables(self) -> np.ndarray:
        """torchvision's equalize_image (PIL's scheme) as one table per plane, from the histograms."""
        hist = torch.from_numpy(self._statistics_histograms())
        num_pixels = self.pixels.shape[1] * (self.shape[0] if self.clip_statistics else 1)
        cum_hist = hist.cumsum(dim=-1)
        index = cum_hist.argmax(dim=-1, keepdim=True)
        step = (num_pixels - hist.gather(dim=-1, index=index)).div_(255, rounding_mode="floor")
        valid = step.ne(0)
        cum_hist = cum_hist[..., :-1].add_(step // 2)
        cum_hist = cum_hist.div_(step.clamp(min=1), rounding_mode="floor").clamp_(0, 255)
        table = torch.cat([torch.zeros_like(step), cum_hist], dim=-1).to(torch.uint8)
        return self._per_plane(torch.where(valid, table, _VALUES).numpy())

    def _grey(self) -> torch.Tensor:
        """(T, 1, H, W) uint8 grey of the current clip: torchvision's floor(0.2989 R + 0.587 G + 0.114 B)."""
        return F.rgb_to_grayscale(self._clip())

    def _contrast_tables(self, factor: float) -> np.ndarray:
        """Blend with the mean grey value (torchvision's adjust_contrast): one table for the clip (its
        frames as one tall image), or one per frame."""
        grey = self._grey().to(torch.float32)
        if self.clip_statistics:
            grey = grey.view(1, -1, self.shape[-1])  # the tall image, reduced as torchvision would
        mean = torch.mean(grey, dim=(-3, -2, -1)).reshape(-1, 1)  # (T or 1, 1)
        table = _blend(_VALUES.expand(mean.shape[0], 256), mean, factor)
        return table.numpy() if self.clip_statistics else table.repeat_interleave(3, dim=0).numpy()

    # ------------------------------------------------------------------ blends through 256x256 tables
    def _color(self, factor: float) -> None:
        """torchvision's adjust_saturation: blend each pixel with its own grey value."""
        grey = self._grey().numpy().reshape(self.shape[0], 1, -1)  # materialises self.pixels
        table = _pair_table("color", factor)
        frames = self.pixels.reshape(self.shape[0], 3, -1)
        out = np.empty_like(frames)
        for t, frame in enumerate(frames):  # frame by frame: the uint16 temporaries stay in cache
            np.take(table, (frame.astype(np.uint16) << 8) | grey[t], out=out[t])
        self.pixels, self._hist = out.reshape(self.pixels.shape), None

    def _sharpness(self, factor: float) -> None:
        """torchvision's adjust_sharpness: blend the interior with a 3x3 smoothing, borders unchanged.

        The smoothed value round((3x3 sum + 4 * center) / 13) is computed in integers; it equals
        torchvision's rounded float conv because n / 13 is never within 1/26 of a half.
        """
        height, width = self.shape[-2:]
        if height <= 2 or width <= 2:
            return
        self._materialize()
        table = _pair_table("sharpness", factor)
        planes = self.pixels.reshape(-1, 3, height, width)
        out = planes.copy()
        for t, frame in enumerate(planes):  # frame by frame: the int16 temporaries stay in cache
            wide = frame.astype(np.int16)
            rows = wide[..., :-2] + wide[..., 1:-1] + wide[..., 2:]
            total = rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:] + 4 * wide[:, 1:-1, 1:-1]
            pair = (frame[:, 1:-1, 1:-1].astype(np.uint16) << 8) | ((2 * total + 13) // 26).astype(np.uint16)
            out[t, :, 1:-1, 1:-1] = np.take(table, pair)
        self.pixels, self._hist = out.reshape(self.pixels.shape), None


def _blend(image1: torch.Tensor, image2: torch.Tensor, ratio: float) -> torch.Tensor:
    """torchvision's ``_blend`` (float32 ``image1 * r + image2 * (1 - r)``, clamped, truncated)."""
    return image1.mul(ratio).add_(image2, alpha=1.0 - ratio).clamp_(0, 255).to(torch.uint8)


@lru_cache(maxsize=128)
def _pair_table(kind: str, factor: float) -> np.ndarray:
    """(65536,) uint8: entry (a << 8) | b is the blend of pixel a with grey / smoothed value b."""
    a = _VALUES.to(torch.float32).view(256, 1).expand(256, 256)
    b = _VALUES.to(torch.float32).view(1, 256).expand(256, 256)
    if kind == "color":
        table = _blend(_VALUES.view(256, 1).expand(256, 256), b, factor)
    else:  # sharpness: torchvision's in-place form a + (1 - f) * (b - a)
        table = a.clone().add_(b - a, alpha=1.0 - factor).clamp_(0, 255).to(torch.uint8)
    return table.reshape(-1).numpy()


@lru_cache(maxsize=128)
def _pointwise_table(kind: str, value: float) -> np.ndarray:
    """(1, 256) table of a pointwise op, by running torchvision's kernel on the 256 pixel values."""
    image = _VALUES.view(1, 1, 256)
    if kind == "brightness":
        out = F.adjust_brightness(image, brightness_factor=value)
    elif kind == "posterize":
        out = F.posterize(image, bits=int(value))
    else:
        out = F.solarize(image, threshold=value)
    return out.reshape(1, 256).numpy()


@dataclass(frozen=True)
class _PixelMap:
    """Where each output pixel of a geometric op comes from."""

    source: np.ndarray  # (H*W,) flat index of the source pixel (0 where it lies outside the frame)
    inside: np.ndarray | None  # (H*W,) uint8, 0 where the source lies outside; None if all inside
    shift: tuple[int, int] | None  # (dy, dx) of a whole-pixel translation, out[y, x] = in[y - dy, x - dx]


def _as_shift(source: np.ndarray, inside: np.ndarray, height: int, width: int) -> tuple[int, int] | None:
    """(dy, dx) if ``source`` / ``inside`` describe a whole-pixel translation with zero fill, else None."""
    if not inside.any():
        return None
    first = int(np.argmax(inside))
    dy = first // width - int(source[first]) // width
    dx = first % width - int(source[first]) % width
    ys, xs = np.divmod(np.arange(height * width), width)
    expected_inside = (ys - dy >= 0) & (ys - dy < height) & (xs - dx >= 0) & (xs - dx < width)
    expected = (ys - dy) * width + (xs - dx)
    if (inside == expected_inside).all() and (source[inside] == expected[inside]).all():
        return dy, dx
    return None


@lru_cache(maxsize=256)
def _gather_map(op: str, magnitude: float, height: int, width: int) -> _PixelMap:
    """The pixel map of a geometric op, by running torchvision's nearest-neighbour affine/rotate on
    an image whose values are the pixel indices + 1 (so 0 marks torchvision's zero fill)."""
    if height * width >= 2**24:
        raise ValueError(f"{height}x{width} frames are too large for float32 pixel indices")
    index = torch.arange(1, height * width + 1, dtype=torch.float32).view(1, height, width)
    if op == "Rotate":
        out = F.rotate(index, angle=magnitude)
    else:
        shear = math.degrees(math.atan(magnitude))
        kwargs = {
            "ShearX": {"translate": [0, 0], "shear": [shear, 0.0], "center": [0, 0]},
            "ShearY": {"translate": [0, 0], "shear": [0.0, shear], "center": [0, 0]},
            "TranslateX": {"translate": [int(magnitude), 0], "shear": [0.0, 0.0]},
            "TranslateY": {"translate": [0, int(magnitude)], "shear": [0.0, 0.0]},
        }[op]
        out = F.affine(index, angle=0.0, scale=1.0, **kwargs)
    source = out.reshape(-1).to(torch.int64).numpy() - 1  # -1: outside (torchvision fills 0)
    inside = source >= 0
    return _PixelMap(
        source=np.maximum(source, 0),
        inside=None if inside.all() else inside.astype(np.uint8),
        shift=_as_shift(source, inside, height, width),
    )
