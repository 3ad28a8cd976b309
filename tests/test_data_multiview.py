"""Multi-view testing on real videos: views cut on the evaluator's device score exactly as views cut in
the worker did, and every decoder gives the same scores and the same bad-file reports (held-out style)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.transforms import v2

from stvideo.config.defaults import get_cfg
from stvideo.data import build_loader
from stvideo.data.decoding import VideoFile
from stvideo.data.preprocessor import ClipPreprocessor
from stvideo.data.transforms import cut_views, resize_short_side, resize_short_side_size, views_of_test_batch
from stvideo.engine.evaluator import collect_view_logits, video_metrics
from tests import videos as V

DECODERS = ("decord", "pyav", "torchcodec")
GOOD = ["h264.mp4", "vp9.webm", "h264.mkv", "mpeg4.avi", "portrait.mp4", "three_frames.mp4"]
BAD = ["truncated.mp4", "empty.mp4", "page.mp4"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Short side 32 = TEST_CROP_SIZE, so no decoder rescales (their scalers differ, see docs/data.md)."""
    d = tmp_path_factory.mktemp("heldout")
    V.write_video(d / "h264.mp4", V.indexed_frames(40, 32, 64), gop=12, options={"bf": "3"})
    V.write_video(d / "vp9.webm", V.textured_frames(30, 32, 56), codec="vp9", fps=12)
    V.write_video(d / "h264.mkv", V.textured_frames(24, 32, 64), fps=25)
    V.write_video(d / "mpeg4.avi", V.indexed_frames(30, 32, 64), codec="mpeg4")
    V.write_indexed_video(d / "portrait.mp4", 30, 64, 32, "h264")
    V.write_indexed_video(d / "three_frames.mp4", 3, 32, 64, "h264")
    V.write_truncated(d / "truncated.mp4", d / "h264.mp4")
    V.write_empty(d / "empty.mp4")
    V.write_not_video(d / "page.mp4")
    names = GOOD[:3] + BAD[:1] + GOOD[3:] + BAD[1:]
    (d / "test.csv").write_text("".join(f"{n} {i % 5}\n" for i, n in enumerate(names)))
    return d


def _cfg(root: Path, decoder: str):
    cfg = get_cfg()
    cfg.DATA.PATH_TO_DATA_DIR = str(root)
    cfg.DATA.NUM_FRAMES, cfg.DATA.SAMPLING_RATE = 4, 2
    cfg.DATA.TEST_CROP_SIZE = 32
    cfg.DATA.DECODING_BACKEND = decoder
    cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS = 2, 3
    cfg.TEST.BATCH_SIZE = 1
    cfg.DATA_LOADER.NUM_WORKERS = 0
    return cfg


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv3d(3, 8, (2, 5, 5), stride=(1, 2, 2)),
        nn.ReLU(),
        nn.AdaptiveAvgPool3d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    ).eval()


def _scores(cfg) -> tuple[dict, list]:
    loader = build_loader(cfg, "test")
    with torch.no_grad():
        records, skipped = collect_view_logits(
            _model(), loader, ClipPreprocessor(cfg, "cpu"), None, cfg.DATA.TEST_CROP_SIZE
        )
    return records, skipped


