#!/usr/bin/env python
"""Scan an annotation file in parallel, report undecodable videos and write a clean copy.

Kinetics-style lists (``path label`` / ``path,label`` / tab) and SSv2 json splits are accepted.
Each video is opened and its first, last and three evenly spaced middle frames are decoded with
the chosen backend (what training will do). Undecodable files are printed with the reason and
written to ``--bad`` (``path<TAB>reason``); the remaining entries go to ``--clean`` in the input's
own format, ready to use as the new annotation file. Exit status 1 when anything was bad.

``--deep`` decodes every frame of every file instead (in parallel, with a progress bar) and also finds
damaged files that decode: truncated (far fewer decodable frames than the container declares) or with
FFmpeg decoder errors. Each damaged file is printed as ``DAMAGED<TAB>path<TAB>declared D, decodable N,
decoded K, E decoder errors, first bad frame F: reason`` and written to ``--damaged``; ``--clean`` then
holds only the clean entries. Exit status 1 when anything was undecodable or damaged.

    python tools/check_videos.py data/k400/train.csv --prefix /datasets/k400 --workers 8 \\
        --clean data/k400/train_clean.csv --bad bad_train.txt
    python tools/check_videos.py data/k400/train.csv --deep --damaged damaged_train.txt
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor

from tqdm import tqdm

from stvideo.data.decoding import BACKENDS, VideoFile
from stvideo.data.kinetics import split_line


def check_video(path: str, backend: str = "decord") -> str | None:
    """None if ``path`` decodes (first, last and 3 middle frames), else the reason."""
    try:
        with VideoFile(path, backend) as vf:
            n = vf.info.num_frames
            vf.get_frames(sorted({0, n // 4, n // 2, (3 * n) // 4, n - 1}))
    except Exception as e:  # noqa: BLE001 - any failure is a finding to report, not a crash
        return f"{type(e).__name__}: {str(e).removeprefix(path + ': ')}"
    return None


def deep_check_video(path: str, backend: str = "decord") -> dict:
    """Decode every frame: ``{"status": ok|damaged|undecodable, "reason", "declared", "decodable",
    "decoded", "decoder_errors", "first_bad_frame"}``."""
    row = {"status": "ok", "reason": "", "declared": None, "decodable": 0, "decoded": 0}
    row.update(decoder_errors=0, first_bad_frame=None)
    try:
        with VideoFile(path, backend) as vf:
            row["decodable"] = vf.info.num_frames
            row["decoded"] = vf.scan()
            row["declared"] = vf.declared_frames
            report = vf.damage
    except Exception as e:  # noqa: BLE001 - any failure is a finding to report, not a crash
        row.update(status="undecodable", reason=f"{type(e).__name__}: {str(e).removeprefix(path + ': ')}")
        return row
    reasons = [report.reason] if report else []
    if row["decoded"] < row["decodable"]:
        reasons.append(f"{row['decodable'] - row['decoded']} of {row['decodable']} frames did not decode")
    if report:
        row.update(decoder_errors=report.decoder_errors, first_bad_frame=report.first_bad_frame)
    if reasons:
        row.update(status="damaged", reason="; ".join(reasons))
    return row


def deep_summary(row: dict) -> str:
    """One line: declared vs decodable vs decoded frames, decoder errors, first bad frame, reason."""
    return (
        f"declared {row['declared']}, decodable {row['decodable']}, decoded {row['decoded']}, "
        f"{row['decoder_errors']} decoder errors, first bad frame {row['first_bad_frame']}: {row['reason']}"
    )


def _check(job: tuple[str, str]) -> str | None:
    return check_video(*job)


def _deep_check(job: tuple[str, str]) -> dict:
    return deep_check_video(*job)


def read_entries(annotation: str, fmt: str, prefix: str, separator: str, video_ext: str) -> tuple[list, list]:
    """(entries, paths): raw entries to write back (csv lines or json objects) and their video paths."""
    base = prefix or os.path.dirname(os.path.abspath(annotation))
    if fmt == "ssv2":
        with open(annotation) as f:
            entries = json.load(f)
        return entries, [os.path.join(base, str(e["id"]) + video_ext) for e in entries]
    entries, paths = [], []
    with open(annotation, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            path, label = split_line(line, separator)
            if lineno == 1 and not label.lstrip("-").isdigit():
                entries.append(line)  # header: kept in the clean file, not checked
                paths.append(None)
                continue
            entries.append(line)
            paths.append(path if os.path.isabs(path) else os.path.join(base, path))
    return entries, paths


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("annotation", help="train/val/test csv, or an SSv2 something-something-v2-*.json")
    p.add_argument("--format", choices=("auto", "kinetics", "ssv2"), default="auto")
    p.add_argument(
        "--prefix", default="", help="joined onto relative paths (default: the annotation's folder)"
    )
    p.add_argument("--separator", default="", help='csv separator; "" = detect per line')
    p.add_argument("--video-ext", default=".webm", help="SSv2: extension appended to video ids")
    p.add_argument("--backend", choices=BACKENDS, default="decord")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--clean", default="", help="write the decodable entries here (input format)")
    p.add_argument("--bad", default="", help="write 'path<TAB>reason' of undecodable videos here")
    p.add_argument("--deep", action="store_true", help="decode every frame; also find damaged videos")
    p.add_argument("--damaged", default="", help="--deep: write 'path<TAB>summary' of damaged videos here")
    args = p.parse_args(argv)

    fmt = args.format
    if fmt == "auto":
        fmt = "ssv2" if args.annotation.endswith(".json") else "kinetics"
    entries, paths = read_entries(args.annotation, fmt, args.prefix, args.separator, args.video_ext)
    to_check = [path for path in paths if path is not None]
    if args.deep:
        return _deep_main(args, fmt, entries, paths, to_check)
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        results = iter(pool.map(_check, [(path, args.backend) for path in to_check], chunksize=4))
        reasons = [next(results) if path is not None else None for path in paths]

    bad = [(path, reason) for path, reason in zip(paths, reasons, strict=True) if reason is not None]
    clean = [entry for entry, reason in zip(entries, reasons, strict=True) if reason is None]
    for path, reason in bad:
        print(f"BAD\t{path}\t{reason}")
    print(f"checked {len(to_check)} videos: {len(to_check) - len(bad)} ok, {len(bad)} undecodable")
    if args.bad:
        with open(args.bad, "w") as f:
            f.writelines(f"{path}\t{reason}\n" for path, reason in bad)
    _write_clean(args.clean, fmt, clean)
    return 1 if bad else 0


def _write_clean(path: str, fmt: str, clean: list) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as f:
            if fmt == "ssv2":
                json.dump(clean, f)
            else:
                f.writelines(line + "\n" for line in clean)


def _deep_main(args: argparse.Namespace, fmt: str, entries: list, paths: list, to_check: list) -> int:
    """--deep: every frame of every video, in parallel, with a progress bar on stderr."""
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        jobs = pool.map(_deep_check, [(path, args.backend) for path in to_check])
        results = iter(list(tqdm(jobs, total=len(to_check), desc="decoding every frame", unit="video")))
        rows = [next(results) if path is not None else None for path in paths]
    bad = [
        (path, r["reason"]) for path, r in zip(paths, rows, strict=True) if r and r["status"] == "undecodable"
    ]
    damaged = [
        (path, deep_summary(r)) for path, r in zip(paths, rows, strict=True) if r and r["status"] == "damaged"
    ]
    clean = [entry for entry, r in zip(entries, rows, strict=True) if r is None or r["status"] == "ok"]
    for path, reason in bad:
        print(f"BAD\t{path}\t{reason}")
    for path, summary in damaged:
        print(f"DAMAGED\t{path}\t{summary}")
    ok = len(to_check) - len(bad) - len(damaged)
    print(
        f"checked {len(to_check)} videos (every frame): "
        f"{ok} ok, {len(damaged)} damaged, {len(bad)} undecodable"
    )
    if args.bad:
        with open(args.bad, "w") as f:
            f.writelines(f"{path}\t{reason}\n" for path, reason in bad)
    if args.damaged:
        with open(args.damaged, "w") as f:
            f.writelines(f"{path}\t{summary}\n" for path, summary in damaged)
    _write_clean(args.clean, fmt, clean)
    return 1 if bad or damaged else 0


if __name__ == "__main__":
    sys.exit(main())
