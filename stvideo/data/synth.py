"""Synthetic video dataset: tiny encoded videos whose classes can only be told apart over time.

Every video shows one "actor" (a bar, ellipse or triangle in red, green or blue) over a stationary
noise texture with small distractor discs wandering at random. The ten classes differ only in how
the actor changes over time (direction of motion, rotation sense, growing/shrinking, order of colour
changes); every attribute of a single frame (position, angle, size, shape, colour, clutter) has the
same distribution in every class, so a single frame carries no class information.

Written as real files in the layouts real datasets use (Kinetics csv, optionally SSv2 json + webm), so
the whole data pipeline (decoding, sampling, flips with label maps) is exercised end to end.
"""

from __future__ import annotations

import fcntl
import json
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from fvcore.common.config import CfgNode

from .video_writer import CODECS, write_video

logger = logging.getLogger(__name__)

# Bump when the rendering changes, so an old cache is reported as different instead of silently reused.
GENERATOR_VERSION = 4
META_FILE = "synth_meta.json"
SPLITS = ("train", "val", "test")

# (folder name, SSv2 template, label under horizontal flip). Pairs that swap under flip are adjacent.
CLASSES: tuple[tuple[str, str, int], ...] = (
    ("moving_left_to_right", "Moving [something] from left to right", 1),
    ("moving_right_to_left", "Moving [something] from right to left", 0),
    ("moving_down", "Moving [something] down", 2),
    ("moving_up", "Moving [something] up", 3),
    ("rotating_clockwise", "Turning [something] clockwise", 5),
    ("rotating_counterclockwise", "Turning [something] counterclockwise", 4),
    ("growing", "Approaching [something] with your camera", 6),
    ("shrinking", "Moving away from [something] with your camera", 7),
    ("colour_red_green_blue", "Changing [something] from red to green to blue", 8),
    ("colour_red_blue_green", "Changing [something] from red to blue to green", 9),
)
CLASS_NAMES: tuple[str, ...] = tuple(c[0] for c in CLASSES)
NUM_CLASSES = len(CLASSES)
SHAPES = ("bar", "ellipse", "triangle")
_QUALITY = {
    "h264": {"crf": "16", "preset": "veryfast"},
    "vp9": {"crf": "24", "b": "0", "deadline": "realtime", "cpu-used": "8"},
}

# Actor colours (RGB, 0-255) in cycle order red -> green -> blue; jittered per video.
_PALETTE = np.array([[225, 45, 40], [40, 200, 60], [50, 80, 235]], dtype=np.float32)
_SPLIT_ID = {"train": 0, "val": 1, "test": 2, "ssv2": 3}


class SynthDatasetError(RuntimeError):
    """The synthetic dataset folder cannot be used or created; the message names the folder."""


