"""Atomic checkpoints with full training state, loaded with ``weights_only=True``.

Layout: ``OUTPUT_DIR/checkpoints/last.pyth`` (always the newest) and
``checkpoint_epoch_{epoch:05d}.pyth`` every TRAIN.CHECKPOINT_PERIOD epochs. A checkpoint is
written to a temporary file in the same folder, fsynced, then renamed over the target, so a
crash mid-write leaves the previous checkpoint intact and no half file under the real name.

Files are read with :func:`stvideo.utils.checkpoint_io.read_checkpoint`; an unreadable one raises
``CheckpointError`` naming it. Auto-resume takes the newest readable of ``last.pyth`` and the periodic
checkpoints (:func:`find_resume`); the trainer renames each unreadable one it skipped to
``<name>.corrupt`` (:func:`set_aside`), so no later save overwrites a file the run could not read.
"""

from __future__ import annotations

import logging
import os
import random
import re
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from stvideo.models import protocol
from stvideo.utils.checkpoint_io import CheckpointError, check_checkpoint, read_checkpoint

logger = logging.getLogger(__name__)

LAST = "last.pyth"
RESUME_KEYS = ("model", "optimizer", "scheduler", "scaler", "epoch", "rng")
_PERIODIC = re.compile(r"checkpoint_epoch_(\d+)\.pyth")


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
    """Load a checkpoint without unpickling arbitrary objects (``weights_only=True``).

    Raises ``CheckpointError`` (naming the file) if it is missing, truncated, not a torch file, holds
    objects ``weights_only`` refuses, or is not a dict.
    """
    state = read_checkpoint(path)
    if not isinstance(state, dict):
        raise CheckpointError(path, f"not an stvideo checkpoint: holds a {type(state).__name__}, not a dict")
    return state


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


def resume_candidates(output_dir: str) -> list[str]:
    """``last.pyth`` (if present), then the periodic checkpoints, newest epoch first."""
    folder = checkpoint_dir(output_dir)
    names = os.listdir(folder) if os.path.isdir(folder) else []
    periodic = sorted((int(m.group(1)), n) for n in names if (m := _PERIODIC.fullmatch(n)))
    paths = [os.path.join(folder, n) for _, n in reversed(periodic)]
    last = find_last(output_dir)
    return [last, *paths] if last else paths


def find_resume(output_dir: str) -> tuple[str | None, list[tuple[str, str]]]:
    """(newest readable checkpoint to resume from, [(path, problem)] of the unreadable ones before it).

    (None, []) when the run has no checkpoint. ``CheckpointError`` naming every file when there are
    checkpoints but none can be read (the run must stop rather than start over and overwrite them).
    """
    return first_readable(
        resume_candidates(output_dir), lambda p: check_checkpoint(p, RESUME_KEYS), checkpoint_dir(output_dir)
    )


def first_readable(
    paths: list[str], check: Callable[[str], Any], folder: str
) -> tuple[str | None, list[tuple[str, str]]]:
    """The first of ``paths`` that ``check`` accepts, and the (path, problem) of those it refused before;
    ``CheckpointError`` on ``folder`` listing every problem when it accepts none (and there were some)."""
    bad: list[tuple[str, str]] = []
    for path in paths:
        try:
            check(path)
        except CheckpointError as e:
            bad.append((path, e.problem))
            continue
        return path, bad
    if bad:
        listed = "; ".join(f"{os.path.basename(p)}: {problem}" for p, problem in bad)
        raise CheckpointError(
            folder,
            f"no readable checkpoint to resume from ({listed}). Move them away to start over, "
            "or set TRAIN.AUTO_RESUME False",
        )
    return None, []


def set_aside(path: str) -> str:
    """Rename an unreadable checkpoint to ``<path>.corrupt`` (``.corrupt.1``, ... if taken); new path."""
    target, n = f"{path}.corrupt", 0
    while os.path.exists(target):
        n += 1
        target = f"{path}.corrupt.{n}"
    os.replace(path, target)
    return target


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DistributedDataParallel (or the model itself)."""
    return model.module if hasattr(model, "module") else model


def load_model_weights(model: torch.nn.Module, path: str) -> None:
    """Load only the ``model`` entry of an stvideo checkpoint (strict: names must match).

    The one exception: parameters the model names in ``optional_state_keys()`` (see
    :mod:`stvideo.models.protocol`) may be missing, so a plain ViT checkpoint tests a token method.
    """
    state = load(path)
    if "model" not in state:
        raise CheckpointError(path, f"not an stvideo checkpoint: no 'model' entry (has: {', '.join(state)})")
    net = unwrap(model)
    optional = protocol.optional_state_keys(net)
    try:
        result = net.load_state_dict(state["model"], strict=not optional)
    except RuntimeError as e:
        lines = [s.strip() for s in str(e).splitlines() if s.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0] if lines else ""
        raise CheckpointError(path, f"its weights do not fit this model ({detail[:200]})") from None
    missing = [k for k in result.missing_keys if k not in optional]
    if missing or result.unexpected_keys:
        detail = f"missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}"
        raise CheckpointError(path, f"its weights do not fit this model ({detail})")
    if result.missing_keys:
        logger.info("%s has no %s: kept at their initial values", path, ", ".join(result.missing_keys))
