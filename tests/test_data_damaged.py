"""Damaged videos that still decode: detection per decoder, no false positives, DATA.ON_DAMAGED, --deep."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from stvideo.config import load_config
from stvideo.config.defaults import get_cfg
from stvideo.data.decoding import DecodeError, VideoFile, is_truncated
from stvideo.data.kinetics import Kinetics
from tests import damaged_videos as D
from tests import videos as V

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ("decord", "pyav", "torchcodec")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("damaged")
    frames = V.textured_frames(36, 48, 64)
    mp4 = V.write_video(d / "src.mp4", frames, gop=12)
    webm = V.write_video(d / "src.webm", frames, codec="vp9", gop=12)
    faststart = D.write_faststart(d / "faststart.mp4", mp4)
    return {
        "good_mp4": mp4,
        "good_webm": webm,
        "good_faststart": faststart,
        "cut_webm": D.write_cut(d / "cut.webm", webm, 1 / 3),
        "cut_faststart_mp4": D.write_cut(d / "cut_faststart.mp4", faststart, 0.5),
        "flipped_mp4": D.write_flipped(d / "flipped.mp4", mp4),
        "vp9_bad_frame": D.write_corrupt_frame(d / "bad_frame.webm", webm, 20),
    }


# (file, backend) -> what the decoder says: damaged with this reason, or undecodable.
EXPECTED = {
    ("cut_webm", "decord"): "truncated: 11 of 36",
    ("cut_webm", "pyav"): "truncated: 10 of 36",
    ("cut_faststart_mp4", "decord"): DecodeError,  # decord's index build stops at the cut: cannot open
    ("cut_faststart_mp4", "pyav"): "truncated: 16 of 36",
    ("flipped_mp4", "decord"): "FFmpeg errors: [h264] Invalid NAL unit size",  # via the PyAV fallback
    ("flipped_mp4", "pyav"): "FFmpeg errors: [h264] Invalid NAL unit size",
    ("vp9_bad_frame", "decord"): "FFmpeg errors: [vp9]",  # via the PyAV fallback
    ("vp9_bad_frame", "pyav"): "FFmpeg errors: [vp9]",
    # torchcodec: its FFmpeg's errors on opening (a cut file) make PyAV count the decodable frames; a packet
    # its decoder rejects makes the file fall back to PyAV, as with decord.
    ("cut_webm", "torchcodec"): "truncated: 10 of 36",
    ("cut_faststart_mp4", "torchcodec"): "truncated: 16 of 36",
    ("flipped_mp4", "torchcodec"): "FFmpeg errors: Invalid NAL unit size",  # logged while opening
    ("vp9_bad_frame", "torchcodec"): "FFmpeg errors: [vp9]",  # via the PyAV fallback
}


@pytest.mark.parametrize("name,backend", sorted(EXPECTED))
def test_damaged_file_is_detected(files, name, backend):
    expected = EXPECTED[name, backend]
    if expected is DecodeError:
        with pytest.raises(DecodeError, match="cannot open"):
            VideoFile(str(files[name]), backend)
        return
    with VideoFile(str(files[name]), backend) as vf:
        got = vf.get_frames(list(range(vf.info.num_frames)))
        report = vf.damage
    assert got.shape[0] == vf.info.num_frames  # the frames are still delivered
    assert report is not None and expected in report.reason, report
    assert report.first_bad_frame is not None


def test_corrupt_frame_costs_one_frame_not_the_file(files):
    """PyAV replaces the rejected frame by the previous one; the frames after it stay exact."""
    with (
        VideoFile(str(files["good_webm"]), "pyav") as good,
        VideoFile(str(files["vp9_bad_frame"]), "pyav") as bad,
    ):
        want = [19, 20, 21, 35]
        a, b = good.get_frames(want), bad.get_frames(want)
        assert bad.damage.first_bad_frame == 20
    assert (b[1] == b[0]).all()  # frame 20 repeats frame 19
    assert abs(a[3].astype(int) - b[3]).max() < 40  # the next keyframe's GOP decodes cleanly again


def _good_files(d: Path) -> list[Path]:
    """Every kind of good file the tests and benchmarks generate with tests/videos.py."""
    return [
        V.write_indexed_video(d / "clip.mp4", 36, 32, 64, "h264"),
        V.write_indexed_video(d / "clip.webm", 36, 32, 64, "vp9"),
        V.write_indexed_video(d / "odd.mp4", 20, 33, 47, "h264"),
        V.write_indexed_video(d / "odd.webm", 20, 35, 45, "vp9"),
        V.write_indexed_video(d / "portrait.mp4", 20, 64, 40, "h264"),
        V.write_vfr_video(d / "vfr.mp4", 30, 32, 40),
        V.write_video(
            d / "bframes.mp4", V.indexed_frames(36, 32, 64), options={"bf": "3", "preset": "medium"}
        ),
        V.write_indexed_video(d / "w48.mp4", 20, 32, 48, "h264"),
        V.write_video(
            d / "k400.mp4", V.textured_frames(60, 64, 86), gop=250, options={"crf": "23", "bf": "3"}
        ),
        V.write_video(d / "ssv2.webm", V.textured_frames(24, 60, 106), fps=12, codec="vp9", gop=120),
        D.write_faststart(d / "faststart.mp4", d / "clip.mp4"),
        V.write_indexed_video(d / "one_frame.mp4", 1, 32, 64, "h264"),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_good_files_are_never_flagged(tmp_path, backend):
    for path in _good_files(tmp_path):
        with VideoFile(str(path), backend) as vf:
            assert vf.scan() == vf.info.num_frames, path
            assert vf.damage is None, (path, vf.damage)


def test_truncation_tolerance():
    assert not is_truncated(None, 5) and not is_truncated(60, 60) and not is_truncated(60, 54)
    assert not is_truncated(20, 18)  # 2 frames missing: below MIN_MISSING_FRAMES
    assert is_truncated(60, 53) and is_truncated(60, 9)


def test_ffmpeg_lines_do_not_reach_stderr(files, capfd):
    """decord's FFmpeg prints its errors to stderr unless its log callback is replaced."""
    import decord

    capfd.readouterr()
    with VideoFile(str(files["cut_webm"]), "decord") as vf:
        vf.get_frames([0, 5])
    assert vf.damage is not None
    decord.VideoReader(str(files["cut_webm"]))  # plain decord in the same process, also routed
    assert "Read error" not in capfd.readouterr().err


