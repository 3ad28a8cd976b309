"""Synthetic dataset: files, formats, determinism, never-overwrite, concurrency, no single-frame leak."""

from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import av
import decord
import numpy as np
import pytest
import torch

import stvideo.data.synth as synth
from stvideo.config import get_cfg
from stvideo.data.synth import (
    CLASS_NAMES,
    GENERATOR_VERSION,
    NUM_CLASSES,
    SynthDatasetError,
    ensure_synthetic_dataset,
    generate_synthetic_dataset,
    render_video,
)

TINY = dict(num_train_per_class=1, num_val_per_class=1, num_test_per_class=1, num_frames=8, size=32, fps=30)
ANNOTATIONS = ("train.csv", "val.csv", "test.csv", "classes.txt", "flip_label_map.json", "synth_meta.json")
SSV2_FILES = tuple(f"ssv2/something-something-v2-{name}.json" for name in ("labels", "train", "validation"))


def decode_pyav(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def decode_decord(path: Path) -> np.ndarray:
    reader = decord.VideoReader(str(path), num_threads=1)
    return reader.get_batch(list(range(len(reader)))).asnumpy()


def video_files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.suffix in (".mp4", ".webm"))


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """a and b: same seed (b made with 2 worker processes), c: another seed. a and b have the SSv2 copy."""
    base = tmp_path_factory.mktemp("synth")
    generate_synthetic_dataset(base / "a", **TINY, codec="h264", seed=0, ssv2=True, workers=1)
    generate_synthetic_dataset(base / "b", **TINY, codec="h264", seed=0, ssv2=True, workers=2)
    generate_synthetic_dataset(base / "c", **TINY, codec="h264", seed=1, workers=1)
    return {k: base / k for k in "abc"}


def test_same_seed_identical_other_seed_different(datasets: dict[str, Path]) -> None:
    a, b, c = datasets["a"], datasets["b"], datasets["c"]
    for name in ANNOTATIONS + SSV2_FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert video_files(a) == video_files(b)
    assert len(video_files(a)) == 3 * NUM_CLASSES + 2 * NUM_CLASSES  # kinetics layout + ssv2 train/val
    # Every file, videos (mp4 and webm) included, byte for byte: 1 worker vs 2 forked workers.
    assert file_hashes(a) == file_hashes(b)
    # Another seed: same file names and labels, different pixels in every video.
    assert (a / "train.csv").read_bytes() == (c / "train.csv").read_bytes()
    for rel in video_files(c):
        diff = np.abs(decode_pyav(a / rel).astype(int) - decode_pyav(c / rel).astype(int)).mean()
        assert diff > 10, rel


def test_kinetics_layout_parses(datasets: dict[str, Path]) -> None:
    root = datasets["a"]
    assert (root / "classes.txt").read_text().splitlines() == list(CLASS_NAMES)
    for split in ("train", "val", "test"):
        with open(root / f"{split}.csv", newline="") as f:
            rows = list(csv.reader(f, delimiter=" "))
        assert len(rows) == NUM_CLASSES
        assert [int(label) for _, label in rows] == list(range(NUM_CLASSES))
        for path, label in rows:
            parts = Path(path).parts
            assert parts[:3] == ("videos", split, CLASS_NAMES[int(label)]) and path.endswith(".mp4")
            assert (root / path).is_file()
    meta = json.loads((root / "synth_meta.json").read_text())
    assert meta["params"] == {
        **TINY,
        "codec": "h264",
        "seed": 0,
        "ssv2": True,
        "generator_version": GENERATOR_VERSION,
    }


def test_flip_map_is_an_involution_that_swaps_mirror_classes(datasets: dict[str, Path]) -> None:
    flip = {int(k): v for k, v in json.loads((datasets["a"] / "flip_label_map.json").read_text()).items()}
    assert sorted(flip) == list(range(NUM_CLASSES))
    assert all(flip[flip[k]] == k for k in flip)
    swapped = {(CLASS_NAMES[k], CLASS_NAMES[v]) for k, v in flip.items() if k != v}
    assert swapped == {
        ("moving_left_to_right", "moving_right_to_left"),
        ("moving_right_to_left", "moving_left_to_right"),
        ("rotating_clockwise", "rotating_counterclockwise"),
        ("rotating_counterclockwise", "rotating_clockwise"),
    }


def test_flip_map_matches_the_pixels() -> None:
    """A mirrored video of a class moves like its flip-map partner (horizontal centroid motion)."""
    frames = render_video(0, np.random.default_rng(3), 16, 64).frames
    assert horizontal_motion(frames) > 0.02  # about 1 px per frame is 0.1 rad; distractors dilute it
    assert horizontal_motion(frames[:, :, ::-1]) < -0.02


