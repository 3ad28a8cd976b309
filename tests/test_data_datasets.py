"""Kinetics / SSv2 datasets on real encoded files: annotations, exact views, augmentation, bad input."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import torch

from stvideo.config.defaults import get_cfg
from stvideo.data import build_loader
from stvideo.data.build import DATASET_REGISTRY, ShardSampler, build_dataset, collate_eval
from stvideo.data.kinetics import Kinetics, read_csv_annotations
from stvideo.data.preprocessor import ClipPreprocessor
from stvideo.data.ssv2 import SSv2, read_ssv2_annotations
from stvideo.data.transforms import TrainTransform, cut_views, views_of_test_batch
from stvideo.data.video_dataset import resolve_path
from tests import videos as V

SSV2_LABELS = {
    "Pushing something from left to right": "0",
    "Pushing something from right to left": "1",
    "Holding something next to something": "2",
}


def tiny_cfg(root, **overrides):
    """4 frames x 2, 32-pixel crops, 2 x 3 test views, no workers."""
    cfg = get_cfg()
    cfg.DATA.PATH_TO_DATA_DIR = str(root)
    cfg.DATA.NUM_FRAMES = 4
    cfg.DATA.SAMPLING_RATE = 2
    cfg.DATA.TRAIN_CROP_SIZE = 32
    cfg.DATA.TEST_CROP_SIZE = 32
    cfg.TRAIN.BATCH_SIZE = 2
    cfg.TEST.BATCH_SIZE = 4
    cfg.TEST.NUM_ENSEMBLE_VIEWS = 2
    cfg.TEST.NUM_SPATIAL_CROPS = 3
    cfg.DATA_LOADER.NUM_WORKERS = 0
    for key, value in overrides.items():
        section, name = key.split("__")
        cfg[section][name] = value
    return cfg


@pytest.fixture(scope="module")
def kinetics_root(tmp_path_factory):
    """4 indexed 36-frame mp4s (one with spaces in its name), a portrait and an odd-size webm, bad files."""
    root = tmp_path_factory.mktemp("k400")
    names = ["a.mp4", "b.mp4", "with space.mp4", "d.mp4"]
    for n in names:
        V.write_indexed_video(root / "videos" / n, 36, 32, 64, "h264")
    V.write_indexed_video(root / "videos" / "portrait.mp4", 36, 64, 32, "h264")
    V.write_indexed_video(root / "videos" / "odd.webm", 24, 33, 47, "vp9")
    V.write_truncated(root / "videos" / "truncated.mp4", root / "videos" / "a.mp4")
    V.write_empty(root / "videos" / "empty.mp4")
    V.write_not_video(root / "videos" / "page.mp4")
    lines = [f"videos/{n} {i}" for i, n in enumerate(names)]
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    (root / "val.csv").write_text("\n".join(lines) + "\n")
    (root / "test.csv").write_text("videos/a.mp4,0\nvideos/portrait.mp4,1\nvideos/odd.webm,2\n")
    (root / "bad.csv").write_text(
        "videos/a.mp4\t0\nvideos/truncated.mp4\t1\nvideos/empty.mp4\t2\n"
        "videos/page.mp4\t3\nvideos/missing.mp4\t0\nvideos/b.mp4\t1\n"
    )
    (root / "allbad.csv").write_text("videos/truncated.mp4 0\nvideos/empty.mp4 1\nvideos/page.mp4 2\n")
    return root


@pytest.fixture(scope="module")
def ssv2_root(tmp_path_factory):
    """Official-format SSv2 json files and three 30-frame VP9 webm videos."""
    root = tmp_path_factory.mktemp("ssv2")
    (root / "something-something-v2-labels.json").write_text(json.dumps(SSV2_LABELS))
    entries = [
        {"id": "101", "label": "pushing a cup from left to right",
         "template": "Pushing [something] from left to right", "placeholders": ["a cup"]},
        {"id": "102", "label": "pushing a pen from right to left",
         "template": "Pushing [something] from right to left", "placeholders": ["a pen"]},
        {"id": "103", "label": "holding a left shoe next to a right shoe",
         "template": "Holding [something] next to [something]",
         "placeholders": ["a left shoe", "a right shoe"]},
    ]  # fmt: skip
    for name in ("train", "validation"):
        (root / f"something-something-v2-{name}.json").write_text(json.dumps(entries))
    for e in entries:
        V.write_indexed_video(root / f"{e['id']}.webm", 30, 32, 64, "vp9")
    return root


def pixels(view: torch.Tensor) -> np.ndarray:
    """uint8 (C, T, H, W) view -> (T, H, W, C) floats."""
    assert view.dtype == torch.uint8
    return view.permute(1, 2, 3, 0).numpy().astype(float)


def with_views(item: dict) -> dict:
    """A test item with its views cut as the evaluator cuts them: ``video`` (V, C, T, S, S)."""
    return {**item, "video": cut_views(item["frames"], item["crops"], 32)}


def expected_crop(height, width, frame, top, left, size=32):
    return V.indexed_frames(frame + 1, height, width)[frame, top : top + size, left : left + size].astype(
        float
    )


# ---------------------------------------------------------------------------------------------- annotations
def test_csv_separators_paths_with_spaces_and_header(tmp_path):
    f = tmp_path / "list.csv"
    f.write_text(
        "path,label\nx/a b.mp4,3\n\ny/c.mp4 4\nz/d e.mp4\t5\n/abs/f.mp4   6\n"
        "v/clip, take 2.mp4 7\nw/g,h.mp4,8\n"
    )
    assert read_csv_annotations(str(f)) == [
        ("x/a b.mp4", 3), ("y/c.mp4", 4), ("z/d e.mp4", 5), ("/abs/f.mp4", 6), ("v/clip, take 2.mp4", 7),
        ("w/g,h.mp4", 8),
    ]  # fmt: skip
    f.write_text("v/clip, take 2.mp4 7\n")  # a first line with a comma in its path is not a header
    assert read_csv_annotations(str(f)) == [("v/clip, take 2.mp4", 7)]
    g = tmp_path / "semi.csv"
    g.write_text("a;b.mp4;7\n")
    assert read_csv_annotations(str(g), ";") == [("a;b.mp4", 7)]
    g.write_text("a.mp4 1\nb.mp4 one\n")
    with pytest.raises(ValueError, match=r"semi.csv:2: label 'one' is not an integer"):
        read_csv_annotations(str(g))
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_csv_annotations(str(tmp_path / "nope.csv"))


def test_path_resolution(tmp_path):
    cfg = tiny_cfg(tmp_path)
    assert resolve_path(cfg, "v/a.mp4") == os.path.join(str(tmp_path), "v/a.mp4")
    cfg.DATA.PATH_PREFIX = "/videos"
    assert resolve_path(cfg, "v/a.mp4") == "/videos/v/a.mp4"
    assert resolve_path(cfg, "/elsewhere/a.mp4") == "/elsewhere/a.mp4"


def test_ssv2_class_from_template_not_label(ssv2_root, tmp_path):
    pairs = read_ssv2_annotations(
        str(ssv2_root / "something-something-v2-labels.json"),
        str(ssv2_root / "something-something-v2-train.json"),
    )
    assert pairs == [("101", 0), ("102", 1), ("103", 2)]
    bad = tmp_path / "split.json"
    bad.write_text(json.dumps([{"id": "9", "label": "x", "template": "Spinning [something]"}]))
    with pytest.raises(ValueError, match="entry 9 has template 'Spinning something'"):
        read_ssv2_annotations(str(ssv2_root / "something-something-v2-labels.json"), str(bad))


def test_registry_names():
    assert {"kinetics", "ssv2", "synth"} <= {name for name, _ in DATASET_REGISTRY}


# ---------------------------------------------------------------------------------------------- test views
@pytest.mark.parametrize("backend", ["decord", "pyav", "torchcodec"])
def test_kinetics_test_views_exact_frames_and_crops(kinetics_root, backend):
    """36 frames, clip 4 x 2 (span 7, start range 29): views start at 7 and 21; crops at x = 0, 16, 32."""
    cfg = tiny_cfg(kinetics_root, DATA__DECODING_BACKEND=backend)
    ds = Kinetics(cfg, "test", "test")
    item = with_views(ds[0])
    assert item["video"].shape == (6, 3, 4, 32, 32)
    assert (item["label"], item["index"], item["video_id"]) == (0, 0, "videos/a.mp4")
    frames = [[7, 9, 11, 13], [21, 23, 25, 27]]
    lefts = [0, 16, 32]
    for t in range(2):
        for s in range(3):
            got = pixels(item["video"][t * 3 + s])
            for k, frame in enumerate(frames[t]):
                err = np.abs(got[k] - expected_crop(32, 64, frame, 0, lefts[s])).mean()
                wrong = np.abs(got[k] - expected_crop(32, 64, frame, 0, lefts[(s + 1) % 3])).mean()
                assert err < 3.0 and wrong > 10.0, (t, s, k, err, wrong)
            assert [V.frame_index(f) for f in got] == frames[t]


def test_portrait_crops_cover_height(kinetics_root):
    """64x32 portrait: the three crops are top / center / bottom (y = 0, 16, 32)."""
    ds = Kinetics(tiny_cfg(kinetics_root), "test", "test")
    item = with_views(ds[1])
    assert item["video"].shape == (6, 3, 4, 32, 32) and item["video_id"] == "videos/portrait.mp4"
    for s, top in enumerate([0, 16, 32]):
        got = pixels(item["video"][3 + s])  # second temporal view: frames 21, 23, 25, 27
        err = np.abs(got[0] - expected_crop(64, 32, 21, top, 0)).mean()
        assert err < 3.0, (s, err)


def test_odd_size_webm_resized_on_decode(kinetics_root):
    """33x47 VP9 decoded at short side 32 (32x46) by the decoder (DATA.EVAL_RESIZE decoder); 24 frames:
    span 7, start range 17 -> starts 4, 12."""
    ds = Kinetics(tiny_cfg(kinetics_root, DATA__EVAL_RESIZE="decoder"), "test", "test")
    item = with_views(ds[2])
    assert item["frames"].shape == (2, 4, 32, 46, 3) and item["crops"].tolist() == [[0, 0], [0, 7], [0, 14]]
    assert item["video"].shape == (6, 3, 4, 32, 32)
    assert [V.frame_index(f) for f in pixels(item["video"][0])] == [4, 6, 8, 10]
    assert [V.frame_index(f) for f in pixels(item["video"][3])] == [12, 14, 16, 18]


def test_ssv2_test_views_are_different_frames(ssv2_root):
    """VP9 webm, segment sampling: 3 temporal views x 1 crop take distinct frames of every segment."""
    cfg = tiny_cfg(ssv2_root, TEST__NUM_ENSEMBLE_VIEWS=3, TEST__NUM_SPATIAL_CROPS=1)
    ds = SSv2(cfg, "test")
    item = with_views(ds[2])
    assert item["video"].shape == (3, 3, 4, 32, 32)
    assert (item["label"], item["video_id"]) == (2, "103")
    got = [[V.frame_index(f) for f in pixels(v)] for v in item["video"]]  # center crop x = 16
    assert got == [[1, 9, 16, 24], [3, 11, 18, 26], [5, 13, 20, 28]]


def test_val_is_deterministic_center_view(kinetics_root):
    """Val = temporal center clip (start 14) and center crop, the same in every epoch."""
    ds = Kinetics(tiny_cfg(kinetics_root), "val")
    first = ds[2]
    ds.set_epoch(3)
    again = ds[2]
    assert first["video"].shape == (3, 4, 32, 32) and first["video_id"] == "videos/with space.mp4"
    assert torch.equal(first["video"], again["video"])
    got = pixels(first["video"])
    assert [V.frame_index(f) for f in got] == [14, 16, 18, 20]
    assert np.abs(got[0] - expected_crop(32, 64, 14, 0, 16)).mean() < 3.0


@pytest.fixture(scope="module")
def frame_rate_root(tmp_path_factory):
    """Indexed mp4s at 15 and 60 fps (36 frames) and a variable-rate one (30 frames, ~29.03 fps average)."""
    root = tmp_path_factory.mktemp("rates")
    V.write_indexed_video(root / "fps15.mp4", 36, 32, 48, "h264", fps=15)
    V.write_indexed_video(root / "fps60.mp4", 36, 32, 48, "h264", fps=60)
    V.write_vfr_video(root / "vfr.mp4", 30, 32, 48)
    for split in ("train", "val"):
        (root / f"{split}.csv").write_text("fps15.mp4 0\nfps60.mp4 1\nvfr.mp4 2\n")
    return root


# SAMPLING_RATE 2 at TARGET_FPS 30: stride 1 at 15 fps, 4 at 60 fps, 2 * 29.03 / 30 = 1.94 for the VFR file.
RATE_OFFSETS = {"fps15.mp4": [0, 1, 2, 3], "fps60.mp4": [0, 4, 8, 12], "vfr.mp4": [0, 1, 3, 5]}
RATE_START_RANGE = {"fps15.mp4": 32, "fps60.mp4": 23, "vfr.mp4": 24}  # frames - span


@pytest.mark.parametrize("backend", ["decord", "pyav", "torchcodec"])
def test_dense_sampling_follows_the_frame_rate(frame_rate_root, backend):
    """Val center clips (start = floor(range / 2)) and training clips read back from the decoded pixels."""
    cfg = tiny_cfg(frame_rate_root, DATA__DECODING_BACKEND=backend)
    val = Kinetics(cfg, "val")
    got = {val.samples[i].video_id: [V.frame_index(f) for f in pixels(val[i]["video"])] for i in range(3)}
    assert got == {"fps15.mp4": [16, 17, 18, 19], "fps60.mp4": [11, 15, 19, 23], "vfr.mp4": [12, 13, 15, 17]}
    train = Kinetics(cfg, "train")
    starts = {name: set() for name in RATE_OFFSETS}
    for epoch in range(4):
        train.set_epoch(epoch)
        for i in range(3):
            name = train.samples[i].video_id
            frames = [V.frame_index(f) for f in pixels(train[i]["video"])]
            assert [f - frames[0] for f in frames] == RATE_OFFSETS[name], (name, frames)
            assert 0 <= frames[0] <= RATE_START_RANGE[name]
            starts[name].add(frames[0])
    assert all(len(s) > 1 for s in starts.values()), starts  # the start is drawn, not fixed


def test_segment_training_takes_one_frame_per_segment(ssv2_root):
    """30 frames in 4 segments of 7.5: frame k lies in [7.5 k, 7.5 (k + 1)), drawn anew each epoch."""
    ds = SSv2(tiny_cfg(ssv2_root), "train")
    seen = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        frames = [V.frame_index(f) for f in pixels(ds[0]["video"])]
        assert all(7.5 * k <= f < 7.5 * (k + 1) for k, f in enumerate(frames)), frames
        seen.add(tuple(frames))
    assert len(seen) > 1


# ---------------------------------------------------------------------------------------------- training
def test_train_items_depend_only_on_seed_epoch_index(kinetics_root):
    """Same (seed, epoch, index): same clip in a fresh dataset and in any order; new epoch: new clip."""
    cfg = tiny_cfg(kinetics_root, AUG__ENABLE=True)
    a, b = Kinetics(cfg, "train"), Kinetics(cfg, "train")
    items_a = [a[i] for i in range(4)]
    items_b = [b[i] for i in reversed(range(4))][::-1]
    for x, y in zip(items_a, items_b, strict=True):
        assert torch.equal(x["video"], y["video"]) and x["label"] == y["label"]
    a.set_epoch(1)
    assert not torch.equal(a[0]["video"], items_a[0]["video"])
    assert items_a[0]["video"].shape == (3, 4, 32, 32)


def test_loader_batches_independent_of_workers(kinetics_root):
    cfg0 = tiny_cfg(kinetics_root, AUG__ENABLE=True)
    cfg2 = tiny_cfg(kinetics_root, AUG__ENABLE=True, DATA_LOADER__NUM_WORKERS=2)
    runs = []
    for cfg in (cfg0, cfg2):
        loader = build_loader(cfg, "train")
        loader.sampler.set_epoch(1)
        runs.append(list(loader))
    assert len(runs[0]) == len(runs[1]) == 2
    for x, y in zip(*runs, strict=True):
        assert torch.equal(x["index"], y["index"]) and torch.equal(x["video"], y["video"])
        assert torch.equal(x["label"], y["label"]) and x["skipped"].tolist() == [0, 0]


def test_augmentations_identical_on_every_frame():
    """RandomResizedCrop, flip, RandAugment and random erasing: one set of parameters per clip."""
    cfg = tiny_cfg("/unused", AUG__ENABLE=True, AUG__RE_PROB=1.0)
    cfg.AUG.AA_TYPE = "rand-m9-n3-mstd0.5-inc1"
    transform = TrainTransform(cfg)
    preprocess = ClipPreprocessor(cfg, "cpu")
    frame = torch.from_numpy(V.textured_frames(1, 40, 56, seed=3))
    clip_in = frame.expand(6, -1, -1, -1)
    outs = []
    for seed in range(4):
        clip, label, erase = transform(clip_in, 5, seed)
        assert clip.shape == (3, 6, 32, 32) and clip.dtype == torch.uint8 and label == 5
        assert erase[2] > 0  # RE_PROB 1: a box (height > 0) in every clip
        clip = preprocess(clip[None], erase[None])[0]
        assert all(torch.equal(clip[:, 0], clip[:, t]) for t in range(1, 6))
        outs.append(clip)
    assert not torch.equal(outs[0], outs[1])  # different seeds, different augmentation
    clip, _, erase = transform(clip_in, 5, 2)
    assert torch.equal(preprocess(clip[None], erase[None])[0], outs[2])  # same seed, same result


def test_flip_label_map_and_ssv2_flip_policy(tmp_path):
    """Flipped clips take the mapped label; SSv2 never flips without a map, Kinetics flips plainly."""
    flip_map = tmp_path / "flip.json"
    flip_map.write_text(json.dumps({"0": 1, "1": 0}))
    frames = torch.zeros(2, 32, 64, 3, dtype=torch.uint8)
    frames[:, :, 32:] = 255  # bright right half: a flipped clip is bright on the left
    cfg = tiny_cfg(
        tmp_path, DATA__TRAIN_JITTER_SCALES_RELATIVE=[1.0, 1.0], DATA__TRAIN_JITTER_ASPECT_RELATIVE=[2.0, 2.0]
    )

    def run(transform, label, mapping):
        flips = []
        for seed in range(20):
            clip, out, _ = transform(frames, label, seed)
            flipped = bool(clip[0, 0, :, :16].float().mean() > clip[0, 0, :, 16:].float().mean())
            flips.append(flipped)
            assert out == (mapping.get(label, label) if flipped else label)
        return flips

    plain = run(TrainTransform(cfg), 0, {})
    assert any(plain) and not all(plain)
    cfg.DATA.FLIP_LABEL_MAP = str(flip_map)
    mapped = run(TrainTransform(cfg), 0, {0: 1, 1: 0})
    assert mapped == plain and run(TrainTransform(cfg), 2, {0: 1, 1: 0}) == plain
    assert not any(run(TrainTransform(cfg, allow_flip=False), 0, {}))


def test_ssv2_flips_only_with_map(ssv2_root, kinetics_root, tmp_path):
    assert Kinetics(tiny_cfg(kinetics_root), "train").train_transform.flip is True
    cfg = tiny_cfg(ssv2_root)
    ds = SSv2(cfg, "train")
    assert ds.train_transform.flip is False and ds.sampling == "segment"
    item = ds[1]
    assert item["video"].shape == (3, 4, 32, 32) and (item["label"], item["skipped"]) == (1, 0)
    (tmp_path / "flip.json").write_text(json.dumps({"0": 1, "1": 0}))
    cfg.DATA.FLIP_LABEL_MAP = str(tmp_path / "flip.json")
    assert SSv2(cfg, "train").train_transform.flip is True


def test_repeated_augmentation_flattened_batches(kinetics_root):
    cfg = tiny_cfg(kinetics_root, AUG__NUM_SAMPLE=3)
    ds = Kinetics(cfg, "train")
    item = ds[1]
    assert item["video"].shape == (3, 3, 4, 32, 32) and item["label"].tolist() == [1, 1, 1]
    assert not torch.equal(item["video"][0], item["video"][1])  # augmented differently
    batch = next(iter(build_loader(cfg, "train")))
    assert batch["video"].shape == (6, 3, 4, 32, 32)
    assert batch["index"].tolist()[0::3] == batch["index"].tolist()[1::3] == batch["index"].tolist()[2::3]
    assert batch["label"].tolist() == batch["index"].tolist()  # labels equal indices in this list


# ---------------------------------------------------------------------------------------------- bad input
def test_train_skips_bad_files_with_log(kinetics_root, caplog):
    cfg = tiny_cfg(kinetics_root)
    ds = Kinetics(cfg, "train", "bad")
    with caplog.at_level(logging.WARNING, logger="stvideo.data"):
        items = [ds[i] for i in range(6)]
    assert [it["skipped"] > 0 for it in items] == [False, True, True, True, True, False]
    for it in items:
        assert ds.samples[it["index"]].video_id in ("videos/a.mp4", "videos/b.mp4")
    for name in ("truncated.mp4", "empty.mp4", "page.mp4", "missing.mp4"):
        assert f"skipping undecodable train video {kinetics_root}/videos/{name}" in caplog.text
    assert sum(it["skipped"] for it in items) == caplog.text.count("skipping undecodable")


def test_val_leaves_bad_videos_out_instead_of_substituting(kinetics_root, caplog):
    ds = Kinetics(tiny_cfg(kinetics_root), "val", "bad")
    with caplog.at_level(logging.WARNING, logger="stvideo.data"):
        items = [ds[i] for i in range(len(ds))]
    assert ["error" in it for it in items] == [False, True, True, True, True, False]
    assert "val video videos/page.mp4" in caplog.text and "left out" in caplog.text
    batch = collate_eval(items, ds.empty_eval_video())
    assert batch["video_id"] == ["videos/a.mp4", "videos/b.mp4"] and batch["label"].tolist() == [0, 1]
    assert batch["video"].shape == (2, 3, 4, 32, 32)
    assert [s["video_id"] for s in batch["skipped"]] == [
        "videos/truncated.mp4", "videos/empty.mp4", "videos/page.mp4", "videos/missing.mp4"
    ]  # fmt: skip
    assert collate_eval(items[1:3], ds.empty_eval_video())["video"].shape == (0, 3, 4, 32, 32)


def test_consecutive_failures_stop_with_file_names(kinetics_root):
    cfg = tiny_cfg(kinetics_root, DATA__MAX_CONSECUTIVE_FAILURES=3)
    ds = Kinetics(cfg, "train", "allbad")
    with pytest.raises(RuntimeError, match=r"3 videos in a row failed to decode \(3 distinct files\)") as e:
        ds[0]
    assert "check_videos.py" in str(e.value) and "videos/" in str(e.value)


def test_test_split_lists_skipped_videos(kinetics_root):
    cfg = tiny_cfg(kinetics_root, TEST__SPLIT="bad", TEST__BATCH_SIZE=3)
    batches = list(build_loader(cfg, "test"))
    assert [b["video_id"] for b in batches] == [["videos/a.mp4"], ["videos/b.mp4"]]
    assert [[s["video_id"] for s in b["skipped"]] for b in batches] == [
        ["videos/truncated.mp4", "videos/empty.mp4"],
        ["videos/page.mp4", "videos/missing.mp4"],
    ]
    assert views_of_test_batch(batches[0], "cpu", 32).shape == (1, 6, 3, 4, 32, 32)
    assert batches[1]["skipped"][1]["error"].endswith("file not found")
    cfg = tiny_cfg(kinetics_root, TEST__SPLIT="allbad")
    (batch,) = list(build_loader(cfg, "test"))
    assert batch["frames"] == [] and len(batch["skipped"]) == 3
    assert views_of_test_batch(batch, "cpu", 32).shape[0] == 0


# ---------------------------------------------------------------------------------------------- sharding
def test_shard_sampler_partitions():
    class Sized:
        def __init__(self, n):
            self.n, self.epoch = n, None

        def __len__(self):
            return self.n

        def set_epoch(self, epoch):
            self.epoch = epoch

    ds = Sized(11)
    train = [ShardSampler(ds, r, 3, shuffle=True, seed=5) for r in range(3)]
    for s in train:
        s.set_epoch(2)
    parts = [s.indices() for s in train]
    perm = torch.randperm(11, generator=torch.Generator().manual_seed(7)).tolist()[:9]
    assert parts == [perm[0::3], perm[1::3], perm[2::3]] and ds.epoch == 2
    assert [len(s) for s in train] == [3, 3, 3]
    test = [ShardSampler(ds, r, 3, shuffle=False).indices() for r in range(3)]
    assert test == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]


def _gloo_worker(rank, world, init_file, root, out_dir):
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    cfg = tiny_cfg(root, TEST__NUM_ENSEMBLE_VIEWS=1, TEST__NUM_SPATIAL_CROPS=1, TRAIN__BATCH_SIZE=4)
    ids = [vid for b in build_loader(cfg, "test") for vid in b["video_id"]]
    train = build_loader(cfg, "train")
    train.sampler.set_epoch(3)
    idx = [int(i) for b in train for i in b["index"]]
    with open(os.path.join(out_dir, f"{rank}.json"), "w") as f:
        json.dump({"test": ids, "train": idx, "train_batch": train.batch_size}, f)
    torch.distributed.destroy_process_group()


def test_real_gloo_ranks_shard_without_overlap(kinetics_root, tmp_path):
    torch.multiprocessing.start_processes(  # fork: the children need not re-import torch
        _gloo_worker,
        args=(2, str(tmp_path / "init"), str(kinetics_root), str(tmp_path)),
        nprocs=2,
        start_method="fork",
    )
    r0, r1 = (json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2))
    assert r0["test"] == ["videos/a.mp4", "videos/odd.webm"] and r1["test"] == ["videos/portrait.mp4"]
    perm = torch.randperm(4, generator=torch.Generator().manual_seed(3)).tolist()
    assert (r0["train"], r1["train"]) == (perm[0::2], perm[1::2])
    assert r0["train_batch"] == r1["train_batch"] == 2


def test_build_dataset_errors(kinetics_root):
    cfg = tiny_cfg(kinetics_root)
    cfg.TRAIN.DATASET = "kinetic"
    with pytest.raises(KeyError, match="TRAIN.DATASET 'kinetic'"):
        build_dataset(cfg, "train")
    with pytest.raises(ValueError, match="split"):
        build_dataset(cfg, "eval")


def test_rand_augment_at_magnitude_zero_keeps_pixel_values():
    """At magnitude 0 twelve of RandAugment's 14 ops are identities: the clip must come out unchanged
    (a dtype, layout or value-range slip around RandAugment would show here)."""
    plain = TrainTransform(tiny_cfg("/unused"))
    cfg = tiny_cfg("/unused", AUG__ENABLE=True, AUG__RE_PROB=0.0)
    cfg.AUG.AA_TYPE = "rand-m0-n1"
    augmented = TrainTransform(cfg)
    clip_in = torch.from_numpy(V.textured_frames(4, 40, 56, seed=5))
    unchanged = 0
    for seed in range(12):
        a, b = plain(clip_in, 0, seed)[0], augmented(clip_in, 0, seed)[0]
        assert (a.float() - b.float()).abs().mean() < 57  # autocontrast / equalize move values, not all
        unchanged += bool(torch.equal(a, b))
    assert unchanged >= 8
