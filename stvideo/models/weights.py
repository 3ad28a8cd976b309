"""Foreign weights (MODEL.PRETRAINED): unwrap a checkpoint, detect its format, filter it, report.

The generic half of loading: the state dict is taken out of its wrappers, handed to the checkpoint
filter that the architecture's registry entry names (one per family: ViT in ``vit.py``, Swin in
``swin.py``), loaded non-strictly, and every missing, unexpected, remapped and dropped key is logged.
The 2D-to-3D patch-kernel inflation is shared by the families.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from timm.layers import resample_patch_embed
from torch import Tensor, nn

from stvideo.utils.checkpoint_io import read_checkpoint

logger = logging.getLogger(__name__)

_WRAPPERS = ("model", "module", "state_dict", "model_state")


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


CheckpointFilter = Callable[[dict[str, Tensor], nn.Module, Any, LoadReport], dict[str, Tensor]]
"""A family's filter: ``(state_dict, model, cfg or None, report) -> state_dict in the model's names``.

It may rewrite the dict in place, records what it remapped or dropped in ``report`` and raises a
ValueError naming the key for what cannot fit (timm's ``checkpoint_filter_fn`` pattern)."""


def load_state_into(
    model: nn.Module, sd: dict[str, Tensor], checkpoint_filter: CheckpointFilter, cfg: Any = None
) -> LoadReport:
    """Filter ``sd`` into ``model``'s layout and load it non-strictly; returns and logs the report."""
    report = LoadReport(format="auto")
    sd = checkpoint_filter(dict(sd), model, cfg, report)
    result = model.load_state_dict(sd, strict=False)
    report.missing = list(result.missing_keys)
    report.unexpected = list(result.unexpected_keys)
    report.log()
    return report


def load_pretrained(model: nn.Module, path: str, cfg: Any) -> LoadReport:
    """Load MODEL.PRETRAINED into ``model`` through the checkpoint filter of ``cfg.MODEL.ARCH``."""
    from .build import checkpoint_filter  # the registry imports the families, which import this module

    obj = read_checkpoint(path)  # CheckpointError naming the file if it is unreadable or unsafe
    logger.info("loading pretrained weights from %s", path)
    return load_state_into(model, unwrap_state_dict(obj), checkpoint_filter(cfg.MODEL.ARCH), cfg)