def test_ssv2_layout_parses(datasets: dict[str, Path]) -> None:
    root = datasets["a"] / "ssv2"
    labels = json.loads((root / "something-something-v2-labels.json").read_text())
    assert sorted(int(v) for v in labels.values()) == list(range(NUM_CLASSES))
    assert not any("[" in k for k in labels)
    for split in ("train", "validation"):
        entries = json.loads((root / f"something-something-v2-{split}.json").read_text())
        assert len(entries) == NUM_CLASSES
        for label, entry in enumerate(entries):
            assert set(entry) == {"id", "label", "template", "placeholders"}
            assert "[something]" in entry["template"]
            assert labels[entry["template"].replace("[", "").replace("]", "")] == str(label)
            assert entry["label"] == entry["template"].replace("[something]", entry["placeholders"][0])
            assert entry["placeholders"][0] in synth.SHAPES
            with av.open(str(root / "videos" / f"{entry['id']}.webm")) as container:
                assert container.streams.video[0].codec_context.name == "vp9"


@pytest.mark.parametrize("codec", ["h264", "vp9"])
def test_videos_decode_with_decord_and_pyav(tmp_path: Path, codec: str) -> None:
    frames = render_video(4, np.random.default_rng(0), 12, 40).frames
    path = tmp_path / f"v.{synth.CODECS[codec][1]}"
    synth.encode_video(frames, path, 30, codec)
    by_pyav, by_decord = decode_pyav(path), decode_decord(path)
    assert by_pyav.shape == by_decord.shape == (12, 40, 40, 3)
    assert np.abs(by_pyav.astype(int) - by_decord.astype(int)).max() <= 1
    assert np.abs(by_pyav.astype(float) - frames).mean() < 8  # compression keeps the content
    assert decord.VideoReader(str(path)).get_avg_fps() == pytest.approx(30)


# Child process: loads only the writer module (av + numpy, no torch), encodes each video twice and prints
# the sha256 of every file. Its heap starts out differently from this process's, and MALLOC_PERTURB_
# makes glibc fill fresh allocations with a given byte, so memory the encoder reads without writing
# shows up as different bytes (x264's AVX-512 code did: see stvideo/data/video_writer.py).
_ENCODE_CHILD = """
import hashlib, importlib.util, json, sys
import numpy as np
spec = importlib.util.spec_from_file_location("video_writer", sys.argv[1])
writer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(writer)
videos, codec, options, out = np.load(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4]), sys.argv[5]
hashes = []
for i, frames in enumerate(videos):
    for k in range(2):
        path = f"{out}/{i}_{k}.{writer.CODECS[codec][1]}"
        path = writer.write_video(path, frames, 30, codec, options=options)
        hashes.append(hashlib.sha256(path.read_bytes()).hexdigest())
print(json.dumps(hashes))
"""


