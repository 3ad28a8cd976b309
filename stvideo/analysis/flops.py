"""FLOP counting for stvideo models: fvcore plus the handles fvcore lacks, and a per-layer table.

Convention (fvcore's): **one multiply-add = one FLOP**. Matmuls, linears and convolutions count
their multiply-adds (no bias), layer norm counts fvcore's estimate of 5 per element, average
pooling 1 per input element. Elementwise, reduction, selection and copy ops (add, GELU, softmax,
top-k, gather, ...) are counted as zero but *listed* with their call and element counts, so
nothing is dropped silently. Any op with neither a handle nor a zero entry is reported as
unsupported. ``torch.utils.flop_counter`` counts 2 FLOPs per multiply-add, i.e. twice these numbers.

fvcore traces the model with a real input, so dynamic token methods (Evo-ViT top-k, STViT
semantic tokens) are counted at the token counts they actually run, not at the full count.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from math import prod
from typing import Any

import torch
from timm.layers import Mlp
from timm.models.vision_transformer import Attention as TimmAttention
from torch import Tensor, nn

from stvideo.models.swin import WindowAttention3D
from stvideo.models.vit import Attention

with warnings.catch_warnings():  # fvcore.nn's __init__ jit-scripts a focal loss; torch 2.x warns on import
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import elementwise_flop_counter, get_shape

CONVENTION = "fvcore: 1 multiply-add = 1 FLOP (torch.utils.flop_counter counts 2 per multiply-add)"

# Ops with no multiply-adds worth counting. They are registered with a handle that returns 0 and
# records calls and output elements, so reports list them instead of fvcore ignoring them silently.
ZERO_COST_OPS: tuple[str, ...] = (
    # elementwise arithmetic and activations
    "aten::add", "aten::add_", "aten::sub", "aten::rsub", "aten::mul", "aten::mul_", "aten::div",
    "aten::div_", "aten::neg", "aten::exp", "aten::log", "aten::sqrt", "aten::rsqrt", "aten::pow",
    "aten::gelu", "aten::silu", "aten::sigmoid", "aten::tanh", "aten::erf", "aten::softmax",
    "aten::log_softmax", "aten::where", "aten::lt", "aten::le", "aten::ne", "aten::ge", "aten::abs",
    "aten::logical_not",
    "prim::PythonOp.SwishFunction",  # PyTorchVideo's Swish (X3D), x * sigmoid(x) as an autograd Function
    # reductions
    "aten::mean", "aten::sum", "aten::amax", "aten::amin", "aten::max", "aten::min", "aten::argmax",
    "aten::cumsum", "aten::cummax", "aten::linalg_vector_norm", "aten::norm",
    # selection, sorting and data movement
    "aten::topk", "aten::sort", "aten::argsort", "aten::gather", "aten::scatter", "aten::scatter_",
    "aten::scatter_add", "aten::scatter_add_", "aten::index", "aten::index_select", "aten::index_put_",
    "aten::index_add", "aten::index_add_", "aten::take_along_dim", "aten::masked_fill", "aten::masked_fill_",
    "aten::repeat", "aten::repeat_interleave", "aten::meshgrid", "aten::linspace",
    "aten::expand_as", "aten::clone", "aten::fill_", "aten::zero_", "aten::copy_", "aten::cat",
    "aten::stack", "aten::new_ones", "aten::ones_like", "aten::unflatten", "aten::flip", "aten::pad",
    "aten::clamp_min", "aten::clamp_max",
    # max pooling is comparisons only
    "aten::max_pool2d", "aten::max_pool3d", "aten::adaptive_max_pool2d", "aten::adaptive_max_pool3d",
)  # fmt: skip

# Average pooling follows fvcore's own aten::adaptive_avg_pool2d rule: 1 FLOP per input element.
AVG_POOL_OPS: tuple[str, ...] = ("aten::adaptive_avg_pool3d", "aten::avg_pool2d", "aten::avg_pool3d")


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """aten::scaled_dot_product_attention: Q·Kᵀ and P·V, i.e. B·H·Nq·Nk·(d + d_v) multiply-adds.

    The attention mask (boolean or additive) and the softmax are elementwise and count zero,
    as in fvcore's convention; a causal flag still counts the dense matmuls.
    """
    q, k, v = (get_shape(t) for t in inputs[:3])
    return prod(q[:-1]) * k[-2] * (q[-1] + v[-1])


@dataclass
class LayerRow:
    """One row of the per-layer table: FLOPs of a module and the tokens its attention/MLP saw."""

    name: str
    flops: int
    query_tokens: list[int] = field(default_factory=list)  # per attention call
    key_tokens: list[int] = field(default_factory=list)  # per attention call (context tokens if cross)
    mlp_tokens: list[int] = field(default_factory=list)  # per MLP call


@dataclass
class FlopReport:
    """FLOPs of one traced forward (batch as given), with where they go and what was not counted."""

    total: int
    by_operator: dict[str, int]
    layers: list[LayerRow]
    zero_cost_calls: dict[str, int]  # counted-zero op -> calls
    zero_cost_elements: dict[str, int]  # counted-zero op -> output elements over all calls
    unsupported: dict[str, int]  # op -> calls; nonzero means the total is a lower bound

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "flops": self.total,
            "by_operator": self.by_operator,
            "layers": [vars(r) for r in self.layers],
            "zero_cost_ops": {
                op: {"calls": n, "elements": self.zero_cost_elements[op]}
                for op, n in sorted(self.zero_cost_calls.items())
            },
            "unsupported_ops": self.unsupported,
        }


class VideoFlopCountAnalysis(FlopCountAnalysis):
    """fvcore's FlopCountAnalysis with an SDPA handle, average-pool handles and listed zero-cost ops."""

    def __init__(self, model: nn.Module, inputs: Tensor | tuple[Tensor, ...]):
        super().__init__(model, inputs)
        self.zero_cost_calls: Counter[str] = Counter()
        self.zero_cost_elements: Counter[str] = Counter()
        self.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_jit)
        for op in AVG_POOL_OPS:
            self.set_op_handle(op, elementwise_flop_counter(1, 0))
        for op in ZERO_COST_OPS:
            self.set_op_handle(op, self._zero_cost(op))
        self.unsupported_ops_warnings(False)  # surfaced in FlopReport.unsupported instead
        self.uncalled_modules_warnings(False)
        self.tracer_warnings("none")

    def _zero_cost(self, op: str) -> Callable[[list[Any], list[Any]], int]:
        def handle(inputs: list[Any], outputs: list[Any]) -> int:
            self.zero_cost_calls[op] += 1
            shape = get_shape(outputs[0]) if outputs else None
            self.zero_cost_elements[op] += 0 if shape is None else prod(shape)  # prod([]) = 1: a scalar
            return 0

        return handle

    def _analyze(self):  # fvcore's private Statistics type
        if self._stats is None:  # a fresh analysis: the zero-cost tallies restart with it
            self.zero_cost_calls.clear()
            self.zero_cost_elements.clear()
        return super()._analyze()


