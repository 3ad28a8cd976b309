"""Optimizer and learning-rate schedule from the config, via timm's factories."""

from __future__ import annotations

from fvcore.common.config import CfgNode
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch import nn
from torch.optim import Optimizer


def scaled_lr(cfg: CfgNode, lr: float) -> float:
    """Apply SOLVER.BASE_LR_SCALE: ``linear`` means lr * TRAIN.BATCH_SIZE (global) / 256."""
    if cfg.SOLVER.BASE_LR_SCALE == "linear":
        return lr * cfg.TRAIN.BATCH_SIZE / 256
    return lr


def build_optimizer(cfg: CfgNode, model: nn.Module) -> Optimizer:
    """AdamW (or another timm optimizer) with no decay on 1-D params and tokens if configured."""
    return create_optimizer_v2(
        model,
        opt=cfg.SOLVER.OPTIMIZING_METHOD,
        lr=scaled_lr(cfg, cfg.SOLVER.BASE_LR),
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        momentum=cfg.SOLVER.MOMENTUM,
        filter_bias_and_bn=cfg.SOLVER.ZERO_WD_1D_PARAM,
        **({"betas": tuple(cfg.SOLVER.BETAS)} if "adam" in cfg.SOLVER.OPTIMIZING_METHOD else {}),
    )


def build_scheduler(cfg: CfgNode, optimizer: Optimizer, iters_per_epoch: int) -> CosineLRScheduler:
    """Linear warm-up then cosine decay, stepped every iteration (``step_update``)."""
    total = cfg.SOLVER.MAX_EPOCH * iters_per_epoch
    warmup = int(round(cfg.SOLVER.WARMUP_EPOCHS * iters_per_epoch))
    return CosineLRScheduler(
        optimizer,
        t_initial=max(total - warmup, 1),
        lr_min=scaled_lr(cfg, cfg.SOLVER.COSINE_END_LR),
        warmup_t=warmup,
        warmup_lr_init=scaled_lr(cfg, cfg.SOLVER.WARMUP_START_LR),
        warmup_prefix=True,
        t_in_epochs=False,
    )
