"""Sharded (DCP) checkpoints in one process: atomic saves, ``last.dcp`` and periodic folders, exact
model/optimizer round trip, corrupt-checkpoint fallback, and the weights_only-style safety of reading."""

from __future__ import annotations

import os
import pickle
import warnings

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch import nn

from stvideo.engine import checkpoint as ckpt
from stvideo.engine import sharded_checkpoint as sharded
from stvideo.utils.checkpoint_io import CheckpointError

warnings.filterwarnings("ignore", message="torch.distributed is disabled")


def _trained(seed: int = 0, steps: int = 2) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 3))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
    return model, opt


def _save(folder: str, epoch: int, model: nn.Module, opt: torch.optim.Optimizer, keep: bool) -> str:
    extra = {"scheduler": {"last": epoch}, "scaler": {}, "cfg": "MODEL:\n  ARCH: vit\n"}
    return sharded.save(folder, epoch, model, opt, extra, keep)


def test_save_points_last_at_the_newest_and_prunes_unkept(tmp_path):
    folder = str(tmp_path / "checkpoints")
    model, opt = _trained()
    _save(folder, 1, model, opt, keep=False)
    _save(folder, 2, model, opt, keep=True)
    _save(folder, 3, model, opt, keep=False)
    assert sorted(os.listdir(folder)) == [sharded.epoch_dir_name(2), sharded.epoch_dir_name(3), sharded.LAST]
    assert os.readlink(os.path.join(folder, sharded.LAST)) == sharded.epoch_dir_name(3)
    assert sharded.find_resume(str(tmp_path)) == (os.path.join(folder, sharded.epoch_dir_name(3)), [])


def test_round_trip_restores_model_optimizer_and_rng_exactly(tmp_path):
    folder = str(tmp_path / "checkpoints")
    model, opt = _trained(seed=0)
    torch.manual_seed(123)
    path = _save(folder, 1, model, opt, keep=True)
    expected_rng = torch.rand(3)
    fresh, fresh_opt = _trained(seed=1, steps=1)
    state = sharded.load(path, fresh, fresh_opt)
    ckpt.set_rng_state(state["rng"])
    assert torch.equal(torch.rand(3), expected_rng)
    assert (state["epoch"], state["scheduler"]) == (1, {"last": 1})
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    sa, sb = opt.state_dict(), fresh_opt.state_dict()
    for p in sa["state"]:
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(sa["state"][p][k], sb["state"][p][k]), k
    assert sa["param_groups"] == sb["param_groups"]
    x = torch.randn(2, 4)  # one more identical step from both
    for m, o in ((model, opt), (fresh, fresh_opt)):
        o.zero_grad()
        m(x).sum().backward()
        o.step()
    for a, b in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)


def test_half_written_and_corrupt_checkpoints_are_never_resumed(tmp_path):
    folder = tmp_path / "checkpoints"
    model, opt = _trained()
    _save(str(folder), 1, model, opt, keep=True)
    _save(str(folder), 2, model, opt, keep=True)
    # A crash during the save of epoch 3: its temporary folder stays, last.dcp still on epoch 2.
    (folder / f".tmp_{sharded.epoch_dir_name(3)}").mkdir()
    (folder / f".tmp_{sharded.epoch_dir_name(3)}" / "__0_0.distcp").write_bytes(b"partial")
    assert sharded.find_resume(str(tmp_path))[0] == str(folder / sharded.epoch_dir_name(2))
    # Epoch 2 damaged on disk: resume falls back to epoch 1 and names the problem in one line.
    state = folder / sharded.epoch_dir_name(2) / sharded.TRAIN_STATE
    state.write_bytes(state.read_bytes()[:100])
    last, bad = sharded.find_resume(str(tmp_path))
    assert last == str(folder / sharded.epoch_dir_name(1))
    assert [os.path.realpath(p) for p, _ in bad] == [str(folder / sharded.epoch_dir_name(2))]
    assert "truncated or corrupt" in bad[0][1] and "\n" not in bad[0][1]
    aside = sharded.set_aside(bad[0][0])
    assert aside.endswith(".corrupt") and not os.path.lexists(folder / sharded.LAST)
    assert sharded.find_resume(str(tmp_path)) == (str(folder / sharded.epoch_dir_name(1)), [])
    # Nothing readable at all: stop with every folder named, never start over silently.
    (folder / sharded.epoch_dir_name(1) / ".metadata").write_bytes(b"")
    with pytest.raises(
        CheckpointError, match="no readable checkpoint to resume from.*checkpoint_epoch_00001.dcp"
    ):
        sharded.find_resume(str(tmp_path))


def test_metadata_with_a_foreign_global_is_refused(tmp_path):
    folder = str(tmp_path / "checkpoints")
    model, opt = _trained()
    path = _save(folder, 1, model, opt, keep=True)
    with open(os.path.join(path, ".metadata"), "wb") as f:
        pickle.dump(os.getcwd, f)  # any callable a pickle could run on load
    with pytest.raises(CheckpointError, match=r"unreadable DCP metadata \(UnpicklingError: refused global"):
        sharded.check(path)


def test_pickled_objects_in_the_shards_are_refused(tmp_path):
    path = str(tmp_path / "raw")
    dcp.save({"model": {"w": torch.ones(2)}, "extra": {"obj": "pickled"}}, checkpoint_id=path)
    with pytest.raises(CheckpointError, match="refused pickled object extra.obj"):
        sharded._load_tensors(path, {"model": {"w": torch.zeros(2)}, "extra": {"obj": ""}})
    target = {"model": {"w": torch.zeros(2)}}
    sharded._load_tensors(path, target)
    assert torch.equal(target["model"]["w"], torch.ones(2))
