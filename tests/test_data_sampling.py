"""Frame-index arithmetic of dense / segment sampling and crop-position arithmetic, exactly."""

from __future__ import annotations

import numpy as np
import pytest

from stvideo.data import sampling as S
from stvideo.data.transforms import crop_offsets, parse_rand_augment


def test_dense_stride_is_fps_aware():
    assert S.dense_stride(4, 30.0, 30) == 4.0
    assert S.dense_stride(4, 60.0, 30) == 8.0
    assert S.dense_stride(4, 15.0, 30) == 2.0
    assert S.dense_stride(4, 25.0, 0) == 4.0  # TARGET_FPS 0: stride in source frames


def test_dense_test_views_exact():
    # 100 frames, 8 x 4 at native rate: span 29, start range 71, 3 views at slot centers 11, 35, 59.
    idx = S.dense_test_indices(100, 8, 4.0, 3)
    assert idx.tolist() == [
        [11, 15, 19, 23, 27, 31, 35, 39],
        [35, 39, 43, 47, 51, 55, 59, 63],
        [59, 63, 67, 71, 75, 79, 83, 87],
    ]
    assert S.dense_view_starts(100, 8, 4.0, 1) == [35]  # one view: the center clip


def test_dense_fps_aware_60fps_video():
    # A 60 fps video sampled for TARGET_FPS 30 and rate 2 steps 4 source frames.
    idx = S.dense_test_indices(120, 4, S.dense_stride(2, 60.0, 30), 1)
    assert idx.tolist() == [[53, 57, 61, 65]]  # span 13, start floor(107 / 2)
    # 25 fps: stride 5/3 -> floor(k * 5/3)
    assert S.dense_clip(50, 6, S.dense_stride(2, 25.0, 30), 0).tolist() == [0, 1, 3, 5, 6, 8]


def test_dense_short_video_loop_and_repeat_last():
    assert S.dense_clip(10, 8, 2.0, 0, "loop").tolist() == [0, 2, 4, 6, 8, 0, 2, 4]
    assert S.dense_clip(10, 8, 2.0, 0, "repeat_last").tolist() == [0, 2, 4, 6, 8, 9, 9, 9]
    assert S.dense_test_indices(10, 8, 2.0, 2, "repeat_last").tolist() == [[0, 2, 4, 6, 8, 9, 9, 9]] * 2
    with pytest.raises(ValueError, match="OUT_OF_BOUND"):
        S.dense_clip(10, 8, 2.0, 0, "wrap")


def test_dense_train_start_uniform_over_valid_starts():
    rng = np.random.default_rng(0)
    starts = {int(S.dense_train_indices(20, 4, 2.0, rng)[0]) for _ in range(400)}
    assert starts == set(range(0, 14))  # span 7 -> starts 0..13, all reachable, none beyond
    assert S.dense_train_indices(5, 4, 2.0, rng).tolist() == [0, 2, 4, 1]  # short video, looped


def test_segment_test_views_are_distinct():
    # 30 frames, 4 segments of 7.5; view j takes offset (j+1)/4 of each segment.
    idx = S.segment_test_indices(30, 4, 3)
    assert idx.tolist() == [[1, 9, 16, 24], [3, 11, 18, 26], [5, 13, 20, 28]]
    assert S.segment_test_indices(30, 4, 1).tolist() == [[3, 11, 18, 26]]  # segment middles


def test_segment_train_one_frame_per_segment_and_short_video():
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(200):
        idx = S.segment_train_indices(30, 4, rng)
        # segment k covers positions [7.5 k, 7.5 (k + 1)): frames floor(7.5 k) .. ceil(7.5 (k + 1)) - 1
        assert all(int(np.floor(7.5 * k)) <= i <= int(np.ceil(7.5 * (k + 1))) - 1 for k, i in enumerate(idx))
        seen.update(int(i) for i in idx[:1])
    assert seen == set(range(0, 8))  # every frame of the first segment is drawn
    short = S.segment_train_indices(3, 8, rng)
    assert short.shape == (8,) and short.min() >= 0 and short.max() <= 2
    assert S.segment_test_indices(3, 8, 2).tolist() == [[0, 0, 0, 1, 1, 2, 2, 2], [0, 0, 1, 1, 1, 2, 2, 2]]


def test_crop_offsets():
    assert crop_offsets(298, 224, 3) == [0, 37, 74]
    assert crop_offsets(298, 224, 1) == [37]
    assert crop_offsets(300, 224, 5) == [0, 19, 38, 57, 76]
    with pytest.raises(ValueError, match="larger"):
        crop_offsets(200, 224, 1)


def test_parse_rand_augment():
    spec = parse_rand_augment("rand-m7-n4-mstd0.5-inc1")
    assert (spec.num_ops, spec.magnitude, spec.magnitude_std) == (4, 7, 0.5)
    with pytest.raises(ValueError, match="AUG.AA_TYPE"):
        parse_rand_augment("rand-m9-w0")
    with pytest.raises(ValueError, match="AUG.AA_TYPE"):
        parse_rand_augment("autoaug")
