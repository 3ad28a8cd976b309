"""Temporal sampling: which frame indices make up a clip (train) or each test view.

Two schemes (``DATA.SAMPLING``):

* ``dense`` (Kinetics): ``NUM_FRAMES`` frames ``SAMPLING_RATE`` apart at ``TARGET_FPS``; in a video
  of another frame rate the stride is ``SAMPLING_RATE * fps / TARGET_FPS`` source frames (PySlowFast).
  Training draws the clip start uniformly; test view ``i`` of ``N`` starts at the center of the
  ``i``-th of ``N`` equal slots of the possible start range (``N = 1``: the center clip).
* ``segment`` (SSv2, TSN-style): the video is cut into ``NUM_FRAMES`` equal segments and one frame
  is taken per segment: a random one in training; in test view ``j`` of ``N`` the frame at offset
  ``(j + 1) / (N + 1)`` of every segment (mmaction2 ``UniformSample``), so temporal views differ
  (PySlowFast's SSv2 loader returns the segment middle for every view, SlowFast#306).

Videos shorter than a clip never fail: out-of-range dense indices are looped (``loop``) or clamped
to the last frame (``repeat_last``); segment sampling repeats frames when there are fewer frames
than segments. All randomness comes from the ``numpy.random.Generator`` passed in.

Hand-written rather than pytorchvideo's clip samplers (``pytorchvideo.data.clip_sampling``): those
return start/end times in seconds, ``RandomClipSampler`` draws from Python's global ``random`` (not
seedable per sample, so clips would depend on the worker layout), ``ConstantClipsPerVideoSampler``
is stateful and starts view ``i`` at the left edge ``i / N`` of its slot, and there is no segment
sampler. The decoders here take exact frame indices, which these functions return directly.
"""

from __future__ import annotations

import math

import numpy as np

OUT_OF_BOUND = ("loop", "repeat_last")


def _fit(indices: np.ndarray, num_video_frames: int, out_of_bound: str) -> np.ndarray:
    if out_of_bound == "loop":
        return indices % num_video_frames
    if out_of_bound == "repeat_last":
        return np.minimum(indices, num_video_frames - 1)
    raise ValueError(f"DATA.OUT_OF_BOUND must be one of {OUT_OF_BOUND}, got {out_of_bound!r}")


def dense_stride(sampling_rate: int, fps: float, target_fps: float) -> float:
    """Distance in source frames between sampled frames (fps-aware)."""
    if target_fps <= 0:
        return float(sampling_rate)
    return sampling_rate * fps / target_fps


def dense_clip(
    num_video_frames: int,
    num_frames: int,
    stride: float,
    start: int,
    out_of_bound: str = "loop",
) -> np.ndarray:
    """Frame indices ``start + floor(k * stride)``, k < num_frames, fitted into the video."""
    offsets = np.floor(np.arange(num_frames) * stride + 1e-6).astype(np.int64)
    return _fit(start + offsets, num_video_frames, out_of_bound)


def dense_start_range(num_video_frames: int, num_frames: int, stride: float) -> int:
    """Largest clip start that keeps the whole clip inside the video (0 if the video is short)."""
    span = int(math.floor((num_frames - 1) * stride + 1e-6)) + 1
    return max(num_video_frames - span, 0)


def dense_train_indices(
    num_video_frames: int,
    num_frames: int,
    stride: float,
    rng: np.random.Generator,
    out_of_bound: str = "loop",
) -> np.ndarray:
    """One training clip with its start drawn uniformly from all starts that fit."""
    start = int(rng.integers(0, dense_start_range(num_video_frames, num_frames, stride) + 1))
    return dense_clip(num_video_frames, num_frames, stride, start, out_of_bound)


def dense_view_starts(num_video_frames: int, num_frames: int, stride: float, num_views: int) -> list[int]:
    """Start frame of each of ``num_views`` test clips: centers of equal slots of the start range."""
    delta = dense_start_range(num_video_frames, num_frames, stride)
    return [int(math.floor(delta * (i + 0.5) / num_views)) for i in range(num_views)]


def dense_test_indices(
    num_video_frames: int,
    num_frames: int,
    stride: float,
    num_views: int,
    out_of_bound: str = "loop",
) -> np.ndarray:
    """(num_views, num_frames) frame indices of the test clips, view-major."""
    starts = dense_view_starts(num_video_frames, num_frames, stride, num_views)
    return np.stack([dense_clip(num_video_frames, num_frames, stride, s, out_of_bound) for s in starts])


def segment_train_indices(num_video_frames: int, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """One random frame from each of ``num_frames`` equal segments."""
    seg = num_video_frames / num_frames
    pos = (np.arange(num_frames) + rng.random(num_frames)) * seg
    return np.minimum(np.floor(pos).astype(np.int64), num_video_frames - 1)


def segment_test_indices(num_video_frames: int, num_frames: int, num_views: int) -> np.ndarray:
    """(num_views, num_frames): view ``j`` takes offset ``(j + 1) / (num_views + 1)`` of each segment."""
    seg = num_video_frames / num_frames
    views = []
    for j in range(num_views):
        pos = (np.arange(num_frames) + (j + 1) / (num_views + 1)) * seg
        views.append(np.minimum(np.floor(pos + 1e-6).astype(np.int64), num_video_frames - 1))
    return np.stack(views)
