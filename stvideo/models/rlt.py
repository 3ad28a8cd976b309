"""Run-length tokenization (RLT) on tube tokens: tubes that repeat the one before them are never tokens.

Written from Choudhury et al., NeurIPS 2024, "Don't Look Twice: Faster Video Transformers with
Run-Length Tokenization". Before the first block every tube is compared with the tube at the same
(h, w) one tubelet earlier, on the model's normalised input: the mean absolute difference of their
pixels. A tube below RLT.THRESHOLD is dropped; the first tubelet is always kept. Each kept tube
stands for its run (itself and the dropped repeats after it); its run length is encoded by a
learned embedding (RLT.LENGTH_EMBED, one row per length, zero-initialised, so a trained ViT runs
unchanged) added to the token.

Clips keep different numbers of tubes: the batch is padded to the largest count and a boolean SDPA
key mask hides the padding, so no padded token changes a real one. When every clip keeps every tube
no mask is built and the forward is the plain ViT's. The output of :meth:`RLTViT.forward_tokens` is
expanded back to every tube (a dropped tube takes its run's feature): the mean head then pools the
run-length-weighted mean, and dense output (RLT.RETURN_DENSE) is the (B, C, T', H', W') map. After a
forward :attr:`RLTViT.kept_mask` (B, T', H', W') and :attr:`RLTViT.tokens_kept` (B,) say what was kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fvcore.common.config import CfgNode
from torch import Tensor, nn

from .build import register_model, vit_kwargs
from .vit import VideoViT, checkpoint_filter_fn, gather_tokens


def tube_differences(video: Tensor, tubelet: int, patch: int) -> Tensor:
    """(B, T'-1, H', W') mean absolute difference of every tube to the tube one tubelet earlier."""
    diff = (video[:, :, tubelet:] - video[:, :, :-tubelet]).abs()
    return F.avg_pool3d(diff, (tubelet, patch, patch)).mean(dim=1)


def run_lengths(keep: Tensor) -> tuple[Tensor, Tensor]:
    """For a (B, T', S) keep mask (first tubelet kept): each tube's run start t and each run's length.

    Returns ``start`` (B, T', S), the tubelet index of the kept tube a tube belongs to, and
    ``length`` (B, T', S), at a kept tube the number of tubes in its run (elsewhere 0).
    """
    t = keep.shape[1]
    index = torch.arange(t, device=keep.device).view(1, t, 1) * keep
    start = index.cummax(dim=1).values
    length = torch.zeros_like(start).scatter_add(1, start, torch.ones_like(start))
    return start, length


class RLTViT(VideoViT):
    """Video ViT that drops repeated tubes before the first block (see the module docstring)."""

    def __init__(
        self, *, threshold: float = 0.1, length_embed: bool = True, return_dense: bool = False, **vit: object
    ):
        super().__init__(**vit)
        if threshold < 0:
            raise ValueError(f"RLT.THRESHOLD must be >= 0, got {threshold}")
        self.threshold = threshold
        self.return_dense = return_dense
        # Run lengths go from 1 to T' (a tube repeated to the end of the clip): one row each.
        self.length_embed = nn.Parameter(torch.zeros(self.grid[0], self.embed_dim)) if length_embed else None
        self.kept_mask: Tensor | None = None
        self.tokens_kept: Tensor | None = None

    def keep_mask(self, video: Tensor) -> Tensor:
        """(B, T', H', W') bool: the tubes that become tokens (the first tubelet always does)."""
        pe = self.patch_embed
        diff = tube_differences(video, pe.tubelet_size, pe.patch_size)
        first = torch.ones_like(diff[:, :1], dtype=torch.bool)
        return torch.cat([first, diff >= self.threshold], dim=1)

    def forward_features(self, video: Tensor) -> Tensor:
        """Embed, drop repeated tubes, run the blocks on the kept ones; (B, prefix + T'H'W', C) expanded."""
        x, grid = self.embed(video)
        b, p = x.shape[0], self.num_prefix_tokens
        keep3d = self.keep_mask(video)
        self.kept_mask = keep3d
        keep = keep3d.flatten(2)  # (B, T', H'W')
        start, length = run_lengths(keep)
        keep = keep.flatten(1)  # (B, N), time-major like the tokens
        self.tokens_kept = keep.sum(dim=1)
        if self.length_embed is not None:
            rows = (length.flatten(1) - 1).clamp_min(0)
            x = torch.cat([x[:, :p], x[:, p:] + self.length_embed[rows]], dim=1)
        if bool(keep.all()):  # every clip keeps every tube: the plain ViT forward
            return self.forward_tokens(x, grid)
        m = int(self.tokens_kept.max())
        order = keep.logical_not().long().argsort(dim=1, stable=True)[:, :m]  # kept positions first
        valid = torch.arange(m, device=x.device) < self.tokens_kept[:, None]
        mask = torch.cat([valid.new_ones(b, p), valid], dim=1).view(b, 1, 1, p + m)
        x = torch.cat([x[:, :p], gather_tokens(x[:, p:], order)], dim=1)
        for blk in self.blocks:
            x = self.run_block(blk, x, None, mask)
        # Every tube reads the slot of the kept tube that starts its run.
        s = keep3d.shape[2] * keep3d.shape[3]
        source = (start * s + torch.arange(s, device=x.device)).flatten(1)
        slot = (keep.long().cumsum(dim=1) - 1).gather(1, source)
        return torch.cat([x[:, :p], gather_tokens(x[:, p:], slot)], dim=1)

    def optional_state_keys(self) -> set[str]:
        """Parameters a plain ViT checkpoint lacks; at their initial value the model is that ViT."""
        return {"length_embed"} if self.length_embed is not None else set()


@register_model(checkpoint_filter=checkpoint_filter_fn)
def rlt(cfg: CfgNode) -> RLTViT:
    """RLT: repeated tubes are dropped before the first block; kept tubes carry their run length."""
    return RLTViT(
        threshold=cfg.RLT.THRESHOLD,
        length_embed=cfg.RLT.LENGTH_EMBED,
        return_dense=cfg.RLT.RETURN_DENSE,
        **vit_kwargs(cfg),
    )
