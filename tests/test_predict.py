"""tools/predict.py and stvideo.predict: the test protocol on any files, per-file errors, label names."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import stvideo
from stvideo.config import load_config
from stvideo.data.kinetics import read_csv_annotations
from stvideo.data.labels import class_names, names_from_csv
from stvideo.data.synth import CLASS_NAMES
from stvideo.engine import evaluator
from stvideo.models import build_model
from tests.conftest import REPO, SYNTH_CFG
from tests.videos import write_not_video

# Two test views per video over 4 frames: cheap, and more than one view so aggregation matters.
VIEW_OPTS = ["TEST.NUM_ENSEMBLE_VIEWS", "2", "TEST.NUM_SPATIAL_CROPS", "2"]


@pytest.fixture(scope="module")
def trained(tiny_synth_opts, tmp_path_factory):
    """(cfg, checkpoint path, evaluator predictions by path) of a random tiny ViT tested on the test split."""
    out = tmp_path_factory.mktemp("predict_run")
    cfg = load_config(SYNTH_CFG, [*tiny_synth_opts, *VIEW_OPTS, "OUTPUT_DIR", str(out)])
    torch.manual_seed(0)
    model = build_model(cfg)
    ckpt = out / "model.pyth"
    torch.save({"model": model.state_dict()}, ckpt)
    metrics = evaluator.test_views(cfg, model, torch.device("cpu"))
    root = cfg.DATA.PATH_TO_DATA_DIR
    paths = {v: os.path.join(root, v) for v, _ in read_csv_annotations(os.path.join(root, "test.csv"))}
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    by_path = {paths[r["video_id"]]: r for r in lines}
    assert metrics["num_videos"] == len(by_path) == 10
    return cfg, str(ckpt), by_path


def test_predict_agrees_with_evaluator(trained):
    cfg, ckpt, evaluated = trained
    files = sorted(evaluated)
    records = stvideo.predict(cfg, ckpt, files, topk=5)
    assert [r["path"] for r in records] == files
    for rec in records:
        ev = evaluated[rec["path"]]
        assert rec["num_views"] == 4
        assert rec["top_classes"] == ev["top5_classes"]
        assert rec["top_scores"] == pytest.approx(ev["top5_scores"], abs=2e-6)
        assert rec["top_names"] == [CLASS_NAMES[i] for i in ev["top5_classes"]]


def test_views_override_changes_the_protocol(trained):
    cfg, ckpt, evaluated = trained
    one = sorted(evaluated)[0]
    rec = stvideo.predict(cfg, ckpt, [one], topk=3, views=(1, 1))[0]
    assert rec["num_views"] == 1 and len(rec["top_classes"]) == 3
    assert rec["top_scores"] != evaluated[one]["top5_scores"][:3]  # one center view, not 4 views


def test_folder_with_corrupt_and_missing_file(trained, tmp_path):
    cfg, ckpt, evaluated = trained
    folder = tmp_path / "videos"
    folder.mkdir()
    good = sorted(evaluated)[:2]
    for i, src in enumerate(good):
        shutil.copy(src, folder / f"clip{i}.mp4")
    write_not_video(folder / "clip1b_broken.mp4")
    (folder / "notes.txt").write_text("not a video, not picked up from a folder")
    missing = str(tmp_path / "missing.mp4")
    records = stvideo.predict(cfg, ckpt, [str(folder), missing])
    by_name = {os.path.basename(r["path"]): r for r in records}
    assert sorted(by_name) == ["clip0.mp4", "clip1.mp4", "clip1b_broken.mp4", "missing.mp4"]
    assert (
        "error" in by_name["clip1b_broken.mp4"]
        and "clip1b_broken.mp4" in by_name["clip1b_broken.mp4"]["error"]
    )
    assert "error" in by_name["missing.mp4"]
    for i, src in enumerate(good):  # the good files still score, exactly as in the test run
        assert by_name[f"clip{i}.mp4"]["top_classes"] == evaluated[src]["top5_classes"]


def test_cli_prints_names_writes_json_and_reports_failure(trained, tmp_path):
    cfg, ckpt, evaluated = trained
    good = sorted(evaluated)[0]
    bad = write_not_video(tmp_path / "bad.mp4")
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(cfg.dump())
    out = tmp_path / "pred.jsonl"
    cmd = [sys.executable, str(REPO / "tools/predict.py"), "--cfg", str(cfg_file), "--checkpoint", ckpt]
    cmd += [good, str(bad), "--topk", "2", "--json", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1, proc.stderr  # one file failed
    top = evaluated[good]["top5_classes"][0]
    assert f"{good}: {CLASS_NAMES[top]} " in proc.stdout
    assert f"{bad}: FAILED:" in proc.stdout
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines[0]["top_classes"] == evaluated[good]["top5_classes"][:2] and "error" in lines[1]


def test_label_names_from_files(tmp_path, trained):
    cfg = trained[0]
    csv = tmp_path / "train.csv"
    csv.write_text("abseiling/a.mp4 0\nzumba/b.mp4 2\nabseiling/c.mp4 0\n")
    assert names_from_csv(str(csv)) == {0: "abseiling", 2: "zumba"}
    csv.write_text("abseiling/a.mp4 0\nzumba/b.mp4 0\n")
    with pytest.raises(ValueError, match="label 0 is in folders"):
        names_from_csv(str(csv))
    (tmp_path / "labels.json").write_text(json.dumps({"Pushing something": "1", "Holding something": "0"}))
    names = class_names(cfg, str(tmp_path / "labels.json"))
    assert names[:3] == ["Holding something", "Pushing something", "class_2"] and len(names) == 10
    (tmp_path / "names.txt").write_text("a\nb\n")
    assert class_names(cfg, str(tmp_path / "names.txt"))[:3] == ["a", "b", "class_2"]
    assert class_names(cfg) == list(CLASS_NAMES)  # synth: the generator's names
