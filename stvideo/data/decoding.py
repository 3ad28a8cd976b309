"""Decode chosen frames of a video file with decord (default) or PyAV, never touching audio.

Both backends return the same thing, ``(T, H, W, 3)`` uint8 RGB frames for a list of frame
indices, optionally resized on decode (in the decoder's scaler, which is cheaper than decoding
full size and resizing tensors). We call decord's ``VideoReader`` directly instead of
PyTorchVideo's ``EncodedVideoDecord``: the latter is time-based (``get_clip(start_sec, end_sec)``
decodes whole ranges), while the samplers here need one ``get_batch`` over the exact frame
indices of all test views at once. Only the video stream is opened, so audio is never decoded.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass

import av  # import before decord: loading decord's FFmpeg first breaks PyAV's libvpx (VP9) encoder
import decord
import numpy as np

logger = logging.getLogger("stvideo.data")

BACKENDS = ("decord", "pyav")


class DecodeError(RuntimeError):
    """A video that cannot be decoded; the message names the file and the reason."""


@dataclass(frozen=True)
class VideoInfo:
    """Frame count and average frame rate of a video stream."""

    num_frames: int
    fps: float


def resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) with the short side scaled to ``short_side``, aspect kept; unchanged if <= 0."""
    if short_side <= 0:
        return height, width
    if height <= width:
        return short_side, max(1, int(round(width * short_side / height)))
    return max(1, int(round(height * short_side / width))), short_side


def _check_file(path: str) -> None:
    if not os.path.isfile(path):
        raise DecodeError(f"{path}: file not found")
    if os.path.getsize(path) == 0:
        raise DecodeError(f"{path}: file is empty (0 bytes)")


def _video_stream(container: av.container.InputContainer, path: str) -> av.video.stream.VideoStream:
    """The first video stream; DecodeError when there is none or the file is a still image
    (FFmpeg's image demuxers, ``image2`` and ``*_pipe``, read a JPEG as a one-frame video)."""
    name = container.format.name
    if name.startswith("image2") or name.endswith("_pipe"):
        raise DecodeError(f"{path}: a still image ({name}), not a video")
    if not container.streams.video:
        raise DecodeError(f"{path}: no video stream")
    return container.streams.video[0]


def _probe(path: str) -> tuple[int, int]:
    """Stream (height, width) from the container header, without decoding a frame."""
    try:
        with av.open(path) as container:
            ctx = _video_stream(container, path).codec_context
            return ctx.height, ctx.width
    except av.FFmpegError as e:
        raise DecodeError(f"{path}: cannot open ({e})") from e


