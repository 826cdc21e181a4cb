"""U-Net encoder/decoder parts whose bottleneck can be intercepted (MRNet conditions it, D-Persona reads it).

MONAI's :class:`~monai.networks.nets.UNet` does not expose its bottleneck, so the multi-rater networks use these
small parts. Two encoders:

* ``"light"`` (default, CPU friendly): ``len(channels)`` levels of two 3x3 conv + instance norm + LeakyReLU,
  max-pooling between levels; down-sampling factor ``2 ** (len(channels) - 1)``.
* ``"resnet34"``: the papers' backbone, MONAI's ResNet-34 layers (randomly initialised, never downloaded) behind a
  full-resolution stem; down-sampling factor 32.

Both work in 2D and 3D through ``spatial_dims``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Backbone",
    "ConvBlock",
    "EncoderKind",
    "UNetDecoder",
    "UNetEncoder",
    "conv_nd",
    "encoder_divisor",
    "gaussian_smooth",
]

EncoderKind = Literal["light", "resnet34"]


def conv_nd(spatial_dims: int) -> type[nn.Conv2d] | type[nn.Conv3d]:
    """``nn.Conv2d`` or ``nn.Conv3d``."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    return nn.Conv2d if spatial_dims == 2 else nn.Conv3d


def _norm(spatial_dims: int, channels: int) -> nn.Module:
    return (nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm3d)(channels, affine=True)


class ConvBlock(nn.Sequential):
    """Two (conv 3 -> instance norm -> LeakyReLU) layers: ``(B, in, *s) -> (B, out, *s)``."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int) -> None:
        conv = conv_nd(spatial_dims)
        super().__init__(
            conv(in_channels, out_channels, 3, padding=1),
            _norm(spatial_dims, out_channels),
            nn.LeakyReLU(0.01, inplace=True),
            conv(out_channels, out_channels, 3, padding=1),
            _norm(spatial_dims, out_channels),
            nn.LeakyReLU(0.01, inplace=True),
        )


def encoder_divisor(channels: Sequence[int], kind: EncoderKind = "light") -> int:
    """Total down-sampling factor of a :class:`UNetEncoder` (input sizes must be multiples of it).

    Example:
        >>> encoder_divisor((16, 32, 64, 128)), encoder_divisor((16,), "resnet34")
        (8, 32)

    """
    return 32 if kind == "resnet34" else int(2 ** (len(channels) - 1))


class UNetEncoder(nn.Module):
    """Feature pyramid ``[f_0, ..., f_L]`` (full resolution first, bottleneck last).

    Args:
        spatial_dims: 2 or 3.
        in_channels: Input channels.
        channels: Widths per level for ``kind="light"`` (ignored for ``resnet34`` except ``channels[0]``, the
            width of the full-resolution stem).
        kind: ``"light"`` or ``"resnet34"`` (see the module docstring).

    Attributes:
        out_channels: Width of each returned level.
        divisor: Total down-sampling factor (input sizes must be multiples of it).

    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: Sequence[int] = (16, 32, 64, 128),
        kind: EncoderKind = "light",
    ) -> None:
        super().__init__()
        self.kind = kind
        self.spatial_dims = spatial_dims
        if kind == "light":
            if len(channels) < 2:
                raise ValueError("the light encoder needs at least 2 levels")
            widths = [int(c) for c in channels]
            self.levels = nn.ModuleList(
                [ConvBlock(spatial_dims, in_channels if i == 0 else widths[i - 1], w) for i, w in enumerate(widths)]
            )
            self.out_channels = widths
        elif kind == "resnet34":
            from monai.networks.nets.resnet import ResNet

            stem = int(channels[0])
            self.stem = ConvBlock(spatial_dims, in_channels, stem)
            self.resnet = ResNet(
                block="basic",
                layers=[3, 4, 6, 3],
                block_inplanes=[64, 128, 256, 512],
                spatial_dims=spatial_dims,
                n_input_channels=in_channels,
                conv1_t_stride=2,
                feed_forward=False,
                norm=("instance", {"affine": True}),
            )
            self.out_channels = [stem, 64, 64, 128, 256, 512]
        else:
            raise ValueError(f"unknown encoder kind {kind!r}")
        self.divisor = encoder_divisor(channels, kind)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(B, in, *spatial) -> [(B, out_channels[i], *spatial / 2**i)]``; spatial sizes divisible by ``divisor``."""
        pool = F.max_pool2d if self.spatial_dims == 2 else F.max_pool3d
        if self.kind == "light":
            feats = []
            h = x
            for i, level in enumerate(self.levels):
                h = level(h if i == 0 else pool(h, 2))
                feats.append(h)
            return feats
        r = self.resnet
        f0 = self.stem(x)
        f1 = r.act(r.bn1(r.conv1(x)))
        f2 = r.layer1(r.maxpool(f1))
        f3 = r.layer2(f2)
        f4 = r.layer3(f3)
        f5 = r.layer4(f4)
        return [f0, f1, f2, f3, f4, f5]


class UNetDecoder(nn.Module):
    """Up-sampling path: from the bottleneck back to full resolution, concatenating skips.

    Args:
        spatial_dims: 2 or 3.
        channels: Encoder widths ``[c_0, ..., c_L]`` (the decoder mirrors them).
        bottleneck_channels: Width of the (possibly replaced) bottleneck feature map (default ``c_L``).

    Output: ``(B, c_0, *spatial)`` features at full resolution.

    """

    def __init__(self, spatial_dims: int, channels: Sequence[int], bottleneck_channels: int | None = None) -> None:
        super().__init__()
        ch = [int(c) for c in channels]
        self.spatial_dims = spatial_dims
        prev = bottleneck_channels if bottleneck_channels is not None else ch[-1]
        blocks = []
        for skip in reversed(ch[:-1]):
            blocks.append(ConvBlock(spatial_dims, prev + skip, skip))
            prev = skip
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = ch[0]

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Decode ``[f_0, ..., f_L]`` to ``(B, c_0, *spatial)``."""
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        h = feats[-1]
        for block, skip in zip(self.blocks, reversed(feats[:-1]), strict=True):
            h = F.interpolate(h, size=skip.shape[2:], mode=mode, align_corners=False)
            h = block(torch.cat([h, skip], dim=1))
        return h


