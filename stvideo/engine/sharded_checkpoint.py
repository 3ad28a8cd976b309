"""Sharded training checkpoints (TRAIN.STRATEGY fsdp) with ``torch.distributed.checkpoint`` (DCP).

Layout under ``OUTPUT_DIR/checkpoints``: one folder per saved epoch, ``checkpoint_epoch_{epoch:05d}.dcp``,
and ``last.dcp``, a symlink to the newest. A folder holds DCP's shard files and ``.metadata`` for the
model and optimizer tensors (every rank writes its own shards; DCP records global shapes, so the
checkpoint loads on any world size: 2 ranks -> 1 and 1 -> 2 reshard on load), ``train_state.pyth``
(optimizer hyper-parameters, scheduler, scaler, epoch, config; rank 0) and ``rng_rank{r}.pyth`` (each
rank's RNG state). The data position is the epoch: checkpoints are taken at epoch ends and the data
order is a function of (seed, epoch).

Atomic: a checkpoint is written into a hidden temporary folder, renamed to its epoch name when every
rank has finished, and only then does ``last.dcp`` move to it (``os.replace`` of a symlink). A crash
at any point leaves ``last.dcp`` on the previous complete checkpoint and never a half folder under a
real name. Epoch folders that are not periodic (TRAIN.CHECKPOINT_PERIOD) are removed once ``last.dcp``
points past them.

Safety, as for ``.pyth`` files (``weights_only=True``): the ``.pyth`` parts are read with
:func:`stvideo.utils.checkpoint_io.read_checkpoint`; DCP's ``.metadata`` (a pickle) is read with an
unpickler that only admits DCP's own metadata classes, torch sizes/dtypes/layouts and paths; only
tensors are loaded from the shard files (byte entries, which DCP would unpickle freely, are refused).
Any problem raises ``CheckpointError`` naming the folder, and auto-resume falls back to the newest
readable checkpoint, setting unreadable ones aside as ``<name>.corrupt`` (as for ``.pyth`` files).
"""

from __future__ import annotations

import io
import os
import pickle
import re
import shutil
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata
from torch.distributed.checkpoint.planner import ReadItem
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_state_dict,
)

from stvideo.utils.checkpoint_io import CheckpointError, read_checkpoint
from stvideo.utils.distributed import barrier, get_rank, is_main_process

from . import checkpoint as ckpt

LAST = "last.dcp"
TRAIN_STATE = "train_state.pyth"
_EPOCH_DIR = re.compile(r"checkpoint_epoch_(\d+)\.dcp")
# Modules whose classes may appear in DCP's .metadata pickle (dataclasses and enums only).
_METADATA_MODULES = (
    "torch.distributed.checkpoint.metadata",
    "torch.distributed.checkpoint.filesystem",
    "torch.distributed.checkpoint.storage",
)


def epoch_dir_name(epoch: int) -> str:
    """Folder name of the sharded checkpoint taken after 1-based ``epoch``."""
    return f"checkpoint_epoch_{epoch:05d}.dcp"


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP metadata, refusing every global but DCP's metadata classes and torch basics."""

    def find_class(self, module: str, name: str) -> Any:
        obj = super().find_class(module, name) if self._allowed(module, name) else None
        if obj is None:
            raise pickle.UnpicklingError(f"refused global {module}.{name} in DCP metadata")
        return obj

    @staticmethod
    def _allowed(module: str, name: str) -> bool:
        if module in _METADATA_MODULES:
            return isinstance(getattr(__import__(module, fromlist=[name]), name, None), type)
        if module == "torch":
            return name == "Size" or isinstance(getattr(torch, name, None), torch.dtype)
        return (module, name) in {("torch.serialization", "_get_layout"), ("pathlib", "PosixPath")}


