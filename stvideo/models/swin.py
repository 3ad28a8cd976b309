"""Video Swin Transformer: 3D patch partition, 3D (shifted) window attention, patch merging.

Follows Liu et al., "Video Swin Transformer" (CVPR 2022): tokens are kept channel-last as
(B, T, H, W, C); every block attends within 3D windows, odd blocks shift the windows by half a
window, and the window is clamped to the feature size (no shift along a dimension that fits in
one window), as the reference code does. Attention runs on ``F.scaled_dot_product_attention``
with an additive float mask = relative position bias (+ shift mask).

Parameter names follow timm's 2D ``SwinTransformer`` (``patch_embed.proj``, ``layers.N.downsample``
at the start of stages 1.., ``layers.N.blocks.M.attn.relative_position_bias_table``, ``norm``),
so :func:`checkpoint_filter_fn` maps ImageNet checkpoints by name and only inflates the
patch embedding (2D -> 3D) and the relative position tables (repeated over time offsets).

:meth:`VideoSwin.make_stage` is the seam for token methods (``stvideo.models.stvit_swin``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from fvcore.common.config import CfgNode
from timm.layers import DropPath, Mlp, resize_rel_pos_bias_table, trunc_normal_
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .build import register_model
from .stem import tube_projection
from .vit import VideoViT
from .weights import LoadReport

logger = logging.getLogger(__name__)

Size3 = tuple[int, int, int]

SWIN_SIZES = {  # (embed_dim, depths, num_heads), as in Swin-T/S/B and Video Swin-T/S/B
    "tiny": (96, (2, 2, 6, 2), (3, 6, 12, 24)),
    "small": (96, (2, 2, 18, 2), (3, 6, 12, 24)),
    "base": (128, (2, 2, 18, 2), (4, 8, 16, 32)),
}


def effective_window(grid: Sequence[int], window: Sequence[int], shift: Sequence[int]) -> tuple[Size3, Size3]:
    """Window and shift actually used on a ``grid`` feature map (Video Swin's ``get_window_size``).

    Along a dimension that fits in one window the window shrinks to the feature size and the
    shift is dropped, so tiny inputs (e.g. 4x8x8 tokens) work with the 8x7x7 default.
    """
    win = tuple(min(g, w) for g, w in zip(grid, window, strict=True))
    sh = tuple(0 if g <= w else s for g, w, s in zip(grid, win, shift, strict=True))
    return win, sh


def window_partition(x: Tensor, window: Sequence[int]) -> Tensor:
    """(B, T, H, W, C) -> (B, num_windows, wt*wh*ww, C); T, H, W must be multiples of the window."""
    b, t, h, w, c = x.shape
    wt, wh, ww = window
    if t % wt or h % wh or w % ww:
        raise ValueError(f"feature map {(t, h, w)} is not divisible into windows {tuple(window)}")
    x = x.view(b, t // wt, wt, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(b, -1, wt * wh * ww, c)


def window_reverse(windows: Tensor, window: Sequence[int], grid: Sequence[int]) -> Tensor:
    """Inverse of :func:`window_partition`: (B, num_windows, N, C) -> (B, T, H, W, C)."""
    b, _, _, c = windows.shape
    (wt, wh, ww), (t, h, w) = window, grid
    x = windows.view(b, t // wt, h // wh, w // ww, wt, wh, ww, c).permute(0, 1, 4, 2, 5, 3, 6, 7)
    return x.reshape(b, t, h, w, c)


@lru_cache(maxsize=64)
def _shift_mask_cpu(grid: Size3, window: Size3, shift: Size3) -> Tensor:
    labels = []
    for n, w, s in zip(grid, window, shift, strict=True):
        idx = torch.arange(n)
        # regions of the rolled map: [0, n-w), [n-w, n-s), [n-s, n); windows must not mix them
        labels.append(
            (idx >= n - w).long() + (idx >= n - s).long() if s else torch.zeros(n, dtype=torch.long)
        )
    ids = labels[0][:, None, None] * 9 + labels[1][None, :, None] * 3 + labels[2][None, None, :]
    ids = window_partition(ids[None, ..., None], window)[0, ..., 0]  # nW, N
    mask = torch.zeros(ids.shape[0], ids.shape[1], ids.shape[1])
    return mask.masked_fill_(ids[:, :, None] != ids[:, None, :], float("-inf"))


def shift_window_mask(
    grid: Sequence[int], window: Sequence[int], shift: Sequence[int], device=None
) -> Tensor:
    """Additive mask (num_windows, N, N) for shifted windows on a padded ``grid``: -inf between
    tokens that the cyclic shift brought into one window from different regions, else 0."""
    return _shift_mask_cpu(tuple(grid), tuple(window), tuple(shift)).to(device)


@lru_cache(maxsize=64)
def _relative_index_cpu(window: Size3, table_window: Size3) -> Tensor:
    coords = torch.stack(torch.meshgrid(*(torch.arange(w) for w in window), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]  # 3, N, N offsets within the used window
    wt, wh, ww = table_window
    return (
        (rel[0] + wt - 1) * (2 * wh - 1) * (2 * ww - 1) + (rel[1] + wh - 1) * (2 * ww - 1) + rel[2] + ww - 1
    )


def relative_position_index(window: Sequence[int], table_window: Sequence[int], device=None) -> Tensor:
    """(N, N) rows of a ``table_window`` bias table for the token pairs of a (possibly clamped)
    ``window``; the temporal offset is the slowest index, as in Video Swin."""
    return _relative_index_cpu(tuple(window), tuple(table_window)).to(device)


class WindowAttention3D(nn.Module):
    """Multi-head self-attention inside 3D windows with a learned relative position bias."""

    def __init__(
        self, dim: int, num_heads: int, window_size: Size3, qkv_bias: bool = True, attn_drop: float = 0.0
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window_size = tuple(window_size)
        wt, wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * wt - 1) * (2 * wh - 1) * (2 * ww - 1), num_heads)
        )
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self, window: Sequence[int]) -> Tensor:
        """(heads, N, N) bias for a window of size ``window`` (<= the table's window)."""
        index = relative_position_index(window, self.window_size, self.relative_position_bias_table.device)
        n = index.shape[0]
        return self.relative_position_bias_table[index.view(-1)].view(n, n, -1).permute(2, 0, 1)

    def forward(self, x: Tensor, window: Sequence[int], mask: Tensor | None = None) -> Tensor:
        """x: (B, num_windows, N, C) window-batched tokens; mask: (num_windows, N, N) or None."""
        b, nw, n, c = x.shape
        qkv = self.qkv(x).view(b, nw, n, 3, self.num_heads, self.head_dim).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv.unbind(0)  # B, nW, heads, N, head_dim
        attn_mask = self.relative_position_bias(window)
        if mask is not None:
            attn_mask = attn_mask + mask[:, None]  # nW, heads, N, N (broadcast over batch)
        drop = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask.to(q.dtype), dropout_p=drop)
        return self.proj(out.transpose(2, 3).reshape(b, nw, n, c))


class SwinBlock3D(nn.Module):
    """Pre-norm Video Swin block: (shifted) 3D window attention, then MLP, on (B, T, H, W, C)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: Size3,
        shift_size: Size3 = (0, 0, 0),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        attn_drop: float = 0.0,
    ):
        super().__init__()
        self.window_size = tuple(window_size)
        self.shift_size = tuple(shift_size)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention3D(dim, num_heads, self.window_size, qkv_bias, attn_drop)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def attention(self, x: Tensor) -> Tensor:
        """The attention branch on (B, T, H, W, C): norm, pad, shift, window attention, undo."""
        _, t, h, w, _ = x.shape
        window, shift = effective_window((t, h, w), self.window_size, self.shift_size)
        pad = [(-n) % wn for n, wn in zip((t, h, w), window, strict=True)]
        x = F.pad(self.norm1(x), (0, 0, 0, pad[2], 0, pad[1], 0, pad[0]))  # Video Swin pads after norm1
        grid = (t + pad[0], h + pad[1], w + pad[2])
        mask = None
        if any(shift):
            x = torch.roll(x, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
            mask = shift_window_mask(grid, window, shift, x.device)
        x = window_reverse(self.attn(window_partition(x, window), window, mask), window, grid)
        if any(shift):
            x = torch.roll(x, shifts=shift, dims=(1, 2, 3))
        return x[:, :t, :h, :w]

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path1(self.attention(x))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class PatchEmbed3D(nn.Module):
    """Non-overlapping 3D patches (Conv3d) + LayerNorm: (B, C, T, H, W) -> (B, T', H', W', D).

    Inputs that do not divide into patches are zero-padded at the end, as in Video Swin.
    ``stem="conv"`` replaces the patchify Conv3d with the convolutional stem of ``stem.py``
    (square, power-of-two spatial patches only).
    """

    def __init__(
        self, patch_size: Size3, in_chans: int, embed_dim: int, stem: str = "linear", stem_width: int = 16
    ):
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.proj = tube_projection(stem, in_chans, embed_dim, self.patch_size, stem_width)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, video: Tensor) -> Tensor:
        pt, ph, pw = self.patch_size
        _, _, t, h, w = video.shape
        video = F.pad(video, (0, (-w) % pw, 0, (-h) % ph, 0, (-t) % pt))
        return self.norm(self.proj(video).permute(0, 2, 3, 4, 1))


class PatchMerging3D(nn.Module):
    """Concatenate each 2x2 spatial neighbourhood (not time) and project 4*C -> out_dim.

    The concatenation order matches timm's / Swin's ``PatchMerging`` so 2D weights load as they are.
    """

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, t, h, w, c = x.shape
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        h, w = h + h % 2, w + w % 2
        x = x.reshape(b, t, h // 2, 2, w // 2, 2, c).permute(0, 1, 2, 4, 5, 3, 6).flatten(4)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """Optional patch merging, then ``depth`` blocks alternating regular and shifted windows."""

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
    ):
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = PatchMerging3D(in_dim, dim) if downsample else nn.Identity()
        shift = tuple(w // 2 for w in window_size)
        self.blocks = nn.ModuleList(
            SwinBlock3D(
                dim,
                num_heads,
                window_size,
                (0, 0, 0) if i % 2 == 0 else shift,
                mlp_ratio,
                qkv_bias,
                drop_path[i] if drop_path else 0.0,
                attn_drop,
            )
            for i in range(depth)
        )

    def run_block(self, block: nn.Module, *args: Tensor) -> Tensor:
        """Call ``block``, through activation checkpointing when enabled and grads are needed."""
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x)
        for blk in self.blocks:
            x = self.run_block(blk, x)
        return x


class VideoSwin(nn.Module):
    """Video Swin classifier: 3D patches -> 4 stages -> LayerNorm -> mean pool -> linear head."""

    def __init__(
        self,
        num_classes: int = 400,
        in_chans: int = 3,
        patch_size: Sequence[int] = (2, 4, 4),
        window_size: Sequence[int] = (8, 7, 7),
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        attn_drop_rate: float = 0.0,
        act_checkpoint: bool = False,
        patch_embed: str = "linear",
        stem_width: int = 16,
    ):
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} differ in length")
        if len(patch_size) != 3 or len(window_size) != 3:
            raise ValueError(
                f"patch_size {list(patch_size)} and window_size {list(window_size)} must be (t, h, w)"
            )
        self.num_classes = num_classes
        self.window_size = tuple(window_size)
        self.patch_embed = PatchEmbed3D(tuple(patch_size), in_chans, embed_dim, patch_embed, stem_width)
        total = sum(depths)  # stochastic depth rising linearly over all blocks (plain floats: meta-safe)
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        dims = [embed_dim * 2**i for i in range(len(depths))]
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(depths, num_heads, strict=True)):
            start = sum(depths[:i])
            stage = self.make_stage(
                i,
                in_dim=dims[max(i - 1, 0)],
                dim=dims[i],
                depth=depth,
                num_heads=heads,
                window_size=self.window_size,
                downsample=i > 0,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop_path=dpr[start : start + depth],
                attn_drop=attn_drop_rate,
            )
            stage.grad_checkpointing = act_checkpoint
            self.layers.append(stage)
        self.act_checkpoint = act_checkpoint
        self.num_features = dims[-1]
        self.norm = nn.LayerNorm(self.num_features)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes)
        self.apply(VideoViT._init_weights)  # same Linear / LayerNorm init as the ViT

    def make_stage(self, index: int, **kwargs) -> nn.Module:
        """Build stage ``index`` from :class:`SwinStage` arguments; token methods override this."""
        return SwinStage(**kwargs)

    def no_weight_decay(self) -> set[str]:
        """Relative position tables are exempt from weight decay (timm optimizer factory reads this)."""
        return {n for n, _ in self.named_parameters() if n.endswith("relative_position_bias_table")}

    def forward_stages(self, video: Tensor) -> list[Tensor]:
        """Outputs (B, T, H, W, C) of every stage, for dense use and token-count checks."""
        x = self.patch_embed(video)
        outs = []
        for stage in self.layers:
            x = stage(x)
            outs.append(x)
        return outs

    def forward_features(self, video: Tensor) -> Tensor:
        """Final normalised feature map (B, T, H, W, C)."""
        return self.norm(self.forward_stages(video)[-1])

    def forward_head(self, x: Tensor) -> Tensor:
        """Mean-pool a (B, T, H, W, C) feature map and classify."""
        return self.head(self.head_drop(x.mean(dim=(1, 2, 3))))

    def forward(self, video: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(video))

    @staticmethod
    def _inflate_patch_embed(weight: Tensor, shape: torch.Size, inflate: str) -> Tensor:
        if tuple(weight.shape[-2:]) != tuple(shape[-2:]):
            raise ValueError(
                f"pretrained patch embedding is {tuple(weight.shape[-2:])} spatially, the model's "
                f"{tuple(shape[-2:])}; set SWIN.PATCH_SIZE to match the checkpoint"
            )
        t = shape[2]
        if inflate == "average":
            return weight.unsqueeze(2).repeat(1, 1, t, 1, 1) / t
        if inflate == "center":
            out = weight.new_zeros(shape)
            out[:, :, t // 2] = weight
            return out
        raise ValueError(f"unknown MODEL.PRETRAINED_INFLATE {inflate!r}; use center or average")

    def _inflate_bias_table(self, key: str, table: Tensor) -> Tensor:
        attn = self.get_submodule(key.rsplit(".", 1)[0])
        wt, wh, ww = attn.window_size
        n_spatial = (2 * wh - 1) * (2 * ww - 1)
        if table.shape[0] != n_spatial:
            table = resize_rel_pos_bias_table(
                table, new_window_size=(wh, ww), new_bias_shape=(n_spatial, table.shape[1])
            )
        return table.repeat(2 * wt - 1, 1)  # temporal offset is the slowest index of the 3D table


def checkpoint_filter_fn(
    sd: dict[str, Tensor], model: nn.Module, cfg: CfgNode | None, report: LoadReport
) -> dict[str, Tensor]:
    """Swin-family filter: a timm (or original Microsoft) 2D Swin state dict in this video model's layout.

    The patch embedding is inflated over time (``MODEL.PRETRAINED_INFLATE``: ``center`` puts the
    2D kernel in the middle frame, ``average`` repeats it divided by the tubelet length, which
    reproduces the 2D model on a static video). Relative position tables are resized spatially
    (timm's bicubic ``resize_rel_pos_bias_table``) and repeated over the 2*Wt-1 time offsets,
    as Video Swin does. Keys without a counterpart and tensors of another shape (a classifier of
    another class count) are dropped and reported.
    """
    inflate = cfg.MODEL.PRETRAINED_INFLATE if cfg is not None else "center"
    old_layout = "layers.0.downsample.reduction.weight" in sd  # downsample at the end of stages
    report.format = "swin (microsoft)" if old_layout else "swin (timm)"
    own = model.state_dict()
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if "relative_position_index" in key or "attn_mask" in key:
            continue  # buffers recomputed here
        if old_layout:
            key = re.sub(
                r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) + 1}.downsample", key
            )
        key = key.replace("head.fc.", "head.")
        if key not in own:
            report.dropped.append(f"{key} (no counterpart in {type(model).__name__})")
            continue
        target = own[key]
        if key == "patch_embed.proj.weight" and value.dim() == 4:
            value = model._inflate_patch_embed(value, target.shape, inflate)
        elif key.endswith("relative_position_bias_table") and value.shape != target.shape:
            value = model._inflate_bias_table(key, value)
            report.remapped.append(f"{key} -> {tuple(value.shape)}")
        if value.shape != target.shape:
            report.dropped.append(f"{key} {tuple(value.shape)} (model {tuple(target.shape)})")
            continue
        out[key] = value
    return out


def swin_kwargs(cfg: CfgNode) -> dict:
    """Constructor arguments of :class:`VideoSwin` from MODEL.* and SWIN.* (SWIN sizes beat MODEL.SIZE)."""
    if cfg.MODEL.SIZE not in SWIN_SIZES:
        raise ValueError(f"MODEL.SIZE {cfg.MODEL.SIZE!r}: Video Swin comes in {', '.join(SWIN_SIZES)}")
    dim, depths, heads = SWIN_SIZES[cfg.MODEL.SIZE]
    return dict(
        num_classes=cfg.MODEL.NUM_CLASSES,
        in_chans=cfg.DATA.INPUT_CHANNEL_NUM,
        patch_size=tuple(cfg.SWIN.PATCH_SIZE),
        window_size=tuple(cfg.SWIN.WINDOW_SIZE),
        embed_dim=cfg.SWIN.EMBED_DIM or dim,
        depths=tuple(cfg.SWIN.DEPTHS or depths),
        num_heads=tuple(cfg.SWIN.NUM_HEADS or heads),
        mlp_ratio=cfg.SWIN.MLP_RATIO,
        qkv_bias=cfg.SWIN.QKV_BIAS,
        drop_rate=cfg.MODEL.DROPOUT_RATE,
        drop_path_rate=cfg.MODEL.DROP_PATH_RATE,
        attn_drop_rate=cfg.SWIN.ATTN_DROP,
        act_checkpoint=cfg.MODEL.ACT_CHECKPOINT,
        patch_embed=cfg.MODEL.PATCH_EMBED,
        stem_width=cfg.MODEL.STEM_WIDTH,
    )


@register_model(checkpoint_filter=checkpoint_filter_fn)
def swin(cfg: CfgNode) -> VideoSwin:
    """Plain Video Swin (the baseline for STViT-local)."""
    return VideoSwin(**swin_kwargs(cfg))
