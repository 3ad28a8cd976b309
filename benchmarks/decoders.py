#!/usr/bin/env python
"""Decoder shoot-out: decord vs torchcodec vs PyAV through ``VideoFile``, interleaved, one fresh process each.

For K400-like (340x256 H.264 mp4, 10 s at 30 fps, x264 GOP 250 with B-frames) and SSv2-like (427x240
VP9 webm, 4 s at 12 fps) files made with ``stvideo.data.video_writer`` (``benchmarks/data_loading.py``'s
makers), each decoder runs in its own subprocess (so its peak RSS is its own) and measures, per video:

* train: one random 16-frame clip as the dataset draws it (K400 dense 16 x 4 at 30 fps, SSv2 TSN 16
  segments), full size: open + ``get_frames`` + the damage check, ms per clip;
* test: all temporal views of the video (K400 5 dense views, SSv2 2 segment views) with the short side
  resized to 224 on decode, as the test split does, ms per video;
* backward seeks: on one open file, three 8-frame runs requested from the end towards the start (each
  call seeks back before the previous one), ms per call;
* correctness: the train clip's frames against a reference decode (PyAV straight through the file with
  ``av`` alone, every frame, rgb24): identical frames / all frames and the largest difference.

Rounds run the three decoders in rotating order, so load changes on a shared machine hit all alike;
the table gives the median over rounds. Peak RSS is the process's high-water mark while decoding (reset
after importing torch and the decoder), and its rise over the RSS after those imports.

    nice python benchmarks/decoders.py --videos 6 --rounds 3 --out decoders.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DECODERS = ("decord", "torchcodec", "pyav")
DATASETS = ("k400", "ssv2")
TEST_SHORT_SIDE = 224


def clip_indices(dataset: str, num_frames: int, fps: float, seed: int) -> np.ndarray:
    """A random training clip's frame indices (16 frames: K400 dense 16 x 4 at 30 fps, SSv2 16 segments)."""
    from stvideo.data import sampling

    rng = np.random.default_rng(seed)
    if dataset == "k400":
        stride = sampling.dense_stride(4, fps, 30)
        return sampling.dense_train_indices(num_frames, 16, stride, rng, "loop")
    return sampling.segment_train_indices(num_frames, 16, rng)


def view_indices(dataset: str, num_frames: int, fps: float) -> np.ndarray:
    """All temporal test views' frame indices, flattened (K400: 5 dense views; SSv2: 2 segment views)."""
    from stvideo.data import sampling

    if dataset == "k400":
        stride = sampling.dense_stride(4, fps, 30)
        return sampling.dense_test_indices(num_frames, 16, stride, 5, "loop").reshape(-1)
    return sampling.segment_test_indices(num_frames, 16, 2).reshape(-1)


def worker(decoder: str, dataset: str, root: Path, out: Path, save_clips: bool) -> None:
    """One decoder on one dataset's videos, in this fresh process; writes its timings as json."""
    import torch  # noqa: F401  (loaded in every DataLoader worker; torchcodec needs it anyway)

    from stvideo.data.decoding import VideoFile, require_backend

    require_backend(decoder)  # load the decoder's libraries before measuring memory
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    rss_start = _status_mb("VmHWM")
    paths = sorted(p for p in root.iterdir() if p.suffix in (".mp4", ".webm"))
    train, test, seek = [], [], []
    for v, path in enumerate(paths):
        t = time.perf_counter()
        with VideoFile(str(path), decoder) as vf:
            idx = clip_indices(dataset, vf.info.num_frames, vf.info.fps, seed=v)
            frames = vf.get_frames(idx)
            assert vf.damage is None, (path, vf.damage)
        train.append(time.perf_counter() - t)
        if save_clips:
            np.save(out.parent / f"{out.stem}_{v}.npy", frames)
            np.save(out.parent / f"{out.stem}_{v}_idx.npy", idx)
        t = time.perf_counter()
        with VideoFile(str(path), decoder, short_side=TEST_SHORT_SIDE) as vf:
            vf.get_frames(view_indices(dataset, vf.info.num_frames, vf.info.fps))
            assert vf.damage is None, (path, vf.damage)
        test.append(time.perf_counter() - t)
        with VideoFile(str(path), decoder) as vf:
            n = vf.info.num_frames
            starts = [int(n * f) for f in (0.75, 0.4, 0.05)]
            for s in starts:
                t = time.perf_counter()
                vf.get_frames(np.arange(s, min(n, s + 8)))
                seek.append(time.perf_counter() - t)
    result = {
        "train_ms": 1e3 * float(np.mean(train)),
        "test_ms": 1e3 * float(np.mean(test)),
        "seek_ms": 1e3 * float(np.mean(seek)),
        "rss_after_import_mb": rss_start,
        "peak_rss_mb": _status_mb("VmHWM"),
    }
    out.write_text(json.dumps(result))


