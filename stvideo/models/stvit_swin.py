"""STViT-local and STViT-R-local on the Video Swin backbone: semantic tokens in every 3D window.

In a semantic stage the blocks take roles from :func:`stvideo.models.stvit.layer_roles`
(start layer 1, as in the STViT-R Swin code): one full-resolution Swin block, then the two
generation layers, then semantic-only layers, and with ``restore`` (STViT-R-local) a restore layer
that closes each 6-layer dumbbell unit ``[full, gen1, gen2, local, global, restore]``.

Generation: each window's tokens are max/avg-pooled to a small ``window_grid`` of centers P, and
the two generation layers are wired as one of the released codes (``variant``, see ``VARIANTS``):

* ``classification`` (changsn/STViT-R): layer 1, per window, queries P against
  ``[P; the window's neighbourhood]`` (``context``), residual from P only with ``shortcut``;
  layer 2 is global, the stage's semantic tokens (+ G) against ``[all semantic; all image tokens]``.
* ``detection`` (changsn/STViT-R-Object-Detection): layer 1, per window, P against the window's
  ``context`` neighbourhood, residual from P; layer 2, per window, S1 (+ G) against a larger
  ``context2`` image-only neighbourhood, residual from S1.

Neighbourhoods are clamped to the map and shifted inward at the borders, so every window sees the
same number of real tokens and no padding mask is needed. G (``global_centers``) is a learned center
per position of the window grid, one set per unit, shared by all windows.

* Semantic layers alternate local (the window's own tokens) and global (all semantic tokens) attention.
* Restore (:func:`~stvideo.models.stvit.restore_tokens`): the saved full-resolution tokens attend
  to all semantic tokens, so the stage again outputs the full feature map.

Without restore the stage outputs the semantic tokens laid out as a map (windows x window_grid),
which the next stage's patch merging treats like any feature map.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from fvcore.common.config import CfgNode
from timm.layers import trunc_normal_
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .build import register_model
from .stvit import layer_roles, pool_centers, restore_tokens
from .swin import (
    PatchMerging3D,
    Size3,
    SwinBlock3D,
    VideoSwin,
    checkpoint_filter_fn,
    effective_window,
    swin_kwargs,
    window_partition,
    window_reverse,
)
from .vit import Block

UNIT_DEPTH = 6  # STViT-R dumbbell: full, gen1, gen2, local, global, restore
# Generation wiring -> (layer-1 residual from the centers, G on the layer-2 queries) as released.
VARIANTS = {"classification": (False, False), "detection": (True, False)}


def window_neighbourhoods(x: Tensor, window: Sequence[int], context: Sequence[int]) -> Tensor:
    """(B, T, H, W, C) -> (B * num_windows, K, C): for each window, the ``context``-sized block of
    tokens centered on it, clamped to the map (at least the window, at most the feature size) and
    shifted inward at the borders so every window gets the same K real tokens."""
    b, *grid, c = x.shape
    idx = []
    for n, w, k in zip(grid, window, context, strict=True):
        k = min(max(k, w), n)
        starts = (torch.arange(n // w, device=x.device) * w - (k - w) // 2).clamp(0, n - k)
        idx.append(starts[:, None] + torch.arange(k, device=x.device))  # windows, k
    it, ih, iw = idx
    out = x[
        :,
        it[:, None, None, :, None, None],
        ih[None, :, None, None, :, None],
        iw[None, None, :, None, None, :],
    ]
    return out.reshape(b * it.shape[0] * ih.shape[0] * iw.shape[0], -1, c)


def cross_block(blk: Block, queries: Tensor, keys: Tensor, shortcut: bool = True) -> Tensor:
    """``blk`` with queries from ``queries`` and keys/values from ``keys``; without ``shortcut`` the
    attention branch replaces the queries instead of adding to them (the MLP keeps its residual)."""
    if shortcut:
        return blk(queries, context=keys)
    return blk.forward_replace(queries, keys)


class SemanticSwinStage(nn.Module):
    """A Swin stage whose blocks run by STViT role on windowed semantic tokens (see module doc)."""

    def __init__(
        self,
        in_dim: int,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: Size3,
        downsample: bool,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: Sequence[float] = (),
        attn_drop: float = 0.0,
        *,
        window_grid: Size3 = (1, 3, 3),
        context: Size3 = (8, 10, 10),
        context2: Size3 = (8, 21, 21),
        restore: bool = False,
        pool: str = "max",
        variant: str = "classification",
        shortcut: bool = False,
        global_centers: bool = False,
        layer_scale: float = 1e-5,
        semantic_layer_scale: bool = False,
    ):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"SWIN.STVIT_VARIANT must be one of {tuple(VARIANTS)}, got {variant!r}")
        if restore:
            units = depth // UNIT_DEPTH
            if units < 1:
                raise ValueError(
                    f"STViT-R-local needs a semantic stage of >= {UNIT_DEPTH} blocks, got depth {depth}"
                )
            self.roles = layer_roles(depth, 1, UNIT_DEPTH - 4, units, restore=True)
        else:
            units = 1
            if depth < 4:
                raise ValueError(f"STViT-local needs a semantic stage of >= 4 blocks, got depth {depth}")
            self.roles = layer_roles(depth, 1, depth - 3, 1, restore=False)
        self.grad_checkpointing = False
        self.window_size = tuple(window_size)
        self.window_grid = tuple(window_grid)
        self.context = tuple(context)
        self.context2 = tuple(context2)
        self.pool = pool
        self.variant = variant
        self.shortcut = shortcut
        self.downsample = PatchMerging3D(in_dim, dim) if downsample else nn.Identity()
        shift = tuple(w // 2 for w in window_size)
        scaled = {"gen1", "gen2", "restore"} | ({"semantic"} if semantic_layer_scale else set())
        blocks = []
        for i, role in enumerate(self.roles):
            dp = drop_path[i] if drop_path else 0.0
            if role == "full":
                sh = (0, 0, 0) if i % 2 == 0 else shift
                blocks.append(
                    SwinBlock3D(dim, num_heads, window_size, sh, mlp_ratio, qkv_bias, dp, attn_drop)
                )
            else:
                ls = layer_scale if role in scaled else 0.0
                blocks.append(Block(dim, num_heads, mlp_ratio, qkv_bias, dp, attn_drop, ls))
        self.blocks = nn.ModuleList(blocks)
        self.global_centers = None
        if global_centers:  # G: one learned center per position in a window's grid, per unit
            self.global_centers = nn.Parameter(torch.zeros(units, *self.window_grid, dim).flatten(1, 3))
            trunc_normal_(self.global_centers, std=0.02)

    def geometry(self, grid: Sequence[int]) -> tuple[Size3, Size3]:
        """Window and semantic grid per window used on a ``grid`` feature map (both clamped)."""
        window, _ = effective_window(grid, self.window_size, (0, 0, 0))
        if any(n % w for n, w in zip(grid, window, strict=True)):
            raise ValueError(
                f"semantic stage: feature map {tuple(grid)} does not divide into windows {window}; "
                "choose SWIN.WINDOW_SIZE / the input size so it does"
            )
        return window, tuple(min(g, w) for g, w in zip(self.window_grid, window, strict=True))

    def run(self, fn, *args):
        """Call ``fn(*args)``, through activation checkpointing when enabled and grads are needed."""
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def generate(self, layer1: Block, layer2: Block, x: Tensor, centers: Tensor, g: Tensor | None) -> Tensor:
        """The two generation layers: (B, T, H, W, C) map and (B*nW, M, C) centers -> (B*nW, M, C)."""
        b, *_, c = x.shape
        window, _ = self.geometry(x.shape[1:4])
        ctx = window_neighbourhoods(x, window, self.context)  # B*nW, K, C
        if self.variant == "classification":
            s1 = cross_block(layer1, centers, torch.cat([centers, ctx], dim=1), self.shortcut)
            m = s1.shape[1]
            sem = s1.reshape(b, -1, c)  # layer 2 is global: all the clip's semantic and image tokens
            q = sem if g is None else sem + g.repeat(sem.shape[1] // m, 1)
            return layer2(q, context=torch.cat([sem, x.reshape(b, -1, c)], dim=1)).reshape(-1, m, c)
        s1 = cross_block(layer1, centers, ctx, self.shortcut)
        q = s1 if g is None else s1 + g
        return layer2(q, context=window_neighbourhoods(x, window, self.context2))

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x)
        b, *grid, c = x.shape
        window, sgrid = self.geometry(grid)
        nwin = [n // w for n, w in zip(grid, window, strict=True)]
        sem = saved = None
        unit = n_sem = 0
        for i, (blk, role) in enumerate(zip(self.blocks, self.roles, strict=True)):
            if role == "full":
                x = self.run(blk, x)
            elif role == "gen1":
                saved = x
                wins = window_partition(x, window).flatten(0, 1)  # B*nW, window tokens, C
                centers = pool_centers(wins, window, sgrid, "joint", self.pool)
                g = None
                if self.global_centers is not None:  # G of this unit, cut to a clamped grid
                    g = self.global_centers[unit].view(*self.window_grid, c)
                    g = g[: sgrid[0], : sgrid[1], : sgrid[2]].flatten(0, 2)
                sem = self.run(self.generate, blk, self.blocks[i + 1], x, centers, g)
                n_sem = 0
            elif role == "semantic":
                m = sem.shape[1]
                if n_sem % 2 == 0:  # local: within each window's semantic tokens
                    sem = self.run(blk, sem)
                else:  # global: all semantic tokens of the clip
                    sem = self.run(blk, sem.reshape(b, -1, c)).reshape(-1, m, c)
                n_sem += 1
            elif role == "restore":
                out = self.run(restore_tokens, blk, saved.reshape(b, -1, c), sem.reshape(b, -1, c))
                x, sem = out.view(saved.shape), None
                unit += 1
        if sem is not None:  # STViT-local: the semantic tokens become the stage's feature map
            out_grid = [n * g for n, g in zip(nwin, sgrid, strict=True)]
            x = window_reverse(sem.view(b, -1, sem.shape[1], c), sgrid, out_grid)
        return x


class STViTSwin(VideoSwin):
    """Video Swin with STViT-local (or, with ``restore``, STViT-R-local) in ``semantic_stages``.

    ``shortcut`` / ``global_centers`` None mean "as released for the variant" (``VARIANTS``).
    """

    def __init__(
        self,
        *,
        semantic_stages: Sequence[int] = (2,),
        window_grid: Sequence[int] = (1, 3, 3),
        context: Sequence[int] = (8, 10, 10),
        context2: Sequence[int] = (8, 21, 21),
        restore: bool = False,
        pool: str = "max",
        variant: str = "classification",
        shortcut: bool | None = None,
        global_centers: bool | None = None,
        layer_scale: float = 1e-5,
        semantic_layer_scale: bool = False,
        **swin: object,
    ):
        num_stages = len(swin.get("depths", (2, 2, 6, 2)))
        bad = [s for s in semantic_stages if not 0 <= s < num_stages]
        if not semantic_stages or bad:
            raise ValueError(
                f"SWIN.SEMANTIC_STAGES {list(semantic_stages)} must name stages in 0..{num_stages - 1}"
            )
        for name, v in (
            ("SEMANTIC_WINDOW_GRID", window_grid),
            ("SEMANTIC_CONTEXT", context),
            ("SEMANTIC_CONTEXT_GEN2", context2),
        ):
            if len(v) != 3 or min(v) < 1:
                raise ValueError(f"SWIN.{name} must be three positive sizes (t, h, w), got {list(v)}")
        if variant not in VARIANTS:
            raise ValueError(f"SWIN.STVIT_VARIANT must be one of {tuple(VARIANTS)}, got {variant!r}")
        released_shortcut, released_g = VARIANTS[variant]
        # Read by make_stage, which VideoSwin.__init__ calls; plain attributes may precede Module init.
        self.semantic_options = dict(
            window_grid=tuple(window_grid),
            context=tuple(context),
            context2=tuple(context2),
            restore=restore,
            pool=pool,
            variant=variant,
            shortcut=released_shortcut if shortcut is None else shortcut,
            global_centers=released_g if global_centers is None else global_centers,
            layer_scale=layer_scale,
            semantic_layer_scale=semantic_layer_scale,
        )
        self.semantic_stages = tuple(semantic_stages)
        super().__init__(**swin)  # its init touches Linear / LayerNorm only, so G keeps its trunc-normal init

    def make_stage(self, index: int, **kwargs) -> nn.Module:
        """Semantic stages get :class:`SemanticSwinStage`, the others plain Swin stages."""
        if index in self.semantic_stages:
            return SemanticSwinStage(**kwargs, **self.semantic_options)
        return super().make_stage(index, **kwargs)

    def no_weight_decay(self) -> set[str]:
        """Also exempt the global centers from weight decay."""
        return super().no_weight_decay() | {
            n for n, _ in self.named_parameters() if n.endswith("global_centers")
        }


def _auto_flag(cfg: CfgNode, key: str) -> bool | None:
    """SWIN.<key>: auto -> None (as released for SWIN.STVIT_VARIANT), add -> True, none -> False."""
    value = cfg.SWIN[key]
    if value not in ("auto", "add", "none"):
        raise ValueError(f"SWIN.{key} must be auto, add or none, got {value!r}")
    return None if value == "auto" else value == "add"


@register_model(checkpoint_filter=checkpoint_filter_fn)
def stvit_swin(cfg: CfgNode) -> STViTSwin:
    """Video Swin with STViT-local semantic tokens (STViT-R-local when SWIN.RESTORE)."""
    return STViTSwin(
        semantic_stages=tuple(cfg.SWIN.SEMANTIC_STAGES),
        window_grid=tuple(cfg.SWIN.SEMANTIC_WINDOW_GRID),
        context=tuple(cfg.SWIN.SEMANTIC_CONTEXT),
        context2=tuple(cfg.SWIN.SEMANTIC_CONTEXT_GEN2),
        restore=cfg.SWIN.RESTORE,
        pool=cfg.STVIT.POOL,
        variant=cfg.SWIN.STVIT_VARIANT,
        shortcut=_auto_flag(cfg, "STVIT_SHORTCUT"),
        global_centers=_auto_flag(cfg, "STVIT_GLOBAL_CENTERS"),
        layer_scale=cfg.STVIT.LAYER_SCALE_INIT,
        semantic_layer_scale=cfg.STVIT.SEMANTIC_LAYER_SCALE,
        **swin_kwargs(cfg),
    )
