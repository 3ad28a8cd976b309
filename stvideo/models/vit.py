"""Plain video ViT: tube tokens (Conv3d t x p x p), learned position embedding, SDPA blocks.

Parameter names follow timm's VisionTransformer (``patch_embed.proj``, ``blocks.N.attn.qkv``,
``norm``, ``fc_norm``, ``head``) so image checkpoints map onto it with little remapping.

Token methods (STViT, Evo-ViT, controls) subclass :class:`VideoViT` and override
:meth:`VideoViT.forward_tokens` only; embedding, blocks and head are shared, not copied.
:class:`Attention` and :class:`Block` accept a separate ``context`` for cross-attention
(queries from ``x``, keys/values from ``context``), which semantic-token generation and
restoration need.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fvcore.common.config import CfgNode
from timm.layers import DropPath, LayerScale, Mlp, build_sincos2d_pos_embed, trunc_normal_
from torch import Tensor, nn

from .build import MODEL_REGISTRY, vit_kwargs
from .stem import tube_projection

Grid = tuple[int, int, int]  # (T', H', W') token grid of the patch tokens


def sincos_1d(length: int, dim: int) -> Tensor:
    """(length, dim) sin-cos table over one axis (frequencies as in the Transformer paper)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float32) / (dim // 2))
    angles = torch.arange(length, dtype=torch.float32)[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_3d(grid: Grid, dim: int) -> Tensor:
    """(T*H*W, dim) sin-cos table: a quarter of the channels encode time, the rest (h, w) via timm.

    timm only ships the 2D table, so the temporal part is added here; used to initialise the
    learned position embeddings, which lets a from-scratch video ViT tell left from right and
    before from after at step 0 (VideoMAE and MAE use fixed sin-cos tables for the same reason).
    """
    t, h, w = grid
    spatial_dim = (3 * dim // 4) // 4 * 4  # timm's 2D table needs a multiple of 4
    spatial = build_sincos2d_pos_embed([h, w], dim=spatial_dim)  # (H*W, spatial_dim)
    temporal = sincos_1d(t, dim - spatial_dim)  # (T, dim - spatial_dim)
    table = torch.cat([temporal[:, None].expand(t, h * w, -1), spatial[None].expand(t, h * w, -1)], dim=-1)
    return table.reshape(t * h * w, dim)


class TubeEmbed(nn.Module):
    """Cut a clip (B, C, T, H, W) into non-overlapping t x p x p tubes, one token each.

    ``stem="linear"`` projects each tube with one strided Conv3d (timm/VideoMAE layout);
    ``stem="conv"`` uses a small convolutional stem with the same token grid (see ``stem.py``).
    """

    def __init__(
        self,
        in_chans: int,
        embed_dim: int,
        patch_size: int,
        tubelet_size: int,
        stem: str = "linear",
        stem_width: int = 16,
    ):
        super().__init__()
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        self.proj = tube_projection(
            stem, in_chans, embed_dim, (tubelet_size, patch_size, patch_size), stem_width
        )

    def forward(self, video: Tensor) -> tuple[Tensor, Grid]:
        _, _, t, h, w = video.shape
        if t % self.tubelet_size or h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"Input {tuple(video.shape)} is not divisible into tubes of "
                f"{self.tubelet_size}x{self.patch_size}x{self.patch_size}"
            )
        x = self.proj(video)  # B, C, T', H', W'
        grid = tuple(x.shape[2:])
        return x.flatten(2).transpose(1, 2), grid


class Attention(nn.Module):
    """Multi-head attention on ``F.scaled_dot_product_attention``; optional cross-attention.

    With ``context`` the queries come from ``x`` and keys/values from ``context``, using the
    same ``qkv`` weights sliced, so pretrained self-attention weights serve both uses.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)

    def _heads(self, t: Tensor) -> Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def qkv_heads(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values as (B, heads, N, head_dim)."""
        if context is None:
            b, n, c = x.shape
            qkv = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            return qkv[0], qkv[1], qkv[2]
        dim = x.shape[-1]
        w, bias = self.qkv.weight, self.qkv.bias
        q = F.linear(x, w[:dim], None if bias is None else bias[:dim])
        kv = F.linear(context, w[dim:], None if bias is None else bias[dim:])
        k, v = kv.chunk(2, dim=-1)
        return self._heads(q), self._heads(k), self._heads(v)

    def forward(self, x: Tensor, context: Tensor | None = None, attn_mask: Tensor | None = None) -> Tensor:
        q, k, v = self.qkv_heads(x, context)
        drop = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop)
        return self.proj(out.transpose(1, 2).flatten(2))


class Block(nn.Module):
    """Pre-norm transformer block; ``context`` turns its attention into cross-attention."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        attn_drop: float = 0.0,
        layer_scale_init: float = 0.0,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop)
        self.ls1 = LayerScale(dim, layer_scale_init) if layer_scale_init > 0 else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)
        self.ls2 = LayerScale(dim, layer_scale_init) if layer_scale_init > 0 else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def attn_residual(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """The attention branch's output before it is added to ``x``."""
        ctx = None if context is None else self.norm1(context)
        return self.drop_path1(self.ls1(self.attn(self.norm1(x), ctx)))

    def mlp_residual(self, x: Tensor) -> Tensor:
        """The MLP branch's output before it is added to ``x``."""
        return self.drop_path2(self.ls2(self.mlp(self.norm2(x))))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        x = x + self.attn_residual(x, context)
        return x + self.mlp_residual(x)


class VideoViT(nn.Module):
    """Video ViT classifier: tube embedding -> :meth:`forward_tokens` -> pooled linear head."""

    def __init__(
        self,
        num_classes: int = 400,
        num_frames: int = 16,
        img_size: int = 224,
        in_chans: int = 3,
        patch_size: int = 16,
        tubelet_size: int = 2,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        layer_scale_init: float = 0.0,
        pos_embed: str = "joint",
        pos_embed_init: str = "sincos",
        cls_token: bool = True,
        head_pool: str = "mean",
        patch_embed: str = "linear",
        stem_width: int = 16,
    ):
        super().__init__()
        if num_frames % tubelet_size or img_size % patch_size:
            raise ValueError(
                f"{num_frames} frames x {img_size}px do not divide into {tubelet_size}x{patch_size}px tubes"
            )
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.depth = depth
        self.head_pool = head_pool
        self.grid: Grid = (num_frames // tubelet_size, img_size // patch_size, img_size // patch_size)
        self.num_prefix_tokens = 1 if cls_token else 0
        t, h, w = self.grid

        self.patch_embed = TubeEmbed(in_chans, embed_dim, patch_size, tubelet_size, patch_embed, stem_width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if cls_token else None
        self.pos_embed_type = pos_embed
        if pos_embed == "joint":  # timm layout: cls position first, then T*H*W patch positions
            self.pos_embed = nn.Parameter(torch.zeros(1, self.num_prefix_tokens + t * h * w, embed_dim))
        elif pos_embed == "separable":
            self.pos_embed_spatial = nn.Parameter(torch.zeros(1, h * w, embed_dim))
            self.pos_embed_temporal = nn.Parameter(torch.zeros(1, t, embed_dim))
            self.pos_embed_cls = nn.Parameter(torch.zeros(1, 1, embed_dim)) if cls_token else None
        else:
            raise ValueError(f"unknown pos_embed {pos_embed!r}; use joint or separable")

        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, dpr[i], attn_drop_rate, layer_scale_init)
            for i in range(depth)
        )
        # timm / VideoMAE convention: final norm before cls pooling, fc_norm after mean pooling.
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6) if head_pool == "cls" else nn.Identity()
        self.fc_norm = nn.LayerNorm(embed_dim, eps=1e-6) if head_pool == "mean" else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes)
        self.apply(self._init_weights)
        self._init_pos_embed(pos_embed_init)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)

    @torch.no_grad()
    def _init_pos_embed(self, how: str) -> None:
        """``sincos``: 3D sin-cos table (cls position zero); ``trunc_normal``: std 0.02 (timm)."""
        t, h, w = self.grid
        if how == "trunc_normal":
            for name in ("pos_embed", "pos_embed_spatial", "pos_embed_temporal"):
                if hasattr(self, name):
                    trunc_normal_(getattr(self, name), std=0.02)
        elif how == "sincos":
            if self.pos_embed_type == "joint":
                self.pos_embed[0, self.num_prefix_tokens :] = sincos_3d(self.grid, self.embed_dim)
            else:
                table = sincos_3d(self.grid, self.embed_dim).view(t, h * w, -1)
                spatial_dim = (3 * self.embed_dim // 4) // 4 * 4
                self.pos_embed_spatial[0] = torch.cat(
                    [torch.zeros(h * w, self.embed_dim - spatial_dim), table[0, :, -spatial_dim:]], 1
                )
                self.pos_embed_temporal[0] = torch.cat(
                    [table[:, 0, : self.embed_dim - spatial_dim], torch.zeros(t, spatial_dim)], 1
                )
        else:
            raise ValueError(f"unknown pos_embed_init {how!r}; use sincos or trunc_normal")

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay (timm optimizer factory reads this)."""
        names = {"cls_token", "pos_embed", "pos_embed_spatial", "pos_embed_temporal", "pos_embed_cls"}
        return {n for n, _ in self.named_parameters() if n in names}

    def position_embedding(self) -> Tensor:
        """(1, prefix + T*H*W, C) position embedding in token order (time-major)."""
        if self.pos_embed_type == "joint":
            return self.pos_embed
        t, h, w = self.grid
        pos = self.pos_embed_temporal[:, :, None] + self.pos_embed_spatial[:, None]  # 1, T, HW, C
        pos = pos.reshape(1, t * h * w, -1)
        if self.pos_embed_cls is not None:
            pos = torch.cat([self.pos_embed_cls, pos], dim=1)
        return pos

    def embed(self, video: Tensor) -> tuple[Tensor, Grid]:
        """Video (B, C, T, H, W) -> tokens (B, prefix + T'H'W', C) with positions, and the grid."""
        x, grid = self.patch_embed(video)
        if grid != self.grid:
            raise ValueError(
                f"Input gives a {grid} token grid but the model was built for {self.grid}; "
                "check DATA.NUM_FRAMES and the crop size"
            )
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x + self.position_embedding(), grid

    def forward_tokens(self, x: Tensor, grid: Grid) -> Tensor:
        """The layer stack. Token methods override this; the plain ViT runs every block."""
        for blk in self.blocks:
            x = blk(x)
        return x

    def forward_head(self, x: Tensor) -> Tensor:
        """Pool the final tokens (mean of non-prefix tokens, or cls) and classify."""
        x = self.norm(x)
        x = x[:, self.num_prefix_tokens :].mean(dim=1) if self.head_pool == "mean" else x[:, 0]
        return self.head(self.head_drop(self.fc_norm(x)))

    def forward_features(self, video: Tensor) -> Tensor:
        x, grid = self.embed(video)
        return self.forward_tokens(x, grid)

    def forward(self, video: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(video))


@MODEL_REGISTRY.register()
def vit(cfg: CfgNode) -> VideoViT:
    """Plain video ViT (the baseline every token method is compared with)."""
    return VideoViT(**vit_kwargs(cfg))