class Backbone(nn.Module):
    """Encoder + decoder: ``(B, in, *s) -> (B, channels[0], *s)`` features (no head)."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: Sequence[int] = (16, 32, 64, 128),
        kind: EncoderKind = "light",
    ) -> None:
        super().__init__()
        self.encoder = UNetEncoder(spatial_dims, in_channels, channels, kind)
        self.decoder = UNetDecoder(spatial_dims, self.encoder.out_channels)
        self.out_channels = self.decoder.out_channels
        self.divisor = self.encoder.divisor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Full-resolution features."""
        out: torch.Tensor = self.decoder(self.encoder(x))
        return out


def gaussian_smooth(x: torch.Tensor, sigma: float, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian smoothing of every channel of ``(B, C, *spatial)`` with replicate padding.

    Args:
        x: Input, 2 or 3 spatial axes.
        sigma: Standard deviation in voxels (<= 0: identity).
        kernel_size: Odd kernel size; capped to ``2 * size - 1`` per axis so small inputs work.

    Returns:
        Smoothed tensor of the same shape; a constant input stays constant.

    """
    if sigma <= 0:
        return x
    nd = x.ndim - 2
    b, c = x.shape[:2]
    out = x.reshape(b * c, 1, *x.shape[2:])
    for axis in range(nd):
        size = out.shape[2 + axis]
        k = min(int(kernel_size), 2 * size - 1)
        k = k if k % 2 == 1 else k - 1
        t = torch.arange(k, dtype=x.dtype, device=x.device) - (k - 1) / 2
        w = torch.exp(-0.5 * (t / sigma) ** 2)
        w = w / w.sum()
        shape = [1, 1] + [1] * nd
        shape[2 + axis] = k
        pad = [0, 0] * nd
        pad[2 * (nd - 1 - axis)] = pad[2 * (nd - 1 - axis) + 1] = k // 2
        padded = F.pad(out, pad, mode="replicate")
        out = (F.conv2d if nd == 2 else F.conv3d)(padded, w.reshape(shape))
    return out.reshape(x.shape)
