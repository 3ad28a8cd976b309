"""Convolutional tube embedding ("early convolutions", Xiao et al., NeurIPS 2021) for video transformers.

A stack of 3x3x3 convolutions replaces the single t x p x p patchify convolution: each conv halves
height and width (the first also strides time by the tubelet size), with BatchNorm and ReLU, and a
1x1x1 projection to the token width ends the stem. It yields the same token grid as the linear tube
embedding, so every token model on top is unchanged. Trained from scratch, a ViT learns motion much
sooner with it: on the synthetic dataset a 64-wide ViT with 2x8x8 linear tubes was at chance for 750
steps and at 27 % after 1000; the same ViT with this stem reached 50 % after 200 (docs/synth.md).

Hand-written because timm's convolutional stems are 2D only.
"""

from __future__ import annotations

from torch import Tensor, nn


def _is_power_of_two(n: int) -> bool:
    return n >= 2 and n & (n - 1) == 0


class ConvStem3D(nn.Module):
    """(B, C_in, T, H, W) -> (B, embed_dim, T / tubelet, H / patch, W / patch) by log2(patch) convs.

    ``width`` is the first conv's channel count; it doubles with every further conv.
    """

    def __init__(self, in_chans: int, embed_dim: int, tubelet_size: int, patch_size: int, width: int):
        super().__init__()
        if not _is_power_of_two(patch_size):
            raise ValueError(f"a conv stem needs a power-of-two patch size >= 2, got {patch_size}")
        if tubelet_size < 1 or width < 1:
            raise ValueError(f"conv stem: tubelet size and width must be >= 1, got {tubelet_size}, {width}")
        layers: list[nn.Module] = []
        channels = in_chans
        for i in range(patch_size.bit_length() - 1):
            t_stride = tubelet_size if i == 0 else 1
            # odd temporal kernel >= stride (3 up to stride 3), padded so that T / stride frames come out
            t_kernel = 2 * (t_stride // 2) + 1 if t_stride > 1 else 3
            out = width * 2**i
            layers += [
                nn.Conv3d(
                    channels,
                    out,
                    kernel_size=(t_kernel, 3, 3),
                    stride=(t_stride, 2, 2),
                    padding=(t_kernel // 2, 1, 1),
                    bias=False,
                ),
                nn.BatchNorm3d(out),
                nn.ReLU(inplace=True),
            ]
            channels = out
        layers.append(nn.Conv3d(channels, embed_dim, kernel_size=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, video: Tensor) -> Tensor:
        return self.layers(video)


def tube_projection(
    kind: str, in_chans: int, embed_dim: int, patch: tuple[int, int, int], width: int
) -> nn.Module:
    """The tube-embedding projection for ``patch`` = (t, h, w): ``linear`` (one strided Conv3d, loads timm
    weights) or ``conv`` (:class:`ConvStem3D`; square, power-of-two spatial patches)."""
    if kind == "linear":
        return nn.Conv3d(in_chans, embed_dim, kernel_size=patch, stride=patch)
    if kind == "conv":
        t, h, w = patch
        if h != w:
            raise ValueError(f"MODEL.PATCH_EMBED conv needs a square spatial patch, got {list(patch)}")
        return ConvStem3D(in_chans, embed_dim, t, h, width)
    raise ValueError(f"unknown MODEL.PATCH_EMBED {kind!r}; use linear or conv")
