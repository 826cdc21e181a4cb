"""Building blocks shared by the multi-rater networks: U-Net encoder/decoder, ConvLSTM cell, Gaussian smoothing."""

from __future__ import annotations

from labelwise.models.blocks.convlstm import ConvLSTMCell
from labelwise.models.blocks.unet_parts import (
    Backbone,
    ConvBlock,
    UNetDecoder,
    UNetEncoder,
    conv_nd,
    encoder_divisor,
    gaussian_smooth,
)

__all__ = [
    "Backbone",
    "ConvBlock",
    "ConvLSTMCell",
    "UNetDecoder",
    "UNetEncoder",
    "conv_nd",
    "encoder_divisor",
    "gaussian_smooth",
]
