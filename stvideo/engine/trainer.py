"""Epoch-based trainer: AMP, clipping, warm-up + cosine, periodic validation, exact resume.

Exact resume: the data order and every augmentation draw are functions of (RNG_SEED, epoch,
index) (see ``stvideo.data``), and checkpoints taken at epoch ends carry the model, optimizer,
scheduler, scaler and RNG states, so a run resumed from ``last.pyth`` ends with the same weights
as an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from fvcore.common.config import CfgNode
from torch import Tensor, nn
from tqdm import tqdm

from stvideo.data import build_loader
from stvideo.data.mixup import build_mixup
from stvideo.data.preprocessor import ClipPreprocessor
from stvideo.models import protocol
from stvideo.utils.distributed import (
    all_reduce_mean,
    all_reduce_sum,
    broadcast_buffers,
    get_rank,
    is_main_process,
)
from stvideo.utils.logging import memory_mb

from . import checkpoint as ckpt
from . import sharded_checkpoint as sharded
from . import strategy
from .evaluator import topk_correct
from .optim import build_optimizer, build_scheduler

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Raised when the training loss becomes NaN or infinite; no checkpoint is written after it."""


def autocast_dtype(cfg: CfgNode, device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU supports it, else fp16; None (fp32) on CPU or when disabled."""
    if device.type != "cuda" or not cfg.TRAIN.MIXED_PRECISION:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class Trainer:
    """Owns the loaders, optimizer and schedule of one training run; ``train()`` runs it."""

    def __init__(self, cfg: CfgNode, model: nn.Module, device: torch.device, stats: Any, tb: Any = None):
        self.cfg, self.model, self.device, self.stats, self.tb = cfg, model, device, stats, tb
        self.train_loader = build_loader(cfg, "train")
        self.val_loader = build_loader(cfg, "val") if cfg.TRAIN.EVAL_PERIOD > 0 else None
        self.iters_per_epoch = len(self.train_loader)
        if cfg.TRAIN.ITERS_PER_EPOCH:
            self.iters_per_epoch = min(self.iters_per_epoch, cfg.TRAIN.ITERS_PER_EPOCH)
        self.optimizer = build_optimizer(cfg, model)
        self.scheduler = build_scheduler(cfg, self.optimizer, self.iters_per_epoch)
        self.amp_dtype = autocast_dtype(cfg, device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.mixup = build_mixup(cfg)
        self.preprocess = ClipPreprocessor(cfg, device)
        self.start_epoch = 0
        self.ckpt_dir = ckpt.checkpoint_dir(cfg.OUTPUT_DIR)
        self.sharded = strategy.uses_sharded_checkpoints(cfg)  # TRAIN.STRATEGY fsdp: DCP folders

    # ------------------------------------------------------------------ state
    def state_dict(self, epoch: int) -> dict[str, Any]:
        return {
            "model": ckpt.unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": epoch,
            "cfg": self.cfg.dump(),
            "rng": ckpt.rng_state(),
        }

    def resume(self) -> None:
        """Continue from the newest readable checkpoint (AUTO_RESUME: ``last.pyth``, else the newest readable
        periodic one) or start from TRAIN.CHECKPOINT_FILE_PATH weights.

        Each unreadable checkpoint skipped is renamed to ``<name>.corrupt`` (rank 0) before training goes
        on, so no later save overwrites it; none readable at all stops the run (``CheckpointError``).
        """
        store = sharded if self.sharded else ckpt
        last, bad = store.find_resume(self.cfg.OUTPUT_DIR) if self.cfg.TRAIN.AUTO_RESUME else (None, [])
        for path, problem in bad:
            aside = store.set_aside(path) if is_main_process() else f"{path}.corrupt"
            logger.warning("Cannot resume from %s: %s. Moved it to %s", path, problem, aside)
        if bad and last:
            logger.warning("Resuming from %s, the newest readable checkpoint", last)
        if last:
            if self.sharded:  # collective; resharded to this world size
                state = sharded.load(last, self.model, self.optimizer)
            else:
                state = ckpt.load(last)
                ckpt.unwrap(self.model).load_state_dict(state["model"])
                self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            if state["rng"] is not None:
                ckpt.set_rng_state(state["rng"])
            else:  # a rank the checkpoint's run did not have (resumed on more ranks)
                logger.warning("No RNG state for rank %d in %s; seeding from RNG_SEED", get_rank(), last)
                torch.manual_seed(self.cfg.RNG_SEED + get_rank() + 1000 * state["epoch"])
            self.start_epoch = state["epoch"]
            logger.info("Resumed from %s (completed epochs: %d)", last, self.start_epoch)
        elif self.cfg.TRAIN.CHECKPOINT_FILE_PATH:
            ckpt.load_model_weights(self.model, self.cfg.TRAIN.CHECKPOINT_FILE_PATH)
            logger.info("Initialised weights from %s", self.cfg.TRAIN.CHECKPOINT_FILE_PATH)

    def save(self, epoch: int) -> None:
        """Write ``last.pyth`` and, every CHECKPOINT_PERIOD epochs, a kept periodic copy (rank 0); with
        sharded checkpoints every rank writes its shards (:mod:`.sharded_checkpoint`)."""
        period = self.cfg.TRAIN.CHECKPOINT_PERIOD
        keep = period > 0 and (epoch % period == 0 or epoch == self.cfg.SOLVER.MAX_EPOCH)
        if self.sharded:
            extra = {"scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict()}
            sharded.save(
                self.ckpt_dir, epoch, self.model, self.optimizer, {**extra, "cfg": self.cfg.dump()}, keep
            )
            return
        if not is_main_process():
            return
        state = self.state_dict(epoch)
        ckpt.save_atomic(state, f"{self.ckpt_dir}/{ckpt.LAST}")
        if keep:
            ckpt.save_atomic(state, f"{self.ckpt_dir}/{ckpt.periodic_name(epoch)}")

    # ------------------------------------------------------------------ loop
    def _set_epoch(self, epoch: int) -> None:
        self.train_loader.sampler.set_epoch(epoch)
        protocol.set_epoch(ckpt.unwrap(self.model), epoch)

    def _check_finite(self, losses: list[Tensor], epoch: int, first_iter: int) -> None:
        """One sync for a window of iterations instead of one per iteration."""
        if not losses:
            return
        finite = torch.isfinite(torch.stack(losses))
        if not bool(finite.all()):
            bad = first_iter + int((~finite).nonzero()[0])
            last = ckpt.find_last(self.cfg.OUTPUT_DIR)
            raise NonFiniteLossError(
                f"Loss became non-finite at epoch {epoch + 1}, iteration {bad + 1}; stopping. "
                f"Last good checkpoint: {last or 'none written yet'} (lower SOLVER.BASE_LR, raise "
                "SOLVER.WARMUP_EPOCHS or check the data)."
            )
        losses.clear()

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        self._set_epoch(epoch)
        cfg, device = self.cfg, self.device
        window: list[Tensor] = []
        window_start = 0
        totals = {"loss": torch.zeros((), device=device), "correct": torch.zeros((), device=device)}
        seen, skipped, damaged = 0, 0, 0
        data_wait = 0.0  # seconds this rank's loop spent in next(loader): the loader starved the step
        t_epoch = t_last = time.perf_counter()
        bar = tqdm(
            total=self.iters_per_epoch,
            desc=f"epoch {epoch + 1}/{cfg.SOLVER.MAX_EPOCH}",
            disable=not is_main_process(),
            leave=False,
            mininterval=2.0,
        )
        for it, batch in enumerate(self.train_loader):
            if it >= self.iters_per_epoch:
                break
            t_data = time.perf_counter() - t_last
            data_wait += t_data
            video = self.preprocess(batch["video"], batch["erase"])
            label = batch["label"].to(device, non_blocking=True)
            skipped += int(batch["skipped"].sum()) if "skipped" in batch else 0
            damaged += int(batch["damaged"].sum()) if "damaged" in batch else 0
            target = label
            if self.mixup is not None:
                video, target = self.mixup(video, label)
            with torch.autocast(device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                out = self.model(video)
            loss = protocol.classification_loss(out, target, self.cfg.MODEL.LABEL_SMOOTHING)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.SOLVER.CLIP_GRAD_L2NORM > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.SOLVER.CLIP_GRAD_L2NORM)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            step = epoch * self.iters_per_epoch + it + 1
            self.scheduler.step_update(step)

            logits = protocol.main_logits(out).detach()
            window.append(loss.detach())
            totals["loss"] += loss.detach() * label.shape[0]
            totals["correct"] += topk_correct(logits, label, (1,))[0]
            seen += label.shape[0]
            wait_frac = data_wait / max(time.perf_counter() - t_epoch, 1e-9)
            extra = {"skipped": skipped, "damaged": damaged} if skipped or damaged else {}
            bar.set_postfix(data_wait=f"{wait_frac:.0%}", **extra, refresh=False)
            bar.update(1)
            if (it + 1) % cfg.LOG_PERIOD == 0 or it + 1 == self.iters_per_epoch:
                self._check_finite(window, epoch, window_start)
                window_start = it + 1
                now = time.perf_counter()
                self.stats.write(
                    {
                        "_type": "train_iter",
                        "epoch": epoch + 1,
                        "iter": it + 1,
                        "iters": self.iters_per_epoch,
                        "loss": loss.detach(),
                        "top1": 100.0 * topk_correct(logits, label, (1,))[0] / label.shape[0],
                        "lr": self.optimizer.param_groups[0]["lr"],
                        "dt": now - t_last,
                        "dt_data": t_data,
                        "skipped_videos": skipped,
                        "damaged_videos": damaged,
                        "mem_mb": memory_mb(device),
                    }
                )
            t_last = time.perf_counter()
        bar.close()
        self._check_finite(window, epoch, window_start)
        loss_avg = all_reduce_mean(totals["loss"] / max(seen, 1))
        acc = all_reduce_mean(100.0 * totals["correct"] / max(seen, 1))
        skipped_all, damaged_all = all_reduce_sum(
            torch.tensor([float(skipped), float(damaged)], device=device)
        )
        loop_s = time.perf_counter() - t_epoch
        wait_frac = all_reduce_mean(torch.tensor(data_wait / max(loop_s, 1e-9), device=device))
        return {
            "_type": "train_epoch",
            "epoch": epoch + 1,
            "loss": float(loss_avg),
            "top1": float(acc),
            "lr": self.optimizer.param_groups[0]["lr"],
            "time_s": time.perf_counter() - t_epoch,
            "skipped_videos": int(skipped_all),
            "damaged_videos": int(damaged_all),
            "data_wait_frac": float(wait_frac),  # share of the epoch's step time spent waiting for batches
            "mem_mb": memory_mb(device),
        }

    @torch.inference_mode()
    def validate(self, epoch: int) -> dict[str, float]:
        """Single center view per video; loss and top-1/top-5 over all ranks, undecodable videos left out.

        Runs the model outside DistributedDataParallel: DDP's first forward after a training step
        broadcasts the buffers (BatchNorm statistics), a collective that a rank without val batches
        (fewer videos than ranks, or a batch of undecodable videos) would never join.
        """
        model = strategy.eval_model(self.cfg, self.model, epoch)  # FSDP: an unsharded copy
        broadcast_buffers(model)  # evaluate rank 0's BatchNorm statistics, the ones checkpoints save
        model.eval()
        sums = torch.zeros(6, device=self.device)  # loss*n, top1, top5, n, skipped, damaged (used or skipped)
        t0 = time.perf_counter()
        for batch in self.val_loader:
            sums[4] += len(batch["skipped"])
            sums[5] += sum(d is not None for d in batch.get("damage", [])) + sum(
                "damage" in s for s in batch["skipped"]
            )
            if len(batch["label"]) == 0:
                continue
            video = self.preprocess(batch["video"])
            label = batch["label"].to(self.device)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                logits = protocol.main_logits(model(video)).float()
            k = min(5, logits.shape[1])
            c1, c5 = topk_correct(logits, label, (1, k))
            sums[:4] += torch.stack(
                [F.cross_entropy(logits, label, reduction="sum"), c1, c5, sums.new_tensor(len(label))]
            )
        sums = all_reduce_sum(sums)
        if sums[3] == 0 and sums[4] > 0:
            raise RuntimeError(
                f"none of the {int(sums[4])} val videos could be decoded (logger stvideo.data names them); "
                "check DATA.PATH_PREFIX / DATA.PATH_TO_DATA_DIR and run tools/check_videos.py on val.csv"
            )
        n = max(float(sums[3]), 1.0)
        return {
            "_type": "val",
            "epoch": epoch + 1,
            "loss": float(sums[0]) / n,
            "top1": 100.0 * float(sums[1]) / n,
            "top5": 100.0 * float(sums[2]) / n,
            "num_videos": int(sums[3]),
            "skipped_videos": int(sums[4]),
            "damaged_videos": int(sums[5]),
            "time_s": time.perf_counter() - t0,
        }

    def train(self) -> dict[str, Any]:
        """Run the remaining epochs; return the last epoch's (and last validation's) stats."""
        self.resume()
        cfg = self.cfg
        result: dict[str, Any] = {}
        if self.start_epoch >= cfg.SOLVER.MAX_EPOCH:
            logger.info("Training already complete (%d epochs); nothing to do", self.start_epoch)
        for epoch in range(self.start_epoch, cfg.SOLVER.MAX_EPOCH):
            result["train"] = stats = self.train_epoch(epoch)
            self.stats.write(stats)
            self._tb(stats, epoch)
            if not math.isfinite(stats["loss"]):
                raise NonFiniteLossError(f"Epoch {epoch + 1} mean loss is {stats['loss']}; stopping")
            period = cfg.TRAIN.EVAL_PERIOD
            if self.val_loader is not None and (
                (epoch + 1) % period == 0 or epoch + 1 == cfg.SOLVER.MAX_EPOCH
            ):
                result["val"] = val = self.validate(epoch)
                self.stats.write(val)
                self._tb(val, epoch)
            self.save(epoch + 1)
        return result

    def _tb(self, stats: dict[str, Any], epoch: int) -> None:
        if self.tb is None:
            return
        for k, v in stats.items():
            if isinstance(v, (int, float)) and k not in ("epoch",):
                self.tb.add_scalar(f"{stats['_type']}/{k}", v, epoch + 1)