@pytest.mark.parametrize("backend", ["decord", "torchcodec"])
@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_interrupt_inside_the_log_callback_reaches_the_caller(files, backend, interrupt):
    """A signal handler that runs while FFmpeg is in the ctypes log callback (Ctrl-C; submitit's exit on
    SLURM's preemption signal) raises there, where ctypes would print and drop it and the epoch would go
    on. A trace function raising on the callback's first call stands in for that handler."""
    calls = []

    def trace(frame, event, arg):
        code = frame.f_code
        if event == "call" and code.co_name == "callback" and code.co_filename.endswith("ffmpeg_log.py"):
            calls.append(code)
            raise interrupt("signal")  # raising also unsets the trace function: one interrupt
        return None

    hook, previous = sys.unraisablehook, sys.gettrace()
    sys.settrace(trace)
    try:
        with pytest.raises(interrupt, match="signal"):
            with VideoFile(str(files["good_mp4"]), backend) as vf:
                vf.get_frames(list(range(0, 36, 5)))
    finally:
        sys.settrace(previous)
    assert len(calls) == 1 and sys.unraisablehook is hook
    with VideoFile(str(files["good_mp4"]), backend) as vf:  # the decoder and its log capture still work
        assert vf.get_frames([0, 35]).shape == (2, 48, 64, 3) and vf.damage is None


def _dataset(tmp_path: Path, files: dict, mode: str, policy: str, names: list[str]) -> Kinetics:
    lines = [f"{files[n]} {i}" for i, n in enumerate(names)]
    split = "test" if mode == "test" else "train"
    (tmp_path / f"{split}.csv").write_text("\n".join(lines) + "\n")
    cfg = get_cfg()
    cfg.DATA.PATH_TO_DATA_DIR = str(tmp_path)
    cfg.DATA.NUM_FRAMES, cfg.DATA.SAMPLING_RATE = 4, 2
    cfg.DATA.TRAIN_CROP_SIZE = cfg.DATA.TEST_CROP_SIZE = 32
    cfg.DATA.TRAIN_JITTER_SCALES_RELATIVE = [0.5, 1.0]
    cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS = 2, 1
    cfg.DATA.ON_DAMAGED = policy
    return Kinetics(cfg, mode, split)


