"""Run logging: ``stdout.log`` + console for rank 0, and ``json_stats.log`` (one JSON object a line)."""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import sys
from typing import Any

import torch

from .distributed import is_main_process

LOGGER_NAME = "stvideo"


def setup_logging(output_dir: str | None) -> logging.Logger:
    """Log INFO to the console and ``output_dir/stdout.log`` on rank 0; only warnings elsewhere."""
    root = logging.getLogger(LOGGER_NAME)
    root.setLevel(logging.INFO if is_main_process() else logging.WARNING)
    root.propagate = False
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    fmt = logging.Formatter("[%(asctime)s %(name)s %(levelname)s] %(message)s", "%m/%d %H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    root.addHandler(console)
    if output_dir and is_main_process():
        os.makedirs(output_dir, exist_ok=True)
        fh = logging.FileHandler(os.path.join(output_dir, "stdout.log"))
        fh.setFormatter(fmt)
        root.addHandler(fh)
    return root


def _jsonable(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, float):
        return round(v, 6) if math.isfinite(v) else str(v)
    return v


class JsonStats:
    """Append-only ``json_stats.log``; written by rank 0 only, flushed each line."""

    def __init__(self, output_dir: str):
        self.path = os.path.join(output_dir, "json_stats.log")
        self.logger = logging.getLogger(LOGGER_NAME)

    def write(self, stats: dict[str, Any]) -> None:
        if not is_main_process():
            return
        line = json.dumps({k: _jsonable(v) for k, v in stats.items()})
        with open(self.path, "a") as f:
            f.write(line + "\n")
        self.logger.info("json_stats: %s", line)


def memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocator peak on GPU, peak RSS on CPU (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
