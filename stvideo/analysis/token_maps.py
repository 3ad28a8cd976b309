"""Token maps: what a token method did with each tube token, collected from the model's real forward.

A map is one value per patch token on the model's (T', H', W') token grid (:class:`TokenMap`):

* ``groups``: ``labels`` is the group / semantic token each image token belongs to (one colour per group),
  ``values`` its weight in that group (intensity);
* ``mask``: ``values`` 1 for tokens kept on the slow / full path, 0 for the others;
* ``heat``: ``values`` a score in [0, 1] (class attention).

Nothing is recomputed by a second implementation of a method. Maps come from

* the attention probabilities of the :class:`~stvideo.models.vit.Attention` modules the forward calls,
  caught by forward hooks (:func:`attention_probs`): SDPA never returns its weights, so the hook takes
  the queries and keys the module itself computes on the call's inputs (``Attention.qkv_heads``) and
  forms their softmax, as Evo-ViT's ``ClsRowAttention`` does for its selection;
* what the model records of its own decisions through ``VideoViT.record`` while ``model.trace`` is a dict
  (:func:`tracing`): Evo-ViT's kept indices and class-attention score, random keep-k's kept indices.

Extractor registry: an arch gets maps by registering one function,

    @register_extractor("my_arch")
    def my_maps(model: nn.Module, clip: Tensor, layers: Sequence[int] | None) -> TokenMaps: ...

that runs ``model(clip)`` once (``clip``: one preprocessed (1, C, T, H, W) view, model in eval mode)
inside :func:`tracing` and/or :func:`attention_probs` and returns :class:`TokenMaps` (the logits of
that forward and the maps; ``layers`` is the user's ``--layer`` choice or None for the extractor's
default). A method that merges tokens exposes which group every original patch token is in (ToMe:
``merge_groups``) and its extractor turns that into ``groups`` maps; a method that drops tokens
exposes a kept mask (RLT: ``kept_mask``) and returns ``mask`` maps. Archs with no extractor get a
note saying none is available.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from stvideo.models import protocol
from stvideo.models.stvit import pool_centers
from stvideo.models.vit import Attention

Grid = tuple[int, int, int]
KINDS = ("groups", "mask", "heat")


@dataclass
class TokenMap:
    """One map over the token grid: ``values`` (T', H', W') in [0, 1], ``labels`` (T', H', W') for groups."""

    title: str
    kind: str
    values: Tensor
    labels: Tensor | None = None
    weights: Tensor | None = None  # groups: (M, N) attention of each group over the N image tokens

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"TokenMap kind must be one of {KINDS}, got {self.kind!r}")


@dataclass
class TokenMaps:
    """The maps of one clip, the logits of the forward they came from, and a note when there are none."""

    arch: str
    logits: Tensor
    grid: Grid | None = None
    maps: list[TokenMap] = field(default_factory=list)
    note: str = ""


Extractor = Callable[[nn.Module, Tensor, Sequence[int] | None], TokenMaps]
EXTRACTORS: dict[str, Extractor] = {}


def register_extractor(*archs: str) -> Callable[[Extractor], Extractor]:
    """Register ``fn`` as the token-map extractor of MODEL.ARCH names ``archs`` (see the module doc)."""

    def deco(fn: Extractor) -> Extractor:
        for arch in archs:
            if arch in EXTRACTORS:
                raise KeyError(f"a token-map extractor for {arch!r} is already registered")
            EXTRACTORS[arch] = fn
        return fn

    return deco


@contextmanager
def tracing(model: nn.Module) -> Iterator[dict[str, list[Tensor]]]:
    """``model.trace`` set to a fresh dict for the block (what ``VideoViT.record`` keeps), then None."""
    model.trace = {}
    try:
        yield model.trace
    finally:
        model.trace = None


@contextmanager
def attention_probs(modules: dict[int, Attention]) -> Iterator[dict[int, list[Tensor]]]:
    """Forward hooks on ``modules``: per key, one head-averaged (B, Nq, Nk) softmax per call, in order."""
    probs: dict[int, list[Tensor]] = {key: [] for key in modules}

    def hook(key: int) -> Callable:
        def fn(mod: Attention, args: tuple, kwargs: dict, output: Tensor) -> None:
            context = args[1] if len(args) > 1 else kwargs.get("context")
            q, k, _ = mod.qkv_heads(args[0], context)
            logits = (q @ k.transpose(-2, -1)) * mod.head_dim**-0.5
            mask = args[2] if len(args) > 2 else kwargs.get("attn_mask")
            if mask is not None:
                logits = (
                    logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + mask
                )
            probs[key].append(logits.softmax(dim=-1).mean(dim=1).detach())

        return fn

    handles = [m.register_forward_hook(hook(key), with_kwargs=True) for key, m in modules.items()]
    try:
        yield probs
    finally:
        for h in handles:
            h.remove()


def default_layers(depth: int) -> list[int]:
    """Three layers spread over the depth (a third, two thirds, last), 0-based."""
    return sorted({max(0, depth // 3 - 1), max(0, 2 * depth // 3 - 1), depth - 1})


def _normalised(v: Tensor) -> Tensor:
    return v / v.max().clamp_min(1e-12)


def _stretched(v: Tensor) -> Tensor:
    """Min-max scaled to [0, 1] (heat maps: the clip's lowest score black, its highest white)."""
    return (v - v.min()) / (v.max() - v.min()).clamp_min(1e-12)


def groups_map(title: str, weights: Tensor, grid: Grid) -> TokenMap:
    """Assign each of N image tokens to the group with the largest weight in ``weights`` (M, N)."""
    best, labels = weights.max(dim=0)
    return TokenMap(title, "groups", _normalised(best).view(grid), labels.view(grid), weights)


def mask_map(title: str, kept: Tensor, grid: Grid) -> TokenMap:
    """``mask`` map of the kept token indices ``kept`` (k,) among prod(grid) tokens."""
    values = torch.zeros(math.prod(grid))
    values[kept.cpu()] = 1.0
    return TokenMap(title, "mask", values.view(grid))


def _logits(out: object) -> Tensor:
    return protocol.main_logits(out).detach()


@torch.inference_mode()
def extract_token_maps(
    model: nn.Module, arch: str, clip: Tensor, layers: Sequence[int] | None = None
) -> TokenMaps:
    """Maps of ``clip`` (1, C, T, H, W) from the extractor registered for ``arch`` (model put in eval)."""
    model.eval()
    if clip.shape[0] != 1:
        raise ValueError(f"token maps take one clip, got a batch of {clip.shape[0]}")
    fn = EXTRACTORS.get(arch)
    if fn is None:
        known = ", ".join(sorted(EXTRACTORS))
        note = f"no token maps are available for MODEL.ARCH {arch} (archs with maps: {known})"
        return TokenMaps(arch, _logits(model(clip)), note=note)
    result = fn(model, clip, layers)
    for m in result.maps:
        m.values, m.labels = m.values.cpu(), None if m.labels is None else m.labels.cpu()
    return result


# ----------------------------------------------------------------------------------------- extractors
@register_extractor("vit")
def vit_maps(model: nn.Module, clip: Tensor, layers: Sequence[int] | None) -> TokenMaps:
    """Plain ViT: cls-token attention over the patch tokens (mean attention received without cls)."""
    layers = list(layers) if layers else default_layers(model.depth)
    _check_layers(layers, model.depth)
    with attention_probs({i: model.blocks[i].attn for i in layers}) as probs:
        logits = _logits(model(clip))
    p = model.num_prefix_tokens
    maps = []
    for i in layers:
        a = probs[i][0][0]
        row = a[0, p:] if p else a.mean(dim=0)
        what = "cls attention" if p else "mean attention received"
        maps.append(TokenMap(f"L{i} {what}", "heat", _stretched(row).view(model.grid)))
    return TokenMaps("vit", logits, model.grid, maps)


@register_extractor("stvit", "stvit_r")
def stvit_maps(model: nn.Module, clip: Tensor, layers: Sequence[int] | None) -> TokenMaps:
    """STViT(-R): image token -> semantic token assignment (argmax of generation-layer-1 attention,
    weight as intensity) per unit; STViT-R also the restore attention (semantic token -> image token)."""
    gen1 = [i for i, r in enumerate(model.layer_roles) if r == "gen1"]
    restore = [i for i, r in enumerate(model.layer_roles) if r == "restore"]
    with attention_probs({i: model.blocks[i].attn for i in gen1 + restore}) as probs:
        logits = _logits(model(clip))
    p = model.num_prefix_tokens
    maps = []
    for i in sorted(gen1 + restore):
        a = probs[i][0][0, p:, p:]
        if i in gen1:  # queries [prefix; M centers], keys [prefix; N image tokens]
            maps.append(groups_map(f"L{i} gen-1 assignment", a, model.grid))
        else:  # queries [prefix; N image tokens], keys [prefix; M semantic tokens]
            maps.append(groups_map(f"L{i} restore attention", a.T, model.grid))
    return TokenMaps("stvit_r" if restore else "stvit", logits, model.grid, maps)


@register_extractor("evovit")
def evo_maps(model: nn.Module, clip: Tensor, layers: Sequence[int] | None) -> TokenMaps:
    """Evo-ViT: slow (kept) vs placeholder tokens and the global class-attention score at each selection."""
    with tracing(model) as trace:
        logits = _logits(model(clip))
    maps = []
    n = math.prod(model.grid)
    for layer, score, keep in zip(trace["evo_layer"], trace["evo_score"], trace["evo_keep"], strict=True):
        k = keep.shape[1]
        maps.append(mask_map(f"L{int(layer)} slow {k}/{n}", keep[0], model.grid))
        maps.append(TokenMap(f"L{int(layer)} class attn", "heat", _stretched(score[0]).view(model.grid)))
    return TokenMaps("evovit", logits, model.grid, maps)


@register_extractor("random_drop")
def random_drop_maps(model: nn.Module, clip: Tensor, layers: Sequence[int] | None) -> TokenMaps:
    """Random keep-k control: the tokens kept from CONTROL.START_LAYER on."""
    with tracing(model) as trace:
        logits = _logits(model(clip))
    keep = trace["random_keep"][0][0]
    n = math.prod(model.grid)
    title = f"L{model.start_layer} kept {keep.numel()}/{n}"
    return TokenMaps("random_drop", logits, model.grid, [mask_map(title, keep, model.grid)])


@register_extractor("uniform_pool")
def uniform_pool_maps(model: nn.Module, clip: Tensor, layers: Sequence[int] | None) -> TokenMaps:
    """Uniform pooling control: the pooling cell of every token (a fixed grid, the same for every clip).

    The cells are read off the model's own pooling (``pool_centers`` on one-hot token features), so the
    map is the grid the forward pools to.
    """
    logits = _logits(model(clip))
    n = math.prod(model.grid)
    weights = pool_centers(torch.eye(n)[None], model.grid, model.pool_grid, model.grid_mode, "avg")[0]
    title = f"L{model.start_layer} pooling cells"
    return TokenMaps("uniform_pool", logits, model.grid, [groups_map(title, weights, model.grid)])


@register_extractor("tome")
def tome_maps(model: nn.Module, clip: Tensor, layers: Sequence[int] | None) -> TokenMaps:
    """ToMe: after each chosen layer's merge, the merged token every patch token is part of (the model's
    own ``merge_groups``); intensity = 1 / group size, so unmerged tokens are brightest."""
    layers = list(layers) if layers else default_layers(model.depth)
    _check_layers(layers, model.depth)
    logits = _logits(model(clip))
    p, n = model.num_prefix_tokens, math.prod(model.grid)
    maps = []
    for i in layers:
        _, labels = model.merge_groups[i][0, p:].unique(return_inverse=True)  # ids 0..M-1 over the patches
        weights = torch.zeros(int(labels.max()) + 1, n, device=labels.device)
        weights[labels, torch.arange(n, device=labels.device)] = 1.0
        size = weights.sum(dim=1)
        title = f"L{i} {weights.shape[0]} groups / {n}"
        maps.append(
            TokenMap(title, "groups", (1.0 / size[labels]).view(model.grid), labels.view(model.grid), weights)
        )
    return TokenMaps("tome", logits, model.grid, maps)


@register_extractor("rlt")
def rlt_maps(model: nn.Module, clip: Tensor, layers: Sequence[int] | None) -> TokenMaps:
    """RLT: the tubes that became tokens (the model's own ``kept_mask``); dropped tubes repeat the kept
    tube at their place in an earlier tubelet."""
    logits = _logits(model(clip))
    kept = model.kept_mask[0].flatten().nonzero()[:, 0]
    n = math.prod(model.grid)
    title = f"kept {kept.numel()}/{n}"
    return TokenMaps("rlt", logits, model.grid, [mask_map(title, kept, model.grid)])


def _check_layers(layers: Sequence[int], depth: int) -> None:
    bad = [i for i in layers if not 0 <= i < depth]
    if bad:
        raise ValueError(f"--layer {bad} out of range: the model has layers 0..{depth - 1}")


def _max_assignment(weights: Tensor, positions: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Per map position, the largest weight over all (semantic token, key) pairs that read it, and the
    semantic token of that weight. ``weights`` (S, K) over keys at map ``positions`` (S, K)."""
    flat_w, flat_p = weights.flatten(), positions.flatten()
    owner = torch.arange(weights.shape[0], device=weights.device)[:, None].expand_as(weights).flatten()
    best = torch.full((n,), float("-inf"), device=weights.device).scatter_reduce(0, flat_p, flat_w, "amax")
    hit = flat_w == best[flat_p]
    labels = torch.zeros(n, dtype=torch.long, device=weights.device)
    labels[flat_p[hit]] = owner[hit]
    return best, labels


@register_extractor("stvit_swin")
def stvit_swin_maps(model: nn.Module, clip: Tensor, layers: Sequence[int] | None) -> TokenMaps:
    """STViT-local: per semantic stage, each image token's semantic token (argmax of generation-layer-1
    attention over every window neighbourhood that reads the token; semantic tokens numbered window by
    window) with that weight as intensity; STViT-R-local also the restore attention.

    The keys of a window's layer-1 attention are located on the map with the stage's own
    ``window_neighbourhoods`` applied to a map of token positions.
    """
    from stvideo.models.stvit_swin import SemanticSwinStage, window_neighbourhoods

    stages = [(s, m) for s, m in enumerate(model.layers) if isinstance(m, SemanticSwinStage)]
    attn, grids, handles = {}, {}, []
    for s, stage in stages:
        for i, role in enumerate(stage.roles):
            if role in ("gen1", "restore"):
                attn[(s, i)] = stage.blocks[i].attn

        def grab(mod: nn.Module, args: tuple, out: Tensor, s: int = s) -> None:
            grids[s] = tuple(out.shape[1:4])

        handles.append(stage.downsample.register_forward_hook(grab))
    try:
        with attention_probs(attn) as probs:
            logits = _logits(model(clip))
    finally:
        for h in handles:
            h.remove()
    maps, grid = [], None
    for s, stage in stages:
        grid = grids[s]
        n = math.prod(grid)
        window, _ = stage.geometry(grid)
        index = torch.arange(n, dtype=torch.float32).view(1, *grid, 1)
        for (ss, i), calls in probs.items():
            if ss != s:
                continue
            a = calls[0]
            if stage.roles[i] == "gen1":  # (nW, M, [M +] K): keys [centers; neighbourhood] or neighbourhood
                nbr = window_neighbourhoods(index, window, stage.context)[..., 0].long()  # nW, K
                k = nbr.shape[1]
                w = a[:, :, -k:]
                positions = nbr[:, None, :].expand_as(w)
                best, labels = _max_assignment(w.flatten(0, 1), positions.flatten(0, 1), n)
                title = f"S{s} L{i} gen-1 assignment"
                maps.append(TokenMap(title, "groups", _normalised(best).view(grid), labels.view(grid)))
            else:  # restore: queries the N map tokens, keys all semantic tokens
                maps.append(groups_map(f"S{s} L{i} restore attention", a[0].T, grid))
    return TokenMaps("stvit_swin", logits, grid, maps)
