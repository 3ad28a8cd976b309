"""Every registered architecture, tested the moment it registers (as timm's tests run over list_models()).

Each arch is built from one tiny config (4 frames of 32x32) through ``build_model`` and checked
against the model protocol (:mod:`stvideo.models.protocol`): the output contract in train and eval,
a loss whose gradient reaches every parameter, deterministic eval, an exact state-dict round trip,
its registered checkpoint filter taking its own weights back unchanged, ``no_weight_decay`` naming
real parameters, and a FLOP count with no unsupported operator.
"""

from __future__ import annotations

import pytest
import torch

from stvideo.analysis.flops import model_flops
from stvideo.config import get_cfg
from stvideo.models import MODEL_REGISTRY, build_model, protocol
from stvideo.models.build import checkpoint_filter
from stvideo.models.weights import load_state_into

ARCHS = sorted(name for name, _ in MODEL_REGISTRY)
CLIP = (2, 3, 4, 32, 32)
CLASSES = 5


def tiny_cfg(arch: str):
    """One small config every arch builds from: ViT width 48 / depth 6, Swin width 8, 4x32x32 clips."""
    cfg = get_cfg()
    cfg.MODEL.ARCH, cfg.MODEL.NUM_CLASSES, cfg.MODEL.DROP_PATH_RATE = arch, CLASSES, 0.0
    cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE, cfg.DATA.TEST_CROP_SIZE = 4, 32, 32
    cfg.VIT.EMBED_DIM, cfg.VIT.NUM_HEADS, cfg.VIT.DEPTH, cfg.VIT.PATCH_SIZE = 48, 3, 6, 8
    cfg.STVIT.GRID, cfg.STVIT.START_LAYER, cfg.STVIT.NUM_SEMANTIC_LAYERS = [2, 2, 2], 2, 2
    if arch == "stvit_r":  # one dumbbell in 6 layers: [full, gen1, gen2, semantic, restore, full]
        cfg.STVIT.START_LAYER, cfg.STVIT.NUM_SEMANTIC_LAYERS = 1, 1
    cfg.CONTROL.START_LAYER = cfg.EVO.START_LAYER = 2
    cfg.EVO.STAGE_LAYERS = [2, 4]
    cfg.SWIN.EMBED_DIM, cfg.SWIN.DEPTHS, cfg.SWIN.NUM_HEADS = 8, [1, 1, 6, 1], [1, 1, 2, 2]
    cfg.SWIN.WINDOW_SIZE, cfg.SWIN.SEMANTIC_WINDOW_GRID = [2, 2, 2], [1, 2, 2]
    cfg.SWIN.PATCH_SIZE = [2, 2, 2]  # stage 3 still has 2x2x2 tokens: no one-key window
    cfg.PTV.VARIANT = {"x3d": "xs", "slowfast": "t", "mvit": "t"}.get(arch, "")
    return cfg


def _build(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(tiny_cfg(arch))


def _perturb(model: torch.nn.Module) -> torch.nn.Module:
    """Move every parameter off its initialisation (zero-initialised residual norms, layer scales and
    heads would otherwise block gradients by design), so every tensor must matter."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _clip(seed: int = 0) -> torch.Tensor:
    return torch.randn(CLIP, generator=torch.Generator().manual_seed(seed))


def test_registry_is_not_empty() -> None:
    assert {"vit", "stvit", "stvit_r", "evovit", "random_drop", "uniform_pool", "swin"} <= set(ARCHS)


@pytest.mark.parametrize("arch", ARCHS)
def test_train_output_follows_the_protocol_and_every_parameter_learns(arch: str) -> None:
    model = _perturb(_build(arch)).train()
    out = model(_clip())
    logits, aux, weight = protocol.split_output(out)
    assert logits.shape == (CLIP[0], CLASSES)
    assert aux is None or (aux.shape == logits.shape and 0.0 <= weight <= 1.0)
    target = torch.tensor([1, 3])
    protocol.classification_loss(out, target, label_smoothing=0.1).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"{arch}: no gradient for {dead}"


@pytest.mark.parametrize("arch", ARCHS)
def test_eval_is_deterministic_logits(arch: str) -> None:
    model = _build(arch).eval()
    with torch.no_grad():
        a, b = model(_clip()), model(_clip())
    assert isinstance(a, torch.Tensor) and a.shape == (CLIP[0], CLASSES)
    assert torch.equal(a, b)


@pytest.mark.parametrize("arch", ARCHS)
def test_state_dict_round_trip_and_own_checkpoint_through_the_filter(arch: str) -> None:
    source = _perturb(_build(arch)).eval()
    strict = build_model(tiny_cfg(arch)).eval()
    strict.load_state_dict(source.state_dict())
    filtered = build_model(tiny_cfg(arch)).eval()
    report = load_state_into(filtered, source.state_dict(), checkpoint_filter(arch), tiny_cfg(arch))
    assert (report.missing, report.unexpected) == ([], [])
    with torch.no_grad():
        expected = source(_clip(1))
        torch.testing.assert_close(strict(_clip(1)), expected, rtol=0, atol=0)
        torch.testing.assert_close(filtered(_clip(1)), expected, rtol=0, atol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_no_weight_decay_names_real_parameters(arch: str) -> None:
    model = _build(arch)
    names = set(dict(model.named_parameters()))
    exempt = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    assert exempt <= names, f"{arch}: {sorted(exempt - names)} are not parameters"


@pytest.mark.parametrize("arch", ARCHS)
def test_flops_are_counted_with_no_unsupported_operator(arch: str) -> None:
    report = model_flops(_build(arch).eval(), (1, *CLIP[1:]))
    assert report.total > 0
    assert report.unsupported == {}, f"{arch}: fvcore skipped {report.unsupported}"
