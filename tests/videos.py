"""Generate small real video files for tests (``textured_frames`` is re-exported from the package).

Frames carry their own index so a test can tell exactly which frame a decoder returned:
frame ``i`` has a flat grey level ``level_of(i)`` in its left half, and its right half holds
horizontal and vertical colour ramps (so spatial crop positions are visible in pixel values).
Codecs: H.264 in mp4 (or mkv), VP9 in webm, MPEG-4 Part 2 in avi, written by ``stvideo.data.video_writer``
(all lossy, so levels are spaced ``LEVEL_STEP`` apart and read back by rounding).
Also writes the broken inputs the data pipeline must survive: truncated, zero-length and non-video files,
audio without video, and a still image under a video name.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from PIL import Image

from stvideo.data import video_writer
from stvideo.data.video_writer import textured_frames as textured_frames  # re-exported for the tests

LEVEL_STEP = 6  # grey-level distance between consecutive frame indices (survives lossy coding)
LEVEL_BASE = 16  # grey level of frame 0 (kept away from black, where codecs clip)
MAX_INDEXED_FRAMES = (235 - LEVEL_BASE) // LEVEL_STEP + 1  # frames whose level stays below 236

_TEST_OPTIONS = {
    "h264": {"crf": "12", "preset": "veryfast", "bf": "0"},
    "vp9": {"crf": "12", "b": "0", "deadline": "realtime", "cpu-used": "8"},
    "mpeg4": {"qscale": "2"},
}


def level_of(index: int) -> int:
    """Grey level written into the left half of frame ``index`` (wraps after MAX_INDEXED_FRAMES)."""
    return LEVEL_BASE + LEVEL_STEP * (index % MAX_INDEXED_FRAMES)


def index_of(level: float) -> int:
    """Frame index (modulo MAX_INDEXED_FRAMES) whose level is nearest to a measured ``level``."""
    return int(round((float(level) - LEVEL_BASE) / LEVEL_STEP))


def indexed_frames(num_frames: int, height: int, width: int) -> np.ndarray:
    """(T, H, W, 3) uint8 frames: left half flat grey ``level_of(i)``; right half red = 0..255 ramp
    along x, green = 0..255 ramp along y, blue = ``level_of(i)`` (crop positions show in both axes)."""
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    half = width // 2
    x_ramp = np.linspace(0, 255, width - half).round().astype(np.uint8)
    y_ramp = np.linspace(0, 255, height).round().astype(np.uint8)
    for i in range(num_frames):
        frames[i, :, :half] = level_of(i)
        frames[i, :, half:, 0] = x_ramp[None, :]
        frames[i, :, half:, 1] = y_ramp[:, None]
        frames[i, :, half:, 2] = level_of(i)
    return frames


def frame_index(frame: np.ndarray) -> int:
    """Index (modulo MAX_INDEXED_FRAMES) of a decoded (H, W, 3) ``indexed_frames`` frame or crop.

    Blue is ``level_of(i)`` everywhere in the frame, so any crop of it gives the index."""
    return index_of(frame[..., 2].mean())


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: int = 30,
    codec: str = "h264",
    timestamps: list[float] | None = None,
    gop: int = 12,
    options: dict[str, str] | None = None,
) -> Path:
    """Encode ``frames`` (T, H, W, 3 uint8) with the package writer; ``timestamps`` (s) make it variable-rate.

    H.264 needs even sizes for yuv420p, so odd sizes are written as yuv444p (High 4:4:4); VP9 takes any
    size. ``options`` override the encoder options (defaults: near-lossless, no B-frames).
    """
    odd = frames.shape[1] % 2 or frames.shape[2] % 2
    defaults = _TEST_OPTIONS[codec]
    return video_writer.write_video(
        path,
        frames,
        fps,
        codec,
        options={**defaults, **(options or {})},
        gop=gop,
        pix_fmt="yuv444p" if (odd and codec == "h264") else "yuv420p",
        timestamps=timestamps,
    )


def write_indexed_video(
    path: str | Path, num_frames: int, height: int = 32, width: int = 48, codec: str = "h264", fps: int = 30
) -> Path:
    """Write an ``indexed_frames`` video (see module docstring)."""
    return write_video(path, indexed_frames(num_frames, height, width), fps=fps, codec=codec)


def write_vfr_video(path: str | Path, num_frames: int, height: int = 32, width: int = 48) -> Path:
    """Indexed H.264 mp4 whose frame intervals alternate 20 ms and 50 ms (variable frame rate)."""
    stamps = np.cumsum([0.0] + [0.02 if i % 2 == 0 else 0.05 for i in range(num_frames - 1)]).tolist()
    return write_video(path, indexed_frames(num_frames, height, width), fps=30, timestamps=stamps)


def write_truncated(path: str | Path, source: str | Path, keep_fraction: float = 0.4) -> Path:
    """Copy the first ``keep_fraction`` of ``source``'s bytes to ``path`` (a cut-off download)."""
    data = Path(source).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep_fraction)])
    return Path(path)


def write_empty(path: str | Path) -> Path:
    """A zero-length file with a video name."""
    Path(path).write_bytes(b"")
    return Path(path)


def write_not_video(path: str | Path) -> Path:
    """A text file with a video name (e.g. an HTML error page saved as .mp4)."""
    Path(path).write_text("<html><body>403 Forbidden</body></html>\n" * 40)
    return Path(path)


def write_audio_only(path: str | Path, seconds: float = 1.0) -> Path:
    """An mp4 with one AAC audio stream of silence and no video stream."""
    rate = 16000
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        for i in range(int(seconds * rate) // 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)


def write_still_image(path: str | Path) -> Path:
    """A JPEG under a video name (FFmpeg would read it as a one-frame video)."""
    Image.new("RGB", (48, 32), (128, 128, 128)).save(path, format="JPEG")
    return Path(path)