# Modules whose calls the per-layer table reports tokens for.
ATTENTION_TYPES = (Attention, TimmAttention, WindowAttention3D)


class _TokenRecorder:
    """Forward hooks on attention and MLP modules recording how many tokens each call sees.

    Query and MLP tokens are counted per clip (all windows of a windowed attention together, so a
    Swin stage shows its whole token count); key tokens are the keys each query attends to.
    """

    def __init__(self, model: nn.Module, batch_size: int):
        self.batch_size = batch_size
        self.attn: dict[str, list[tuple[int, int]]] = {}
        self.mlp: dict[str, list[int]] = {}
        self.handles = []
        for name, mod in model.named_modules():
            if isinstance(mod, ATTENTION_TYPES):
                self.handles.append(mod.register_forward_hook(self._attn_hook(name), with_kwargs=True))
            elif isinstance(mod, Mlp):
                self.handles.append(mod.register_forward_hook(self._mlp_hook(name)))

    def _per_clip(self, x: Tensor) -> int:
        # int(): under the JIT tracer sizes come back as 0-d tensors
        return int(x.numel()) // int(x.shape[-1]) // self.batch_size

    def _attn_hook(self, name: str) -> Callable[..., None]:
        def hook(mod: nn.Module, args: tuple, kwargs: dict, out: Tensor) -> None:
            x = args[0] if args else kwargs["x"]
            context = None
            if isinstance(mod, Attention):  # stvideo Attention(x, context=None, attn_mask=None)
                context = args[1] if len(args) > 1 else kwargs.get("context")
            keys = x if context is None else context
            self.attn.setdefault(name, []).append((self._per_clip(x), int(keys.shape[-2])))

        return hook

    def _mlp_hook(self, name: str) -> Callable[..., None]:
        def hook(mod: nn.Module, args: tuple, out: Tensor) -> None:
            self.mlp.setdefault(name, []).append(self._per_clip(args[0]))

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _layer_modules(model: nn.Module) -> list[str]:
    """Module names for table rows: children, expanded until each holds at most one attention.

    A lone child (a wrapper such as ``PTVNet.net``) and module lists (PyTorchVideo's ``blocks``) are
    expanded too, so a CNN's stages and MViT's blocks get a row each.
    """
    attn_names = [n for n, m in model.named_modules() if isinstance(m, ATTENTION_TYPES)]

    def rows(prefix: str, mod: nn.Module) -> list[str]:
        out = []
        children = list(mod.named_children())
        for child_name, child in children:
            full = f"{prefix}{child_name}"
            inside = [a for a in attn_names if a.startswith(full + ".")]
            container = len(children) == 1 or isinstance(child, nn.ModuleList)
            expand = len(inside) > 1 or (container and full not in attn_names)
            out += rows(full + ".", child) if expand and len(list(child.children())) else [full]
        return out

    return rows("", model)


