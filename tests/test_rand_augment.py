"""ClipRandAugment must equal torchvision's v2.RandAugment bit for bit, op by op and chained; with clip
statistics, torchvision's ops on the clip's frames stacked into one tall image."""

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode

from stvideo.data.rand_augment import _GEOMETRIC, _SPACE, OPS, ClipRandAugment, _gather_map, _LazyClip


def _clip(t: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Random uint8 clip with one constant frame and one low-contrast frame (edge cases of the
    per-frame statistics: AutoContrast with min == max, Equalize with step 0)."""
    g = torch.Generator().manual_seed(seed)
    clip = torch.randint(0, 256, (t, 3, h, w), dtype=torch.uint8, generator=g)
    clip[0] = 77
    clip[1] = clip[1] // 4 + 100
    return clip


def _magnitudes(op: str, h: int, w: int) -> list[float]:
    """Signed magnitudes of ``op`` at bins 0, 3, 7 and 10 of 11, as RandAugment draws them."""
    magnitudes_fn, signed = _SPACE[op]
    magnitudes = magnitudes_fn(11, h, w)
    if magnitudes is None:
        return [0.0]
    signs = (1.0, -1.0) if signed else (1.0,)
    return [float(magnitudes[b]) * s for b in (0, 3, 7, 10) for s in signs]


@pytest.mark.parametrize("shape", [(3, 37, 53), (3, 64, 48), (2, 224, 224), (3, 5, 9), (3, 2, 7)])
def test_every_op_equals_torchvision(shape):
    """Each of the 14 ops at several magnitudes and both signs, on odd, portrait, full and tiny sizes."""
    t, h, w = shape
    clip = _clip(t, h, w, seed=h * w)
    reference = v2.RandAugment()
    for op in OPS:
        for magnitude in _magnitudes(op, h, w):
            # torchvision's own per-op dispatch (private, but it is exactly what RandAugment runs)
            want = reference._apply_image_or_video_transform(
                clip, op, magnitude, interpolation=InterpolationMode.NEAREST, fill=reference._fill
            )
            state = _LazyClip(clip, clip_statistics=False)
            state.apply(op, magnitude)
            got = state.result()
            assert torch.equal(got, want), f"{op} at {magnitude} on {shape}"


def test_chained_ops_equal_torchvision_randaugment():
    """Four ops per clip under the same seed, 300 seeds: pending tables, fills and statistics interact."""
    for seed in range(300):
        clip = _clip(3, 40, 56, seed)
        torch.manual_seed(seed)
        want = v2.RandAugment(num_ops=4, magnitude=7, num_magnitude_bins=11)(clip)
        torch.manual_seed(seed)
        got = ClipRandAugment(num_ops=4, magnitude=7, num_magnitude_bins=11, clip_statistics=False)(clip)
        assert torch.equal(got, want), f"seed {seed}"


_STATISTICS_OPS = ("AutoContrast", "Equalize", "Contrast")


def _as_tall_image(clip: torch.Tensor) -> torch.Tensor:
    """(T, 3, H, W) -> (3, T*H, W): the frames stacked vertically into one image."""
    t, c, h, w = clip.shape
    return clip.transpose(0, 1).reshape(c, t * h, w)


class _TallImageStatistics(v2.RandAugment):
    """Reference for clip statistics: torchvision's RandAugment with AutoContrast, Equalize and Contrast
    run on the frames stacked into one tall image (the other ops act on each frame as usual)."""

    def _apply_image_or_video_transform(self, image, transform_id, magnitude, interpolation, fill):
        if transform_id not in _STATISTICS_OPS:
            return super()._apply_image_or_video_transform(
                image, transform_id, magnitude, interpolation, fill
            )
        t, c, h, w = image.shape
        out = super()._apply_image_or_video_transform(
            _as_tall_image(image), transform_id, magnitude, interpolation, fill
        )
        return out.reshape(c, t, h, w).transpose(0, 1)


@pytest.mark.parametrize("shape", [(3, 37, 53), (4, 16, 24), (2, 5, 9)])
def test_clip_statistics_ops_equal_torchvision_on_the_tall_image(shape):
    t, h, w = shape
    clip = _clip(t, h, w, seed=h + w)
    for op in _STATISTICS_OPS:
        for magnitude in _magnitudes(op, h, w):
            reference = _TallImageStatistics()
            expected = reference._apply_image_or_video_transform(
                clip, op, magnitude, interpolation=InterpolationMode.NEAREST, fill=reference._fill
            )
            state = _LazyClip(clip, clip_statistics=True)
            state.apply(op, magnitude)
            assert torch.equal(state.result(), expected), f"{op} at {magnitude} on {shape}"


def test_chained_clip_statistics_equal_the_tall_image_reference():
    """Pending tables before a statistics op are seen through, summed over frames, 200 seeds."""
    for seed in range(200):
        clip = _clip(3, 40, 56, seed)
        torch.manual_seed(seed)
        want = _TallImageStatistics(num_ops=4, magnitude=7, num_magnitude_bins=11)(clip)
        torch.manual_seed(seed)
        got = ClipRandAugment(num_ops=4, magnitude=7, num_magnitude_bins=11, clip_statistics=True)(clip)
        assert torch.equal(got, want), f"seed {seed}"


@pytest.mark.parametrize("clip_statistics", [True, False])
def test_clip_statistics_give_every_frame_the_same_tone_curve(clip_statistics):
    """A clip that brightens over time (frame t = frame 0 + 40 t): with clip statistics an input value
    of a channel maps to one output value in every frame, so the brightening survives; per-frame
    statistics give each frame its own curve and flatten it (the torchvision / PySlowFast behaviour)."""
    base = torch.randint(0, 128, (3, 24, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    clip = torch.stack([base + 40 * t for t in range(3)])
    for op in _STATISTICS_OPS:
        state = _LazyClip(clip, clip_statistics=clip_statistics)
        state.apply(op, 0.5)
        out = state.result()
        one_curve = all(
            len(set(zip(clip[:, c].flatten().tolist(), out[:, c].flatten().tolist(), strict=True)))
            == len(set(clip[:, c].flatten().tolist()))
            for c in range(3)
        )
        assert one_curve == clip_statistics, op
        brightening = float(out[2].float().mean() - out[0].float().mean())  # 80 before the op
        if clip_statistics:
            assert brightening > 40, (op, brightening)
        elif op != "Contrast":  # a per-frame blend with each frame's own mean keeps the offsets
            assert brightening < 40, (op, brightening)


def test_draws_the_same_random_numbers_as_torchvision():
    """Both leave torch's generator in the same state, so the rest of the pipeline draws the same numbers."""
    clip = _clip(2, 32, 32, 0)
    torch.manual_seed(5)
    v2.RandAugment(num_ops=4, magnitude=9)(clip)
    after_torchvision = torch.rand(())
    torch.manual_seed(5)
    ClipRandAugment(num_ops=4, magnitude=9)(clip)
    assert torch.equal(torch.rand(()), after_torchvision)


def test_translations_take_the_slice_path():
    """Whole-pixel translations are recognised as shifts (the fast path); shears and rotations are not."""
    for op in _GEOMETRIC:
        for magnitude in _magnitudes(op, 40, 56)[2:]:  # nonzero magnitudes
            is_shift = _gather_map(op, magnitude, 40, 56).shift is not None
            assert is_shift == op.startswith("Translate"), (op, magnitude)


def test_rejects_non_uint8_or_non_rgb_clips():
    with pytest.raises(ValueError, match="uint8"):
        ClipRandAugment()(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="uint8"):
        ClipRandAugment()(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="magnitude"):
        ClipRandAugment(magnitude=11, num_magnitude_bins=11)
