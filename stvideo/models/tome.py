"""ToMe on tube tokens: bipartite soft matching merges the r most similar tokens in every layer.

Written from Bolya et al., ICLR 2023, "Token Merging: Your ViT But Faster". Inside each block,
between attention and MLP, the block's own keys (mean over heads, L2-normalised) are the similarity
metric. The current sequence is split by position into A (even positions) and B (odd positions);
each A token's most similar B token is its match, the r A tokens with the best matches are merged
into them (size-weighted average, sizes add), the cls token (position 0, in A) is never merged
(TOME.KEEP_CLS). After a merge the sequence is the unmerged A tokens in position order (cls first),
then all B tokens in order. With proportional attention (TOME.PROP_ATTN) ``log(size)`` of each key
is added to the attention logits as an additive SDPA mask, so a token of size s attends like s
identical copies.

The output of :meth:`ToMeViT.forward_tokens` is *unmerged*: every original token gets its group's
feature, so the mean head pools the size-weighted mean of the merged tokens (the mean over the
original token map) and dense output (TOME.RETURN_DENSE) is the (B, C, T', H', W') map.
:attr:`ToMeViT.merge_groups` keeps, after each forward, which group every original token is in
after every layer (for visualisation and tests).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fvcore.common.config import CfgNode
from torch import Tensor

from .build import register_model, vit_kwargs
from .vit import Attention, Grid, VideoViT, checkpoint_filter_fn, gather_tokens


class KeyStashAttention(Attention):
    """Attention that keeps its keys (B, heads, N, head_dim), detached, in ``keys`` for the merge metric."""

    keys: Tensor | None = None

    def forward(self, x: Tensor, context: Tensor | None = None, attn_mask: Tensor | None = None) -> Tensor:
        q, k, v = self.qkv_heads(x, context)
        self.keys = k.detach()
        drop = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop)
        return self.proj(out.transpose(1, 2).flatten(2))


def bipartite_merge(
    x: Tensor, size: Tensor, metric: Tensor, r: int, protect_first: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Merge the r best-matched A tokens of ``x`` (B, N, C) into their B partners.

    ``size`` (B, N, 1) counts the original tokens each token stands for; ``metric`` (B, N, D) is the
    similarity feature. Returns the merged tokens (B, N - r, C), their sizes and ``old_to_new``
    (B, N): the new index of every old token. The matching is not differentiated (as in the paper).
    """
    b, n, c = x.shape
    with torch.no_grad():
        metric = metric / metric.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        scores = metric[:, ::2] @ metric[:, 1::2].transpose(1, 2)  # (B, Na, Nb) cosine similarity
        if protect_first:
            scores[:, 0] = -torch.inf
        best, match = scores.max(dim=-1)  # each A token's best B partner
        order = best.argsort(dim=-1, descending=True)
        src = order[:, :r]  # A positions merged away
        kept = order[:, r:].sort(dim=-1).values  # A positions kept, in position order (cls first)
        dst = match.gather(1, src)  # their B partners
        n_kept, n_b = kept.shape[1], n // 2
        new_a = torch.zeros_like(best, dtype=torch.long)
        new_a = new_a.scatter(1, kept, torch.arange(n_kept, device=x.device).expand(b, -1))
        new_a = new_a.scatter(1, src, n_kept + dst)
        new_b = (n_kept + torch.arange(n_b, device=x.device)).expand(b, -1)
        positions = torch.cat([torch.arange(0, n, 2), torch.arange(1, n, 2)]).to(x.device).expand(b, -1)
        old_to_new = torch.zeros(b, n, dtype=torch.long, device=x.device)
        old_to_new = old_to_new.scatter(1, positions, torch.cat([new_a, new_b], dim=1))
    weighted = x * size
    xa, xb = weighted[:, ::2], weighted[:, 1::2]
    sa, sb = size[:, ::2], size[:, 1::2]
    xb = xb.scatter_add(1, dst.unsqueeze(-1).expand(-1, -1, c), gather_tokens(xa, src))
    sb = sb.scatter_add(1, dst.unsqueeze(-1), gather_tokens(sa, src))
    merged_size = torch.cat([gather_tokens(sa, kept), sb], dim=1)
    merged = torch.cat([gather_tokens(xa, kept), xb], dim=1) / merged_size
    return merged, merged_size, old_to_new


