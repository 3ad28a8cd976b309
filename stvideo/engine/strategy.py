"""How the model is spread over ranks (TRAIN.STRATEGY): DDP replicas or FSDP2 shards.

``ddp``: every rank holds the whole model and optimizer state; gradients are all-reduced
(``DistributedDataParallel``). ``fsdp``: PyTorch's FSDP2 (``torch.distributed.fsdp.fully_shard``) on
every transformer block and on the root, so each rank keeps 1/world of every parameter, gradient and
AdamW state and all-gathers a block's weights only while that block runs. On GPU the blocks compute
in bf16 with fp32 gradient reduction (``MixedPrecisionPolicy``) when TRAIN.MIXED_PRECISION is on.
FSDP2 hooks a block's ``forward`` (and ``Block.fsdp_forward_methods``, registered here), so it works for any
arch whose per-block work goes through those (every stvideo arch; dynamic token counts only change
activation shapes, never parameter shapes). A single process (no process group) runs the plain model
and still writes sharded (DCP) checkpoints, so a run can move between 1 and N ranks.
"""

from __future__ import annotations

import torch
from fvcore.common.config import CfgNode
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import (
    FSDPModule,
    MixedPrecisionPolicy,
    fully_shard,
    register_fsdp_forward_method,
)
from torch.nn.parallel import DistributedDataParallel

from stvideo.models import MODEL_REGISTRY, protocol
from stvideo.utils.compile import compile_model
from stvideo.utils.distributed import get_world_size, is_dist

from .checkpoint import unwrap


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The modules FSDP shards one by one: the entries of every ``blocks`` ModuleList (ViT and Swin
    blocks, PyTorchVideo stages); the rest (embedding, head, extra parameters) goes with the root."""
    units = []
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] == "blocks":
            units += list(module)
    return units


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model`` was wrapped by FSDP2 (its parameters are DTensor shards)."""
    return isinstance(model, FSDPModule)


def uses_sharded_checkpoints(cfg: CfgNode) -> bool:
    """TRAIN.STRATEGY fsdp writes and resumes torch.distributed.checkpoint folders, on any world size."""
    return cfg.TRAIN.STRATEGY == "fsdp"


def mixed_precision(cfg: CfgNode, device: torch.device) -> MixedPrecisionPolicy:
    """bf16 parameters in compute with fp32 gradient reduction on GPU; fp32 throughout on CPU."""
    if device.type == "cuda" and cfg.TRAIN.MIXED_PRECISION:
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def wrap_model(cfg: CfgNode, model: nn.Module, device: torch.device) -> nn.Module:
    """The model as this strategy trains it (compiled first with MODEL.COMPILE): DDP or FSDP2 under a
    process group, else unchanged."""
    if cfg.MODEL.COMPILE:
        compile_model(model, cfg.MODEL.COMPILE_MODE, cfg.MODEL.COMPILE_BACKEND)
    if not is_dist():
        return model
    if cfg.TRAIN.STRATEGY == "ddp":
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    mesh = init_device_mesh(device.type, (get_world_size(),))
    policy = mixed_precision(cfg, device)
    for unit in shard_units(model):
        fully_shard(unit, mesh=mesh, mp_policy=policy)
        for name in getattr(unit, "fsdp_forward_methods", ()):  # block methods called instead of forward
            register_fsdp_forward_method(unit, name)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's state dict as plain tensors on every rank (a collective under FSDP)."""
    if not is_sharded(model):
        return unwrap(model).state_dict()
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))


def eval_model(cfg: CfgNode, model: nn.Module, epoch: int | None = None) -> nn.Module:
    """A model that evaluates without collectives: the DDP module itself, or under FSDP an unsharded copy.

    Sharded forwards all-gather weights block by block, so every rank would have to run the same number
    of forwards; validation and multi-view testing give ranks different batch counts (a rank may have
    none). The copy holds the full weights (no optimizer state) and follows the training epoch
    (Evo-ViT's selection mode).
    """
    if not is_sharded(model):
        return unwrap(model)
    with torch.inference_mode(False), torch.no_grad():  # callers may be in inference mode (validate)
        state = full_state_dict(model)  # every rank joins here, before any rank-dependent loop
        device = next(iter(state.values())).device
        copy = MODEL_REGISTRY.get(cfg.MODEL.ARCH)(cfg).to(device)
        copy.load_state_dict(state)
    if epoch is not None:
        protocol.set_epoch(copy, epoch)
    return copy


def local_state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Bytes this rank holds of parameters and of optimizer state (local shards under FSDP)."""

    def local(t: torch.Tensor) -> torch.Tensor:
        return t.to_local() if hasattr(t, "to_local") else t

    params = sum(local(p).numel() * p.element_size() for p in model.parameters())
    opt = sum(
        local(v).numel() * v.element_size()
        for state in optimizer.state.values()
        for v in state.values()
        if torch.is_tensor(v)
    )
    return {"params": params, "optimizer": opt}
