"""Evo-ViT on tube tokens: global class attention picks slow tokens, the rest evolve on a fast path.

Per layer the cls-query attention row over the patch tokens (head-averaged) updates a running score,
``A = (1 - lam) * A + lam * a`` (``lam`` = EVO.EMA_WEIGHT, or ``sigmoid`` of a learned scalar per layer).
At each selection point the top-k patch tokens (k = int(N * EVO.KEEP_RATIO), fixed per batch) plus cls
go through the blocks (slow path). The placeholders are summarised into one representative token
(score-weighted mean) that runs through the blocks with them; its total residual is then added to every
placeholder (fast path, as in the official LeViT code) -- or, with EVO.FAST_UPDATE=identity, they pass
unchanged (the official DeiT code). Tokens are gathered with ``torch.gather`` and put back with the
inverse permutation, so the output has every token in its original position.

Selection is layer-wise (re-select before every layer from EVO.START_LAYER) in early training and
stage-wise (select at EVO.STAGE_LAYERS, re-attach at the end of each stage) from the switch epoch on:
EVO.STAGEWISE_EPOCH, or by default round(EVO.STAGEWISE_FRACTION * SOLVER.MAX_EPOCH), the paper's
layer-wise first 2/3 (200 of 300 DeiT epochs); STAGEWISE_FRACTION 1.0 never switches. Eval forwards are
stage-wise (EVO.EVAL_SELECTION stagewise), or follow the mode training is in (``training``: the
official DeiT code, which validates layer-wise during the layer-wise phase). Training returns the
auxiliary cls-head logits as well.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from fvcore.common.config import CfgNode
from torch import Tensor, nn

from .build import depth_split, register_model, vit_depth, vit_kwargs
from .vit import Attention, Grid, VideoViT, checkpoint_filter_fn


class ClsRowAttention(Attention):
    """Attention that also keeps the cls query's softmax row (head-averaged) in ``cls_row``.

    The row costs one (1 x N) product per head next to SDPA, which never exposes its weights.
    """

    cls_row: Tensor | None = None

    def forward(self, x: Tensor, context: Tensor | None = None, attn_mask: Tensor | None = None) -> Tensor:
        q, k, v = self.qkv_heads(x, context)
        drop = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop)
        row = (q[:, :, :1] @ k.transpose(-2, -1)).mul(self.head_dim**-0.5).softmax(dim=-1)  # B, h, 1, N
        self.cls_row = row.mean(dim=1)[:, 0]
        return self.proj(out.transpose(1, 2).flatten(2))


def _gather(x: Tensor, idx: Tensor) -> Tensor:
    """Rows ``idx`` (B, K) of ``x`` (B, N, C) -> (B, K, C), contiguous."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class EvoViT(VideoViT):
    """Video ViT with Evo-ViT slow-fast token evolution; always has a cls token (the selector)."""

    def __init__(
        self,
        *,
        start_layer: int = 4,
        keep_ratio: float = 0.5,
        ema_weight: float = 0.5,
        learnable_ema: bool = False,
        fast_update: str = "representative",
        stage_layers: tuple[int, ...] = (4, 8),
        stagewise_epoch: int | None = None,
        eval_selection: str = "stagewise",
        aux_cls_weight: float = 0.5,
        **vit: object,
    ):
        vit["cls_token"] = True
        super().__init__(**vit)
        if not 1 <= start_layer < self.depth:
            raise ValueError(f"EVO.START_LAYER must be in [1, {self.depth}), got {start_layer}")
        stages = list(stage_layers)
        if not stages or stages != sorted(set(stages)) or stages[0] < 1 or stages[-1] >= self.depth:
            raise ValueError(f"EVO.STAGE_LAYERS must increase within [1, {self.depth}), got {stages}")
        if not 0.0 < keep_ratio <= 1.0:
            raise ValueError(f"EVO.KEEP_RATIO must be in (0, 1], got {keep_ratio}")
        if fast_update not in ("representative", "identity"):
            raise ValueError(f"unknown EVO.FAST_UPDATE {fast_update!r}; use representative or identity")
        if eval_selection not in ("stagewise", "training"):
            raise ValueError(f"unknown EVO.EVAL_SELECTION {eval_selection!r}; use stagewise or training")
        if stagewise_epoch is not None and stagewise_epoch < 0:
            raise ValueError(f"stagewise_epoch must be >= 0 or None (never), got {stagewise_epoch}")
        if not 0.0 < ema_weight <= 1.0:
            raise ValueError(f"EVO.EMA_WEIGHT must be in (0, 1], got {ema_weight}")
        self.start_layer = start_layer
        self.keep_ratio = keep_ratio
        self.fast_update = fast_update
        self.layerwise_segments = [(i, i + 1) for i in range(start_layer, self.depth)]
        self.stagewise_segments = list(zip(stages, stages[1:] + [self.depth], strict=True))
        self.stagewise_epoch = stagewise_epoch  # 0-based epoch training turns stage-wise; None = never
        self.eval_selection = eval_selection
        self.epoch: int | None = None  # set by the trainer (set_epoch); None = not trained in this process
        self.aux_cls_weight = aux_cls_weight
        for blk in self.blocks:
            dim = blk.attn.qkv.in_features
            blk.attn = ClsRowAttention(
                dim, blk.attn.num_heads, blk.attn.qkv.bias is not None, blk.attn.attn_drop
            )
            blk.attn.apply(self._init_weights)
        # lam = sigmoid(ema_logit); a logit of +inf (weight 1) would be a plain copy, so clamp the init.
        logit = math.log(ema_weight / (1 - ema_weight)) if ema_weight < 1 else 20.0
        ema_logit = torch.full((self.depth,), logit)
        if learnable_ema:
            self.ema_logit = nn.Parameter(ema_logit)
        else:
            self.register_buffer("ema_logit", ema_logit, persistent=False)
        if aux_cls_weight > 0:
            self.aux_norm = nn.LayerNorm(self.embed_dim, eps=1e-6)
            self.aux_head = nn.Linear(self.embed_dim, self.num_classes)
            self._init_weights(self.aux_head)

    def optional_state_keys(self) -> set[str]:
        """The auxiliary cls head (training only) and a learnable EMA weight (starts at EVO.EMA_WEIGHT)."""
        extra = ("aux_norm.", "aux_head.", "ema_logit")
        return {n for n, _ in self.named_parameters() if n.startswith(extra)}

    def set_epoch(self, epoch: int) -> None:
        """The 0-based epoch about to be trained; selection turns stage-wise at ``stagewise_epoch``."""
        self.epoch = epoch

    @property
    def stagewise(self) -> bool:
        """Whether training is in its stage-wise phase. Before any ``set_epoch`` a training forward is
        at epoch 0 and an eval forward sees the model as training leaves it (stage-wise unless never)."""
        if self.stagewise_epoch is None:
            return False
        if self.epoch is None:
            return self.stagewise_epoch == 0 or not self.training
        return self.epoch >= self.stagewise_epoch

    def segments(self) -> list[tuple[int, int]]:
        """(first, end) layer ranges that run on the selected tokens, in the current mode."""
        if not self.training and self.eval_selection == "stagewise":
            return self.stagewise_segments
        return self.stagewise_segments if self.stagewise else self.layerwise_segments

    def _update_score(self, score: Tensor | None, layer: int, row: Tensor) -> Tensor:
        if score is None or layer < self.start_layer:
            return row
        lam = torch.sigmoid(self.ema_logit[layer])
        return (1 - lam) * score + lam * row

    def forward_tokens(self, x: Tensor, grid: Grid) -> Tensor:
        """Full layers until the first selection, then slow-fast segments; output in input order."""
        n = x.shape[1] - 1  # patch tokens
        k = max(1, int(n * self.keep_ratio))
        segs = {s: e for s, e in self.segments()}
        score: Tensor | None = None
        i = 0
        while i < self.depth:
            if i not in segs:
                x = self.run_block(self.blocks[i], x)
                score = self._update_score(score, i, self.blocks[i].attn.cls_row[:, 1:])
                i += 1
                continue
            end = segs[i]
            order = score.argsort(dim=1, descending=True)  # fixed k per batch: static shapes
            keep, rest = order[:, :k], order[:, k:]
            self.record("evo_layer", i)
            self.record("evo_score", score)  # the global class attention that chose ``keep``
            self.record("evo_keep", keep)
            patches = x[:, 1:]
            slow = torch.cat([x[:, :1], _gather(patches, keep)], dim=1)
            placeholders = _gather(patches, rest)
            rep = None
            if self.fast_update == "representative" and k < n:
                w = score.gather(1, rest)
                w = w / w.sum(dim=1, keepdim=True).clamp_min(1e-12)
                rep = (w.unsqueeze(-1) * placeholders).sum(dim=1, keepdim=True)
                slow = torch.cat([slow, rep], dim=1)
            kept_score = score.gather(1, keep)
            for j in range(i, end):
                slow = self.run_block(self.blocks[j], slow)
                kept_score = self._update_score(kept_score, j, self.blocks[j].attn.cls_row[:, 1 : 1 + k])
            if rep is not None:
                placeholders = placeholders + (slow[:, -1:] - rep)  # the summary's attn + MLP residuals
                slow = slow[:, :-1]
            # Placeholders keep their stale scores; kept tokens get the EMA of their new rows.
            sorted_score = torch.cat([kept_score, score.gather(1, rest)], dim=1)
            inverse = order.argsort(dim=1)
            patches = _gather(torch.cat([slow[:, 1:], placeholders], dim=1), inverse)
            score = sorted_score.gather(1, inverse)
            x = torch.cat([slow[:, :1], patches], dim=1)
            i = end
        return x

    def forward(self, video: Tensor) -> Tensor | dict[str, Tensor | float]:
        """Logits (B, K); in training with an aux head also the cls-head logits and their loss weight."""
        x = self.forward_features(video)
        logits = self.forward_head(x)
        if not self.training or self.aux_cls_weight <= 0:
            return logits
        aux = self.aux_head(self.aux_norm(x[:, 0]))
        return {"logits": logits, "aux_logits": aux, "aux_weight": self.aux_cls_weight}


