"""torch.distributed set-up from the environment (torchrun, submitit, srun) and small helpers.

One process per GPU (or one CPU process). Ranks come from the standard variables
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT`` that torchrun and
``submitit.helpers.TorchDistributedEnvironment().export()`` set; without them we run alone.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from fvcore.common.config import CfgNode


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def get_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main_process() -> bool:
    return get_rank() == 0


def init_distributed(cfg: CfgNode) -> torch.device:
    """Join the process group described by the environment (if any); return this rank's device.

    The backend is nccl with GPUs and gloo on CPU unless DIST_BACKEND says otherwise.
    """
    use_cuda = cfg.NUM_GPUS > 0 and torch.cuda.is_available()
    device = torch.device("cuda", get_local_rank()) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not is_dist():
        backend = cfg.DIST_BACKEND if cfg.DIST_BACKEND != "auto" else ("nccl" if use_cuda else "gloo")
        dist.init_process_group(backend=backend, init_method="env://")
    return device


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (a one-element list when not distributed)."""
    if not is_dist():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over ranks (a copy; ``t`` itself is unchanged). Counts stay exact, unlike a mean
    times the world size in float32 (31 / 7 * 7 = 30.999998)."""
    if not is_dist():
        return t
    t = t.detach().clone()
    dist.all_reduce(t)
    return t


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of ``t`` over ranks (a copy; ``t`` itself is unchanged)."""
    return all_reduce_sum(t) / get_world_size() if is_dist() else t


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics drift apart between ranks,
    since each updates them from its own batches; the checkpoint holds rank 0's)."""
    if is_dist():
        for buffer in module.buffers():
            dist.broadcast(buffer, 0)


def cleanup() -> None:
    if is_dist():
        dist.destroy_process_group()
