"""Control models for token reduction at (nearly) matched FLOPs: random keep-k and uniform pooling.

Both run CONTROL.START_LAYER full layers, then cut the patch tokens to M = prod(STVIT.GRID) tokens
(or CONTROL.KEEP_TOKENS for random keep-k) and run every remaining layer on cls + those M tokens.
STViT with the same start layer and grid runs the same numbers of full and M-token layers, except
that its two generation layers also read all N image tokens as keys/values; the controls spend no
FLOPs there, so at equal settings they are slightly *cheaper* than STViT (see docs/token-models.md).
"""

from __future__ import annotations

import math

import torch
from fvcore.common.config import CfgNode
from torch import Tensor

from .build import depth_split, register_model, vit_depth, vit_kwargs
from .stvit import check_pool_grid, pool_centers
from .vit import Grid, VideoViT, checkpoint_filter_fn


def _check_start(start: int, depth: int) -> None:
    if not 0 <= start < depth:
        raise ValueError(f"CONTROL.START_LAYER must be in [0, {depth}), got {start}")


class RandomDropViT(VideoViT):
    """Keep k random patch tokens from ``start_layer`` on (new draw per sample in training).

    In eval the kept set is one fixed random subset (drawn at construction from ``seed``) so that
    evaluation is deterministic and independent of batch composition.
    """

    def __init__(self, *, start_layer: int = 4, keep_tokens: int = 128, seed: int = 0, **vit: object):
        super().__init__(**vit)
        _check_start(start_layer, self.depth)
        n = math.prod(self.grid)
        if not 1 <= keep_tokens <= n:
            raise ValueError(
                f"CONTROL.KEEP_TOKENS must be in [1, {n}] for a {self.grid} token grid, got {keep_tokens}"
            )
        self.start_layer = start_layer
        self.keep_tokens = keep_tokens
        gen = torch.Generator().manual_seed(seed)
        eval_keep = torch.randperm(n, generator=gen)[:keep_tokens].sort().values
        self.register_buffer("eval_keep", eval_keep, persistent=False)

    def keep_indices(self, batch: int, n: int, device: torch.device) -> Tensor:
        """(B, k) patch indices to keep, ascending (time-major order is preserved)."""
        if not self.training:
            return self.eval_keep.expand(batch, -1)
        noise = torch.rand(batch, n, device=device)
        return noise.topk(self.keep_tokens, dim=1).indices.sort(dim=1).values

    def forward_tokens(self, x: Tensor, grid: Grid) -> Tensor:
        """Full layers, random keep-k, then the remaining layers on prefix + k tokens."""
        p = self.num_prefix_tokens
        for i, blk in enumerate(self.blocks):
            if i == self.start_layer:
                idx = self.keep_indices(x.shape[0], x.shape[1] - p, x.device)
                self.record("random_keep", idx)
                kept = torch.gather(x[:, p:], 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
                x = torch.cat([x[:, :p], kept], dim=1)
            x = self.run_block(blk, x)
        return x


class UniformPoolViT(VideoViT):
    """Average-pool the patch tokens to a fixed grid at ``start_layer`` (no learned generation layers)."""

    def __init__(
        self, *, start_layer: int = 4, pool_grid: Grid = (8, 4, 4), grid_mode: str = "slice", **vit: object
    ):
        super().__init__(**vit)
        _check_start(start_layer, self.depth)
        self.start_layer = start_layer
        self.pool_grid = tuple(pool_grid)
        self.grid_mode = grid_mode
        check_pool_grid(self.grid, self.pool_grid, grid_mode, "avg")

    def forward_tokens(self, x: Tensor, grid: Grid) -> Tensor:
        """Full layers, fixed-grid average pooling, then the remaining layers on prefix + M tokens."""
        p = self.num_prefix_tokens
        for i, blk in enumerate(self.blocks):
            if i == self.start_layer:
                pooled = pool_centers(x[:, p:], grid, self.pool_grid, self.grid_mode, "avg")
                x = torch.cat([x[:, :p], pooled], dim=1)
            x = self.run_block(blk, x)
        return x


def control_start(cfg: CfgNode) -> int:
    """CONTROL.START_LAYER, or ``depth // 3`` for -1 (as STViT's default start layer)."""
    return depth_split(cfg.CONTROL.START_LAYER, vit_depth(cfg), 1 / 3)


@register_model(checkpoint_filter=checkpoint_filter_fn)
def random_drop(cfg: CfgNode) -> RandomDropViT:
    """Control: random keep-k tokens (k = CONTROL.KEEP_TOKENS or the STViT semantic token count)."""
    keep = cfg.CONTROL.KEEP_TOKENS or math.prod(cfg.STVIT.GRID)
    return RandomDropViT(
        start_layer=control_start(cfg), keep_tokens=keep, seed=cfg.RNG_SEED, **vit_kwargs(cfg)
    )


@register_model(checkpoint_filter=checkpoint_filter_fn)
def uniform_pool(cfg: CfgNode) -> UniformPoolViT:
    """Control: fixed-grid average pooling to STVIT.GRID (STVIT.GRID_MODE), no generation layers."""
    return UniformPoolViT(
        start_layer=control_start(cfg),
        pool_grid=tuple(cfg.STVIT.GRID),
        grid_mode=cfg.STVIT.GRID_MODE,
        **vit_kwargs(cfg),
    )