def test_policy_warn_uses_and_marks(tmp_path, files, caplog):
    ds = _dataset(tmp_path, files, "test", "warn", ["good_mp4", "cut_webm"])
    good, cut = ds[0], ds[1]
    assert good["damage"] is None and "frames" in good
    assert "frames" in cut and "truncated" in cut["damage"]["reason"]
    ds[1]
    assert caplog.text.count("damaged test video") == 1  # once per file and process
    train = _dataset(tmp_path, files, "train", "warn", ["cut_webm"])[0]
    assert (train["damaged"], train["skipped"]) == (1, 0)


def test_policy_skip_excludes_at_test_and_replaces_in_training(tmp_path, files):
    ds = _dataset(tmp_path, files, "test", "skip", ["good_mp4", "flipped_mp4"])
    left_out = ds[1]
    assert "frames" not in left_out and "damaged" in left_out["error"]
    assert "FFmpeg errors" in left_out["damage"]["reason"]
    train = _dataset(tmp_path, files, "train", "skip", ["cut_webm", "good_mp4"])
    item = train[0]
    assert item["index"] == 1 and item["skipped"] == item["damaged"] == 1  # replaced by the good one


def test_check_videos_deep(check_videos, files, tmp_path, capsys):
    names = ["good_mp4", "cut_webm", "good_webm", "vp9_bad_frame", "cut_faststart_mp4"]
    csv = tmp_path / "list.csv"
    csv.write_text("".join(f"{files[n]} {i}\n" for i, n in enumerate(names)))
    assert check_videos.main([str(csv), "--workers", "1"]) == 1  # quick mode: only the cut mp4
    clean, damaged = tmp_path / "clean.csv", tmp_path / "damaged.txt"
    status = check_videos.main(
        [str(csv), "--deep", "--workers", "2", "--clean", str(clean), "--damaged", str(damaged)]
    )
    assert status == 1
    assert clean.read_text() == f"{files['good_mp4']} 0\n{files['good_webm']} 2\n"
    rows = dict(line.split("\t") for line in damaged.read_text().splitlines())
    assert set(rows) == {str(files["cut_webm"]), str(files["vp9_bad_frame"])}
    assert rows[str(files["cut_webm"])].startswith("declared 36, decodable 11, decoded 11")
    assert "first bad frame 20" in rows[str(files["vp9_bad_frame"])]  # decord fell back to PyAV
    out = capsys.readouterr().out
    assert "checked 5 videos (every frame): 2 ok, 2 damaged, 1 undecodable" in out


def test_engine_counts_and_lists_damaged_videos(tmp_path, tiny_synth_opts, files):
    """warn: a damaged train/val/test video is used, counted in json_stats and listed in test_metrics."""
    from tests.test_engine_e2e import _copy_of_synth_data, _run, _stats

    data, opts = _copy_of_synth_data(tmp_path, tiny_synth_opts)
    src = sorted((data / "videos" / "test").rglob("*.mp4"))[0]
    (data / "broken").mkdir()
    D.write_flipped(data / "broken" / "flipped.mp4", src, count=400)
    with VideoFile(str(data / "broken" / "flipped.mp4"), "pyav") as vf:
        vf.scan()
        assert vf.damage is not None  # the synthetic clip, damaged as in the unit tests
    for split in ("train", "val", "test"):
        with open(data / f"{split}.csv", "a") as f:
            f.write("broken/flipped.mp4 3\n")
    out = tmp_path / "run"
    _run([*opts, "OUTPUT_DIR", str(out), "SOLVER.MAX_EPOCH", "1", "DATA.DECODING_BACKEND", "pyav"])
    stats = _stats(out)
    epoch = [s for s in stats if s["_type"] == "train_epoch"][0]
    assert epoch["damaged_videos"] >= 1 and epoch["skipped_videos"] == 0
    assert [s["damaged_videos"] for s in stats if s["_type"] == "val"] == [1]
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert metrics["num_videos"] == 11 and metrics["num_damaged"] == 1
    (row,) = metrics["damaged_videos"]
    assert row["video_id"] == "broken/flipped.mp4" and row["used"] and "FFmpeg errors" in row["reason"]
    assert load_config(str(out / "config.yaml")).DATA.ON_DAMAGED == "warn"
