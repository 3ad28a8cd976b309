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

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from fvcore.common.config import CfgNode
from timm.layers import (
    DropPath,
    LayerScale,
    Mlp,
    build_sincos2d_pos_embed,
    resample_abs_pos_embed,
    trunc_normal_,
)
from torch import Tensor, nn

from .build import register_model, vit_kwargs
from .stem import tube_projection
from .weights import LoadReport, detect_format, inflate_patch_embed

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


def gather_tokens(x: Tensor, idx: Tensor) -> Tensor:
    """Tokens ``idx`` (B, K) of ``x`` (B, N, C) -> (B, K, C)."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def token_map(tokens: Tensor, grid: Grid) -> Tensor:
    """Time-major patch tokens (B, T'H'W', C) -> (B, C, T', H', W'); token t*H'*W' + h*W' + w at (t, h, w)."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *grid)


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

    # Methods token methods call instead of ``forward``; FSDP2 registers them as forward methods so it
    # gathers the block's weights for them too (stvideo.engine.strategy). ``forward`` never calls them.
    fsdp_forward_methods = ("forward_replace", "attend", "feed_forward")

    def attn_residual(
        self, x: Tensor, context: Tensor | None = None, attn_mask: Tensor | None = None
    ) -> Tensor:
        """The attention branch's output before it is added to ``x`` (``attn_mask``: SDPA's mask)."""
        ctx = None if context is None else self.norm1(context)
        return self.drop_path1(self.ls1(self.attn(self.norm1(x), ctx, attn_mask)))

    def mlp_residual(self, x: Tensor) -> Tensor:
        """The MLP branch's output before it is added to ``x``."""
        return self.drop_path2(self.ls2(self.mlp(self.norm2(x))))

    def forward(self, x: Tensor, context: Tensor | None = None, attn_mask: Tensor | None = None) -> Tensor:
        x = x + self.attn_residual(x, context, attn_mask)
        return x + self.mlp_residual(x)

    def attend(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """The first half of ``forward`` (self-attention and its residual), for methods that change the
        tokens between the halves (ToMe merges there)."""
        return x + self.attn_residual(x, None, attn_mask)

    def feed_forward(self, x: Tensor) -> Tensor:
        """The second half of ``forward`` (MLP and its residual)."""
        return x + self.mlp_residual(x)

    def forward_replace(self, x: Tensor, context: Tensor) -> Tensor:
        """Cross-attention whose output replaces the queries (no attention shortcut); the MLP keeps its
        residual. A method of the block, so wrappers that hook block methods (FSDP2) see the call."""
        x = self.ls1(self.attn(self.norm1(x), self.norm1(context)))
        return x + self.mlp_residual(x)


class VideoViT(nn.Module):
    """Video ViT classifier: tube embedding -> :meth:`forward_tokens` -> pooled linear head."""

    return_dense = False  # token methods whose tokens cover the full grid may set it (ToMe, RLT)

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
        act_checkpoint: bool = False,
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
        self.act_checkpoint = act_checkpoint
        self.trace: dict[str, list[Tensor | int]] | None = None  # see record()
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

        dpr = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()  # also under a meta device
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

    def run_block(self, fn: Callable[..., Tensor], *args: Tensor | None) -> Tensor:
        """``fn(*args)`` for one block's work; under ``act_checkpoint`` in training, recomputed in backward.

        Every token method calls its per-block work through here, so activation checkpointing
        (non-reentrant ``torch.utils.checkpoint``) covers plain blocks, blocks with a context and
        method-specific block bodies alike.
        """
        if self.act_checkpoint and self.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def record(self, name: str, value: Tensor | int) -> None:
        """Keep ``value`` (tensors detached) under ``name`` in ``self.trace`` when a caller set it to a dict.

        Token methods call this with what they decide in the forward (kept indices, scores, groups), so
        ``stvideo.analysis.token_maps`` shows the model's actual decisions; ``trace`` None (the default)
        records nothing.
        """
        if self.trace is not None:
            self.trace.setdefault(name, []).append(value.detach() if isinstance(value, Tensor) else value)

    def forward_tokens(self, x: Tensor, grid: Grid) -> Tensor:
        """The layer stack. Token methods override this; the plain ViT runs every block."""
        for blk in self.blocks:
            x = self.run_block(blk, x)
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
        """Logits (B, K); a model with ``return_dense`` set returns its patch tokens as (B, C, T', H', W')."""
        x = self.forward_features(video)
        return (
            token_map(x[:, self.num_prefix_tokens :], self.grid)
            if self.return_dense
            else self.forward_head(x)
        )


# ----------------------------------------------------------------------------- foreign checkpoints
_VIDEOMAE_DROP_PREFIXES = ("decoder.", "encoder_to_decoder.", "mask_token", "dist_token", "head_dist.")


def sinusoid_table(n: int, dim: int) -> Tensor:
    """VideoMAE's fixed 1D sinusoid position table (1, n, dim); hand-written to match its formula exactly."""
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    j = torch.arange(dim)
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor").double() / dim)
    table = torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()[None]


def _split_pos(
    pos: Tensor, prefix: int, is_video: bool, grid: tuple[int, int, int]
) -> tuple[Tensor | None, Tensor, tuple[int, int, int]]:
    """Split a checkpoint position table into (prefix rows or None, patch rows, their (T0, H0, W0)).

    ``prefix`` is the checkpoint's prefix-token count (cls, dist); timm ``no_embed_class`` tables
    have no prefix rows, which is detected from the length. Video tables are assumed square in space.
    """
    n = pos.shape[1]
    t, h, w = grid
    for p in dict.fromkeys((prefix, 0)):
        m = n - p
        if not is_video and math.isqrt(m) ** 2 == m:
            src = (1, math.isqrt(m), math.isqrt(m))
        elif is_video and m % (h * w) == 0:
            src = (m // (h * w), h, w)
        elif is_video and m % t == 0 and math.isqrt(m // t) ** 2 == m // t:
            src = (t, math.isqrt(m // t), math.isqrt(m // t))
        else:
            continue
        return (pos[:, :p] if p else None), pos[:, p:], src
    raise ValueError(f"cannot infer the token grid of a {tuple(pos.shape)} position embedding")


def resize_pos_embed(patch_pos: Tensor, src: tuple[int, int, int], dst: tuple[int, int, int]) -> Tensor:
    """(1, T0*H0*W0, C) -> (1, T*H*W, C): spatial bicubic (timm) then temporal linear interpolation."""
    t0, h0, w0 = src
    t, h, w = dst
    c = patch_pos.shape[-1]
    frames = patch_pos.reshape(t0, h0 * w0, c)
    if (h0, w0) != (h, w):
        frames = resample_abs_pos_embed(frames, [h, w], [h0, w0], num_prefix_tokens=0)
    if t0 != t:
        seq = frames.permute(1, 2, 0)  # (H*W, C, T0)
        seq = F.interpolate(seq, size=t, mode="linear", align_corners=False)
        frames = seq.permute(2, 0, 1)
    return frames.reshape(1, t * h * w, c)


def checkpoint_filter_fn(
    sd: dict[str, Tensor], model: nn.Module, cfg: CfgNode | None, report: LoadReport
) -> dict[str, Tensor]:
    """ViT-family filter: a timm ImageNet ViT/DeiT or VideoMAE state dict in this model's names and shapes.

    Image checkpoints: the 2D patch kernel is inflated to the tube kernel (MODEL.PRETRAINED_INFLATE),
    the position table resized (spatial bicubic, temporal linear) and tiled over time. VideoMAE:
    ``encoder.`` prefix stripped, decoder dropped, q/v biases merged into ``qkv.bias``, the fixed
    sinusoid table written into the learned position embedding. A head of another class count is
    dropped; any other shape mismatch raises, naming the key.
    """
    fmt = cfg.MODEL.PRETRAINED_FORMAT if cfg is not None else "auto"
    inflate = cfg.MODEL.PRETRAINED_INFLATE if cfg is not None else "center"
    fmt = detect_format(sd) if fmt == "auto" else fmt
    if fmt not in ("timm", "videomae"):
        raise ValueError(f"unknown MODEL.PRETRAINED_FORMAT {fmt!r}; use auto, timm or videomae")
    report.format = fmt
    target = model.state_dict()
    ckpt_prefix = int("cls_token" in sd) + int("dist_token" in sd or "encoder.dist_token" in sd)
    pe_key = (
        "encoder.patch_embed.proj.weight"
        if "encoder.patch_embed.proj.weight" in sd
        else "patch_embed.proj.weight"
    )
    is_video = pe_key in sd and sd[pe_key].ndim == 5
    if fmt == "videomae":
        for k in list(sd):
            if k.startswith("encoder."):
                sd[k[len("encoder.") :]] = sd.pop(k)
    for k in list(sd):
        if k.startswith(_VIDEOMAE_DROP_PREFIXES):
            sd.pop(k)
            report.dropped.append(k)
    for k in [k for k in sd if k.endswith("attn.q_bias")]:  # VideoMAE/BEiT: no k bias
        base = k[: -len("q_bias")]
        q, v = sd.pop(k), sd.pop(base + "v_bias")
        sd[base + "qkv.bias"] = torch.cat([q, torch.zeros_like(q), v])
        report.remapped.append(f"{base}q_bias+v_bias -> {base}qkv.bias")
    if not isinstance(model.patch_embed.proj, nn.Conv3d):  # MODEL.PATCH_EMBED conv: nothing to map
        for k in ("patch_embed.proj.weight", "patch_embed.proj.bias"):
            if k in sd:
                sd.pop(k)
                report.dropped.append(f"{k} (model uses a conv stem)")
    if "patch_embed.proj.weight" in sd:
        pe = model.patch_embed
        sd["patch_embed.proj.weight"] = inflate_patch_embed(
            sd["patch_embed.proj.weight"], pe.tubelet_size, pe.patch_size, inflate
        )
    # Final norm: a cls-pooled checkpoint's ``norm`` initialises a mean-pooled model's ``fc_norm``.
    if "norm.weight" in sd and "norm.weight" not in target and "fc_norm.weight" in target:
        if "fc_norm.weight" not in sd:
            sd["fc_norm.weight"], sd["fc_norm.bias"] = sd.pop("norm.weight"), sd.pop("norm.bias")
            report.remapped.append("norm -> fc_norm")
    if "fc_norm.weight" in sd and "fc_norm.weight" not in target and "norm.weight" in target:
        if "norm.weight" not in sd:
            sd["norm.weight"], sd["norm.bias"] = sd.pop("fc_norm.weight"), sd.pop("fc_norm.bias")
            report.remapped.append("fc_norm -> norm")
    _convert_pos(sd, model, fmt, target, report, ckpt_prefix, is_video)
    if "cls_token" in sd and "cls_token" not in target:
        sd.pop("cls_token")
        report.dropped.append("cls_token (model has no cls token)")
    for name in ("head.weight", "head.bias"):
        if name in sd and name in target and sd[name].shape != target[name].shape:
            report.dropped.append(f"{name} {tuple(sd.pop(name).shape)} (model {tuple(target[name].shape)})")
    bad = [f"{k}: {tuple(v.shape)} vs model {tuple(target[k].shape)}" for k, v in sd.items()
           if k in target and v.shape != target[k].shape]  # fmt: skip
    if bad:
        raise ValueError("checkpoint shapes do not fit the model: " + "; ".join(bad))
    return sd


def _convert_pos(
    sd: dict[str, Tensor],
    model: nn.Module,
    fmt: str,
    target: dict[str, Tensor],
    report: LoadReport,
    ckpt_prefix: int,
    is_video: bool,
) -> None:
    """Fill the model's position embedding (joint or separable) from the checkpoint's table."""
    grid = model.grid
    prefix = model.num_prefix_tokens
    pos = sd.pop("pos_embed", None)
    if pos is None:
        if fmt != "videomae":
            return
        pos = sinusoid_table(math.prod(grid), pos_dim(target))
        report.remapped.append("sinusoid table -> position embedding")
        pos_prefix, patch_pos, src = None, pos, grid
    else:
        pos_prefix, patch_pos, src = _split_pos(pos, ckpt_prefix, is_video, grid)
    if pos_prefix is not None and pos_prefix.shape[1] > 1:
        report.dropped.append("pos_embed[dist token]")
        pos_prefix = pos_prefix[:, :1]
    if "pos_embed" in target:
        patch_pos = resize_pos_embed(patch_pos, src, grid)
        if prefix:
            cls_pos = pos_prefix if pos_prefix is not None else torch.zeros_like(patch_pos[:, :1])
            patch_pos = torch.cat([cls_pos, patch_pos], dim=1)
        sd["pos_embed"] = patch_pos
        if src != grid:
            report.remapped.append(f"pos_embed {src} -> {grid}")
        return
    t0, h0, w0 = src
    frames = patch_pos.reshape(t0, h0 * w0, -1)
    spatial = resize_pos_embed(frames.mean(0, keepdim=True), (1, h0, w0), (1, *grid[1:]))
    sd["pos_embed_spatial"] = spatial
    temporal = frames.mean(1)[None] - frames.mean((0, 1))  # (1, T0, C): per-frame offsets
    if t0 != grid[0]:
        temporal = F.interpolate(temporal.transpose(1, 2), size=grid[0], mode="linear").transpose(1, 2)
    sd["pos_embed_temporal"] = temporal
    if prefix and pos_prefix is not None:
        sd["pos_embed_cls"] = pos_prefix
    report.remapped.append(f"pos_embed {src} -> separable spatial/temporal")


def pos_dim(target: dict[str, Tensor]) -> int:
    """Embedding width of a model state dict (from its position embedding)."""
    for k in ("pos_embed", "pos_embed_spatial"):
        if k in target:
            return target[k].shape[-1]
    raise ValueError("model has no position embedding")


@register_model(checkpoint_filter=checkpoint_filter_fn)
def vit(cfg: CfgNode) -> VideoViT:
    """Plain video ViT (the baseline every token method is compared with)."""
    return VideoViT(**vit_kwargs(cfg))
