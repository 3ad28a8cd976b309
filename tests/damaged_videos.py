"""Damaged-but-decodable video files, made from good ones the way downloads and copies get damaged.

* ``write_cut``: the first part of a file's bytes (a partial download; a webm keeps decoding);
* ``write_faststart``: a remux with the index (``moov``) first, so a cut copy still opens;
* ``write_flipped``: ``count`` bytes inverted from the start of the packet nearest the middle of the
  file (bit rot across a frame boundary: the frame's length prefix no longer parses). Bytes inverted
  inside a frame's coded data are mostly concealed without a word from FFmpeg (see docs/data.md);
* ``write_corrupt_frame``: one frame's packet inverted, the container left intact (a VP9 frame whose
  header no longer parses).
"""

from __future__ import annotations

from pathlib import Path

import av


def write_cut(path: str | Path, source: str | Path, keep_fraction: float) -> Path:
    """The first ``keep_fraction`` of ``source``'s bytes."""
    data = Path(source).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep_fraction)])
    return Path(path)


def write_faststart(path: str | Path, source: str | Path) -> Path:
    """``source`` (mp4) remuxed with ``movflags faststart``: the index before the frame data."""
    with av.open(str(source)) as src, av.open(str(path), "w", options={"movflags": "faststart"}) as dst:
        stream = src.streams.video[0]
        out = dst.add_stream_from_template(stream)
        for packet in src.demux(stream):
            if packet.dts is None:
                continue
            packet.stream = out
            dst.mux(packet)
    return Path(path)


def write_flipped(path: str | Path, source: str | Path, count: int = 200) -> Path:
    """``source`` with ``count`` bytes inverted from the start of the packet nearest its middle."""
    data = bytearray(Path(source).read_bytes())
    with av.open(str(source)) as src:
        starts = [p.pos for p in src.demux(video=0) if p.size and p.pos is not None and p.pos >= 0]
    start = min(starts, key=lambda pos: abs(pos - len(data) // 2))
    for i in range(start, min(len(data), start + count)):
        data[i] ^= 0xFF
    Path(path).write_bytes(bytes(data))
    return Path(path)


def write_corrupt_frame(path: str | Path, source: str | Path, frame: int) -> Path:
    """``source`` remuxed with every byte of packet ``frame`` (decode order) inverted."""
    with av.open(str(source)) as src, av.open(str(path), "w") as dst:
        stream = src.streams.video[0]
        out = dst.add_stream_from_template(stream)
        for i, packet in enumerate(p for p in src.demux(stream) if p.dts is not None):
            if i == frame:
                bad = av.Packet(bytes(b ^ 0xFF for b in bytes(packet)))
                bad.pts, bad.dts, bad.time_base = packet.pts, packet.dts, packet.time_base
                bad.is_keyframe = packet.is_keyframe
                packet = bad
            packet.stream = out
            dst.mux(packet)
    return Path(path)