# --------------------------------------------------------------------------------------------- #
# Rendering
# --------------------------------------------------------------------------------------------- #
def _actor_track(label: int, rng: np.random.Generator, t: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """Per-frame actor state. One attribute moves (chosen by ``label``), the others stay at a random value.

    Every moving attribute starts at a uniformly random phase, so its value in any one frame has the
    same distribution as the static value drawn for the other classes: uniform position on the torus,
    uniform angle, uniform length in [lmin, lmax], uniform colour index.
    """
    n = len(t)
    lmin, lmax = 0.20 * size, 0.36 * size
    pos0 = rng.uniform(0, size, 2)
    theta0 = rng.uniform(0, 2 * np.pi)
    length0 = rng.uniform(lmin, lmax)
    colour0 = rng.integers(3)
    # Draw every class's motion parameters for every video so the random stream (and thus the
    # static attributes and clutter) does not depend on the label.
    direction_jitter = rng.normal(0, np.deg2rad(10))
    speed = rng.uniform(1.5, 2.5) * size / 64  # px / frame (1.5-2.5 at the default 64 px)
    omega = np.deg2rad(rng.uniform(8.0, 14.0))  # rad / frame; <= 56 deg per 4-frame stride
    grow_period = rng.uniform(10, 16)  # frames per sawtooth ramp
    grow_phase = rng.uniform()
    colour_period = rng.uniform(5, 8)  # frames per colour; > max stride 4 so order is never aliased
    colour_phase = rng.uniform()

    pos = np.tile(pos0, (n, 1))
    theta = np.full(n, theta0)
    length = np.full(n, length0)
    colour = np.full(n, colour0)
    if label < 4:  # translation: +x, -x, +y (down), -y (up); wraps around (torus)
        base = (0.0, np.pi, np.pi / 2, -np.pi / 2)[label] + direction_jitter
        pos = pos0 + speed * t[:, None] * np.array([np.cos(base), np.sin(base)])
    elif label < 6:  # rotation; angle grows clockwise on screen because y points down
        theta = theta0 + (1 if label == 4 else -1) * omega * t
    elif label < 8:  # sawtooth growth / shrinkage
        sign = 1 if label == 6 else -1
        length = lmin + (lmax - lmin) * np.mod(grow_phase + sign * t / grow_period, 1.0)
    else:  # colour cycle r->g->b or r->b->g
        sign = 1 if label == 8 else -1
        colour = np.mod(colour0 + sign * np.floor(colour_phase + t / colour_period), 3).astype(int)
    return {"pos": np.mod(pos, size), "theta": theta, "length": length, "colour": colour}


def _torus_delta(coord: np.ndarray, center: np.ndarray, size: int) -> np.ndarray:
    """Signed shortest offset ``coord - center`` on a circle of circumference ``size``."""
    return np.mod(coord - center + size / 2, size) - size / 2


def _smooth_noise(rng: np.random.Generator, size: int, channels: int, cutoff: float) -> np.ndarray:
    """Stationary, periodic low-pass noise (H, W, C) with unit std: no position is special."""
    white = rng.normal(size=(channels, size, size))
    f = np.fft.fftfreq(size)
    radius = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    smooth = np.fft.ifft2(np.fft.fft2(white) * np.exp(-((radius / cutoff) ** 2))).real
    smooth /= smooth.std(axis=(1, 2), keepdims=True) + 1e-8
    return smooth.transpose(1, 2, 0)


class RenderedVideo(NamedTuple):
    """One rendered video: what gets encoded, plus what the actor is (for SSv2 labels and tests)."""

    frames: np.ndarray  # uint8 (T, H, W, 3) RGB
    shape: str  # shape of the first actor (names the object in SSv2 labels), one of SHAPES
    actor_coverage: np.ndarray  # float (T, H, W) in [0, 1]: how much of each pixel an actor covers


def render_video(label: int, rng: np.random.Generator, num_frames: int, size: int) -> RenderedVideo:
    """Render one video of class ``label`` with numpy.

    Objects wrap around the frame edges so that positions are uniform in every frame and
    constant-velocity motion never runs out of frame.
    """
    if not 0 <= label < NUM_CLASSES:
        raise ValueError(f"label must be in [0, {NUM_CLASSES}), got {label}")
    t = np.arange(num_frames, dtype=np.float64)
    coords = np.arange(size, dtype=np.float64) + 0.5
    ys, xs = coords[:, None], coords[None, :]

    # Background: grey texture with a per-video tint, plus fresh per-frame sensor noise.
    grey = rng.uniform(90, 150)
    tint = rng.normal(0, 10, 3)
    texture = _smooth_noise(rng, size, 1, cutoff=0.12) * rng.uniform(6, 12)
    background = grey + tint + texture  # (H, W, 3) by broadcasting
    frames = rng.standard_normal((num_frames, size, size, 3), dtype=np.float32) * 4
    frames += background.astype(np.float32)

    # Several actors, each placed, shaped and coloured independently, all showing the class's
    # dynamics: the cue is spread over many tokens instead of one small object (a lone actor left
    # a from-scratch ViT at chance for thousands of steps), while any one frame stays uninformative.
    num_actors = int(rng.integers(3, 6))
    actors = [_actor_track(label, rng, t, size) for _ in range(num_actors)]
    shapes = [SHAPES[rng.integers(len(SHAPES))] for _ in range(num_actors)]
    aspects = rng.uniform(0.3, 0.5, num_actors)
    colours = _PALETTE + rng.normal(0, 12, (3, 3))

    # Distractors: small discs in any palette colour or white, turning at random (isotropic).
    n_dis = int(rng.integers(2, 5))
    d_pos0 = rng.uniform(0, size, (n_dis, 2))
    d_radius = rng.uniform(1.5, 3.0, n_dis) * size / 64  # sizes and speeds scale with the frame
    d_colour = np.concatenate([_PALETTE, [[235, 235, 235]]])[rng.integers(4, size=n_dis)]
    d_speed = rng.uniform(0.3, 1.5, n_dis) * size / 64
    d_heading = rng.uniform(0, 2 * np.pi, n_dis)[None, :] + np.cumsum(
        rng.normal(0, 0.35, (num_frames, n_dis)), 0
    )
    d_step = d_speed[:, None] * np.stack([np.cos(d_heading), np.sin(d_heading)], -1)  # (T, n, 2)
    d_pos = d_pos0 + np.cumsum(d_step, 0) - d_step[0]
    d_front = rng.uniform(size=n_dis) < 0.5  # drawn above the actor, else below

    def paint(coverage: np.ndarray, colour: np.ndarray) -> None:
        """Alpha-blend ``colour`` (T, 3) into ``frames`` where ``coverage`` (T, H, W) > 0, in place."""
        where = np.nonzero(coverage > 0)
        alpha = coverage[where].astype(np.float32)[:, None]
        frames[where] += alpha * (colour[where[0]].astype(np.float32) - frames[where])

    def disc_coverage(i: int) -> np.ndarray:
        dx = _torus_delta(xs[None], d_pos[:, i, 0, None, None], size)
        dy = _torus_delta(ys[None], d_pos[:, i, 1, None, None], size)
        return np.clip(d_radius[i] + 0.5 - np.sqrt(dx**2 + dy**2), 0, 1)

    for i in np.flatnonzero(~d_front):
        paint(disc_coverage(i), np.broadcast_to(d_colour[i], (num_frames, 3)))

    # Actors: signed distance in each actor's own frame (u along its long axis), anti-aliased edge.
    actor_coverage = np.zeros((num_frames, size, size), dtype=np.float64)
    for actor, shape, aspect in zip(actors, shapes, aspects, strict=True):
        dx = _torus_delta(xs[None], actor["pos"][:, 0, None, None], size)
        dy = _torus_delta(ys[None], actor["pos"][:, 1, None, None], size)
        cos, sin = np.cos(actor["theta"])[:, None, None], np.sin(actor["theta"])[:, None, None]
        u, v = dx * cos + dy * sin, -dx * sin + dy * cos
        half_l = actor["length"][:, None, None] / 2
        half_w = half_l * aspect
        if shape == "bar":
            dist = np.maximum(np.abs(u) - half_l, np.abs(v) - half_w)
        elif shape == "ellipse":
            dist = (np.sqrt((u / half_l) ** 2 + (v / half_w) ** 2) - 1) * half_w
        else:  # triangle: base at u = -half_l, tip at u = +half_l (so rotation sense is unambiguous)
            slope = half_w / (2 * half_l)
            dist = np.maximum(-half_l - u, (np.abs(v) - slope * (half_l - u)) / np.sqrt(1 + slope**2))
        coverage = np.clip(0.5 - dist, 0, 1)
        paint(coverage, colours[actor["colour"]])
        actor_coverage = np.maximum(actor_coverage, coverage)

    for i in np.flatnonzero(d_front):
        paint(disc_coverage(i), np.broadcast_to(d_colour[i], (num_frames, 3)))
    return RenderedVideo(np.clip(np.rint(frames), 0, 255).astype(np.uint8), shapes[0], actor_coverage)


# --------------------------------------------------------------------------------------------- #
# Encoding
# --------------------------------------------------------------------------------------------- #
def encode_video(frames: np.ndarray, path: str | Path, fps: int, codec: str) -> None:
    """Encode uint8 (T, H, W, 3) RGB frames: H.264 in mp4 or VP9 in webm, yuv420p, byte-reproducible.

    Quality settings keep one-pixel motion and the colour edges of 48-px frames intact; the writer adds
    the options that make the bytes independent of memory contents, CPU and threads (see video_writer).
    """
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
    write_video(path, frames, fps, codec, options=_QUALITY[codec])


# --------------------------------------------------------------------------------------------- #
# Dataset generation
# --------------------------------------------------------------------------------------------- #
def _video_rng(seed: int, split: str, label: int, index: int) -> np.random.Generator:
    """Independent stream per video: results do not depend on generation order or worker count."""
    return np.random.default_rng([seed, _SPLIT_ID[split], label, index])


# decord 0.6 returns 4- or 6-channel frames (and fails in get_batch) for these frame widths.
_DECORD_BAD_SIZES = (16, 24, 48, 72)


def _check_params(params: dict[str, Any], prefix: str = "") -> None:
    """Raise ValueError naming the first bad parameter (as ``prefix + NAME`` when a prefix is given)."""

    def name(key: str) -> str:
        return prefix + key.upper() if prefix else key

    for key in (
        "num_train_per_class",
        "num_val_per_class",
        "num_test_per_class",
        "num_frames",
        "size",
        "fps",
    ):
        if not isinstance(params[key], int) or isinstance(params[key], bool):
            raise ValueError(f"{name(key)} must be an int, got {params[key]!r}")
    minimum = {"num_train_per_class": 1, "num_val_per_class": 0, "num_test_per_class": 0, "fps": 1}
    minimum["num_frames"] = 2  # motion needs time
    for key, low in minimum.items():
        if params[key] < low:
            raise ValueError(f"{name(key)} must be >= {low}, got {params[key]}")
    size = params["size"]
    if size < 16 or size % 2:
        raise ValueError(f"{name('size')} must be even and >= 16 (yuv420p needs even sizes), got {size}")
    if size in _DECORD_BAD_SIZES:
        raise ValueError(
            f"{name('size')} {size} is a width decord 0.6 decodes wrongly (4-channel frames for widths "
            f"{_DECORD_BAD_SIZES}); use e.g. 56 or 64"
        )
    if params["codec"] not in CODECS:
        raise ValueError(f"{name('codec')} must be one of {sorted(CODECS)}, got {params['codec']!r}")


def _make_video(job: tuple[Path, str, int, int, str, str | None], params: dict[str, Any]) -> str:
    """Render and encode one video (plus its SSv2 webm copy when asked); return the actor's shape."""
    root, split, label, index, rel, ssv2_rel = job
    frames, shape, _ = render_video(
        label, _video_rng(params["seed"], split, label, index), params["num_frames"], params["size"]
    )
    encode_video(frames, root / rel, params["fps"], params["codec"])
    if ssv2_rel is not None:
        encode_video(frames, root / ssv2_rel, params["fps"], "vp9")
    return shape


def _run_jobs(jobs: list[tuple], params: dict[str, Any], workers: int) -> list[str]:
    """Make all videos, in worker processes when allowed (not inside daemonic loader workers)."""
    if workers <= 1 or multiprocessing.current_process().daemon or len(jobs) < 2 * workers:
        return [_make_video(job, params) for job in jobs]
    # fork: children only run numpy and PyAV, and start without re-importing torch.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        return list(pool.map(partial(_make_video, params=params), jobs, chunksize=8))


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1) + "\n")


