"""ClipPreprocessor (normalisation and erasing on the device) and the worker-side ErasingSampler."""

import pytest
import torch
from torchvision.transforms import v2

from stvideo.config.defaults import get_cfg
from stvideo.data.preprocessor import ERASE_FIELDS, ClipPreprocessor, ErasingSampler


def _cfg():
    cfg = get_cfg()
    cfg.DATA.MEAN = [0.4, 0.5, 0.6]
    cfg.DATA.STD = [0.2, 0.25, 0.3]
    return cfg


def _clips(b=3, t=4, h=40, w=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, t, h, w), dtype=torch.uint8, generator=g)


def test_normalisation_equals_torchvision():
    """(x / 255 - mean) / std per channel of a (B, C, T, H, W) batch, as v2.ToDtype + v2.Normalize."""
    cfg = _cfg()
    video = _clips()
    want = v2.Normalize(cfg.DATA.MEAN, cfg.DATA.STD)(
        v2.ToDtype(torch.float32, scale=True)(video.transpose(1, 2))
    ).transpose(1, 2)
    got = ClipPreprocessor(cfg, "cpu")(video)
    assert got.dtype == torch.float32 and got.shape == video.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    views = ClipPreprocessor(cfg, "cpu")(video[None])  # (N, V, C, T, H, W) test batches work too
    torch.testing.assert_close(views[0], want, rtol=0, atol=1e-5)


def test_erasing_fills_the_box_with_the_same_noise_in_every_frame():
    cfg = _cfg()
    video = _clips()
    erase = torch.tensor([[5, 7, 10, 20, 123], [0, 0, 0, 0, 0], [30, 40, 10, 8, 9]])
    plain = ClipPreprocessor(cfg, "cpu")(video)
    got = ClipPreprocessor(cfg, "cpu")(video, erase)
    assert torch.equal(got[1], plain[1])  # height 0: untouched
    for b, (top, left, height, width, _) in enumerate(erase.tolist()):
        if height == 0:
            continue
        box = got[b, :, :, top : top + height, left : left + width]
        assert all(torch.equal(box[:, 0], box[:, t]) for t in range(1, box.shape[1]))
        outside = torch.ones_like(plain[b], dtype=torch.bool)
        outside[:, :, top : top + height, left : left + width] = False
        assert torch.equal(got[b][outside], plain[b][outside])
    noise = got[0, :, 0, 5:15, 7:27]
    assert abs(float(noise.mean())) < 0.3 and 0.7 < float(noise.std()) < 1.3  # N(0, 1), 600 samples
    again = ClipPreprocessor(cfg, "cpu")(video, erase)
    assert torch.equal(again, got)  # the seed fixes the noise
    other = ClipPreprocessor(cfg, "cpu")(video, erase + torch.tensor([0, 0, 0, 0, 1]))
    assert not torch.equal(other[0], got[0])


def test_rejects_float_clips():
    with pytest.raises(TypeError, match="uint8"):
        ClipPreprocessor(_cfg(), "cpu")(torch.zeros(1, 3, 2, 8, 8))


def test_sampler_draws_torchvision_random_erasing_boxes():
    """Same seed, same decision and box as v2.RandomErasing (value 0 marks the box on a ones clip)."""
    clip = torch.ones(4, 3, 32, 40, dtype=torch.uint8)
    erased = 0
    for seed in range(40):
        torch.manual_seed(seed)
        box = ErasingSampler(0.5)(clip)
        torch.manual_seed(seed)
        want = v2.RandomErasing(p=0.5, value=0)(clip) == 0
        assert box.shape == (ERASE_FIELDS,) and box.dtype == torch.int64
        top, left, height, width, _ = box.tolist()
        got = torch.zeros_like(want)
        got[..., top : top + height, left : left + width] = height > 0
        assert torch.equal(got, want), seed
        erased += height > 0
    assert 10 < erased < 30  # p = 0.5 over 40 clips


def test_sampler_without_erasing_draws_nothing():
    torch.manual_seed(0)
    box = ErasingSampler(0.0)(torch.ones(2, 3, 8, 8, dtype=torch.uint8))
    assert box.tolist() == [0] * ERASE_FIELDS
    after = torch.rand(())
    torch.manual_seed(0)
    assert torch.equal(torch.rand(()), after)  # the rest of the pipeline sees the same numbers
