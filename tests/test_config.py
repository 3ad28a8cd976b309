"""Config loading: inheritance, both override spellings, strict key/type errors before any write."""

import subprocess
import sys
from pathlib import Path

import pytest

from stvideo.config import ConfigError, get_cfg, load_config, parse_args
from stvideo.config.defaults import CHOICES
from stvideo.models.stvit import stvit_split

REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_every_default_key_has_a_comment():
    src = (REPO / "stvideo/config/defaults.py").read_text().splitlines()
    assigns = [ln for ln in src if ln.startswith("_C.") and "CfgNode()" not in ln]
    assert assigns, "no keys found"
    missing = [ln for ln in assigns if "  # " not in ln]
    assert not missing, f"keys without a comment: {missing}"


def test_choices_name_existing_keys_with_valid_defaults():
    cfg = get_cfg()
    for key, allowed in CHOICES.items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert node in allowed, f"default of {key} ({node!r}) not in {allowed}"


def test_base_inheritance_and_overrides(tmp_path):
    _write(tmp_path / "base.yaml", "DATA:\n  NUM_FRAMES: 8\n  SAMPLING_RATE: 2\nSOLVER:\n  BASE_LR: 0.5\n")
    child = _write(tmp_path / "child.yaml", "_BASE_: base.yaml\nDATA:\n  SAMPLING_RATE: 3\n")
    cfg = load_config(child, ["SOLVER.BASE_LR", "0.25", "TEST.NUM_TEMPORAL_CLIPS", "[1, 3]"])
    assert cfg.DATA.NUM_FRAMES == 8  # from base
    assert cfg.DATA.SAMPLING_RATE == 3  # child wins over base
    assert cfg.SOLVER.BASE_LR == 0.25  # command line wins over files
    assert cfg.TEST.NUM_TEMPORAL_CLIPS == [1, 3]
    assert cfg.is_frozen()


def test_int_is_accepted_for_float_and_bool_strings():
    cfg = load_config(None, ["SOLVER.BASE_LR", "1", "TRAIN.ENABLE", "false"])
    assert isinstance(cfg.SOLVER.BASE_LR, float) and cfg.SOLVER.BASE_LR == 1.0
    assert cfg.TRAIN.ENABLE is False


@pytest.mark.parametrize(
    "opts, needle",
    [
        (["DATA.NUM_FRAME", "8"], "DATA.NUM_FRAME (did you mean DATA.NUM_FRAMES?)"),
        (["NUM_FRAMES", "8"], "did you mean DATA.NUM_FRAMES?"),
        (["SOLVER.BASE_RL", "0.1"], "did you mean SOLVER.BASE_LR?"),
        (["DATA.NUM_FRAMES", "eight"], "DATA.NUM_FRAMES expects int"),
        (["DATA.NUM_FRAMES", "8.5"], "DATA.NUM_FRAMES expects int"),
        (["TEST.ENSEMBLE_METHOD", "mean"], "TEST.ENSEMBLE_METHOD must be one of"),
        (["DATA", "3"], "DATA is a section"),
        (["DATA.NUM_FRAMES"], "KEY VALUE pairs"),
    ],
)
def test_bad_overrides_name_the_key(opts, needle):
    with pytest.raises(ConfigError) as err:
        load_config(None, opts)
    assert needle in str(err.value)


def test_unknown_key_in_yaml_names_full_path(tmp_path):
    bad = _write(tmp_path / "bad.yaml", "MODEL:\n  ARCH: vit\n  NUM_CLASS: 10\n")
    with pytest.raises(ConfigError, match=r"MODEL\.NUM_CLASS \(did you mean MODEL\.NUM_CLASSES\?\)"):
        load_config(bad)


def test_batch_must_divide_over_processes():
    with pytest.raises(ConfigError, match="divisible"):
        load_config(None, ["NUM_GPUS", "4", "TRAIN.BATCH_SIZE", "6"])


def test_removed_and_shipped_defaults():
    with pytest.raises(ConfigError, match="Unknown config key LOG_MODEL_INFO"):
        load_config(None, ["LOG_MODEL_INFO", "False"])
    shipped_cfg = load_config(str(REPO / "configs/k400/stvit_b.yaml"))
    default, shipped = get_cfg().STVIT, shipped_cfg.STVIT
    for key in ("GRID", "GRID_MODE", "POOL", "NUM_UNITS"):
        assert default[key] == shipped[key], key  # the STVIT defaults are the stvit_b recipe
    # The layer split defaults (-1) derive stvit_b's 4 / 6 at ViT-B's depth.
    base = load_config(None, ["MODEL.SIZE", "base"])
    assert stvit_split(base, restore=False) == (shipped.START_LAYER, shipped.NUM_SEMANTIC_LAYERS) == (4, 6)


def test_parse_args_accepts_both_override_spellings():
    a = parse_args(["--cfg", "x.yaml", "DATA.NUM_FRAMES", "8", "--opts", "SOLVER.BASE_LR", "0.1"])
    assert a.cfg_file == "x.yaml"
    assert a.opts == ["DATA.NUM_FRAMES", "8", "SOLVER.BASE_LR", "0.1"]
    b = parse_args(["DATA.NUM_FRAMES", "8", "--cfg", "x.yaml"])
    assert b.opts == ["DATA.NUM_FRAMES", "8"] and b.cfg_file == "x.yaml"


def test_run_net_rejects_bad_key_before_writing(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools/run_net.py"), "OUTPUT_DIR", str(out), "DATA.NUM_FRAMS", "8"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "DATA.NUM_FRAMS (did you mean DATA.NUM_FRAMES?)" in proc.stderr
    assert not out.exists()
