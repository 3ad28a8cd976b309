"""Initialise video ViTs from ImageNet ViT/DeiT (timm format) or VideoMAE checkpoints.

Image checkpoints: the 2D patch embedding is inflated to the tube embedding (``center``: the 2D kernel
in the middle frame, zeros elsewhere; ``average``: the kernel / t in every frame), the position
embedding is resized (spatial bicubic with timm's ``resample_abs_pos_embed``, temporal linear) and
tiled over time. VideoMAE checkpoints: ``encoder.`` prefix stripped, the decoder dropped, ``q_bias`` /
``v_bias`` merged into ``qkv.bias`` and the fixed sinusoidal table written into the learned position
embedding; a model cls token (Evo-ViT needs one) keeps its initialisation. A head whose shape does not
match (other class count) is dropped. Missing, unexpected, remapped and dropped keys are logged.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed, resample_patch_embed
from torch import Tensor, nn

from stvideo.utils.checkpoint_io import read_checkpoint

logger = logging.getLogger(__name__)

_WRAPPERS = ("model", "module", "state_dict", "model_state")
_DROP_PREFIXES = ("decoder.", "encoder_to_decoder.", "mask_token", "dist_token", "head_dist.")


@dataclass
class LoadReport:
    """What :func:`load_state_into` did with each checkpoint key."""

    format: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    remapped: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def log(self) -> None:
        """Write the report to the log, one line per category."""
        logger.info("pretrained weights (%s format) loaded", self.format)
        for name in ("remapped", "dropped", "missing", "unexpected"):
            keys = getattr(self, name)
            if keys:
                logger.info("  %s keys (%d): %s", name, len(keys), ", ".join(keys))


def unwrap_state_dict(obj: Any) -> dict[str, Tensor]:
    """The tensor dict inside a checkpoint (``model`` / ``module`` / ``state_dict`` wrappers removed)."""
    while isinstance(obj, dict) and not any(isinstance(v, Tensor) for v in obj.values()):
        key = next((k for k in _WRAPPERS if k in obj), None)
        if key is None:
            raise ValueError(f"no state dict found in checkpoint (top-level keys: {sorted(obj)[:10]})")
        obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint holds a {type(obj).__name__}, not a state dict")
    sd = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def detect_format(sd: dict[str, Tensor]) -> str:
    """``videomae`` (encoder prefix, 5D patch kernel or q/v biases without a cls token) or ``timm``."""
    if any(k.startswith("encoder.") for k in sd):
        return "videomae"
    w = sd.get("patch_embed.proj.weight")
    if w is not None and w.ndim == 5 and "cls_token" not in sd:
        return "videomae"
    return "timm"


def sinusoid_table(n: int, dim: int) -> Tensor:
    """VideoMAE's fixed 1D sinusoid position table (1, n, dim); hand-written to match its formula exactly."""
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    j = torch.arange(dim)
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor").double() / dim)
    table = torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()[None]


def inflate_patch_embed(w: Tensor, tubelet: int, patch: int, mode: str) -> Tensor:
    """2D (C, 3, p, p) or 3D (C, 3, t0, p, p) kernel -> (C, 3, tubelet, patch, patch)."""
    if w.ndim == 5:
        if w.shape[2] != tubelet:
            raise ValueError(f"checkpoint tubelet size {w.shape[2]} != model VIT.TUBELET_SIZE {tubelet}")
        if w.shape[-1] != patch:
            raise ValueError(f"checkpoint patch size {w.shape[-1]} != model VIT.PATCH_SIZE {patch}")
        return w
    if w.shape[-1] != patch:
        w = resample_patch_embed(w, [patch, patch])
    if mode == "center":
        out = w.new_zeros(*w.shape[:2], tubelet, *w.shape[2:])
        out[:, :, tubelet // 2] = w
        return out
    if mode == "average":
        return w.unsqueeze(2).repeat(1, 1, tubelet, 1, 1) / tubelet
    raise ValueError(f"unknown MODEL.PRETRAINED_INFLATE {mode!r}; use center or average")


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


def convert_state_dict(sd: dict[str, Tensor], model: nn.Module, fmt: str, inflate: str) -> LoadReport:
    """Rewrite ``sd`` in place into ``model``'s key names and shapes; returns the report so far."""
    report = LoadReport(format=fmt)
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
        if k.startswith(_DROP_PREFIXES):
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
    return report


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


def load_state_into(
    model: nn.Module, sd: dict[str, Tensor], fmt: str = "auto", inflate: str = "center"
) -> LoadReport:
    """Convert ``sd`` (timm / VideoMAE layout) and load it non-strictly; returns and logs the report."""
    sd = dict(sd)
    fmt = detect_format(sd) if fmt == "auto" else fmt
    if fmt not in ("timm", "videomae"):
        raise ValueError(f"unknown MODEL.PRETRAINED_FORMAT {fmt!r}; use auto, timm or videomae")
    report = convert_state_dict(sd, model, fmt, inflate)
    result = model.load_state_dict(sd, strict=False)
    report.missing = list(result.missing_keys)
    report.unexpected = list(result.unexpected_keys)
    report.log()
    return report


def load_pretrained(model: nn.Module, path: str, cfg: Any) -> LoadReport | Any:
    """Load MODEL.PRETRAINED into ``model`` (delegates to ``model.load_pretrained_state`` when defined)."""
    obj = read_checkpoint(path)  # CheckpointError naming the file if it is unreadable or unsafe
    sd = unwrap_state_dict(obj)
    if hasattr(model, "load_pretrained_state"):
        return model.load_pretrained_state(sd, cfg)
    logger.info("loading pretrained weights from %s", path)
    return load_state_into(model, sd, cfg.MODEL.PRETRAINED_FORMAT, cfg.MODEL.PRETRAINED_INFLATE)
