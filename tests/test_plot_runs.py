"""tools/plot_runs.py: curves read from json_stats.log written by the trainer's own JsonStats writer."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from stvideo.analysis.runs import read_run
from stvideo.utils.logging import JsonStats
from tests.conftest import REPO


def _write_run(folder, arch: str, epochs: int, resumed_at: int | None = None) -> None:
    folder.mkdir()
    stats = JsonStats(str(folder))
    stats.write({"_type": "run_info", "arch": arch, "params": 1, "world_size": 1})
    for e in range(1, epochs + 1):
        stats.write({"_type": "train_iter", "epoch": e, "iter": 0, "loss": 9.0, "lr": 9.0})
        stats.write({"_type": "train_epoch", "epoch": e, "loss": 2.0 / e, "top1": 10.0 * e, "lr": 1e-3 / e})
        if e % 2 == 0:
            stats.write({"_type": "val", "epoch": e, "loss": 1.5 / e, "top1": 9.0 * e, "top5": 100.0})
        if e == resumed_at:  # a resumed run writes the epochs after its last checkpoint again
            stats.write({"_type": "run_info", "arch": arch, "params": 1, "world_size": 1})
            stats.write({"_type": "train_epoch", "epoch": e, "loss": 0.5, "top1": 77.0, "lr": 5e-4})
    stats.write({"_type": "test_final", "top1": 42.5, "top5": 90.0, "num_videos": 10, "num_views": 9})


def test_read_run_series(tmp_path):
    _write_run(tmp_path / "stvit_t", "stvit", 4, resumed_at=3)
    run = read_run(str(tmp_path / "stvit_t"))
    assert (run.name, run.arch, run.test_top1) == ("stvit_t", "stvit", 42.5)
    assert run.points("train_loss") == ([1, 2, 3, 4], [2.0, 1.0, 0.5, 0.5])  # epoch 3: the resumed record
    assert run.points("train_top1")[1] == [10.0, 20.0, 77.0, 40.0]
    assert run.points("val_top1") == ([2, 4], [18.0, 36.0])
    assert run.points("lr")[1] == pytest.approx([1e-3, 5e-4, 5e-4, 2.5e-4])


def test_bad_stats_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="json_stats.log not found"):
        read_run(str(tmp_path))
    (tmp_path / "json_stats.log").write_text('{"_type": "run_info"}\n{broken\n')
    with pytest.raises(ValueError, match=r"json_stats.log:2: not a JSON line"):
        read_run(str(tmp_path))


def test_cli_overlays_runs(tmp_path):
    _write_run(tmp_path / "vit_t", "vit", 6)
    _write_run(tmp_path / "evovit_t", "evovit", 4)
    out = tmp_path / "runs.png"
    cmd = [
        sys.executable,
        str(REPO / "tools/plot_runs.py"),
        str(tmp_path / "vit_t"),
        str(tmp_path / "evovit_t"),
    ]
    proc = subprocess.run(
        [*cmd, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "vit_t (vit): 6 epochs, last val top-1 54.0, test top-1 42.5" in proc.stdout
    assert "evovit_t (evovit): 4 epochs" in proc.stdout
    png = np.asarray(Image.open(out).convert("RGB")).astype(np.float32)
    assert png.shape[1] > 800 and png.std() > 10
    # both run colours (matplotlib C0 blue, C1 orange) are drawn
    for rgb in ((31, 119, 180), (255, 127, 14)):
        assert (np.abs(png - rgb).sum(-1) < 30).sum() > 50
    bad = subprocess.run(
        [sys.executable, str(REPO / "tools/plot_runs.py"), str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "json_stats.log not found" in bad.stderr