class SafeReader(FileSystemReader):
    """DCP's file reader with :class:`_MetadataUnpickler` for ``.metadata``."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as f:
            metadata = _MetadataUnpickler(f).load()
        if not isinstance(metadata, Metadata):
            raise pickle.UnpicklingError(f".metadata holds a {type(metadata).__name__}, not DCP Metadata")
        if getattr(metadata, "storage_meta", None) is None:
            from torch.distributed.checkpoint.metadata import StorageMeta

            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class TensorsOnlyPlanner(DefaultLoadPlanner):
    """Loads tensors only: a byte entry (an arbitrary pickle DCP would load unrestricted) is refused."""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        raise pickle.UnpicklingError(f"refused pickled object {read_item.dest_index.fqn} in the checkpoint")


def _split_optimizer(osd: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors for DCP, everything else for the weights_only train state) of an optimizer state dict."""
    tensors: dict[str, Any] = {}
    other: dict[str, Any] = {"param_groups": osd["param_groups"], "state": {}}
    for fqn, state in osd["state"].items():
        tensors[fqn] = {k: v for k, v in state.items() if torch.is_tensor(v)}
        other["state"][fqn] = {k: v for k, v in state.items() if not torch.is_tensor(v)}
    return tensors, other


def _merge_optimizer(tensors: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    state = {fqn: {**other["state"].get(fqn, {}), **t} for fqn, t in tensors.items()}
    return {"state": state, "param_groups": other["param_groups"]}


def save(
    folder: str,
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    extra: dict[str, Any],
    keep: bool,
) -> str:
    """Collective: write the sharded checkpoint of ``epoch`` and point ``last.dcp`` at it; returns its path.

    ``extra`` (scheduler, scaler, cfg: plain data) goes into ``train_state.pyth``; ``keep=False`` marks a
    non-periodic checkpoint, removed when the next one is complete.
    """
    final = os.path.join(folder, epoch_dir_name(epoch))
    tmp = os.path.join(folder, f".tmp_{epoch_dir_name(epoch)}")
    if is_main_process():
        os.makedirs(folder, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # leftovers of a crashed save of this epoch
        os.makedirs(tmp)
    barrier()
    msd, osd = get_state_dict(model, optimizer)
    opt_tensors, opt_other = _split_optimizer(osd)
    dcp.save({"model": msd, "optimizer": opt_tensors}, checkpoint_id=tmp)
    ckpt.save_atomic(ckpt.rng_state(), os.path.join(tmp, f"rng_rank{get_rank()}.pyth"))
    if is_main_process():
        state = {**extra, "optimizer": opt_other, "epoch": epoch, "keep": keep}
        ckpt.save_atomic(state, os.path.join(tmp, TRAIN_STATE))
    barrier()  # every rank's shards and RNG file are on disk
    if is_main_process():
        previous = (
            os.path.realpath(os.path.join(folder, LAST))
            if os.path.islink(os.path.join(folder, LAST))
            else None
        )
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        link_tmp = os.path.join(folder, f".tmp_{LAST}")
        if os.path.lexists(link_tmp):
            os.remove(link_tmp)
        os.symlink(os.path.basename(final), link_tmp)
        os.replace(link_tmp, os.path.join(folder, LAST))
        if previous and previous != os.path.realpath(final) and os.path.isdir(previous):
            if not _read_train_state(previous).get("keep", True):
                shutil.rmtree(previous, ignore_errors=True)
    barrier()
    return final


def _read_train_state(path: str) -> dict[str, Any]:
    state = read_checkpoint(os.path.join(path, TRAIN_STATE))
    if not isinstance(state, dict):
        raise CheckpointError(path, f"{TRAIN_STATE} holds a {type(state).__name__}, not a dict")
    return state


def check(path: str) -> dict[str, Any]:
    """The train state of a sharded checkpoint folder after checking it is complete and safe to read;
    ``CheckpointError`` naming the folder otherwise."""
    if not os.path.isdir(path):
        raise CheckpointError(path, "not a sharded checkpoint folder (missing or not a directory)")
    state = _read_train_state(path)
    missing = [k for k in ("epoch", "optimizer", "scheduler", "scaler") if k not in state]
    if missing:
        raise CheckpointError(
            path, f"not an stvideo sharded checkpoint: {TRAIN_STATE} has no {', '.join(missing)}"
        )
    try:
        SafeReader(path).read_metadata()
    except Exception as e:
        raise CheckpointError(path, f"unreadable DCP metadata ({type(e).__name__}: {str(e)[:120]})") from None
    return state


def resume_candidates(output_dir: str) -> list[str]:
    """``last.dcp``'s target (if present), then every epoch folder, newest first."""
    folder = ckpt.checkpoint_dir(output_dir)
    names = os.listdir(folder) if os.path.isdir(folder) else []
    epochs = sorted((int(m.group(1)), n) for n in names if (m := _EPOCH_DIR.fullmatch(n)))
    paths = [os.path.join(folder, n) for _, n in reversed(epochs)]
    last = os.path.join(folder, LAST)
    if os.path.islink(last):
        target = os.path.realpath(last)
        paths = [target] + [p for p in paths if os.path.realpath(p) != target]
    return paths


def find_resume(output_dir: str) -> tuple[str | None, list[tuple[str, str]]]:
    """As :func:`stvideo.engine.checkpoint.find_resume` for sharded folders: (newest readable, skipped)."""
    return ckpt.first_readable(resume_candidates(output_dir), check, ckpt.checkpoint_dir(output_dir))


def _load_tensors(path: str, state: dict[str, Any]) -> None:
    try:
        dcp.load(state, checkpoint_id=path, storage_reader=SafeReader(path), planner=TensorsOnlyPlanner())
    except (Exception, CheckpointException) as e:  # a BaseException wrapping every rank's failure
        # DCP wraps each rank's exception with its traceback; its last "...Error: ..." line is the cause.
        causes = [s.strip() for s in str(e).splitlines() if "Error: " in s] or [f"{type(e).__name__}: {e}"]
        raise CheckpointError(path, f"cannot load its tensors ({causes[-1][:200]})") from None


def load(path: str, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Collective: load model and optimizer (resharded to this world size) and this rank's RNG state;
    returns the train state (scheduler, scaler, epoch, ...) for the caller to restore."""
    state = check(path)
    msd, osd = get_state_dict(model, optimizer)
    opt_tensors, _ = _split_optimizer(osd)
    target = {"model": msd, "optimizer": opt_tensors}
    _load_tensors(path, target)
    optim = _merge_optimizer(target["optimizer"], state["optimizer"])
    set_state_dict(model, optimizer, model_state_dict=target["model"], optim_state_dict=optim)
    rng = os.path.join(path, f"rng_rank{get_rank()}.pyth")
    state["rng"] = read_checkpoint(rng) if os.path.isfile(rng) else None
    return state


def load_model_weights(path: str, model: nn.Module) -> int:
    """Load only the model tensors of a sharded checkpoint into ``model`` (plain or FSDP); its epoch."""
    state = check(path)
    msd = get_state_dict(model, [], options=StateDictOptions())[0]
    target = {"model": msd}
    _load_tensors(path, target)
    set_state_dict(model, [], model_state_dict=target["model"], optim_state_dict={})
    return int(state["epoch"])


def set_aside(path: str) -> str:
    """Rename an unreadable checkpoint folder to ``<path>.corrupt`` (and drop ``last.dcp`` if it pointed
    there), so no later save reuses it."""
    folder = os.path.dirname(path)
    last = os.path.join(folder, LAST)
    if os.path.islink(last) and os.path.realpath(last) == os.path.realpath(path):
        os.remove(last)
    return ckpt.set_aside(path)


def to_pyth(path: str, model: nn.Module, out: str) -> dict[str, Any]:
    """Convert a sharded checkpoint into one ``.pyth`` ({"model", "epoch", "cfg"}) for
    TEST.CHECKPOINT_FILE_PATH, TRAIN.CHECKPOINT_FILE_PATH and MODEL.PRETRAINED; ``model`` (plain, built
    from the run's config) receives the weights. Returns what was written."""
    epoch = load_model_weights(path, model)
    state = {"model": model.state_dict(), "epoch": epoch, "cfg": _read_train_state(path).get("cfg", "")}
    ckpt.save_atomic(state, out)
    return state