def stagewise_epoch(cfg: CfgNode) -> int | None:
    """0-based epoch from which training selects stage-wise, or None when it never does.

    EVO.STAGEWISE_EPOCH >= 0 is used as given; -1 (default) means round(EVO.STAGEWISE_FRACTION *
    SOLVER.MAX_EPOCH) (0.667: the paper's layer-wise first 2/3). An epoch >= SOLVER.MAX_EPOCH (e.g.
    STAGEWISE_FRACTION 1.0) is never reached: training stays layer-wise.
    """
    e, total = cfg.EVO, cfg.SOLVER.MAX_EPOCH
    if e.STAGEWISE_EPOCH < -1:
        raise ValueError(
            f"EVO.STAGEWISE_EPOCH must be -1 (from STAGEWISE_FRACTION) or >= 0, not {e.STAGEWISE_EPOCH}"
        )
    if not 0.0 <= e.STAGEWISE_FRACTION <= 1.0:
        raise ValueError(f"EVO.STAGEWISE_FRACTION must be in [0, 1] (1 = never), got {e.STAGEWISE_FRACTION}")
    epoch = e.STAGEWISE_EPOCH if e.STAGEWISE_EPOCH >= 0 else math.floor(e.STAGEWISE_FRACTION * total + 0.5)
    return epoch if epoch < total else None


@register_model(checkpoint_filter=checkpoint_filter_fn)
def evovit(cfg: CfgNode) -> EvoViT:
    """Evo-ViT: slow-fast token evolution selected by global class attention."""
    e, depth = cfg.EVO, vit_depth(cfg)
    stages = tuple(e.STAGE_LAYERS) or (depth // 3, 2 * depth // 3)
    return EvoViT(
        start_layer=depth_split(e.START_LAYER, depth, 1 / 3),
        keep_ratio=e.KEEP_RATIO,
        ema_weight=e.EMA_WEIGHT,
        learnable_ema=e.LEARNABLE_EMA,
        fast_update=e.FAST_UPDATE,
        stage_layers=stages,
        stagewise_epoch=stagewise_epoch(cfg),
        eval_selection=e.EVAL_SELECTION,
        aux_cls_weight=e.AUX_CLS_WEIGHT,
        **vit_kwargs(cfg),
    )
