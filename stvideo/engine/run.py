"""One run in this process: train if TRAIN.ENABLE, then multi-view test if TEST.ENABLE.

Entry point for ``tools/run_net.py`` and for each task of a submitit/SLURM job
(``stvideo.launch``): ranks come from the environment (see ``distributed.init_distributed``).
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any

import numpy as np
import torch
from fvcore.common.config import CfgNode

from stvideo.models import build_model
from stvideo.utils.checkpoint_io import check_checkpoint
from stvideo.utils.distributed import (
    barrier,
    get_rank,
    get_world_size,
    init_distributed,
    is_main_process,
)
from stvideo.utils.logging import JsonStats, setup_logging

from . import checkpoint as ckpt
from . import sharded_checkpoint as sharded
from . import strategy
from .evaluator import test_views
from .trainer import Trainer, autocast_dtype

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def write_config(cfg: CfgNode) -> None:
    """Rank 0 writes the resolved config to OUTPUT_DIR/config.yaml."""
    if is_main_process():
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
            f.write(cfg.dump())


def _tensorboard(cfg: CfgNode) -> Any:
    if not (cfg.TENSORBOARD.ENABLE and is_main_process()):
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(os.path.join(cfg.OUTPUT_DIR, "tb"))


def check_checkpoints(cfg: CfgNode) -> None:
    """Read every checkpoint file this run will load (cheaply: tensors are mapped, not read) before
    anything is written, so a missing, truncated or unsafe file stops the run (``CheckpointError``
    naming it) with the output folder as it was."""
    paths = [(cfg.MODEL.PRETRAINED, ())] if cfg.MODEL.PRETRAINED else []
    if cfg.TRAIN.ENABLE:
        store = sharded if strategy.uses_sharded_checkpoints(cfg) else ckpt
        resume = store.find_resume(cfg.OUTPUT_DIR)[0] if cfg.TRAIN.AUTO_RESUME else None
        if not resume and cfg.TRAIN.CHECKPOINT_FILE_PATH:
            paths.append((cfg.TRAIN.CHECKPOINT_FILE_PATH, ("model",)))
    if cfg.TEST.ENABLE:
        if cfg.TEST.CHECKPOINT_FILE_PATH:
            paths.append((cfg.TEST.CHECKPOINT_FILE_PATH, ("model",)))
        elif not cfg.TRAIN.ENABLE and ckpt.find_last(cfg.OUTPUT_DIR):
            paths.append((ckpt.find_last(cfg.OUTPUT_DIR), ("model",)))
    for path, keys in paths:
        check_checkpoint(path, keys)


def run(cfg: CfgNode) -> dict[str, Any]:
    """Train and/or test as configured; return {"train": ..., "test": ...} stats."""
    device = init_distributed(cfg)
    check_checkpoints(cfg)
    write_config(cfg)
    setup_logging(cfg.OUTPUT_DIR)
    logger.info("Rank %d/%d on %s; output in %s", get_rank(), get_world_size(), device, cfg.OUTPUT_DIR)
    if cfg.DETERMINISTIC:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    # Same seed on every rank: identical initial weights (DDP also broadcasts rank 0's).
    seed_everything(cfg.RNG_SEED)
    model = build_model(cfg).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("Model %s: %.2fM parameters", cfg.MODEL.ARCH, n_params / 1e6)
    # Model-side randomness (drop path, dropout) differs per rank, as in any DDP run.
    seed_everything(cfg.RNG_SEED + get_rank())
    model = strategy.wrap_model(cfg, model, device)  # TRAIN.STRATEGY: DDP or FSDP2 under a process group
    stats = JsonStats(cfg.OUTPUT_DIR)
    stats.write(
        {"_type": "run_info", "arch": cfg.MODEL.ARCH, "params": n_params, "world_size": get_world_size()}
    )
    result: dict[str, Any] = {}
    tb = _tensorboard(cfg)
    try:
        if cfg.TRAIN.ENABLE:
            result["train"] = Trainer(cfg, model, device, stats, tb).train()
        if cfg.TEST.ENABLE:
            test_model = strategy.eval_model(cfg, model)  # FSDP: an unsharded copy
            last_sharded = None
            if strategy.uses_sharded_checkpoints(cfg) and not cfg.TRAIN.ENABLE:
                last_sharded = sharded.find_resume(cfg.OUTPUT_DIR)[0]
            if cfg.TEST.CHECKPOINT_FILE_PATH:
                ckpt.load_model_weights(test_model, cfg.TEST.CHECKPOINT_FILE_PATH)
            elif not cfg.TRAIN.ENABLE and last_sharded:
                sharded.load_model_weights(last_sharded, test_model)
            elif not cfg.TRAIN.ENABLE and ckpt.find_last(cfg.OUTPUT_DIR):
                ckpt.load_model_weights(test_model, ckpt.find_last(cfg.OUTPUT_DIR))
            test = test_views(cfg, test_model, device, autocast_dtype(cfg, device))
            stats.write(
                {
                    "_type": "test_final",
                    **{k: test[k] for k in ("top1", "top5", "num_videos", "num_views", "num_damaged")},
                }
            )
            result["test"] = test
            if is_main_process():
                print(
                    f"[stvideo] test top-1 {test['top1']:.2f}  top-5 {test['top5']:.2f}  "
                    f"({test['num_videos']} videos x {test['num_views']} views, "
                    f"{test['num_skipped']} skipped)",
                    flush=True,
                )
    finally:
        if tb is not None:
            tb.close()
        barrier()
    return result