class VideoFile:
    """One opened video: ``info`` plus ``get_frames(indices)``; a context manager that frees the decoder.

    ``short_side`` > 0 makes the decoder output frames whose short side has that length; only then
    is the container probed for the frame size (a PyAV open costs ~4 ms on a webm, 10 % of decoding
    an SSv2 training clip).
    With the decord backend, decord errors that PyAV does not share (decord 0.6.0 fails to copy
    frames of some widths, e.g. 48 or 72 pixels) fall back to PyAV for that file, with a log line.
    """

    def __init__(self, path: str, backend: str = "decord", short_side: int = 0, num_threads: int = 1):
        if backend not in BACKENDS:
            raise ValueError(f"DATA.DECODING_BACKEND must be one of {BACKENDS}, got {backend!r}")
        _check_file(path)
        self.path = path
        self.backend = backend
        self.num_threads = num_threads
        self._resize: dict[str, int] = {}
        if short_side > 0:
            height, width = resized_size(*self.frame_size, short_side)
            self._resize = {"height": height, "width": width}
        self._vr = None
        if backend == "decord":
            try:
                self._vr = decord.VideoReader(
                    path, ctx=decord.cpu(0), num_threads=num_threads, **self._resize
                )
            except (decord.DECORDError, RuntimeError) as e:  # RuntimeError: "Error reading <path>"
                raise DecodeError(f"{path}: decord cannot open ({_short(e)})") from e
            num_frames, fps = len(self._vr), float(self._vr.get_avg_fps())
        else:
            num_frames, fps = self._pyav_count()
        if num_frames <= 0:
            raise DecodeError(f"{path}: no decodable video frames")
        self.info = VideoInfo(num_frames=num_frames, fps=fps if fps > 0 else 30.0)

    @functools.cached_property
    def frame_size(self) -> tuple[int, int]:
        """(height, width) of the stream before any resize, from the container header."""
        return _probe(self.path)

    def __enter__(self) -> VideoFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the decoder (decord keeps large buffers alive otherwise)."""
        self._vr = None

    def get_frames(self, indices: np.ndarray | list[int]) -> np.ndarray:
        """(len(indices), H, W, 3) uint8 frames; indices may repeat and come in any order."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size == 0:
            raise ValueError("get_frames needs at least one index")
        if indices.min() < 0 or indices.max() >= self.info.num_frames:
            raise DecodeError(
                f"{self.path}: frame index out of range [0, {self.info.num_frames}): "
                f"{indices.min()}..{indices.max()}"
            )
        # Decode each distinct frame once, in increasing order (one forward pass per keyframe interval).
        unique, inverse = np.unique(indices, return_inverse=True)
        if self._vr is not None:
            try:
                frames = self._vr.get_batch(unique.tolist()).asnumpy()
            except decord.DECORDError as e:
                _log_fallback(self.path, _short(e))
                self._vr = None
                frames = self._pyav_frames(unique)
        else:
            frames = self._pyav_frames(unique)
        if len(unique) == len(indices) and (unique == indices).all():
            return frames  # already in order, no repeats: skip the copy
        return frames[inverse]

    def _pyav_count(self) -> tuple[int, float]:
        """Frame count from the container, or by counting packets (no decoding) when it is missing."""
        try:
            with av.open(self.path) as container:
                stream = _video_stream(container, self.path)
                rate = stream.average_rate or stream.guessed_rate
                fps = float(rate) if rate else 0.0
                if stream.frames > 0:
                    return stream.frames, fps
                return sum(1 for p in container.demux(stream) if p.size > 0), fps
        except av.FFmpegError as e:
            raise DecodeError(f"{self.path}: cannot open with PyAV ({e})") from e

    def _pyav_frames(self, unique: np.ndarray) -> np.ndarray:
        """Decode forward from the start up to the last wanted frame (exact, no keyframe guessing)."""
        wanted = set(unique.tolist())
        last = int(unique[-1])
        out: dict[int, np.ndarray] = {}
        decoded = 0
        try:
            with av.open(self.path) as container:
                stream = _video_stream(container, self.path)
                stream.thread_type = "AUTO"
                stream.codec_context.thread_count = self.num_threads
                for i, frame in enumerate(container.decode(stream)):
                    decoded = i + 1
                    if i in wanted:
                        out[i] = frame.to_ndarray(format="rgb24", **self._resize)
                    if i >= last:
                        break
        except av.FFmpegError as e:
            raise DecodeError(f"{self.path}: PyAV decode error ({e})") from e
        if len(out) != len(wanted):
            raise DecodeError(
                f"{self.path}: stream ended after {decoded} frames, needed frame {last} (truncated file?)"
            )
        return np.stack([out[i] for i in unique.tolist()])


_fallback_logged: set[str] = set()


def _log_fallback(path: str, reason: str) -> None:
    """Warn about a decord -> PyAV fallback once per distinct reason and process, then at debug level."""
    key = reason.split("] ", 1)[-1]  # drop decord's timestamp prefix
    level = logging.DEBUG if key in _fallback_logged else logging.WARNING
    _fallback_logged.add(key)
    logger.log(level, "decord failed on %s (%s); decoding this file with PyAV", path, key)


def _short(e: Exception) -> str:
    """Last line of a decord error (its messages carry a long C++ location prefix)."""
    return str(e).strip().splitlines()[-1][-200:]