def generate_synthetic_dataset(
    root: str | Path,
    *,
    num_train_per_class: int,
    num_val_per_class: int,
    num_test_per_class: int,
    num_frames: int,
    size: int,
    fps: int,
    codec: str,
    seed: int,
    ssv2: bool = False,
    workers: int | None = None,
) -> dict[str, Any]:
    """Write the benchmark into ``root`` (created; must not hold files) and return a summary.

    Layout: ``{train,val,test}.csv`` lines ``videos/<split>/<class>/<id>.<ext> <label>``, ``classes.txt``,
    ``flip_label_map.json``, ``synth_meta.json`` (parameters; written last) and, with ``ssv2``, ``ssv2/``
    in the Something-Something-v2 layout (train + val videos as VP9 webm). Deterministic: the same
    arguments give identical files whatever ``workers`` (processes; default: CPU count, at most 8).
    """
    params = {
        "num_train_per_class": num_train_per_class,
        "num_val_per_class": num_val_per_class,
        "num_test_per_class": num_test_per_class,
        "num_frames": num_frames,
        "size": size,
        "fps": fps,
        "codec": codec,
        "seed": seed,
        "ssv2": bool(ssv2),
        "generator_version": GENERATOR_VERSION,
    }
    _check_params(params)
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise SynthDatasetError(f"refusing to generate into non-empty folder {root}")
    start = time.perf_counter()
    ext = CODECS[codec][1]
    counts = {"train": num_train_per_class, "val": num_val_per_class, "test": num_test_per_class}
    jobs = []
    for split in SPLITS:
        for label, name in enumerate(CLASS_NAMES):
            (root / "videos" / split / name).mkdir(parents=True, exist_ok=True)
            for index in range(counts[split]):
                rel = f"videos/{split}/{name}/{split}_{label:02d}_{index:04d}.{ext}"
                ssv2_rel = None
                if ssv2 and split != "test":  # SSv2's test split is unlabelled; we write train + validation
                    ssv2_rel = f"ssv2/videos/{len(jobs) + 1}.webm"
                jobs.append((root, split, label, index, rel, ssv2_rel))
    if ssv2:
        (root / "ssv2" / "videos").mkdir(parents=True)
    shapes = _run_jobs(jobs, params, workers if workers is not None else min(os.cpu_count() or 1, 8))

    for split in SPLITS:
        _write_lines(
            root / f"{split}.csv", [f"{rel} {label}" for _, s, label, _, rel, _ in jobs if s == split]
        )
    _write_lines(root / "classes.txt", list(CLASS_NAMES))
    _write_json(root / "flip_label_map.json", {str(label): c[2] for label, c in enumerate(CLASSES)})
    if ssv2:
        # As in the real SSv2 files: label-file keys are templates without brackets, entries keep them.
        labels = {c[1].replace("[", "").replace("]", ""): str(i) for i, c in enumerate(CLASSES)}
        _write_json(root / "ssv2" / "something-something-v2-labels.json", labels)
        entries: dict[str, list[dict[str, Any]]] = {"train": [], "validation": []}
        for (_, split, label, _, _, ssv2_rel), shape in zip(jobs, shapes, strict=True):
            if ssv2_rel is None:
                continue
            template = CLASSES[label][1]
            entries["train" if split == "train" else "validation"].append(
                {
                    "id": Path(ssv2_rel).stem,
                    "label": template.replace("[something]", shape),
                    "template": template,
                    "placeholders": [shape],
                }
            )
        for split, items in entries.items():
            _write_json(root / "ssv2" / f"something-something-v2-{split}.json", items)
    _write_json(root / META_FILE, {"params": params, "classes": list(CLASS_NAMES)})
    return {
        "root": str(root),
        "params": params,
        "classes": list(CLASS_NAMES),
        "num_videos": {s: counts[s] * NUM_CLASSES for s in SPLITS},
        "seconds": round(time.perf_counter() - start, 2),
    }