def count_flops(model: nn.Module, inputs: Tensor | tuple[Tensor, ...]) -> FlopReport:
    """Trace ``model`` on ``inputs`` with fvcore (our handles added) and build a :class:`FlopReport`.

    The model is counted in the mode it is in; callers put it in eval mode for inference FLOPs.
    One traced forward serves both the counts and the per-layer token counts.
    """
    analysis = VideoFlopCountAnalysis(model, inputs)
    first = inputs[0] if isinstance(inputs, tuple) else inputs
    recorder = _TokenRecorder(model, int(first.shape[0]))
    try:
        total = analysis.total()
    finally:
        recorder.remove()
    by_module = analysis.by_module()
    layers = []
    for name in _layer_modules(model):
        row = LayerRow(name, by_module.get(name, 0))
        for attn_name, calls in recorder.attn.items():
            if attn_name == name or attn_name.startswith(name + "."):
                row.query_tokens += [q for q, _ in calls]
                row.key_tokens += [k for _, k in calls]
        for mlp_name, calls in recorder.mlp.items():
            if mlp_name == name or mlp_name.startswith(name + "."):
                row.mlp_tokens += calls
        if row.flops or row.query_tokens or row.mlp_tokens:  # skip dropout / identity rows
            layers.append(row)
    outside = total - sum(r.flops for r in layers)
    if outside:  # ops in the model's own forward, outside every submodule (e.g. token selection)
        layers.append(LayerRow("(model forward, outside submodules)", outside))
    return FlopReport(
        total=total,
        by_operator=dict(analysis.by_operator()),
        layers=layers,
        zero_cost_calls=dict(analysis.zero_cost_calls),
        zero_cost_elements=dict(analysis.zero_cost_elements),
        unsupported=dict(analysis.unsupported_ops()),
    )


def block_flops(num_queries: int, dim: int, num_context: int | None = None, mlp_ratio: float = 4.0) -> int:
    """Closed-form FLOPs of one pre-norm transformer block (batch 1) in the fvcore convention.

    Self-attention (``num_context`` None): 12·N·C² + 2·N²·C for mlp_ratio 4, plus 2 layer norms
    (5 FLOPs per element each). Cross-attention: queries from N tokens, keys/values from M context
    tokens: N·C² (q) + 2·M·C² (k, v) + N·C² (proj) + 2·N·M·C (attention) + MLP on N, plus the
    context's own layer norm.
    """
    n, c = num_queries, dim
    m = n if num_context is None else num_context
    hidden = int(c * mlp_ratio)
    attn = n * c * c + 2 * m * c * c + n * c * c + 2 * n * m * c
    mlp = 2 * n * c * hidden
    norms = 5 * c * (2 * n + (0 if num_context is None else m))
    return attn + mlp + norms


def vit_flops(
    num_patches: int,
    dim: int,
    depth: int,
    num_classes: int,
    patch_volume: int,
    mlp_ratio: float = 4.0,
    cls_token: bool = True,
    head_pool: str = "mean",
) -> int:
    """Closed-form FLOPs (batch 1, fvcore convention) of a plain ViT / video ViT classifier.

    ``patch_volume`` is in_chans·t·p·p (the patch-embedding kernel). Embedding conv (N·C·volume)
    + depth blocks on N(+1) tokens + final norm (all tokens for cls pooling, the pooled vector
    for mean pooling, as in timm) + linear head (C·K).
    """
    n = num_patches + (1 if cls_token else 0)
    embed = num_patches * dim * patch_volume
    final_norm = 5 * dim * (n if head_pool == "cls" else 1)
    return embed + depth * block_flops(n, dim, mlp_ratio=mlp_ratio) + final_norm + dim * num_classes


def gflops_str(gflops: float) -> str:
    """GFLOPs for tables: 2 decimals from 1 G up, 4 significant digits below (tiny test models)."""
    return f"{gflops:.2f}" if gflops >= 1 else f"{gflops:.4g}"


def layer_table(layers: list[dict[str, Any]], total: int) -> list[list[str]]:
    """Rows [module, GFLOPs, % of total, query/key/MLP tokens] of ``FlopReport.to_dict()["layers"]``.

    Several calls of one module (a layer run twice) show as ``a/b``.
    """

    def tokens(values: list[int]) -> str:
        return "/".join(map(str, values)) if values else "-"

    return [
        [
            r["name"],
            gflops_str(r["flops"] / 1e9),
            f"{100.0 * r['flops'] / total if total else 0.0:.1f}",
            tokens(r["query_tokens"]),
            tokens(r["key_tokens"]),
            tokens(r["mlp_tokens"]),
        ]
        for r in layers
    ]


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (all of them, trainable or not)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def model_flops(model: nn.Module, input_shape: tuple[int, ...]) -> FlopReport:
    """Inference FLOPs of ``model`` on a zero-mean random input of ``input_shape`` (eval mode, restored)."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        x = torch.randn(input_shape, generator=torch.Generator().manual_seed(0)).to(device)
        return count_flops(model, x)
    finally:
        model.train(was_training)
