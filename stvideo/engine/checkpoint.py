"""Atomic checkpoints with full training state, loaded with ``weights_only=True``.

Layout: ``OUTPUT_DIR/checkpoints/last.pyth`` (always the newest) and
``checkpoint_epoch_{epoch:05d}.pyth`` every TRAIN.CHECKPOINT_PERIOD epochs. A checkpoint is
written to a temporary file in the same folder, fsynced, then renamed over the target, so a
crash mid-write leaves the previous checkpoint intact and no half file under the real name.
"""

from __future__ import annotations

import os
import random
import tempfile
from typing import Any

import numpy as np
import torch

LAST = "last.pyth"


def checkpoint_dir(output_dir: str) -> str:
    return os.path.join(output_dir, "checkpoints")


def periodic_name(epoch: int) -> str:
    """File name of the checkpoint kept after 1-based ``epoch``."""
    return f"checkpoint_epoch_{epoch:05d}.pyth"


def save_atomic(obj: Any, path: str) -> None:
    """``torch.save`` to ``path`` via a temp file + ``os.replace`` (atomic on POSIX)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".pyth", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load(path: str) -> dict[str, Any]:
    """Load a checkpoint without unpickling arbitrary objects (``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states in a form ``weights_only`` loading accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def find_last(output_dir: str) -> str | None:
    """Path of ``last.pyth`` under ``output_dir`` if a run left one."""
    path = os.path.join(checkpoint_dir(output_dir), LAST)
    return path if os.path.isfile(path) else None


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DistributedDataParallel (or the model itself)."""
    return model.module if hasattr(model, "module") else model


def load_model_weights(model: torch.nn.Module, path: str) -> None:
    """Load only the ``model`` entry of an stvideo checkpoint (strict: names must match)."""
    unwrap(model).load_state_dict(load(path)["model"])
