"""The package's one video-file writer: uint8 RGB frames to H.264 or VP9 files, byte-reproducible.

Used by the synthetic dataset, the tests' video makers and the benchmarks. The same frames and
arguments give the same bytes in any process, whatever was allocated before, and whatever the CPU's
vector extensions (measured with the commands in docs/synth.md, "Reproducibility"):

- libx264's SIMD code is not deterministic here: with B-frames and MB-tree on, its AVX-512 routines
  read heap memory that was never written (the output follows glibc's ``MALLOC_PERTURB_`` fill byte
  and, without it, whatever earlier encodes left behind), and its C, AVX2 and AVX-512 paths give
  different bitstreams for the same frames. ``asm=0`` (x264's C code) is deterministic and the same
  on every CPU, at about 2.4x the encode time (17 instead of 7 ms for 32 frames of 64x64).
- The Matroska/WebM muxer writes random track UIDs unless ``fflags=+bitexact``, which also writes the
  muxing application as plain "Lavf" instead of "Lavf62.12.102" (the version no longer shows in the bytes).
- One encoder thread (and x264's lookahead thread): the bytes do not depend on thread scheduling.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# codec name -> (encoder, default file extension). The container follows the path's suffix.
CODECS: dict[str, tuple[str, str]] = {
    "h264": ("libx264", "mp4"),
    "vp9": ("libvpx-vp9", "webm"),
    "mpeg4": ("mpeg4", "avi"),  # MPEG-4 Part 2 (older downloads, DivX/Xvid-style AVI)
}
CONTAINERS = (".mp4", ".webm", ".mkv", ".avi")
# Options that make the bytes reproducible (see the module docstring); callers' options cannot drop them.
DETERMINISTIC_OPTIONS: dict[str, dict[str, str]] = {
    "h264": {"threads": "1", "x264-params": "asm=0:threads=1:lookahead-threads=1:sliced-threads=0"},
    "vp9": {"threads": "1"},
    "mpeg4": {"threads": "1"},
}
CONTAINER_OPTIONS = {"fflags": "+bitexact"}


def _merge_options(codec: str, options: dict[str, str]) -> dict[str, str]:
    """``options`` with the deterministic ones on top; x264-params lists are joined, ours last (they win)."""
    fixed = DETERMINISTIC_OPTIONS[codec]
    merged = {**options, **fixed}
    if "x264-params" in options and "x264-params" in fixed:
        merged["x264-params"] = f"{options['x264-params']}:{fixed['x264-params']}"
    return merged


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: int = 30,
    codec: str = "h264",
    *,
    options: dict[str, str] | None = None,
    gop: int | None = None,
    pix_fmt: str = "yuv420p",
    timestamps: list[float] | None = None,
) -> Path:
    """Encode uint8 (T, H, W, 3) RGB ``frames`` to ``path`` (mp4/webm/mkv/avi) reproducibly; return the path.

    ``options`` are encoder options (crf, preset, bf, ...), ``gop`` the keyframe interval (encoder default
    if None), ``timestamps`` per-frame times in seconds for variable frame rate (else ``1 / fps`` apart).
    """
    path = Path(path)
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
    if path.suffix not in CONTAINERS:
        raise ValueError(f"{path}: file name must end in one of {CONTAINERS}")
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    if codec == "h264" and pix_fmt == "yuv420p" and (height % 2 or width % 2):
        raise ValueError(f"H.264 in yuv420p needs even frame sizes, got {width}x{height} for {path}")
    if timestamps is not None and len(timestamps) != len(frames):
        raise ValueError(f"{len(timestamps)} timestamps for {len(frames)} frames")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", options=CONTAINER_OPTIONS) as container:
        stream = container.add_stream(CODECS[codec][0], rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.thread_count = 1
        if gop is not None:
            stream.codec_context.gop_size = gop
        if timestamps is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        stream.options = _merge_options(codec, options or {})
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            if timestamps is not None:
                frame.pts = int(round(timestamps[i] * 1000))
                frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def textured_frames(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8 moving colour pattern with mild noise, to benchmark and test on video that
    compresses like natural video.

    One large pattern is computed once and each frame is a window sliding across it (a pan).
    """
    rng = np.random.default_rng(seed)
    dy, dx = 2, 3  # pan speed in pixels per frame
    big_h, big_w = height + dy * num_frames, width + dx * num_frames
    yy, xx = np.mgrid[0:big_h, 0:big_w].astype(np.float32)
    pattern = np.empty((big_h, big_w, 3), dtype=np.float32)
    for c, phase in enumerate(rng.uniform(0, 2 * np.pi, size=3)):
        pattern[..., c] = 127 + 100 * np.sin(xx / (9.0 + 4 * c) + phase) * np.cos(yy / (13.0 + c))
    noise = rng.normal(0, 6, size=(height, width, 3)).astype(np.float32)
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for i in range(num_frames):
        window = pattern[dy * i : dy * i + height, dx * i : dx * i + width]
        frames[i] = np.clip(window + np.roll(noise, 7 * i, axis=1), 0, 255)
    return frames