@pytest.mark.parametrize("codec", ["h264", "vp9"])
def test_encoding_is_byte_identical_in_this_and_fresh_processes(tmp_path: Path, codec: str) -> None:
    """Same frames, same bytes: 6 encodes here, then 2 in each of 3 fresh processes with different heaps."""
    # 64 px, 32 frames: large enough for x264's B-frames and MB-tree lookahead, where the reads were.
    videos = np.stack(
        [render_video(label, np.random.default_rng([5, label]), 32, 64).frames for label in range(3)]
    )
    ext = synth.CODECS[codec][1]
    want = []
    for i, frames in enumerate(videos):
        hashes = set()
        for k in range(6):
            path = tmp_path / f"here_{i}_{k}.{ext}"
            synth.encode_video(frames, path, 30, codec)
            hashes.add(hashlib.sha256(path.read_bytes()).hexdigest())
        assert len(hashes) == 1, f"video {i}: 6 encodes in one process gave {len(hashes)} different files"
        want += list(hashes) * 2
    np.save(tmp_path / "videos.npy", videos)
    args = [str(Path(synth.__file__).with_name("video_writer.py")), str(tmp_path / "videos.npy"), codec]
    args.append(json.dumps(synth._QUALITY[codec]))
    for perturb in (None, "85", "170"):
        env = {k: v for k, v in os.environ.items() if k != "MALLOC_PERTURB_"}
        if perturb is not None:
            env["MALLOC_PERTURB_"] = perturb
        out = tmp_path / f"child_{perturb}"
        out.mkdir()
        result = subprocess.run(
            [sys.executable, "-c", _ENCODE_CHILD, *args, str(out)], env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == want, (
            f"fresh process (MALLOC_PERTURB_={perturb}) wrote other bytes"
        )


def test_all_generated_videos_decode(datasets: dict[str, Path]) -> None:
    for rel in video_files(datasets["a"]):
        assert decode_decord(datasets["a"] / rel).shape == (8, 32, 32, 3), rel


# ------------------------------------------------------------------------------------------------ #
# ensure_synthetic_dataset: first-use generation, never overwrite, concurrency
# ------------------------------------------------------------------------------------------------ #
def tiny_cfg(root: Path, **synth_overrides: object):
    cfg = get_cfg()
    cfg.DATA.PATH_TO_DATA_DIR = str(root)
    cfg.MODEL.NUM_CLASSES = NUM_CLASSES
    for key, value in {"NUM_TRAIN_PER_CLASS": 1, "NUM_VAL_PER_CLASS": 0, "NUM_TEST_PER_CLASS": 0}.items():
        cfg.SYNTH[key] = value
    cfg.SYNTH.NUM_FRAMES, cfg.SYNTH.SIZE = 4, 32
    for key, value in synth_overrides.items():
        cfg.SYNTH[key] = value
    return cfg


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_ensure_generates_then_reuses(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()  # an existing empty folder counts as missing
    assert ensure_synthetic_dataset(tiny_cfg(root)) is True
    before = snapshot(root)
    assert len([k for k in before if k.endswith(".mp4")]) == NUM_CLASSES
    assert ensure_synthetic_dataset(tiny_cfg(root)) is False
    assert snapshot(root) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".data.lock", "data"]  # no temp folder left


def test_ensure_never_overwrites(tmp_path: Path) -> None:
    root = tmp_path / "data"
    ensure_synthetic_dataset(tiny_cfg(root))
    before = snapshot(root)
    with pytest.raises(SynthDatasetError, match=r"seed: folder has 0, config asks 7") as err:
        ensure_synthetic_dataset(tiny_cfg(root, SEED=7))
    assert str(root) in str(err.value)
    assert snapshot(root) == before

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "train.csv").write_text("mine.mp4 0\n")
    with pytest.raises(SynthDatasetError, match=r"foreign is not empty and has no synth_meta.json"):
        ensure_synthetic_dataset(tiny_cfg(foreign))
    assert snapshot(foreign) == {"train.csv": b"mine.mp4 0\n"}


def test_ensure_config_errors(tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path / "x")
    cfg.MODEL.NUM_CLASSES = 400
    with pytest.raises(SynthDatasetError, match=r"has 10 classes but MODEL.NUM_CLASSES is 400"):
        ensure_synthetic_dataset(cfg)
    with pytest.raises(SynthDatasetError, match=r"SYNTH.SIZE 48 is a width decord 0.6 decodes wrongly"):
        ensure_synthetic_dataset(tiny_cfg(tmp_path / "x", SIZE=48))
    with pytest.raises(SynthDatasetError, match=r"SYNTH.NUM_FRAMES must be >= 2"):
        ensure_synthetic_dataset(tiny_cfg(tmp_path / "x", NUM_FRAMES=1))
    cfg = tiny_cfg(tmp_path / "x")
    cfg.DATA.SYNTH_GENERATE = False
    with pytest.raises(SynthDatasetError, match=r"holds no dataset and DATA.SYNTH_GENERATE is False"):
        ensure_synthetic_dataset(cfg)
    assert not (tmp_path / "x").exists()


def test_interrupted_generation_leaves_nothing_that_looks_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    stale = tmp_path / ".data.tmp-123"  # left by a run that was killed
    stale.mkdir()
    (stale / "train.csv").write_text("half\n")
    calls = []
    real_encode = synth.encode_video

    def failing_encode(*args, **kwargs):  # fault injection: the disk fills up after 3 videos
        calls.append(1)
        if len(calls) > 3:
            raise OSError("No space left on device")
        real_encode(*args, **kwargs)

    monkeypatch.setattr(synth, "encode_video", failing_encode)
    with pytest.raises(OSError, match="No space left"):
        ensure_synthetic_dataset(tiny_cfg(root))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".data.lock"]
    monkeypatch.setattr(synth, "encode_video", real_encode)
    assert ensure_synthetic_dataset(tiny_cfg(root)) is True
    assert (root / "synth_meta.json").is_file()


def _ensure_in_process(root: str, barrier, results) -> None:
    barrier.wait()
    results.put(ensure_synthetic_dataset(tiny_cfg(Path(root))))