def _status_mb(key: str) -> float:
    """A memory figure of this process from /proc/self/status (Linux), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def reference_frames(path: Path) -> np.ndarray:
    """Every frame of ``path`` in display order, decoded by PyAV alone (rgb24, full size)."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def check_clips(tmp: Path, tag: str, root: Path) -> dict[str, float]:
    """Identical frames / all frames and the largest pixel difference of a run's saved clips."""
    paths = sorted(p for p in root.iterdir() if p.suffix in (".mp4", ".webm"))
    same = total = 0
    worst = 0
    for v, path in enumerate(paths):
        ref = reference_frames(path)
        got = np.load(tmp / f"{tag}_{v}.npy")
        want = ref[np.load(tmp / f"{tag}_{v}_idx.npy")]
        diff = np.abs(got.astype(np.int16) - want.astype(np.int16)).reshape(len(got), -1).max(axis=1)
        same, total, worst = same + int((diff == 0).sum()), total + len(got), max(worst, int(diff.max()))
    return {"identical_frames": same, "frames": total, "max_diff": worst}


def main(argv: list[str] | None = None) -> None:
    """Generate the videos, run the interleaved rounds in subprocesses and print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=6, help="videos per dataset")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (each decoder once per round)")
    p.add_argument("--out", default="", help="also write the results as json here")
    p.add_argument("--worker", nargs=4, metavar=("DECODER", "DATASET", "ROOT", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--save-clips", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        decoder, dataset, root, out = args.worker
        worker(decoder, dataset, Path(root), Path(out), args.save_clips)
        return

    from data_loading import make_k400, make_ssv2  # benchmarks/ is sys.path[0] when run as a script

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        roots = {}
        for name, make in (("k400", make_k400), ("ssv2", make_ssv2)):
            roots[name] = tmp / name
            roots[name].mkdir()
            t = time.perf_counter()
            make(roots[name], args.videos)
            print(f"generated {args.videos} {name} videos in {time.perf_counter() - t:.1f} s", flush=True)
        runs: dict[tuple[str, str], list[dict]] = {(d, n): [] for d in DATASETS for n in DECODERS}
        correct = {}
        for r in range(args.rounds):
            order = DECODERS[r % 3 :] + DECODERS[: r % 3]
            for dataset in DATASETS:
                for decoder in order:
                    tag = f"{dataset}_{decoder}_{r}"
                    cmd = [sys.executable, __file__, "--worker", decoder, dataset, str(roots[dataset])]
                    cmd += [str(tmp / f"{tag}.json")] + (["--save-clips"] if r == 0 else [])
                    subprocess.run(cmd, check=True)
                    runs[dataset, decoder].append(json.loads((tmp / f"{tag}.json").read_text()))
                    if r == 0:
                        correct[dataset, decoder] = check_clips(tmp, tag, roots[dataset])
            print(f"round {r + 1}/{args.rounds} done", flush=True)

    rows = []
    for dataset in DATASETS:
        for decoder in DECODERS:
            rs = runs[dataset, decoder]
            rows.append(
                {
                    "dataset": dataset,
                    "decoder": decoder,
                    **{k: float(np.median([x[k] for x in rs])) for k in ("train_ms", "test_ms", "seek_ms")},
                    "peak_rss_mb": max(x["peak_rss_mb"] for x in rs),
                    "rss_after_import_mb": max(x["rss_after_import_mb"] for x in rs),
                    **correct[dataset, decoder],
                }
            )
    print(
        "| dataset | decoder | ms / train clip | ms / test video (all views) | ms / backward seek (8 frames) "
        "| peak RSS MB (+ over imports) | frames identical to PyAV reference (max diff) |"
    )
    print("|---|---|---|---|---|---|---|")
    for x in rows:
        print(
            f"| {x['dataset']} | {x['decoder']} | {x['train_ms']:.1f} | {x['test_ms']:.1f} "
            f"| {x['seek_ms']:.1f} "
            f"| {x['peak_rss_mb']:.0f} (+{x['peak_rss_mb'] - x['rss_after_import_mb']:.0f}) "
            f"| {x['identical_frames']}/{x['frames']} ({x['max_diff']}) |"
        )
    if args.out:
        Path(args.out).write_text(
            json.dumps({"rows": rows, "rounds": {f"{k[0]} {k[1]}": v for k, v in runs.items()}})
        )


if __name__ == "__main__":
    main()
