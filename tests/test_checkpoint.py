"""Checkpoints: atomic writes, weights_only loading, RNG state round trip."""

import os
import random

import numpy as np
import pytest
import torch

from stvideo.engine import checkpoint as ckpt
from stvideo.utils.checkpoint_io import CheckpointError


def test_save_atomic_roundtrip(tmp_path):
    path = tmp_path / "c" / "last.pyth"
    ckpt.save_atomic({"model": {"w": torch.arange(4.0)}, "epoch": 3}, str(path))
    state = ckpt.load(str(path))
    assert state["epoch"] == 3 and torch.equal(state["model"]["w"], torch.arange(4.0))
    assert os.listdir(path.parent) == ["last.pyth"]


def test_crash_during_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = str(tmp_path / "last.pyth")
    ckpt.save_atomic({"epoch": 1}, path)
    before = open(path, "rb").read()

    def dying_save(obj, f):  # writes half a file, then the process "dies"
        f.write(b"partial garbage")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_atomic({"epoch": 2}, path)
    assert open(path, "rb").read() == before
    assert ckpt.load(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["last.pyth"], "temporary file left behind"


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_load_refuses_arbitrary_objects(tmp_path):
    path = str(tmp_path / "evil.pyth")
    torch.save({"model": {}, "x": _Payload()}, path)
    with pytest.raises(CheckpointError, match=r"evil.pyth: holds a pickled Python object \(posix.system\)"):
        ckpt.load(path)


def test_rng_state_roundtrip_through_weights_only_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state = ckpt.rng_state()
    path = str(tmp_path / "rng.pyth")
    ckpt.save_atomic({"rng": state}, path)
    expected = (random.random(), np.random.rand(3), torch.rand(3))
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    ckpt.set_rng_state(ckpt.load(path)["rng"])
    got = (random.random(), np.random.rand(3), torch.rand(3))
    assert got[0] == expected[0]
    np.testing.assert_array_equal(got[1], expected[1])
    assert torch.equal(got[2], expected[2])


def test_find_last_and_periodic_names(tmp_path):
    assert ckpt.find_last(str(tmp_path)) is None
    ckpt.save_atomic({}, os.path.join(ckpt.checkpoint_dir(str(tmp_path)), ckpt.LAST))
    assert ckpt.find_last(str(tmp_path)).endswith("checkpoints/last.pyth")
    assert ckpt.periodic_name(7) == "checkpoint_epoch_00007.pyth"
