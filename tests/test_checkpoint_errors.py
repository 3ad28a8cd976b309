"""Unreadable checkpoints: one short message naming the file, from every reader and both tools; auto-resume
falls back to the newest readable periodic checkpoint and never overwrites a file it could not read."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stvideo.analysis import report
from stvideo.config import get_cfg, load_config
from stvideo.engine import checkpoint as ckpt
from stvideo.models import build_model
from stvideo.models.weights import load_pretrained
from stvideo.utils.checkpoint_io import CheckpointError, check_checkpoint, read_checkpoint

REPO = Path(__file__).resolve().parents[1]
SYNTH_CFG = str(REPO / "configs/synth/vit_t.yaml")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


class Trusted:
    """A harmless custom class: weights_only loading still refuses it."""

    def __init__(self) -> None:
        self.lr = 0.1


def _real(path: Path) -> Path:
    ckpt.save_atomic({"model": {"w": torch.randn(64, 64)}, "epoch": 1}, str(path))
    return path


def _truncated(path: Path) -> Path:
    data = _real(path).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _not_torch(path: Path) -> Path:
    path.write_text("<html>404 Not Found</html>\n")
    return path


def _with_object(path: Path) -> Path:
    torch.save({"model": {"w": torch.zeros(2)}, "extra": Trusted()}, str(path))
    return path


BAD = {
    "truncated": (_truncated, "truncated or corrupt"),
    "not_torch": (_not_torch, "not a torch checkpoint file"),
    "object": (_with_object, "refuses for safety"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_read_checkpoint_names_file_and_problem(tmp_path, kind):
    make, phrase = BAD[kind]
    path = make(tmp_path / f"{kind}.pyth")
    for reader in (read_checkpoint, check_checkpoint, ckpt.load):
        with pytest.raises(CheckpointError) as info:
            reader(str(path))
        msg = str(info.value)
        assert msg.startswith(f"{path}: ") and phrase in msg, msg
        assert "\n" not in msg and len(msg) < 400, msg
    if kind == "object":
        assert "Trusted" in msg and "add_safe_globals" in msg and "state_dict" in msg


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(CheckpointError, match="missing.pyth: file not found"):
        read_checkpoint(str(tmp_path / "missing.pyth"))
    (tmp_path / "empty.pyth").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty.pyth: file is empty \(0 bytes\)"):
        read_checkpoint(str(tmp_path / "empty.pyth"))
    ok = _real(tmp_path / "ok.pyth")
    assert check_checkpoint(str(ok), ("model", "epoch"))["epoch"] == 1
    with pytest.raises(CheckpointError, match="not an stvideo checkpoint: no optimizer"):
        check_checkpoint(str(ok), ("model", "optimizer"))


def _tiny_cfg():
    cfg = get_cfg()
    cfg.MODEL.NUM_CLASSES, cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE = 5, 2, 16
    cfg.VIT.EMBED_DIM, cfg.VIT.DEPTH, cfg.VIT.NUM_HEADS, cfg.VIT.PATCH_SIZE = 16, 1, 2, 8
    return cfg


def test_model_weights_and_pretrained_readers(tmp_path):
    cfg = _tiny_cfg()
    model = build_model(cfg)
    for kind, (make, phrase) in BAD.items():
        path = make(tmp_path / f"{kind}.pyth")
        with pytest.raises(CheckpointError, match=phrase):
            ckpt.load_model_weights(model, str(path))
        with pytest.raises(CheckpointError, match=phrase):
            load_pretrained(model, str(path), cfg)
        cfg.MODEL.PRETRAINED = str(path)
        with pytest.raises(CheckpointError, match=phrase):
            build_model(cfg)
    other = _real(tmp_path / "other_model.pyth")
    with pytest.raises(CheckpointError, match="other_model.pyth: its weights do not fit this model"):
        ckpt.load_model_weights(model, str(other))


def test_find_resume_falls_back_and_stops_when_nothing_reads(tmp_path):
    folder = Path(ckpt.checkpoint_dir(str(tmp_path)))
    assert ckpt.find_resume(str(tmp_path)) == (None, [])
    state = {k: torch.zeros(1) for k in ckpt.RESUME_KEYS}
    for epoch in (1, 2, 3):
        ckpt.save_atomic(state, str(folder / ckpt.periodic_name(epoch)))
    ckpt.save_atomic(state, str(folder / ckpt.LAST))
    assert ckpt.find_resume(str(tmp_path)) == (str(folder / ckpt.LAST), [])
    _truncated(folder / ckpt.LAST)
    _not_torch(folder / ckpt.periodic_name(3))
    path, bad = ckpt.find_resume(str(tmp_path))
    assert path == str(folder / ckpt.periodic_name(2))
    assert [p for p, _ in bad] == [str(folder / ckpt.LAST), str(folder / ckpt.periodic_name(3))]
    assert ckpt.set_aside(bad[0][0]) == str(folder / "last.pyth.corrupt")
    _real(folder / ckpt.LAST)  # readable but not a training checkpoint
    assert ckpt.set_aside(str(folder / ckpt.LAST)) == str(folder / "last.pyth.corrupt.1")
    for epoch in (1, 2):
        _with_object(folder / ckpt.periodic_name(epoch))
    with pytest.raises(CheckpointError, match="no readable checkpoint to resume from") as info:
        ckpt.find_resume(str(tmp_path))
    assert all(ckpt.periodic_name(e) in str(info.value) for e in (1, 2, 3))


def _run_net(opts: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "tools/run_net.py"), "--cfg", SYNTH_CFG, *opts]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV, cwd=REPO)


def _assert_short_failure(proc: subprocess.CompletedProcess, path: Path) -> None:
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert err.startswith("Checkpoint error: ") and str(path) in err, err
    assert "Traceback" not in err and len(err.splitlines()) < 5, err


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "key, kind",
    [
        ("TEST.CHECKPOINT_FILE_PATH", "truncated"),
        ("MODEL.PRETRAINED", "object"),
        ("TRAIN.CHECKPOINT_FILE_PATH", "not_torch"),
    ],
)
def test_run_net_stops_with_one_line_and_writes_nothing(tmp_path, tiny_synth_opts, key, kind):
    path = BAD[kind][0](tmp_path / f"{kind}.pyth")
    out = tmp_path / "run"
    opts = [*tiny_synth_opts, "OUTPUT_DIR", str(out), key, str(path)]
    if key == "TEST.CHECKPOINT_FILE_PATH":
        opts += ["TRAIN.ENABLE", "False"]
    proc = _run_net(opts)
    _assert_short_failure(proc, path)
    assert BAD[kind][1] in proc.stderr
    assert not out.exists(), "nothing may be written"


def test_run_net_resume_with_no_readable_checkpoint_stops_and_keeps_files(tmp_path, tiny_synth_opts):
    out = tmp_path / "run"
    folder = out / "checkpoints"
    folder.mkdir(parents=True)
    _truncated(folder / ckpt.LAST)
    _with_object(folder / ckpt.periodic_name(1))
    before = _snapshot(out)
    proc = _run_net([*tiny_synth_opts, "OUTPUT_DIR", str(out)])
    _assert_short_failure(proc, folder)
    assert "last.pyth: truncated or corrupt" in proc.stderr and ckpt.periodic_name(1) in proc.stderr
    assert _snapshot(out) == before, "the run changed its output folder"


def test_count_flops_reports_checkpoint_errors_in_one_line(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("count_flops", REPO / "tools" / "count_flops.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    path = _truncated(tmp_path / "weights.pyth")

    def measure(args):  # count_flops builds with random weights; any future checkpoint read ends here
        read_checkpoint(str(path))

    monkeypatch.setattr(report, "measure", measure)
    with pytest.raises(SystemExit) as info:
        tool.main(["--cfg", SYNTH_CFG])
    msg = str(info.value.code)
    assert msg.startswith(f"Checkpoint error: {path}: truncated or corrupt") and "\n" not in msg


def test_corrupt_last_resumes_from_periodic_to_identical_weights(tmp_path, tiny_synth_opts):
    """3 epochs, then last.pyth truncated and the epoch-3 checkpoint gone: the rerun warns, moves last.pyth
    aside untouched, trains epoch 3 again from the epoch-2 checkpoint and ends with the same weights."""
    out = tmp_path / "run"
    opts = [*tiny_synth_opts, "SOLVER.MAX_EPOCH", "3", "TEST.ENABLE", "False", "OUTPUT_DIR", str(out)]
    first = _run_net(opts)
    assert first.returncode == 0, first.stderr[-3000:]
    folder = out / "checkpoints"
    reference = ckpt.load(str(folder / ckpt.LAST))
    (folder / ckpt.periodic_name(3)).unlink()
    cut = _truncated(folder / ckpt.LAST).read_bytes()

    proc = _run_net(opts)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (out / "stdout.log").read_text()
    assert f"Cannot resume from {folder / ckpt.LAST}: truncated or corrupt" in log
    assert f"Resuming from {folder / ckpt.periodic_name(2)}, the newest readable checkpoint" in log
    assert (folder / "last.pyth.corrupt").read_bytes() == cut
    again = ckpt.load(str(folder / ckpt.LAST))
    assert again["epoch"] == reference["epoch"] == 3
    for name, tensor in reference["model"].items():
        assert torch.equal(tensor, again["model"][name]), name
    assert load_config(str(out / "config.yaml")).SOLVER.MAX_EPOCH == 3
