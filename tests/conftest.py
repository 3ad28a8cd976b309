"""Shared fixtures: a tiny synthetic dataset (real encoded videos) and tiny-run overrides."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SYNTH_CFG = str(REPO / "configs/synth/vit_t.yaml")

# A 2-layer, 24-wide ViT on 4x16x16 clips: a full train -> test run takes seconds on 2 cores.
TINY_MODEL_OPTS = [
    "DATA.NUM_FRAMES", "4",
    "DATA.SAMPLING_RATE", "2",
    "DATA.TRAIN_CROP_SIZE", "16",
    "DATA.TEST_CROP_SIZE", "16",
    "VIT.EMBED_DIM", "24",
    "VIT.DEPTH", "2",
    "VIT.NUM_HEADS", "2",
    "TRAIN.BATCH_SIZE", "8",
    "TRAIN.EVAL_PERIOD", "1",
    "TRAIN.CHECKPOINT_PERIOD", "1",
    "TEST.BATCH_SIZE", "4",
    "TEST.NUM_ENSEMBLE_VIEWS", "2",
    "TEST.NUM_SPATIAL_CROPS", "3",
    "SOLVER.MAX_EPOCH", "2",
    "SOLVER.WARMUP_EPOCHS", "1.0",
    "DATA_LOADER.NUM_WORKERS", "0",
    "LOG_PERIOD", "2",
]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_synth_opts(tmp_path_factory) -> list[str]:
    """Overrides for configs/synth/vit_t.yaml pointing at a tiny synthetic dataset made once per session.

    4 train / 1 val / 1 test videos per class (10 classes), 16 frames of 32x32, H.264.
    """
    from stvideo.config import load_config
    from stvideo.data.synth import ensure_synthetic_dataset

    root = tmp_path_factory.mktemp("synth") / "data"
    data_opts = [
        "DATA.PATH_TO_DATA_DIR", str(root),
        "DATA.FLIP_LABEL_MAP", str(root / "flip_label_map.json"),
        "SYNTH.NUM_TRAIN_PER_CLASS", "4",
        "SYNTH.NUM_VAL_PER_CLASS", "1",
        "SYNTH.NUM_TEST_PER_CLASS", "1",
        "SYNTH.NUM_FRAMES", "16",
        "SYNTH.SIZE", "32",
    ]  # fmt: skip
    ensure_synthetic_dataset(load_config(SYNTH_CFG, data_opts))
    assert os.path.isfile(root / "train.csv")
    return data_opts + TINY_MODEL_OPTS


@pytest.fixture(scope="module")
def check_videos():
    """tools/check_videos.py imported as a module (registered, so its process pool can pickle by name)."""
    spec = importlib.util.spec_from_file_location("check_videos", REPO / "tools" / "check_videos.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_videos"] = module
    spec.loader.exec_module(module)
    return module
