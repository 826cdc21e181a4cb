"""U-Net for 2D and 3D through ``spatial_dims``, built on :class:`monai.networks.nets.UNet`.

Why MONAI's ``UNet``: it already covers 2D and 3D in one class, instance normalisation (batch-size independent,
so DDP and gradient accumulation give the same gradients as one big batch), residual units and any depth; it is
maintained and widely cross-checked. labelwise only chooses defaults and registers tiny variants for tests.

Input spatial sizes must be divisible by ``2 ** (len(channels) - 1)`` (the total down-sampling factor); the
planner picks patch sizes that are, and the sliding-window predictor pads.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from labelwise.models.registry import register_model

__all__ = ["divisor", "unet", "unet_tiny"]


def divisor(channels: Sequence[int]) -> int:
    """Total down-sampling factor of a U-Net with these level widths (``2 ** (levels - 1)``)."""
    return int(2 ** (len(channels) - 1))


@register_model("unet")
def unet(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    channels: Sequence[int] = (32, 64, 128, 256),
    num_res_units: int = 2,
    dropout: float = 0.0,
    norm: str = "INSTANCE",
) -> nn.Module:
    """A U-Net returning logits ``(B, out_channels, *spatial)`` for input ``(B, in_channels, *spatial)``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: Input channels.
        out_channels: Output channels (classes).
        channels: Feature widths per level, shallowest first; each level halves the resolution.
        num_res_units: Residual units per block (0: plain conv blocks).
        dropout: Dropout probability inside blocks.
        norm: MONAI norm name ("INSTANCE", "BATCH", ...). Instance norm keeps DDP exact.

    """
    from monai.networks.nets.unet import UNet

    return UNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(channels),
        strides=(2,) * (len(channels) - 1),
        num_res_units=num_res_units,
        dropout=dropout,
        norm=norm,
    )


@register_model("unet_tiny")
def unet_tiny(
    spatial_dims: int, in_channels: int, out_channels: int, channels: Sequence[int] = (4, 8, 16), dropout: float = 0.0
) -> nn.Module:
    """A three-level U-Net with a few thousand parameters, for tests and smoke runs (divisor 4)."""
    return unet(spatial_dims, in_channels, out_channels, channels=channels, num_res_units=1, dropout=dropout)
