"""STViT and STViT-R on tube tokens: semantic-token generation, semantic layers and restore.

Reusable building blocks (used here for the global video ViT and by the windowed Swin variant).
They work on any batch of token *sets*, so a caller can fold windows into the batch dimension:

* :func:`pool_centers` ``(tokens (B*, N, C), grid (T, H, W), out_grid, mode, pool) -> (B*, M, C)``
  initial centers by adaptive max/avg pooling of a time-major token grid; ``mode="slice"`` pools
  every temporal slice to its own ``out_grid[1:]`` 2D grid (needs ``out_grid[0] == T``),
  ``mode="joint"`` pools one 3D grid.
* :func:`generate_semantic_tokens` ``(layer1, layer2, centers (B*, M, C), image (B*, N, C),
  global_centers (M, C) | None) -> (B*, M, C)`` the two-layer generation module
  (layer 1: centers attend to ``image``; layer 2: centers + G attend to ``[semantic; image]``).
* :func:`restore_tokens` ``(layer, image (B*, N, C), semantic (B*, M, C)) -> (B*, N, C)``
  STViT-R recovery: saved full-resolution tokens attend to the semantic tokens, residual from them.

The layers are ordinary :class:`~stvideo.models.vit.Block` modules called as ``blk(x, context=ctx)``
(pre-norm cross-attention + FFN), so pretrained ViT weights fill them and forward hooks see them.
The cls token (when present) rides with the semantic tokens: it is a query in both generation layers
(without G), attends over the same keys, and is restored with the image tokens; the classifier
mean-pools the semantic tokens (or takes cls when ``VIT.HEAD_POOL=cls``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from fvcore.common.config import CfgNode
from timm.layers import LayerScale, trunc_normal_
from torch import Tensor, nn

from .build import depth_split, register_model, vit_depth, vit_kwargs
from .vit import Grid, VideoViT, checkpoint_filter_fn


def check_pool_grid(grid: Grid, out_grid: Grid, mode: str, pool: str) -> None:
    """Raise ValueError unless :func:`pool_centers` can pool a ``grid`` of tokens to ``out_grid``."""
    if mode not in ("slice", "joint"):
        raise ValueError(f"unknown grid mode {mode!r}; use slice or joint")
    if pool not in ("max", "avg"):
        raise ValueError(f"unknown pooling {pool!r}; use max or avg")
    if mode == "slice" and out_grid[0] != grid[0]:
        raise ValueError(
            f"pooled grid {list(out_grid)} in slice mode needs one grid per temporal slice "
            f"(first entry {grid[0]} for a {grid} token grid); use joint mode to pool time too"
        )
    if any(o > s for o, s in zip(out_grid, grid, strict=True)):
        raise ValueError(f"pooled grid {list(out_grid)} is finer than the token grid {grid}")


def pool_centers(
    tokens: Tensor, grid: Grid, out_grid: Grid, mode: str = "slice", pool: str = "max"
) -> Tensor:
    """Pool (B*, T*H*W, C) time-major tokens to (B*, t*h*w, C) initial centers on ``out_grid``."""
    b, n, c = tokens.shape
    t, h, w = grid
    if n != t * h * w:
        raise ValueError(f"pool_centers: {n} tokens do not form the grid {grid}")
    check_pool_grid(grid, out_grid, mode, pool)
    vol = tokens.transpose(1, 2).reshape(b, c, t, h, w)
    # With out_grid[0] == t, adaptive 3D pooling never mixes slices: it is per-slice 2D pooling.
    pooling = F.adaptive_max_pool3d if pool == "max" else F.adaptive_avg_pool3d
    out = pooling(vol, out_grid)
    return out.flatten(2).transpose(1, 2)


def generate_semantic_tokens(
    layer1: nn.Module,
    layer2: nn.Module,
    centers: Tensor,
    image: Tensor,
    global_centers: Tensor | None = None,
    prefix: Tensor | None = None,
) -> Tensor:
    """Two-layer semantic token generation; returns (B*, P+M, C) with the ``prefix`` tokens first.

    Layer 1: ``S1 = Block(P, context=X)``. Layer 2: ``S = Block(S1 + G, context=[S1; X])`` (G only on the
    queries, residual from the queries). ``prefix`` (e.g. cls, (B*, P, C)) joins the queries without G.
    """
    q = centers if prefix is None else torch.cat([prefix, centers], dim=1)
    ctx1 = image if prefix is None else torch.cat([prefix, image], dim=1)
    s1 = layer1(q, context=ctx1)
    q2 = s1
    if global_centers is not None:
        p = 0 if prefix is None else prefix.shape[1]
        g = F.pad(global_centers, (0, 0, p, 0)) if p else global_centers  # zeros for prefix tokens
        q2 = s1 + g
    return layer2(q2, context=torch.cat([s1, image], dim=1))


def restore_tokens(layer: nn.Module, image: Tensor, semantic: Tensor) -> Tensor:
    """STViT-R recovery: ``X = Block(X_saved, context=S)`` -> (B*, N, C) full-resolution tokens."""
    return layer(image, context=semantic)


def layer_roles(depth: int, start: int, num_semantic: int, num_units: int, restore: bool) -> list[str]:
    """Role of every layer: ``full``, ``gen1``, ``gen2``, ``semantic`` or ``restore``.

    STViT: ``start`` full layers, then ``gen1, gen2`` and ``num_semantic`` semantic layers (must fill
    the depth). STViT-R: ``start`` full layers, then ``num_units`` dumbbells
    ``[gen1, gen2, semantic..., restore]`` with one full layer between consecutive units; any
    remaining layers run full.
    """
    if start < 1:
        raise ValueError(
            f"STVIT.START_LAYER must be >= 1 (centers are pooled from layer outputs), got {start}"
        )
    unit = ["gen1", "gen2"] + ["semantic"] * num_semantic
    if not restore:
        roles = ["full"] * start + unit
        if len(roles) != depth:
            raise ValueError(
                f"STVIT.START_LAYER ({start}) + 2 generation layers + STVIT.NUM_SEMANTIC_LAYERS "
                f"({num_semantic}) = {len(roles)} must equal the depth {depth}"
            )
        return roles
    if num_units < 1:
        raise ValueError(f"STVIT.NUM_UNITS must be >= 1, got {num_units}")
    roles = ["full"] * start
    for u in range(num_units):
        roles += (["full"] if u else []) + unit + ["restore"]
    if len(roles) > depth:
        raise ValueError(
            f"STViT-R layout needs {len(roles)} layers (STVIT.START_LAYER={start}, NUM_UNITS={num_units}, "
            f"NUM_SEMANTIC_LAYERS={num_semantic}) but the depth is {depth}"
        )
    return roles + ["full"] * (depth - len(roles))


class STViT(VideoViT):
    """Video ViT with global semantic tokens (STViT) or dumbbell units that restore them (STViT-R).

    ``layer_roles`` tells which block does what; generation and restore layers are the ViT's own blocks
    (pretrained weights fill them) with LayerScale ``stvit_layer_scale`` added when the backbone has none;
    ``semantic_layer_scale`` adds it to the semantic-only layers too.
    """

    def __init__(
        self,
        *,
        start_layer: int = 4,
        num_semantic_layers: int = 6,
        semantic_grid: Grid = (8, 4, 4),
        grid_mode: str = "slice",
        pool: str = "max",
        global_centers: bool = True,
        stvit_layer_scale: float = 1e-5,
        semantic_layer_scale: bool = False,
        num_units: int = 1,
        restore: bool = False,
        return_dense: bool = False,
        **vit: object,
    ):
        super().__init__(**vit)
        self.layer_roles = layer_roles(self.depth, start_layer, num_semantic_layers, num_units, restore)
        self.semantic_grid = tuple(semantic_grid)
        self.grid_mode = grid_mode
        self.pool = pool
        self.return_dense = return_dense
        if return_dense and not restore:
            raise ValueError(
                "STVIT.RETURN_DENSE needs STViT-R (MODEL.ARCH stvit_r): STViT ends on semantic tokens"
            )
        check_pool_grid(self.grid, self.semantic_grid, grid_mode, pool)
        num_sem = math.prod(self.semantic_grid)
        self.global_centers = None
        if global_centers:
            self.global_centers = nn.Parameter(
                torch.zeros(num_units if restore else 1, num_sem, self.embed_dim)
            )
            trunc_normal_(self.global_centers, std=0.02)
        # New-role layers start close to identity (paper: LayerScale 1e-5); with semantic_layer_scale the
        # semantic-only layers too, as in the official code (off by default: they are pretrained layers).
        scaled = {"gen1", "gen2", "restore"} | ({"semantic"} if semantic_layer_scale else set())
        if stvit_layer_scale > 0:
            for blk, role in zip(self.blocks, self.layer_roles, strict=True):
                if role in scaled and isinstance(blk.ls1, nn.Identity):
                    blk.ls1 = LayerScale(self.embed_dim, stvit_layer_scale)
                    blk.ls2 = LayerScale(self.embed_dim, stvit_layer_scale)

    def no_weight_decay(self) -> set[str]:
        """Also exempt the global centers from weight decay."""
        return super().no_weight_decay() | ({"global_centers"} if self.global_centers is not None else set())

    def forward_tokens(self, x: Tensor, grid: Grid) -> Tensor:
        """Run the layers by role; returns (B, prefix+M, C) for STViT, (B, prefix+N, C) for STViT-R."""
        p = self.num_prefix_tokens
        saved = x
        unit = 0
        for i, (blk, role) in enumerate(zip(self.blocks, self.layer_roles, strict=True)):
            if role in ("full", "semantic"):
                x = self.run_block(blk, x)
            elif role == "gen1":
                saved = x
                centers = pool_centers(x[:, p:], grid, self.semantic_grid, self.grid_mode, self.pool)
                g = None if self.global_centers is None else self.global_centers[unit]
                x = generate_semantic_tokens(
                    self._blk(blk),
                    self._blk(self.blocks[i + 1]),
                    centers,
                    x[:, p:],
                    g,
                    prefix=x[:, :p] if p else None,
                )
            elif role == "restore":
                x = restore_tokens(self._blk(blk), saved, x)
                unit += 1
        return x

    def _blk(self, blk: nn.Module) -> Callable[..., Tensor]:
        """``blk`` called with a context, through :meth:`VideoViT.run_block` (activation checkpointing)."""

        def body(x: Tensor, context: Tensor) -> Tensor:
            return blk(x, context=context)  # by keyword, as hooks and the docstring above expect

        def call(x: Tensor, context: Tensor) -> Tensor:
            return self.run_block(body, x, context)

        return call

    def dense_features(self, video: Tensor) -> Tensor:
        """Full-resolution spatiotemporal features (B, C, T', H', W') for dense heads (STViT-R only)."""
        if self.layer_roles[-1] == "semantic":
            raise ValueError("dense features need STViT-R: plain STViT ends on semantic tokens")
        x, grid = self.embed(video)
        x = self.forward_tokens(x, grid)[:, self.num_prefix_tokens :]
        return x.transpose(1, 2).reshape(x.shape[0], -1, *grid)

    def forward(self, video: Tensor) -> Tensor:
        """Logits (B, K), or dense features (B, C, T', H', W') when built with ``return_dense``."""
        if self.return_dense:
            return self.dense_features(video)
        return super().forward(video)


def stvit_split(cfg: CfgNode, restore: bool) -> tuple[int, int]:
    """(start layer, semantic layers per unit) from STVIT.START_LAYER / NUM_SEMANTIC_LAYERS; -1 scales
    with the depth: start ``depth // 3`` (4 of 12, 8 of 24, 10 of 32), semantic layers filling the rest
    (STViT: ``depth - start - 2``; STViT-R: the most that NUM_UNITS dumbbells fit)."""
    s, depth = cfg.STVIT, vit_depth(cfg)
    start = depth_split(s.START_LAYER, depth, 1 / 3)
    if s.NUM_SEMANTIC_LAYERS >= 0:
        return start, s.NUM_SEMANTIC_LAYERS
    if not restore:
        return start, depth - start - 2
    units = max(s.NUM_UNITS, 1)  # each unit: gen1, gen2, semantic..., restore; one full layer between units
    return start, (depth - start - (units - 1)) // units - 3


def stvit_kwargs(cfg: CfgNode, restore: bool) -> dict:
    """STViT constructor arguments from the STVIT section."""
    s = cfg.STVIT
    start, semantic = stvit_split(cfg, restore)
    return dict(
        start_layer=start,
        num_semantic_layers=semantic,
        semantic_grid=tuple(s.GRID),
        grid_mode=s.GRID_MODE,
        pool=s.POOL,
        global_centers=s.GLOBAL_CENTERS,
        stvit_layer_scale=s.LAYER_SCALE_INIT,
        semantic_layer_scale=s.SEMANTIC_LAYER_SCALE,
        num_units=s.NUM_UNITS,
        restore=restore,
        return_dense=s.RETURN_DENSE,
    )


@register_model(checkpoint_filter=checkpoint_filter_fn)
def stvit(cfg: CfgNode) -> STViT:
    """STViT: full layers, two generation layers, then semantic tokens only."""
    return STViT(**stvit_kwargs(cfg, restore=False), **vit_kwargs(cfg))


@register_model(checkpoint_filter=checkpoint_filter_fn)
def stvit_r(cfg: CfgNode) -> STViT:
    """STViT-R: dumbbell units that compress to semantic tokens and restore full resolution."""
    return STViT(**stvit_kwargs(cfg, restore=True), **vit_kwargs(cfg))
