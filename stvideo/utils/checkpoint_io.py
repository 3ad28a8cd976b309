"""The one way stvideo reads a checkpoint file: ``torch.load(weights_only=True)`` with readable errors.

Every reader (resume, TRAIN/TEST.CHECKPOINT_FILE_PATH, MODEL.PRETRAINED) goes through
:func:`read_checkpoint`. A file that cannot be read raises :class:`CheckpointError`, whose message
names the file and says in one or two lines what is wrong: missing, empty, truncated or not a torch
file, or holding pickled Python objects that ``weights_only`` loading refuses. stvideo never retries
with ``weights_only=False``: unpickling arbitrary objects can run arbitrary code.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from typing import Any

import torch

__all__ = ["CheckpointError", "check_checkpoint", "read_checkpoint"]

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def _first_sentence(text: str, limit: int = 100) -> str:
    line = next((s.strip() for s in str(text).splitlines() if s.strip()), "")
    line = line.split(". ")[0].rstrip(".")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _problem(path: str, err: Exception, head: bytes) -> str:
    """One or two lines on what is wrong with ``path``, from the exception torch.load raised."""
    if isinstance(err, FileNotFoundError):
        return "file not found"
    if isinstance(err, IsADirectoryError):
        return "is a directory, not a checkpoint file"
    if isinstance(err, PermissionError):
        return "permission denied"
    text = str(err)
    if isinstance(err, pickle.UnpicklingError) and "Weights only load failed" in text:
        found = _GLOBAL.search(text)
        if found:
            name = found.group(1)
            return (
                f"holds a pickled Python object ({name}) that weights_only loading refuses for safety. "
                "If you trust the file, re-save it with plain tensors only (e.g. torch.save of a state_dict) "
                f"or allow the class with torch.serialization.add_safe_globals([{name}]) in your own launcher"
            )
        detail = "UnpicklingError: not a pickle stream weights_only loading can read"
    else:
        detail = type(err).__name__ + (f": {_first_sentence(text)}" if _first_sentence(text) else "")
    if head.startswith(b"PK"):
        return f"truncated or corrupt: an incomplete torch zip archive ({detail})"
    return f"not a torch checkpoint file, or truncated ({detail})"


def read_checkpoint(path: str, *, mmap: bool = False) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``; :class:`CheckpointError` if unreadable.

    ``mmap=True`` maps the tensors instead of reading them (zip-format files only).
    """
    head = b""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if not head:
            raise CheckpointError(path, "file is empty (0 bytes): not a torch checkpoint")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(path, _problem(path, err, head)) from None


def check_checkpoint(path: str, keys: tuple[str, ...] = ()) -> Any:
    """Read ``path`` as cheaply as possible (zip-format files: tensors mapped, not read) and return it;
    :class:`CheckpointError` if it is unreadable or is not a dict with ``keys``. Runs call this on every
    file they will load before writing anything."""
    try:
        is_zip = zipfile.is_zipfile(path)
    except OSError:
        is_zip = False
    obj = read_checkpoint(path, mmap=is_zip)
    if keys:
        missing = [k for k in keys if not isinstance(obj, dict) or k not in obj]
        if missing:
            have = ", ".join(map(str, list(obj)[:8])) if isinstance(obj, dict) else type(obj).__name__
            raise CheckpointError(path, f"not an stvideo checkpoint: no {', '.join(missing)} (has: {have})")
    return obj
