"""The model protocol: what the engine, the analysis tools and the tests may expect of any model.

Every ``MODEL.ARCH`` builder returns an ``nn.Module`` that keeps this contract:

* ``forward(clip)`` takes a (B, C, T, H, W) float clip, normalised on the device.
* The output is :data:`ModelOutput`: class logits (B, num_classes) or, in training only, a dict
  ``{"logits": (B, K), "aux_logits": (B, K), "aux_weight": float}``; the loss is then
  ``(1 - aux_weight) * loss(logits) + aux_weight * loss(aux_logits)`` (Evo-ViT's stage-wise phase).
  Dense backbones (``STVIT.RETURN_DENSE``) return (B, C, T', H', W') features instead.
  :func:`main_logits` and :func:`classification_loss` read either form; nothing else should.

Optional hooks, each called only when the model defines it:

* ``set_epoch(epoch)``: the trainer calls it before every epoch (:func:`set_epoch`), for schedules
  that change the forward (Evo-ViT's layer-wise to stage-wise switch).
* ``optional_state_keys() -> set[str]``: parameters a plain ``vit`` checkpoint lacks and the model
  may keep at their initial values, which leave it equal to that ViT where they matter (RLT's
  zero length embedding, Evo-ViT's training-only auxiliary head); ``TEST.CHECKPOINT_FILE_PATH`` of a
  ``vit`` run then loads (:func:`optional_state_keys`).
* ``no_weight_decay() -> set[str]``: parameter names exempt from weight decay (timm's optimizer
  factory reads it).
* A checkpoint filter for foreign weights (ImageNet, VideoMAE): named by the registry entry
  (``register_model(checkpoint_filter=...)`` in :mod:`stvideo.models.build`), applied by
  ``MODEL.PRETRAINED`` through :func:`stvideo.models.weights.load_pretrained`.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy
from torch import Tensor, nn

ModelOutput = Tensor | dict[str, Any]
_SOFT_TARGET_CE = SoftTargetCrossEntropy()


def split_output(out: ModelOutput) -> tuple[Tensor, Tensor | None, float]:
    """(main logits, auxiliary logits or None, auxiliary weight) from a model's output."""
    if isinstance(out, dict):
        return out["logits"], out.get("aux_logits"), float(out.get("aux_weight", 0.0))
    return out, None, 0.0


def main_logits(out: ModelOutput) -> Tensor:
    """The logits a prediction is read from (the auxiliary head never predicts)."""
    return out["logits"] if isinstance(out, dict) else out


def classification_loss(out: ModelOutput, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of the output against hard labels (B,) or soft targets (B, K) from mixup/cutmix.

    Computed in float32 (autocast logits may be bf16/fp16); label smoothing applies to hard labels,
    soft targets already carry it (timm's Mixup smooths them).
    """
    logits, aux, w = split_output(out)

    def crit(x: Tensor) -> Tensor:
        if target.ndim == 2:
            return _SOFT_TARGET_CE(x.float(), target)
        return F.cross_entropy(x.float(), target, label_smoothing=label_smoothing)

    loss = crit(logits)
    if aux is not None:
        loss = (1 - w) * loss + w * crit(aux)
    return loss


def set_epoch(model: nn.Module, epoch: int) -> None:
    """Tell the model which epoch starts (the optional ``set_epoch`` hook)."""
    hook = getattr(model, "set_epoch", None)
    if callable(hook):
        hook(epoch)


def optional_state_keys(model: nn.Module) -> set[str]:
    """Parameter names a checkpoint may lack (the optional ``optional_state_keys`` hook; none by default)."""
    hook = getattr(model, "optional_state_keys", None)
    return set(hook()) if callable(hook) else set()
