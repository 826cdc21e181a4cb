"""A convolutional LSTM cell (Shi et al., NeurIPS 2015) for 2D or 3D feature maps."""

from __future__ import annotations

import torch
from torch import nn

from labelwise.models.blocks.unet_parts import conv_nd

__all__ = ["ConvLSTMCell"]


class ConvLSTMCell(nn.Module):
    """One ConvLSTM step: gates from a convolution over ``[x, h]``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: Channels of the input ``x``.
        hidden_channels: Channels of the hidden and cell states.
        kernel_size: Odd kernel size of the gate convolution.

    Example:
        >>> cell = ConvLSTMCell(2, 8, 4)
        >>> x = torch.zeros(1, 8, 5, 5)
        >>> h, c = cell(x, (torch.zeros(1, 4, 5, 5), torch.zeros(1, 4, 5, 5)))
        >>> tuple(h.shape)
        (1, 4, 5, 5)

    """

    def __init__(self, spatial_dims: int, in_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.gates = conv_nd(spatial_dims)(
            in_channels + hidden_channels, 4 * hidden_channels, kernel_size, padding=kernel_size // 2
        )

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """One step.

        Args:
            x: ``(B, in_channels, *spatial)`` input.
            state: ``(h, c)``, each ``(B, hidden_channels, *spatial)``.

        Returns:
            The new ``(h, c)``.

        """
        h, c = state
        i, f, o, g = torch.chunk(self.gates(torch.cat([x, h], dim=1)), 4, dim=1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        return h_new, c_new