def test_concurrent_ensure_generates_once(tmp_path: Path) -> None:
    """Three processes (like DDP ranks) call ensure at the same moment: one generates, all see the data."""
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [
        ctx.Process(target=_ensure_in_process, args=(str(tmp_path / "d"), barrier, results)) for _ in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert sorted(results.get(timeout=5) for _ in procs) == [False, False, True]
    assert len(list((tmp_path / "d").rglob("*.mp4"))) == NUM_CLASSES
    assert sorted(p.name for p in tmp_path.iterdir()) == [".d.lock", "d"]


# ------------------------------------------------------------------------------------------------ #
# Single frames carry no class information; motion does
# ------------------------------------------------------------------------------------------------ #
def _wrap(a: np.ndarray, period: float) -> np.ndarray:
    return (a + period / 2) % period - period / 2


def _circular_centroid(weight: np.ndarray, axis: int) -> np.ndarray:
    """Per-frame angle (radians) of the weighted centroid along ``axis`` on the torus (objects wrap)."""
    size = weight.shape[axis]
    phase = 2 * np.pi * (np.arange(size) + 0.5) / size
    shape = [1, 1, 1]
    shape[axis] = size
    total = weight.sum((1, 2)) + 1e-6
    cos = (weight * np.cos(phase).reshape(shape)).sum((1, 2)) / total
    sin = (weight * np.sin(phase).reshape(shape)).sum((1, 2)) / total
    return np.arctan2(sin, cos)


def single_frame_statistics(frames: np.ndarray, actor: np.ndarray) -> np.ndarray:
    """(T, 17) per-frame statistics a leak of the actor's size, position, angle or colour, or of the
    background and clutter, would move: actor-pixel area, centroid (on the torus), second moments,
    mean colour; whole-frame channel means and stds, and the fraction of saturated pixels.
    """
    f = frames.astype(np.float32)
    size = f.shape[1]
    area = actor.sum((1, 2)) + 1e-6
    ax, ay = _circular_centroid(actor, 2), _circular_centroid(actor, 1)
    grid = np.arange(size) + 0.5
    dx = _wrap(grid[None, None, :] - (ax * size / (2 * np.pi))[:, None, None], size)
    dy = _wrap(grid[None, :, None] - (ay * size / (2 * np.pi))[:, None, None], size)
    mxx, myy, mxy = ((actor * m).sum((1, 2)) / area for m in (dx * dx, dy * dy, dx * dy))
    doubled_angle = np.arctan2(2 * mxy, mxx - myy)
    weight = actor**2
    colour = (f * weight[..., None]).sum((1, 2)) / (weight.sum((1, 2))[:, None] + 1e-6)
    flat = f.reshape(len(f), -1, 3)
    saturated = ((f.max(-1) - f.min(-1)) > 80).mean((1, 2))
    columns = [area, np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(doubled_angle)]
    columns += [np.sin(doubled_angle), mxx + myy, saturated]
    return np.concatenate([np.stack(columns, -1), colour, flat.mean(1), flat.std(1)], -1)


def _saturated_parts(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame summaries of the saturated pixels (actor + coloured clutter), from pixels only."""
    f = frames.astype(np.float32)
    mask = ((f.max(-1) - f.min(-1)) > 80).astype(np.float32)
    count = mask.sum((1, 2)) + 1e-6
    dominant = f.argmax(-1)
    colour = np.stack([(mask * (dominant == c)).sum((1, 2)) for c in range(3)], -1)
    gx, gy = np.roll(mask, -1, 2) - np.roll(mask, 1, 2), np.roll(mask, -1, 1) - np.roll(mask, 1, 1)
    txx, tyy, txy = ((g * h).sum((1, 2)) for g, h in ((gx, gx), (gy, gy), (gx, gy)))
    return {
        "ax": _circular_centroid(mask, 2),
        "ay": _circular_centroid(mask, 1),
        "count": count,
        "colour": colour.argmax(-1),
        "orientation": 0.5 * np.arctan2(2 * txy, txx - tyy),
    }


def horizontal_motion(frames: np.ndarray) -> float:
    """Mean per-frame shift along x of the saturated-pixel centroid (radians of the torus)."""
    return float(_wrap(np.diff(_saturated_parts(frames)["ax"]), 2 * np.pi).mean())


def motion_statistics(frames: np.ndarray, lag: int = 2) -> np.ndarray:
    """From pixels only, changes between frames ``lag`` apart: centroid shift (x, y), rotation,
    log-area change, forward and backward colour steps."""
    parts = _saturated_parts(frames[::lag])
    dx = _wrap(np.diff(parts["ax"]), 2 * np.pi)
    dy = _wrap(np.diff(parts["ay"]), 2 * np.pi)
    turn = _wrap(np.diff(parts["orientation"]), np.pi)
    grow = np.diff(np.log(parts["count"]))
    step = np.mod(np.diff(parts["colour"]), 3)
    return np.array(
        [dx.mean(), dy.mean(), np.median(turn), np.median(grow), (step == 1).mean(), (step == 2).mean()]
    )


def held_out_accuracy(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> float:
    """Multinomial logistic regression (L-BFGS, float64, deterministic): fit on one set, score another."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    xtr = torch.tensor((x_train - mean) / std)
    xte = torch.tensor((x_test - mean) / std)
    weight = torch.zeros(xtr.shape[1], NUM_CLASSES, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(NUM_CLASSES, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")
    target = torch.tensor(y_train)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xtr @ weight + bias, target) + 1e-3 * weight.square().sum()
        loss.backward()
        return loss

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny problem: thread hand-offs would dominate on a busy machine
    try:
        opt.step(closure)
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        return float(((xte @ weight + bias).argmax(1).numpy() == y_test).mean())


PER_CLASS = 24  # videos per class in each of the two rendered sets


@pytest.fixture(scope="module")
def rendered() -> dict[int, list[tuple[np.ndarray, np.ndarray, int]]]:
    """Two independent sets of raw videos (16 frames, 32 px): (frames, actor coverage, label)."""
    out = {}
    for part in (0, 1):
        out[part] = []
        for label in range(NUM_CLASSES):
            for i in range(PER_CLASS):
                video = render_video(label, np.random.default_rng([9, part, label, i]), 16, 32)
                out[part].append((video.frames, video.actor_coverage, label))
    return out


def class_mean_and_spread_z(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """|z| of each class's mean and mean squared deviation of each column against all classes together
    (rows independent: one frame per video)."""
    z = []
    for values in ((x - x.mean(0)) / x.std(0), ((x - x.mean(0)) / x.std(0)) ** 2):
        for c in range(NUM_CLASSES):
            z.append((values[y == c].mean(0) - values.mean(0)) / (values.std(0) / np.sqrt((y == c).sum())))
    return np.abs(np.stack(z))


def test_single_frames_carry_no_class_information(rendered) -> None:
    pick = np.random.default_rng(0)
    one_frame, labels, frame_sets = [], [], {}
    for part, videos in rendered.items():
        stats = [single_frame_statistics(frames, actor) for frames, actor, _ in videos]
        one_frame += [s[pick.integers(len(s))] for s in stats]  # one random frame per video: independent rows
        labels += [label for _, _, label in videos]
        frame_sets[part] = (np.concatenate([s[::4] for s in stats]), np.repeat([v[2] for v in videos], 4))
    z = class_mean_and_spread_z(np.stack(one_frame), np.array(labels))
    # 2 x 10 x 18 z-values; max 2.4 here (generator version 3). Deliberate leaks measured with this
    # test's data on version 2: actor 15 % larger in the rotating classes 4.1, up/down confined to half
    # the frame 4.6, a colour cycle over two colours 4.6, clockwise angles in a quarter of the range 5.9.
    assert z.max() < 4, (
        f"class statistics differ: max |z| {z.max():.2f} at {np.unravel_index(z.argmax(), z.shape)}"
    )
    accuracy = held_out_accuracy(*frame_sets[0], *frame_sets[1])
    assert accuracy < 0.16, f"single-frame statistics predict the class ({accuracy:.3f}; chance 0.1)"


def test_motion_separates_the_classes(rendered) -> None:
    sets = {
        part: (
            np.stack([motion_statistics(frames) for frames, _, _ in videos]),
            np.array([v[2] for v in videos]),
        )
        for part, videos in rendered.items()
    }
    accuracy = held_out_accuracy(*sets[0], *sets[1])
    assert accuracy > 0.8, f"motion statistics should identify the class, got {accuracy:.3f}"
    x, y = sets[0]
    mean = np.stack([x[y == c].mean(0) for c in range(NUM_CLASSES)])
    assert mean[0, 0] > 0 > mean[1, 0]  # right vs left (x shift)
    assert mean[2, 1] > 0 > mean[3, 1]  # down vs up (y shift; y points down)
    assert mean[4, 2] > 0 > mean[5, 2]  # clockwise vs counter-clockwise (angle grows clockwise on screen)
    assert mean[6, 3] > 0 > mean[7, 3]  # growing vs shrinking (log area)
    assert mean[8, 4] > mean[8, 5] and mean[9, 5] > mean[9, 4]  # colour steps r->g->b vs r->b->g
