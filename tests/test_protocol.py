"""The model protocol: one loss and one logits reader for every output form the engine accepts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.data import Mixup

from stvideo.models import protocol


def test_loss_of_plain_and_auxiliary_outputs() -> None:
    main, aux, target = torch.randn(3, 4), torch.randn(3, 4), torch.tensor([0, 2, 3])
    out = {"logits": main, "aux_logits": aux, "aux_weight": 0.25}
    expected = 0.75 * F.cross_entropy(main, target) + 0.25 * F.cross_entropy(aux, target)
    assert torch.allclose(protocol.classification_loss(out, target), expected, atol=0, rtol=1e-6)
    assert torch.equal(protocol.classification_loss(main, target), F.cross_entropy(main, target))
    assert torch.equal(protocol.main_logits(out), main) and protocol.main_logits(main) is main


def test_loss_applies_label_smoothing_and_soft_targets() -> None:
    logits, target = torch.randn(4, 5), torch.tensor([0, 1, 2, 4])
    smoothed = protocol.classification_loss(logits, target, label_smoothing=0.1)
    assert torch.equal(smoothed, F.cross_entropy(logits, target, label_smoothing=0.1))
    assert not torch.equal(smoothed, protocol.classification_loss(logits, target))
    # Soft targets as timm's Mixup makes them: the loss is the cross-entropy against the distribution.
    mix = Mixup(mixup_alpha=1.0, label_smoothing=0.1, num_classes=5)
    torch.manual_seed(0)
    _, soft = mix(torch.randn(4, 3, 2, 8, 8), target)
    expected = -(soft * logits.log_softmax(-1)).sum(-1).mean()
    assert torch.allclose(protocol.classification_loss(logits, soft), expected)
    aux = torch.randn(4, 5)
    both = protocol.classification_loss({"logits": logits, "aux_logits": aux, "aux_weight": 0.5}, soft)
    assert torch.allclose(both, 0.5 * expected + 0.5 * -(soft * aux.log_softmax(-1)).sum(-1).mean())


def test_bf16_logits_are_scored_in_float32() -> None:
    logits, target = torch.randn(8, 10), torch.arange(8)
    loss = protocol.classification_loss(logits.bfloat16(), target)
    assert loss.dtype == torch.float32
    assert torch.equal(loss, F.cross_entropy(logits.bfloat16().float(), target))


def test_set_epoch_hook_is_optional() -> None:
    seen = []
    model = torch.nn.Linear(2, 2)
    protocol.set_epoch(model, 3)  # no hook: nothing happens
    model.set_epoch = seen.append
    protocol.set_epoch(model, 4)
    assert seen == [4]
