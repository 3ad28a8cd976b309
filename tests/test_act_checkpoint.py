"""MODEL.ACT_CHECKPOINT over the registry: every arch that honours it gives the loss and gradients of the
same model without it, and every block's work really runs under ``torch.utils.checkpoint``."""

from __future__ import annotations

import pytest
import torch

from stvideo.config import ConfigError
from stvideo.models import MODEL_REGISTRY, build_model, protocol, swin
from tests.test_registry import _clip, _perturb, tiny_cfg

ARCHS = sorted(name for name, _ in MODEL_REGISTRY)


def _build(arch: str, act_checkpoint: bool) -> torch.nn.Module:
    cfg = tiny_cfg(arch)
    cfg.MODEL.ACT_CHECKPOINT = act_checkpoint
    cfg.MODEL.DROP_PATH_RATE = 0.1  # the recomputation must replay the same random drops
    torch.manual_seed(0)
    return _perturb(build_model(cfg)).train()


def _loss_and_grads(model: torch.nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(1)  # same drop-path / random-drop draws in both models
    out = model(_clip())
    loss = protocol.classification_loss(out, torch.tensor([1, 3]), label_smoothing=0.1)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpointed_gradients_equal_plain_ones(arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = _build(arch, False)
    if not hasattr(plain, "act_checkpoint"):  # PyTorchVideo zoo: refused, never silently ignored
        with pytest.raises(ConfigError, match=f"MODEL.ARCH {arch} would ignore it"):
            _build(arch, True)
        return
    checkpointed = _build(arch, True)
    calls = []
    original = torch.utils.checkpoint.checkpoint

    def counting(fn, *args, **kwargs):
        calls.append(fn)
        return original(fn, *args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    monkeypatch.setattr(swin, "checkpoint", counting)  # Video Swin imports the function itself
    loss_a, grads_a = _loss_and_grads(plain)
    assert not calls
    loss_b, grads_b = _loss_and_grads(checkpointed)
    if hasattr(checkpointed, "blocks"):  # every block of a ViT-based arch runs checkpointed, once
        halves = 2 if arch == "tome" else 1  # ToMe merges between attention and MLP: two checkpointed halves
        assert len(calls) == halves * len(checkpointed.blocks), (arch, len(calls))
    else:
        assert calls, f"{arch}: nothing ran under torch.utils.checkpoint"
    torch.testing.assert_close(loss_b, loss_a, rtol=0, atol=0)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name, grad in grads_a.items():
        torch.testing.assert_close(grads_b[name], grad, rtol=1e-6, atol=1e-7, msg=name)
    before = len(calls)
    with torch.no_grad():  # eval and no-grad forwards never checkpoint
        checkpointed.eval()(_clip())
    assert len(calls) == before
