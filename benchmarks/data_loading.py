#!/usr/bin/env python
"""Data-loading benchmark: clips/s of one worker for the K400 and SSv2 pipelines vs raw decoding.

For each pipeline (K400 dense 16x4 / SSv2 segment 16, train, and test in both DATA.EVAL_RESIZE modes,
224 crops) this times the dataset's ``__getitem__`` in one process (= one DataLoader worker) and, on the
same videos, the raw decode of exactly the same frame indices with decord at full resolution and no
transforms. The
ratio pipeline / raw is the share of decode throughput the full pipeline keeps (target >= 70 %).
Items are uint8 clips; the float cast, normalisation and erasing noise run in ``ClipPreprocessor``
on the training device, timed separately here on the CPU (one thread) for CPU-only training.

Without ``--k400``/``--ssv2`` it generates stand-in videos: K400-like 340x256 H.264 10 s at 30 fps
(x264 defaults: GOP 250, B-frames) and SSv2-like 427x240 VP9 webm, 4 s at 12 fps. Real data:
pass a Kinetics folder (``train.csv``) or an SSv2 folder (official json + videos).

    nice python benchmarks/data_loading.py --videos 8 --repeats 2 --out bench.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import av  # noqa: F401  (before decord: decord's bundled FFmpeg otherwise breaks PyAV's VP9 encoder)
import decord
import numpy as np
import torch

from stvideo.config.defaults import get_cfg
from stvideo.data.kinetics import Kinetics
from stvideo.data.preprocessor import ClipPreprocessor
from stvideo.data.ssv2 import SSv2
from stvideo.data.transforms import views_of_test_batch
from stvideo.data.video_dataset import VideoDataset, sample_seed
from stvideo.data.video_writer import textured_frames, write_video


def make_k400(root: Path, n: int) -> None:
    """``n`` K400-like videos (340x256, 300 frames, 30 fps, x264 GOP 250 with B-frames) + csv lists."""
    lines = []
    for i in range(n):
        frames = textured_frames(300, 256, 340, seed=i)
        write_video(
            root / f"k{i}.mp4",
            frames,
            30,
            "h264",
            gop=250,
            options={"crf": "23", "preset": "veryfast", "bf": "3"},
        )
        lines.append(f"k{i}.mp4 {i % 4}")
    for split in ("train", "test"):
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")


def make_ssv2(root: Path, n: int) -> None:
    """``n`` SSv2-like videos (427x240 VP9 webm, 48 frames at 12 fps) + official-format json files."""
    templates = {f"Doing thing {c} to something": str(c) for c in range(4)}
    entries = []
    for i in range(n):
        frames = textured_frames(48, 240, 427, seed=100 + i)
        options = {"crf": "32", "b": "0", "deadline": "realtime", "cpu-used": "8"}
        write_video(root / f"{i}.webm", frames, 12, "vp9", gop=120, options=options)
        entries.append({"id": str(i), "label": "x", "template": f"Doing thing {i % 4} to [something]"})
    (root / "something-something-v2-labels.json").write_text(json.dumps(templates))
    for split in ("train", "validation"):
        (root / f"something-something-v2-{split}.json").write_text(json.dumps(entries))


def bench_cfg(root: Path, dataset: str, aug: bool, eval_resize: str = "decoder"):
    """16 x 224 config of the benchmark (K400: dense 16x4; SSv2: segment 16), 5x3 / 2x3 test views."""
    cfg = get_cfg()
    cfg.DATA.EVAL_RESIZE = eval_resize
    cfg.DATA.PATH_TO_DATA_DIR = str(root)
    cfg.DATA.NUM_FRAMES = 16
    cfg.DATA.SAMPLING_RATE = 4
    cfg.DATA.TRAIN_CROP_SIZE = 224
    cfg.DATA.TEST_CROP_SIZE = 224
    cfg.AUG.ENABLE = aug
    cfg.TEST.NUM_ENSEMBLE_VIEWS = 5 if dataset == "k400" else 2
    cfg.TEST.NUM_SPATIAL_CROPS = 3
    return cfg


def raw_indices(ds: VideoDataset, index: int, vr: decord.VideoReader) -> np.ndarray:
    """The frame indices ``ds[index]`` decodes (same seed arithmetic as the dataset)."""
    n, fps = len(vr), float(vr.get_avg_fps())
    if ds.mode == "train":
        rng = np.random.default_rng(sample_seed(ds.cfg.RNG_SEED, ds.epoch, index, 0))
        return ds.train_frame_indices(n, fps, rng)
    return ds.test_frame_indices(n, fps, ds.num_temporal_views).reshape(-1)


def raw_decode(ds: VideoDataset, index: int) -> None:
    """decord decoding the frames ``ds[index]`` uses, full size, nothing else."""
    vr = decord.VideoReader(ds.samples[index].path, ctx=decord.cpu(0), num_threads=1)
    vr.get_batch(np.unique(raw_indices(ds, index, vr)).tolist()).asnumpy()
    del vr


def time_pipeline_and_raw(ds: VideoDataset, repeats: int) -> tuple[float, float]:
    """Seconds per item of the full pipeline (decode + sample + transform) and of raw decoding.

    The two are timed alternately item by item, so load changes on a shared machine hit both alike.
    """
    ds[0]  # warm-up (imports, allocator)
    pipe = raw = 0.0
    for r in range(repeats):
        ds.set_epoch(r)
        for i in range(len(ds)):
            t0 = time.perf_counter()
            ds[i]
            t1 = time.perf_counter()
            raw_decode(ds, i)
            t2 = time.perf_counter()
            pipe, raw = pipe + t1 - t0, raw + t2 - t1
    n = repeats * len(ds)
    return pipe / n, raw / n


def time_views_on_cpu(ds: VideoDataset, repeats: int = 5) -> float:
    """Median ms to make one test item's views on the CPU, as a CPU-only evaluation does in the main
    process (the resize of full-size frames, DATA.EVAL_RESIZE torchvision, then the cut)."""
    item = ds[0]
    batch = {"frames": [item["frames"]], "crops": [item["crops"]]}
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        views_of_test_batch(batch, "cpu", ds.cfg.DATA.TEST_CROP_SIZE)
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def time_preprocessor_on_cpu(repeats: int = 20) -> float:
    """Median ms of ClipPreprocessor for one 16x224 clip with an erasing box, on the CPU."""
    clip = torch.randint(0, 256, (1, 3, 16, 224, 224), dtype=torch.uint8)
    erase = torch.tensor([[20, 30, 80, 60, 7]])
    preprocess = ClipPreprocessor(get_cfg(), "cpu")
    preprocess(clip, erase)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        preprocess(clip, erase)
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def main(argv: list[str] | None = None) -> None:
    """Run all pipelines and print (and optionally save) the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--k400", default="", help="Kinetics folder with train.csv/test.csv (default: generate)")
    p.add_argument("--ssv2", default="", help="SSv2 folder with the official json files (default: generate)")
    p.add_argument("--videos", type=int, default=8, help="videos to generate per dataset")
    p.add_argument("--repeats", type=int, default=2, help="passes over the videos")
    p.add_argument("--out", default="", help="also write the results as json here")
    p.add_argument("--modes", default="train,test", help="which pipelines: train, test or both")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # as in a DataLoader worker

    tmp = tempfile.TemporaryDirectory()
    roots = {}
    for name, given, make in (("k400", args.k400, make_k400), ("ssv2", args.ssv2, make_ssv2)):
        if given:
            roots[name] = Path(given)
        else:
            roots[name] = Path(tmp.name) / name
            roots[name].mkdir()
            t = time.perf_counter()
            make(roots[name], args.videos)
            print(f"generated {args.videos} {name} videos in {time.perf_counter() - t:.1f} s", flush=True)

    rows = []
    for name, cls in (("k400", Kinetics), ("ssv2", SSv2)):
        pipelines = [("train", False, "decoder"), ("train", True, "decoder")]
        pipelines += [("test", False, "decoder"), ("test", False, "torchvision")]
        for mode, aug, eval_resize in pipelines:
            if mode not in args.modes.split(","):
                continue
            cfg = bench_cfg(roots[name], name, aug, eval_resize)
            ds = cls(cfg, mode, "test" if mode == "test" else "train")
            clips_per_item = ds.num_views if mode == "test" else 1
            pipe, raw = time_pipeline_and_raw(ds, args.repeats)
            row = {
                "pipeline": f"{name} {mode}"
                + (" +RandAug+erase" if aug else "")
                + (f" ({eval_resize} resize)" if mode == "test" else ""),
                "clips_per_item": clips_per_item,
                "pipeline_clips_per_s": clips_per_item / pipe,
                "raw_decode_clips_per_s": clips_per_item / raw,
                "ratio": raw / pipe,
            }
            if mode == "test":
                row["views_cpu_ms_per_video"] = time_views_on_cpu(ds)
            cut = f"  views made on the CPU {row.get('views_cpu_ms_per_video', 0):.1f} ms/video"
            rows.append(row)
            print(
                f"{row['pipeline']:<32} pipeline {row['pipeline_clips_per_s']:7.2f} clips/s  "
                f"raw decode {row['raw_decode_clips_per_s']:7.2f} clips/s  ratio {row['ratio']:.2f}"
                + (cut if mode == "test" else ""),
                flush=True,
            )
    preprocess_ms = time_preprocessor_on_cpu()
    print(f"ClipPreprocessor on the CPU: {preprocess_ms:.2f} ms per 16x224 clip", flush=True)
    if args.out:
        result = {"pipelines": rows, "preprocessor_cpu_ms": preprocess_ms}
        Path(args.out).write_text(json.dumps(result, indent=1))
    tmp.cleanup()


if __name__ == "__main__":
    main()