# --------------------------------------------------------------------------------------------- #
# First-use generation from a config
# --------------------------------------------------------------------------------------------- #
def synth_params_from_cfg(cfg: CfgNode) -> dict[str, Any]:
    """Keyword arguments of :func:`generate_synthetic_dataset` from the SYNTH section of ``cfg``."""
    return {
        "num_train_per_class": cfg.SYNTH.NUM_TRAIN_PER_CLASS,
        "num_val_per_class": cfg.SYNTH.NUM_VAL_PER_CLASS,
        "num_test_per_class": cfg.SYNTH.NUM_TEST_PER_CLASS,
        "num_frames": cfg.SYNTH.NUM_FRAMES,
        "size": cfg.SYNTH.SIZE,
        "fps": cfg.SYNTH.FPS,
        "codec": cfg.SYNTH.CODEC,
        "seed": cfg.SYNTH.SEED,
        "ssv2": cfg.SYNTH.SSV2,
    }


def _read_meta(root: Path) -> dict[str, Any] | None:
    path = root / META_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SynthDatasetError(f"{path} is not valid JSON ({e}); remove {root} to regenerate it") from e


def _check_existing(root: Path, wanted: dict[str, Any]) -> bool:
    """True if ``root`` holds a finished dataset made with ``wanted``; False if absent or empty.

    Raises if it holds anything else: files are never overwritten.
    """
    if not root.exists():
        return False
    if not root.is_dir():
        raise SynthDatasetError(f"DATA.PATH_TO_DATA_DIR {root} exists and is not a folder")
    meta = _read_meta(root)
    if meta is None:
        if any(root.iterdir()):
            raise SynthDatasetError(
                f"DATA.PATH_TO_DATA_DIR {root} is not empty and has no {META_FILE}, so it is not a finished "
                "synthetic dataset; refusing to write into it. Point DATA.PATH_TO_DATA_DIR to an empty or "
                "missing folder, or set DATA.SYNTH_GENERATE False to use the files as they are."
            )
        return False
    have = meta.get("params", {})
    diff = {k: (have.get(k), v) for k, v in wanted.items() if have.get(k) != v}
    if diff:
        details = ", ".join(f"{k}: folder has {a!r}, config asks {b!r}" for k, (a, b) in sorted(diff.items()))
        raise SynthDatasetError(
            f"synthetic dataset in {root} was generated with different parameters ({details}); it is never "
            "overwritten. Use another DATA.PATH_TO_DATA_DIR or delete the folder."
        )
    return True


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock (flock) on ``path``, held by one process at a time, across processes."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_synthetic_dataset(cfg: CfgNode) -> bool:
    """Generate the benchmark into DATA.PATH_TO_DATA_DIR on first use; reuse it when it matches.

    Missing or empty folder (and DATA.SYNTH_GENERATE): generated in a temporary sibling folder, then
    renamed into place, so an interrupted run never leaves a folder that looks finished. A finished
    folder with the same SYNTH parameters is reused; anything else raises and nothing is overwritten.
    Safe to call from many processes at once (DDP ranks, loader workers): one generates under a lock
    file next to the folder while the others wait, then find it finished. Returns True if this call
    generated the dataset.
    """
    if cfg.MODEL.NUM_CLASSES != NUM_CLASSES:
        raise SynthDatasetError(
            f"the synthetic dataset has {NUM_CLASSES} classes but MODEL.NUM_CLASSES is "
            f"{cfg.MODEL.NUM_CLASSES}; set MODEL.NUM_CLASSES {NUM_CLASSES}"
        )
    if not cfg.DATA.PATH_TO_DATA_DIR:
        raise SynthDatasetError(
            "DATA.PATH_TO_DATA_DIR is empty: set the folder to generate the benchmark into"
        )
    params = synth_params_from_cfg(cfg)
    try:
        _check_params(params, prefix="SYNTH.")
    except ValueError as e:
        raise SynthDatasetError(str(e)) from e
    wanted = {**params, "generator_version": GENERATOR_VERSION}
    root = Path(cfg.DATA.PATH_TO_DATA_DIR).expanduser().absolute()
    if _check_existing(root, wanted):
        return False
    if not cfg.DATA.SYNTH_GENERATE:
        raise SynthDatasetError(f"{root} holds no dataset and DATA.SYNTH_GENERATE is False")
    root.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(root.parent / f".{root.name}.lock"):
        if _check_existing(root, wanted):  # another process finished it while we waited
            return False
        # Leftovers of interrupted runs: only the lock holder generates, so none is in progress.
        for stale in root.parent.glob(f".{root.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
        logger.info("Generating the synthetic dataset into %s (%s)", root, params)
        try:
            summary = generate_synthetic_dataset(tmp, **params)
            if root.exists():
                root.rmdir()  # empty (checked above); rename cannot replace a folder on every OS
            os.rename(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        logger.info(
            "Synthetic dataset ready in %s: %s videos in %.1f s",
            root,
            summary["num_videos"],
            summary["seconds"],
        )
    return True
