"""Quality Sentinel network: (image, candidate mask, structure-name embedding) -> predicted Dice.

Wang et al., "Quality Sentinel: Estimating Label Quality and Errors in Medical Segmentation Datasets", 2024.

The backbone is a small residual CNN (no pretrained weights) over a 2-channel input ``[image, mask]``; its
pooled feature ``f`` (C,) is mixed with the text embedding ``e`` (D,) by gating, as in the paper::

    z   = [f; e]
    h   = relu(fc1(W1 z * f))        # W1: C+D -> C,  fc1: C -> hidden
    out = sigmoid(fc2(W2 z * h))     # W2: C+D -> hidden, fc2: hidden -> 1

The sigmoid keeps the predicted Dice in [0, 1] (the paper regresses without it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["ClassEmbedding", "SentinelNet"]


class _ResBlock(nn.Module):
    """Two 3x3 convs with batch norm and a strided 1x1 shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.skip = (
            nn.Identity()
            if cin == cout and stride == 1
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.act(self.body(x) + self.skip(x))
        return out


class SentinelNet(nn.Module):
    """Text-conditioned Dice regressor.

    Args:
        in_channels: Input channels (2: image and candidate mask).
        text_dim: Dimension D of the structure embedding.
        widths: Channels of the residual stages (each halves the resolution).
        hidden_dim: Width of the gated head (50 in the paper).
        text_conditioning: If False the gates see only ``f`` (ablation: ``e`` is ignored).

    Shapes:
        ``forward(x, e)``: x ``(B, in_channels, H, W)`` float32 (H, W >= 8), e ``(B, D)`` float32 ->
        ``(B,)`` float32 in [0, 1].

    """

    def __init__(
        self,
        in_channels: int = 2,
        text_dim: int = 384,
        widths: Sequence[int] = (16, 32, 64, 128),
        hidden_dim: int = 50,
        text_conditioning: bool = True,
    ) -> None:
        super().__init__()
        w = list(widths)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w[0], 3, 1, 1, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU())
        self.stages = nn.Sequential(*[_ResBlock(a, b, 2) for a, b in zip([w[0], *w[:-1]], w, strict=True)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        c = w[-1]
        self.text_dim = text_dim
        self.text_conditioning = text_conditioning
        zdim = c + (text_dim if text_conditioning else 0)
        self.w1 = nn.Linear(zdim, c)
        self.fc1 = nn.Linear(c, hidden_dim)
        self.w2 = nn.Linear(zdim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone feature ``(B, C)``."""
        return torch.flatten(self.pool(self.stages(self.stem(x))), 1)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """Predicted Dice ``(B,)`` in [0, 1] for inputs ``x`` (B, 2, H, W) and embeddings ``e`` (B, D)."""
        f = self.features(x)
        z = torch.cat([f, e.to(f.dtype)], dim=1) if self.text_conditioning else f
        h = torch.relu(self.fc1(self.w1(z) * f))
        return torch.sigmoid(self.fc2(self.w2(z) * h)).squeeze(1)


class ClassEmbedding(nn.Module):
    """Structure embeddings: fixed base vectors plus learned per-class corrections for the training classes.

    Known names (those given at construction) get ``base + delta`` where ``delta`` is learned (zero at start);
    any other name gets its base vector alone (from :func:`labelwise.models.text.embed_names`), so an unseen
    structure still has an embedding.

    Args:
        names: The training structure names (normalised internally).
        base: ``(K, D)`` float32 base vectors of ``names``.
        learnable: Learn the corrections (False: the base vectors are used as they are).

    """

    base: torch.Tensor

    def __init__(self, names: Sequence[str], base: np.ndarray, learnable: bool = True) -> None:
        super().__init__()
        from labelwise.models.text import normalize_name

        self.names = [normalize_name(n) for n in names]
        self.index = {n: i for i, n in enumerate(self.names)}
        self.register_buffer("base", torch.as_tensor(np.asarray(base, dtype=np.float32)))
        self.delta = nn.Parameter(torch.zeros_like(self.base), requires_grad=learnable)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(B, D)`` of known class indices ``idx`` (B,) int64."""
        return self.base[idx] + self.delta[idx]

    def lookup(self, names: Sequence[str], fallback: np.ndarray) -> torch.Tensor:
        """Embeddings ``(N, D)`` of arbitrary names; ``fallback`` (N, D) holds the base vectors of unseen ones."""
        from labelwise.models.text import normalize_name

        rows = []
        for i, n in enumerate(names):
            j = self.index.get(normalize_name(n))
            if j is None:
                rows.append(torch.as_tensor(np.asarray(fallback[i], dtype=np.float32), device=self.base.device))
            else:
                rows.append(self.base[j] + self.delta[j])
        return torch.stack(rows) if rows else self.base[:0]