def layer_merges(r: int | list[int], depth: int, start_layer: int) -> list[int]:
    """Tokens to merge in every layer: ``r`` (an int or a one-entry list) from ``start_layer`` on, or a
    per-layer list (its entries before ``start_layer`` are ignored)."""
    schedule = [r] if isinstance(r, int) else list(r)
    if len(schedule) == 1:
        schedule = schedule * depth
    if len(schedule) != depth:
        raise ValueError(f"TOME.R needs one entry or one per layer ({depth}), got {len(schedule)}: {r}")
    if any(v < 0 for v in schedule):
        raise ValueError(f"TOME.R must be >= 0, got {r}")
    if not 0 <= start_layer <= depth:
        raise ValueError(f"TOME.START_LAYER must be in [0, {depth}], got {start_layer}")
    return [0 if i < start_layer else v for i, v in enumerate(schedule)]


class ToMeViT(VideoViT):
    """Video ViT with token merging between attention and MLP of every block (see the module docstring)."""

    def __init__(
        self,
        *,
        r: int | list[int] = 0,
        start_layer: int = 0,
        prop_attn: bool = True,
        keep_cls: bool = True,
        return_dense: bool = False,
        **vit: object,
    ):
        super().__init__(**vit)
        self.merges = layer_merges(r, self.depth, start_layer)
        self.prop_attn = prop_attn
        self.keep_cls = keep_cls and self.num_prefix_tokens > 0
        self.return_dense = return_dense
        if not self.keep_cls and self.head_pool == "cls" and self.num_prefix_tokens:
            raise ValueError("TOME.KEEP_CLS False would merge the cls token that VIT.HEAD_POOL cls reads")
        for blk in self.blocks:
            old = blk.attn
            blk.attn = KeyStashAttention(old.qkv.in_features, old.num_heads, old.qkv.bias is not None)
            blk.attn.attn_drop = old.attn_drop
            blk.attn.load_state_dict(old.state_dict())
        self.merge_groups: list[Tensor] = []

    def forward_tokens(self, x: Tensor, grid: Grid) -> Tensor:
        """Blocks with merging; returns the *unmerged* tokens (B, prefix + T'H'W', C) in input order.

        Sets :attr:`merge_groups`: one (B, prefix + T'H'W') tensor per layer, the index of the merged
        token (after that layer's merge) each original token belongs to. Equal indices = one group.
        """
        b, n0, _ = x.shape
        group = torch.arange(n0, device=x.device).expand(b, -1)
        size = x.new_ones(b, n0, 1)
        merged = False
        self.merge_groups = []
        for blk, r in zip(self.blocks, self.merges, strict=True):
            bias = size.log().view(b, 1, 1, -1) if merged and self.prop_attn else None
            x = self.run_block(blk.attend, x, bias)
            r = min(r, (x.shape[1] - int(self.keep_cls)) // 2)
            if r > 0:
                metric = blk.attn.keys.mean(dim=1)
                x, size, old_to_new = bipartite_merge(x, size, metric, r, self.keep_cls)
                group = old_to_new.gather(1, group)
                merged = True
            blk.attn.keys = None
            x = self.run_block(blk.feed_forward, x)
            self.merge_groups.append(group)
        return gather_tokens(x, group) if merged else x


@register_model(checkpoint_filter=checkpoint_filter_fn)
def tome(cfg: CfgNode) -> ToMeViT:
    """ToMe: bipartite soft matching merges TOME.R tokens per layer (training-free on a trained ViT)."""
    t = cfg.TOME
    return ToMeViT(
        r=list(t.R),
        start_layer=t.START_LAYER,
        prop_attn=t.PROP_ATTN,
        keep_cls=t.KEEP_CLS,
        return_dense=t.RETURN_DENSE,
        **vit_kwargs(cfg),
    )
