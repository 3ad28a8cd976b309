"""tools/check_videos.py on real good and broken files, Kinetics csv and SSv2 json."""

from __future__ import annotations

import json
from pathlib import Path

from tests import videos as V

REPO = Path(__file__).resolve().parents[1]


def test_kinetics_list(check_videos, tmp_path, capsys):
    good = V.write_indexed_video(tmp_path / "v" / "good clip.mp4", 12, 32, 40)
    V.write_indexed_video(tmp_path / "v" / "ok.webm", 12, 33, 41, "vp9")
    V.write_truncated(tmp_path / "v" / "cut.mp4", good)
    V.write_not_video(tmp_path / "v" / "page.mp4")
    V.write_empty(tmp_path / "v" / "zero.mp4")
    csv = tmp_path / "train.csv"
    csv.write_text(
        "path,label\nv/good clip.mp4,0\nv/cut.mp4,1\nv/ok.webm,2\nv/page.mp4,3\nv/zero.mp4,4\nv/gone.mp4,5\n"
    )
    clean, bad = tmp_path / "clean.csv", tmp_path / "bad.txt"
    status = check_videos.main([str(csv), "--workers", "2", "--clean", str(clean), "--bad", str(bad)])
    assert status == 1
    assert clean.read_text() == "path,label\nv/good clip.mp4,0\nv/ok.webm,2\n"
    rows = [line.split("\t") for line in bad.read_text().splitlines()]
    assert [Path(r[0]).name for r in rows] == ["cut.mp4", "page.mp4", "zero.mp4", "gone.mp4"]
    assert (
        rows[2][1] == "DecodeError: file is empty (0 bytes)" and rows[3][1] == "DecodeError: file not found"
    )
    assert "checked 6 videos: 2 ok, 4 undecodable" in capsys.readouterr().out
    assert check_videos.main([str(clean), "--workers", "1", "--backend", "pyav"]) == 0


def test_ssv2_json(check_videos, tmp_path):
    V.write_indexed_video(tmp_path / "videos" / "7.webm", 10, 32, 40, "vp9")
    V.write_not_video(tmp_path / "videos" / "8.webm")
    split = tmp_path / "something-something-v2-validation.json"
    entries = [
        {"id": "7", "template": "Moving [something] up"},
        {"id": "8", "template": "Moving [something] down"},
    ]
    split.write_text(json.dumps(entries))
    clean = tmp_path / "clean.json"
    status = check_videos.main([str(split), "--prefix", str(tmp_path / "videos"), "--clean", str(clean)])
    assert status == 1 and json.loads(clean.read_text()) == entries[:1]