def _views_cut_in_the_worker(frames: torch.Tensor, size: int, num_crops: int) -> torch.Tensor:
    """The worker's former crop loop (before views moved to the device), kept as the oracle."""
    n, t, height, width = frames.shape[:4]
    x = frames.permute(0, 4, 1, 2, 3)
    long, short = max(height, width), min(height, width)
    offsets = [int(round(i * (long - size) / max(1, num_crops - 1))) for i in range(num_crops)]
    if num_crops == 1:
        offsets = [(long - size) // 2]
    center = (short - size) // 2
    boxes = [(center, o) for o in offsets] if height <= width else [(o, center) for o in offsets]
    out = torch.empty(n * num_crops, 3, t, size, size, dtype=torch.uint8)
    for i in range(n):
        for j, (top, left) in enumerate(boxes):
            out[i * num_crops + j].copy_(x[i, ..., top : top + size, left : left + size])
    return out


def test_views_cut_on_the_device_score_as_views_cut_in_the_worker(root):
    """Same views bit for bit, same logits bit for bit, for every decodable file of the set."""
    cfg = _cfg(root, "pyav")
    records, _ = _scores(cfg)
    loader = build_loader(cfg, "test")
    ds, model, preprocess = loader.dataset, _model(), ClipPreprocessor(cfg, "cpu")
    assert sorted(r["video_id"] for r in records.values()) == sorted(GOOD)
    for index, rec in records.items():
        path = ds.samples[index].path
        with VideoFile(path, "pyav", 32) as vf:
            idx = ds.test_frame_indices(vf.info.num_frames, vf.info.fps, 2)
            frames = torch.from_numpy(vf.get_frames(idx.reshape(-1))).unflatten(0, idx.shape)
        views = _views_cut_in_the_worker(frames, 32, 3)
        item = ds[index]
        assert torch.equal(cut_views(item["frames"], item["crops"], 32), views), path
        with torch.no_grad():
            assert torch.equal(model(preprocess(views)), rec["logits"]), path


def test_every_decoder_gives_the_same_scores_and_bad_file_reports(root):
    """Held-out style: the same model and views give the same scores with each decoder (the three decode
    these files, short side 32 so nothing is rescaled, to the same pixels: equal logits, equal metrics);
    the same three bad files are left out, each error naming its file."""
    results = {d: _scores(_cfg(root, d)) for d in DECODERS}
    by_id = {d: {r["video_id"]: r["logits"] for r in recs.values()} for d, (recs, _) in results.items()}
    for d in DECODERS:
        assert sorted(by_id[d]) == sorted(GOOD), d
        skipped = results[d][1]
        assert sorted(s["video_id"] for s in skipped) == sorted(BAD), d
        assert all(s["path"] in s["error"] for s in skipped), skipped
    for vid in GOOD:
        assert torch.equal(by_id["torchcodec"][vid], by_id["pyav"][vid]), vid
        assert torch.equal(by_id["decord"][vid], by_id["pyav"][vid]), vid
    metrics = {d: video_metrics(results[d][0], "prob_mean") for d in DECODERS}
    preds = {d: m[1].argmax(-1).tolist() for d, m in metrics.items()}
    assert preds["decord"] == preds["pyav"] == preds["torchcodec"]
    assert metrics["decord"][0] == metrics["pyav"][0] == metrics["torchcodec"][0]
    assert np.isfinite(metrics["pyav"][0]["top1"])


def test_torchvision_eval_resize_gives_every_decoder_the_same_pixels(tmp_path):
    """DATA.EVAL_RESIZE torchvision: each decoder decodes at full size (the same bytes: a PyAV decode)
    and the evaluator resizes with ``v2.Resize(32, antialias=True)`` before cutting, so every decoder's
    test views and val view are the same bytes. Short sides of 48: the decoders' own scalers are unused."""
    V.write_video(tmp_path / "a.mp4", V.textured_frames(40, 48, 96), gop=12, options={"bf": "3"})
    V.write_video(tmp_path / "b.webm", V.textured_frames(30, 48, 84), codec="vp9", fps=12)
    for split in ("test", "val"):
        (tmp_path / f"{split}.csv").write_text("a.mp4 0\nb.webm 1\n")
    resize = v2.Resize(32, antialias=True)
    vals = {}
    for decoder in DECODERS:
        cfg = _cfg(tmp_path, decoder)
        cfg.DATA.EVAL_RESIZE = "torchvision"
        test, val = build_loader(cfg, "test").dataset, build_loader(cfg, "val").dataset
        for i, name in enumerate(("a.mp4", "b.webm")):
            item = test[i]
            with VideoFile(str(tmp_path / name), "pyav", 0) as vf:
                idx = test.test_frame_indices(vf.info.num_frames, vf.info.fps, 2)
                full = torch.from_numpy(vf.get_frames(idx.reshape(-1))).unflatten(0, idx.shape)
            assert full.shape[2] == 48 and torch.equal(item["frames"], full), (decoder, name)
            resized = resize(full.flatten(0, 1).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).unflatten(0, (2, 4))
            boxes = test.test_transform.crop_boxes(*resized.shape[2:4])
            assert item["crops"].tolist() == [list(b) for b in boxes]
            views = views_of_test_batch({"frames": [item["frames"]], "crops": [item["crops"]]}, "cpu", 32)
            assert torch.equal(views[0], cut_views(resized, boxes, 32)), (decoder, name)
        vals[decoder] = torch.stack([val[i]["video"] for i in range(2)])
    assert vals["pyav"].shape == (2, 3, 4, 32, 32)
    assert torch.equal(vals["decord"], vals["pyav"]) and torch.equal(vals["torchcodec"], vals["pyav"])


@pytest.mark.parametrize(
    "height, width", [(48, 96), (48, 84), (240, 427), (256, 340), (427, 240), (33, 33), (31, 97)]
)
def test_crop_corners_are_computed_for_torchvisions_resized_size(height, width):
    """The worker computes crop corners for the size the evaluator's resize will produce."""
    frames = torch.zeros(1, 1, height, width, 3, dtype=torch.uint8)
    assert tuple(resize_short_side(frames, 32).shape[2:4]) == resize_short_side_size(height, width, 32)
