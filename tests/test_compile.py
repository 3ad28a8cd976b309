"""MODEL.COMPILE: compiled models give eager's outputs and gradients for every registered arch, dynamic
token counts do not recompile every batch, and count_flops --compile times both side by side.

Inductor on 2 shared CPU cores takes about a minute per arch, so the registry-wide check uses the
``aot_eager`` backend (dynamo graph capture + AOT autograd, the same traced graphs inductor lowers) and
inductor itself runs on a representative pair, vit and evovit (Evo-ViT: data-dependent top-k).
"""

from __future__ import annotations

import pytest
import torch

from stvideo.config import ConfigError, load_config
from stvideo.engine import strategy
from stvideo.models import MODEL_REGISTRY, build_model, protocol
from stvideo.utils.compile import compile_model, dynamo_counts
from tests.test_registry import _clip, _perturb, tiny_cfg

ARCHS = sorted(name for name, _ in MODEL_REGISTRY)


def _pair(arch: str, backend: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    eager = _perturb(build_model(tiny_cfg(arch)))
    compiled = build_model(tiny_cfg(arch))
    compiled.load_state_dict(eager.state_dict())
    return eager, compile_model(compiled, backend=backend)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("arch", ARCHS)
def test_compiled_equals_eager_train_and_eval(arch: str) -> None:
    eager, compiled = _pair(arch, "aot_eager")
    grads = []
    for model in (eager, compiled):
        model.train()
        torch.manual_seed(1)  # same random draws (random keep-k, dropout) in both
        out = model(_clip())
        protocol.classification_loss(out, torch.tensor([1, 3])).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-4, atol=1e-6, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(compiled.eval()(_clip(2)), eager.eval()(_clip(2)), rtol=1e-5, atol=1e-5)
    assert sorted(compiled.state_dict()) == sorted(eager.state_dict())  # names unchanged by compiling


@pytest.mark.parametrize("arch", ["vit", "evovit"])
def test_inductor_matches_eager(arch: str) -> None:
    eager, compiled = _pair(arch, "inductor")
    with torch.no_grad():
        torch.testing.assert_close(compiled.eval()(_clip(3)), eager.eval()(_clip(3)), rtol=1e-4, atol=1e-4)


def test_evovit_top_k_does_not_recompile_every_batch() -> None:
    """Evo-ViT keeps k = int(N * keep) tokens, fixed for a clip size: new batches of the same size reuse
    the graph; a new batch size compiles once more (then shapes are dynamic), not once per batch."""
    _, model = _pair("evovit", "aot_eager")
    model.eval()
    start = dynamo_counts()
    with torch.no_grad():
        model(_clip(0))
        first = dynamo_counts()["frames_compiled"] - start["frames_compiled"]
        for seed in range(1, 6):
            model(_clip(seed))
        assert dynamo_counts()["frames_compiled"] - start["frames_compiled"] == first
        for batch in (3, 4, 5, 3):
            model(torch.randn(batch, 3, 4, 32, 32))
    total = dynamo_counts()["frames_compiled"] - start["frames_compiled"]
    assert total <= 2 * first, f"{total} frames compiled for 10 batches ({first} for the first)"


def _repeating_clip(changed: int) -> torch.Tensor:
    """A tiny clip whose second tubelet repeats the first except at ``changed`` of its 16 patches."""
    x = _clip(changed)
    x[:, :, 2:] = x[:, :, :2]
    for i in range(changed):
        h, w = divmod(i, 4)
        x[:, :, 2:, 8 * h : 8 * h + 8, 8 * w : 8 * w + 8] += 1.0
    return x


def test_rlt_variable_token_counts_do_not_recompile_every_batch() -> None:
    """RLT's token count depends on the clip: the first new count compiles once more with the count
    dynamic, later counts reuse that graph (dynamo's automatic dynamic shapes)."""
    _, model = _pair("rlt", "aot_eager")
    model.eval()
    start = dynamo_counts()["frames_compiled"]
    kept = []
    with torch.no_grad():
        for i, changed in enumerate((1, 3, 5, 7, 9, 11, 13)):
            model(_repeating_clip(changed))
            kept.append(int(model.tokens_kept.max()))
            if i == 0:
                first = dynamo_counts()["frames_compiled"] - start
    assert kept == [17, 19, 21, 23, 25, 27, 29]
    total = dynamo_counts()["frames_compiled"] - start
    assert total <= 2 * first, f"{total} frames compiled for 7 token counts ({first} for the first)"


def test_compile_config_reaches_the_model_and_fsdp_is_refused() -> None:
    cfg = tiny_cfg("vit")
    cfg.MODEL.COMPILE, cfg.MODEL.COMPILE_BACKEND = True, "aot_eager"
    model = strategy.wrap_model(cfg, build_model(cfg), torch.device("cpu"))
    assert model._compiled_call_impl is not None
    with pytest.raises(ConfigError, match="MODEL.COMPILE with TRAIN.STRATEGY fsdp is not supported"):
        load_config(None, ["MODEL.COMPILE", "True", "TRAIN.STRATEGY", "fsdp"])
