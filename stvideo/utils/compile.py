"""``torch.compile`` of a model in place (MODEL.COMPILE) and dynamo's compile / graph-break counters.

``nn.Module.compile`` keeps the module object, its parameter names and methods (``set_epoch``,
``no_weight_decay``), so checkpoints, optimizers and DDP/FSDP see the same model compiled or not.
"""

from __future__ import annotations

import torch
from torch import nn


def compile_model(model: nn.Module, mode: str = "default", backend: str = "inductor") -> nn.Module:
    """Compile ``model``'s forward in place (``mode`` only applies to inductor); returns ``model``."""
    kwargs = {"mode": mode} if backend == "inductor" else {}
    model.compile(backend=backend, **kwargs)
    return model


def dynamo_counts() -> dict[str, int]:
    """Frames compiled so far (first compiles plus recompiles) and graph breaks, process-wide."""
    counters = torch._dynamo.utils.counters
    return {
        "frames_compiled": int(counters["frames"]["ok"]),
        "graph_breaks": int(sum(counters["graph_break"].values())),
    }
