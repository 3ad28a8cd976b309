"""Decode chosen frames of a video file with decord (default), PyAV or torchcodec, never touching audio.

All backends return the same thing, ``(T, H, W, 3)`` uint8 RGB frames for a list of frame
indices, optionally resized on decode (in the decoder's scaler, which is cheaper than decoding
full size and resizing tensors). We call decord's ``VideoReader`` directly instead of
PyTorchVideo's ``EncodedVideoDecord``: the latter is time-based (``get_clip(start_sec, end_sec)``
decodes whole ranges), while the samplers here need one ``get_batch`` over the exact frame
indices of all test views at once. Only the video stream is opened, so audio is never decoded.

torchcodec (``VideoDecoder`` in exact seek mode, frames by index in presentation order) links the
system FFmpeg libraries (Debian 12: ``libavcodec59`` and friends, see README); it is imported on first
use, and a missing library raises ``DecoderUnavailableError`` naming it. Its frame rate and declared
frame count come from the same PyAV header read as the other backends', which also rejects stills and
audio-only files before torchcodec opens them.

Damaged files that still decode are detected on the way, without a second decode (``VideoFile.damage``):

* truncated: fewer than ``1 - FRAME_TOLERANCE`` of the frames the container declares (index frame count,
  or stream / container duration x fps) are decodable (decord: its packet index; PyAV: packets counted;
  torchcodec: its packet scan, or PyAV's count when opening logged errors);
* decoder errors: FFmpeg logged errors (AV_LOG_ERROR or worse) while the file was opened or while the
  frames were decoded, captured from every FFmpeg build by ``ffmpeg_log`` (never parsed from stderr).
  Corruption inside compressed data that still parses (VP9 has no checksums) is invisible to all.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import av  # import before decord: loading decord's FFmpeg first breaks PyAV's libvpx (VP9) encoder
import decord
import numpy as np

from . import ffmpeg_log

logger = logging.getLogger("stvideo.data")

BACKENDS = ("decord", "pyav", "torchcodec")
DEVICES = ("cpu", "cuda")  # cuda: torchcodec only (NVDEC), frames still returned to the host
# Debian 12's runtime libraries of the FFmpeg that torchcodec links (libavutil.so.57 & co., FFmpeg 5.1).
FFMPEG_DEBIAN_PACKAGES = (
    "libavutil57 libavcodec59 libavformat59 libavdevice59 libavfilter8 libswscale6 libswresample4"
)


class DecodeError(RuntimeError):
    """A video that cannot be decoded; the message names the file and the reason."""


class DecoderUnavailableError(RuntimeError):
    """The chosen backend cannot run on this machine (a missing package or system library)."""


@functools.cache
def _torchcodec():  # -> the torchcodec module, FFmpeg loaded
    """torchcodec with its FFmpeg loaded (once per process); DecoderUnavailableError names what is missing."""
    try:
        import torchcodec
        import torchcodec.decoders
        import torchcodec.transforms
    except ImportError as e:
        raise DecoderUnavailableError(
            f"DATA.DECODING_BACKEND torchcodec: torchcodec is not installed ({e}); "
            "pip install -c constraints.txt torchcodec"
        ) from e
    if torchcodec.ffmpeg_major_version is None:
        # torchcodec's own loader: one attempt per FFmpeg major version, each naming what dlopen missed.
        from torchcodec._internally_replaced_utils import load_core_libraries

        try:
            load_core_libraries()
        except Exception as e:  # noqa: BLE001 (its RuntimeError or an OSError from dlopen)
            raise DecoderUnavailableError(missing_ffmpeg_message(str(e))) from e
    ffmpeg_log.hook_loaded_libraries()  # torchcodec's FFmpeg is a separate libavutil
    return torchcodec


def missing_ffmpeg_message(loader_error: str) -> str:
    """One line naming the FFmpeg libraries torchcodec could not load (from its loader's error text)."""
    missing = list(
        dict.fromkeys(re.findall(r"(lib\w+\.so(?:\.\d+)*): cannot open shared object", loader_error))
    )
    partial = [lib for lib in missing if not lib.startswith("libavutil")]  # an FFmpeg present but incomplete
    if partial:
        what = "missing " + ", ".join(partial)
    elif missing:
        what = "no FFmpeg 4-9 found (missing " + ", ".join(missing) + ")"
    else:
        what = loader_error.strip().splitlines()[0][:200]
    return (
        f"DATA.DECODING_BACKEND torchcodec needs the system FFmpeg libraries: {what}. "
        f"On Debian 12: apt-get install {FFMPEG_DEBIAN_PACKAGES}"
    )


def require_backend(backend: str) -> None:
    """Raise ValueError for an unknown backend, DecoderUnavailableError if it cannot load here."""
    if backend not in BACKENDS:
        raise ValueError(f"DATA.DECODING_BACKEND must be one of {BACKENDS}, got {backend!r}")
    if backend == "torchcodec":
        _torchcodec()


FRAME_TOLERANCE = 0.1  # truncated: more than this share of the declared frames (and > 2 frames) missing
MIN_MISSING_FRAMES = 3
MAX_MESSAGES = 3  # distinct FFmpeg lines kept in a DamageReport


class DamagedVideoError(DecodeError):
    """A video that decodes but is damaged (DATA.ON_DAMAGED skip); ``report`` says how."""

    def __init__(self, path: str, report: DamageReport):
        super().__init__(f"{path}: damaged ({report.reason})")
        self.report = report


@dataclass(frozen=True)
class DamageReport:
    """Why a decodable file is damaged: truncation (declared vs decodable frames) and/or decoder errors."""

    declared_frames: int | None  # from the container header; None when it declares nothing
    decodable_frames: int
    decoder_errors: int  # FFmpeg error lines while opening and decoding
    first_bad_frame: int | None  # first frame decoded after an error (PyAV: exact; decord: first of the
    # batch) or the first missing frame of a truncated file, whichever comes first
    messages: tuple[str, ...] = ()  # the first distinct FFmpeg error lines

    @property
    def truncated(self) -> bool:
        return is_truncated(self.declared_frames, self.decodable_frames)

    @property
    def reason(self) -> str:
        parts = []
        if self.truncated:
            parts.append(
                f"truncated: {self.decodable_frames} of {self.declared_frames} declared frames decodable"
            )
        if self.decoder_errors:
            first = f": {self.messages[0]}" if self.messages else ""
            parts.append(f"{self.decoder_errors} FFmpeg errors{first}")
        if self.first_bad_frame is not None:
            parts.append(f"first bad frame {self.first_bad_frame}")
        return "; ".join(parts)


def is_truncated(declared: int | None, decodable: int) -> bool:
    """Far fewer decodable frames than declared: more than FRAME_TOLERANCE of them and >= 3 frames missing."""
    if not declared:
        return False
    missing = declared - decodable
    return missing >= MIN_MISSING_FRAMES and missing > FRAME_TOLERANCE * declared


def damage_report(
    declared: int | None, decodable: int, lines: list[ffmpeg_log.LogLine], first_bad: int | None
) -> DamageReport | None:
    """A DamageReport when the file is truncated or FFmpeg logged errors, else None."""
    truncated = is_truncated(declared, decodable)
    if not lines and not truncated:
        return None
    if truncated:
        first_bad = decodable if first_bad is None else min(first_bad, decodable)
    messages = tuple(dict.fromkeys(str(line) for line in lines))[:MAX_MESSAGES]
    return DamageReport(declared, decodable, len(lines), first_bad, messages)


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


def declared_frames(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> int | None:
    """Frames the container header declares: the index count (mp4), else duration x average rate."""
    if stream.frames > 0:
        return int(stream.frames)
    rate = stream.average_rate or stream.guessed_rate
    if not rate:
        return None
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration:
        seconds = container.duration / av.time_base
    else:
        return None
    return int(round(seconds * float(rate))) or None


def _probe(path: str) -> tuple[int, int, int | None, float]:
    """Stream (height, width, declared frames, average fps or 0) from the container header; no decoding."""
    try:
        with av.open(path) as container:
            stream = _video_stream(container, path)
            rate = stream.average_rate or stream.guessed_rate
            height, width = stream.codec_context.height, stream.codec_context.width
            return height, width, declared_frames(container, stream), float(rate) if rate else 0.0
    except av.FFmpegError as e:
        raise DecodeError(f"{path}: cannot open ({e})") from e


class VideoFile:
    """One opened video: ``info`` plus ``get_frames(indices)``; a context manager that frees the decoder.

    ``short_side`` > 0 makes the decoder output frames whose short side has that length; only then
    is the container probed for the frame size (a PyAV open costs ~4 ms on a webm, 10 % of decoding
    an SSv2 training clip).
    With the decord backend, decord errors that PyAV does not share (decord 0.6.0 fails to copy
    frames of some widths, e.g. 48 or 72 pixels, or stops at a corrupt packet) fall back to PyAV for
    that file, with a log line; so does a torchcodec decode that stops at a packet the decoder rejects
    (PyAV repeats the previous frame in its place). ``device`` "cuda" decodes with torchcodec on the GPU.
    ``damage`` reports truncation and the FFmpeg errors of opening and of
    every ``get_frames`` so far (see the module docstring).
    """

    def __init__(
        self,
        path: str,
        backend: str = "decord",
        short_side: int = 0,
        num_threads: int = 1,
        device: str = "cpu",
    ):
        require_backend(backend)
        if device not in DEVICES or (device == "cuda" and backend != "torchcodec"):
            raise ValueError(f"DATA.DECODE_DEVICE {device!r}: cpu, or cuda with the torchcodec backend")
        _check_file(path)
        self.path = path
        self.backend = backend
        self.num_threads = num_threads
        self._resize: dict[str, int] = {}
        if short_side > 0:
            height, width = resized_size(*self.frame_size, short_side)
            self._resize = {"height": height, "width": width}
        self._vr = None
        self._tc = None  # torchcodec VideoDecoder
        self._errors: list[ffmpeg_log.LogLine] = []
        self._first_bad: int | None = None
        try:
            with ffmpeg_log.capture() as log:
                if backend == "decord":
                    try:
                        self._vr = decord.VideoReader(
                            path, ctx=decord.cpu(0), num_threads=num_threads, **self._resize
                        )
                    except (decord.DECORDError, RuntimeError) as e:  # RuntimeError: "Error reading <path>"
                        raise DecodeError(f"{path}: decord cannot open ({_short(e)})") from e
                    num_frames, fps = len(self._vr), float(self._vr.get_avg_fps())
                elif backend == "torchcodec":
                    num_frames, fps = self._open_torchcodec(device, log)
                else:
                    num_frames, fps, self.declared_frames = self._pyav_count(log)
        except BaseException:
            self.close()  # now, in a capture: freeing a decoder logs, and the garbage collector runs anywhere
            raise
        self._open_errors = log.lines  # errors while opening / indexing: no frame to pin them on
        self._errors = list(self._open_errors)
        if num_frames <= 0:
            self.close()
            raise DecodeError(f"{path}: no decodable video frames")
        self.info = VideoInfo(num_frames=num_frames, fps=fps if fps > 0 else 30.0)

    @functools.cached_property
    def _header(self) -> tuple[int, int, int | None, float]:
        return _probe(self.path)

    @property
    def frame_size(self) -> tuple[int, int]:
        """(height, width) of the stream before any resize, from the container header."""
        return self._header[:2]

    @functools.cached_property
    def declared_frames(self) -> int | None:
        """Frames the container header declares (None: it declares neither count nor duration)."""
        return self._header[2]

    @property
    def damage(self) -> DamageReport | None:
        """Truncation and FFmpeg errors seen so far (opening + every get_frames), None for a clean file."""
        return damage_report(self.declared_frames, self.info.num_frames, self._errors, self._first_bad)

    def __enter__(self) -> VideoFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the decoder (decord keeps large buffers alive otherwise); an interrupt that arrives
        while its FFmpeg logs the teardown is raised here (``ffmpeg_log.capture``)."""
        with ffmpeg_log.capture():
            self._vr = self._tc = None

    def _open_torchcodec(self, device: str, log: ffmpeg_log.Capture) -> tuple[int, float]:
        """(decodable frames, fps) of a torchcodec ``VideoDecoder`` in exact mode (its packet scan is the
        frame index). The PyAV header read gives the fps (as the other backends read it) and rejects stills;
        when opening logged FFmpeg errors (a cut file), PyAV's packet count gives the frames PyAV, the
        fallback, can deliver."""
        tc = _torchcodec()
        fps = self._header[3]
        resize = (
            [tc.transforms.Resize((self._resize["height"], self._resize["width"]))] if self._resize else []
        )
        try:
            self._tc = tc.decoders.VideoDecoder(
                self.path,
                seek_mode="exact",
                dimension_order="NHWC",
                num_ffmpeg_threads=self.num_threads,
                device=device,
                transforms=resize,
            )
        except (RuntimeError, ValueError) as e:
            raise DecodeError(f"{self.path}: torchcodec cannot open ({_torchcodec_reason(e)})") from e
        if len(log):
            return self._pyav_count(log)[0], fps
        return len(self._tc), fps

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
        with ffmpeg_log.capture() as log:
            first_bad = None
            if self._vr is not None:
                try:
                    frames = self._vr.get_batch(unique.tolist()).asnumpy()
                    first_bad = int(unique[0])  # decord decodes the whole batch in one call
                except decord.DECORDError as e:
                    _log_fallback(self.path, "decord", _short(e))
                    self._vr = None
                    log.drop_foreign()  # the PyAV decode below reports this file's errors exactly
            elif self._tc is not None:
                try:
                    frames = self._tc.get_frames_at(unique.tolist()).data.cpu().numpy()
                    first_bad = int(unique[0])  # one call for the batch, as decord
                except (RuntimeError, IndexError) as e:  # a rejected packet; an index past a cut file
                    _log_fallback(self.path, "torchcodec", _torchcodec_reason(e))
                    self._tc = None
                    log.drop_foreign()
            if self._vr is None and self._tc is None:
                frames, first_bad = self._pyav_frames(unique, log)
        if len(log) and self._first_bad is None:
            self._first_bad = first_bad
        self._errors += log.lines
        if len(unique) == len(indices) and (unique == indices).all():
            return frames  # already in order, no repeats: skip the copy
        return frames[inverse]

    def scan(self, chunk: int = 16) -> int:
        """Decode every frame once, keeping none (``tools/check_videos.py --deep``); returns the number
        of frames decoded. decord decodes ``chunk`` frames per batch (its first bad frame is exact to a
        chunk); PyAV, or decord after a fallback, makes one forward pass. Errors land in ``damage``."""
        n = self.info.num_frames
        for start in range(0, n, chunk):
            if self._vr is None and self._tc is None:
                break
            self.get_frames(np.arange(start, min(n, start + chunk)))
        if self._vr is not None or self._tc is not None:
            return n
        self._errors, self._first_bad = list(self._open_errors), None  # the pass below sees it all
        decoded, first_bad = 0, None
        with ffmpeg_log.capture() as log:
            try:
                with av.open(self.path) as container:
                    stream = _threaded_stream(container, self.path, self.num_threads)
                    for frame in _decode_skipping_bad_packets(container, stream):
                        if first_bad is None and len(log):
                            first_bad = decoded
                        decoded += frame is not None
            except av.FFmpegError as e:
                raise DecodeError(f"{self.path}: PyAV decode error ({e})") from e
        if len(log):
            self._first_bad = decoded if first_bad is None else first_bad
        self._errors += log.lines
        return decoded

    def _pyav_count(self, log: ffmpeg_log.Capture) -> tuple[int, float, int | None]:
        """(decodable, fps, declared): packets counted by demuxing (no decoding; the header's count of
        a cut mp4 still lists the lost frames) and the frames the header declares. When the demuxer
        logs an error (a cut file: "partial file", "File ended prematurely"), the packet it was reading
        is incomplete and not counted."""
        try:
            with av.open(self.path) as container:
                stream = _video_stream(container, self.path)
                rate = stream.average_rate or stream.guessed_rate
                fps = float(rate) if rate else 0.0
                declared = declared_frames(container, stream)
                errors_before = len(log)
                count = 0
                try:
                    for p in container.demux(stream):
                        count += p.size > 0
                except av.FFmpegError:  # a demux error after some packets: keep what was read
                    if count == 0:
                        raise
                if len(log) > errors_before:
                    count = max(0, count - 1)
                return count, fps, declared
        except av.FFmpegError as e:
            raise DecodeError(f"{self.path}: cannot open with PyAV ({e})") from e

    def _pyav_frames(self, unique: np.ndarray, log: ffmpeg_log.Capture) -> tuple[np.ndarray, int | None]:
        """Decode forward from the start up to the last wanted frame (exact, no keyframe guessing).

        A packet the decoder rejects (InvalidDataError: a corrupt frame) is logged by FFmpeg and its
        frame is replaced by the previous one, so later indices stay in place. Also returns the first
        frame decoded after an FFmpeg error (None when there was none)."""
        wanted = set(unique.tolist())
        last = int(unique[-1])
        out: dict[int, np.ndarray] = {}
        decoded = 0
        first_bad = None
        previous = None
        try:
            with av.open(self.path) as container:
                stream = _threaded_stream(container, self.path, self.num_threads)
                for frame in _decode_skipping_bad_packets(container, stream):
                    if frame is None:  # a rejected packet: repeat the last good frame in its place
                        if previous is None:
                            continue
                        frame = previous
                    previous = frame
                    if first_bad is None and len(log):
                        first_bad = decoded
                    i, decoded = decoded, decoded + 1
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
        if first_bad is None and len(log):
            first_bad = decoded
        return np.stack([out[i] for i in unique.tolist()]), first_bad


def _threaded_stream(
    container: av.container.InputContainer, path: str, threads: int
) -> av.video.stream.VideoStream:
    """The video stream of ``container``, decoded with FFmpeg's automatic threading on ``threads``."""
    stream = _video_stream(container, path)
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = threads
    return stream


def _decode_skipping_bad_packets(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> Iterator[av.VideoFrame | None]:
    """Frames in display order, and None for each packet the decoder rejects as invalid data (FFmpeg
    logs why); a corrupt frame then costs one frame, not the rest of the file."""
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.error.InvalidDataError:
            if packet.size:
                yield None


_fallback_logged: set[str] = set()


def _log_fallback(path: str, backend: str, reason: str) -> None:
    """Warn about a fallback to PyAV once per distinct reason and process, then at debug level."""
    key = reason.split("] ", 1)[-1]  # drop decord's timestamp prefix
    level = logging.DEBUG if key in _fallback_logged else logging.WARNING
    _fallback_logged.add(key)
    logger.log(level, "%s failed on %s (%s); decoding this file with PyAV", backend, path, key)


def _torchcodec_reason(e: Exception) -> str:
    """torchcodec's message without its C++ location prefix ("fn, /path/File.cpp:123, reason")."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return re.sub(r"^.*?\.cpp:\d+, ", "", text)[:200]


def _short(e: Exception) -> str:
    """Last line of a decord error (its messages carry a long C++ location prefix)."""
    return str(e).strip().splitlines()[-1][-200:]
