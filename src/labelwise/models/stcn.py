"""STCN-style space-time memory network for mask propagation between slices (2D).

Cheng, Tai and Tang, "Rethinking Space-Time Networks with Improved Memory Coverage for Efficient Video Object
Segmentation", NeurIPS 2021, adapted to slices of a volume as in the FLARE22 propagation module. labelwise's
version is small (trained from scratch on CPU-sized data):

* **key encoder** (image -> key ``(B, key_dim, H/4, W/4)`` plus skip features at 1/1 and 1/2): shared by
  memory and query slices, so memory keys are computed once;
* **value encoder** (image + one object's soft mask -> value ``(B, value_dim, H/4, W/4)``), fused with the key
  encoder's deepest features as in STCN;
* **top-k affinity memory read-out** (:func:`topk_readout`): affinity ``-||q - m||^2 / sqrt(D)`` between each
  query position and every memory position (the L2 similarity of STCN), keep the top k, softmax, and average
  the memory values;
* **decoder**: read-out + query features, upsampled with the key encoder's skips to one logit per object.

Objects are foreground classes; several objects are batched along the batch axis and combined into class
probabilities with STCN's soft aggregation (:func:`soft_aggregate`). Inputs must have spatial sizes divisible
by :data:`STRIDE` (pad first). The network is built from a :class:`STCNConfig` (plain data saved with a run).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["STCN", "STRIDE", "STCNConfig", "local_topk_readout", "soft_aggregate", "topk_readout"]

#: Down-sampling factor between slices and keys/values.
STRIDE = 4


@dataclass(frozen=True)
class STCNConfig:
    """Sizes of an :class:`STCN` network.

    Attributes:
        widths: Feature widths at 1/1, 1/2 and 1/4 resolution.
        key_dim: Channels of keys.
        value_dim: Channels of values.
        top_k: Memory positions kept per query position in the read-out.

    """

    widths: tuple[int, int, int] = (16, 32, 64)
    key_dim: int = 32
    value_dim: int = 64
    top_k: int = 20


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.GroupNorm(max(1, cout // 8), cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.GroupNorm(max(1, cout // 8), cout),
        nn.ReLU(inplace=True),
    )


class _Encoder(nn.Module):
    """Three-level conv encoder: features at 1/1, 1/2 and 1/4."""

    def __init__(self, cin: int, widths: tuple[int, int, int]) -> None:
        super().__init__()
        self.b1 = _block(cin, widths[0])
        self.b2 = _block(widths[0], widths[1])
        self.b3 = _block(widths[1], widths[2])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f1 = self.b1(x)
        f2 = self.b2(F.max_pool2d(f1, 2))
        f4 = self.b3(F.max_pool2d(f2, 2))
        return f1, f2, f4


def topk_readout(
    query_key: torch.Tensor, memory_key: torch.Tensor, memory_value: torch.Tensor, top_k: int
) -> torch.Tensor:
    """STCN memory read-out: top-k L2 affinity, softmax, weighted mean of memory values.

    Args:
        query_key: ``(B, D, Nq)`` query keys.
        memory_key: ``(B, D, Nm)`` memory keys.
        memory_value: ``(B, V, Nm)`` memory values.
        top_k: Memory positions kept per query (clamped to Nm).

    Returns:
        ``(B, V, Nq)`` read-out values (a convex combination of memory values per query position).

    """
    d = query_key.shape[1]
    # -||q - m||^2 = 2 q.m - |m|^2 - |q|^2; the |q|^2 term is constant per query and cancels in the softmax.
    aff = (2 * torch.einsum("bdq,bdm->bqm", query_key, memory_key) - memory_key.pow(2).sum(1)[:, None, :]) / math.sqrt(
        d
    )
    k = min(int(top_k), aff.shape[-1])
    vals, idx = torch.topk(aff, k, dim=-1)  # (B, Nq, k)
    w = torch.softmax(vals, dim=-1)
    mv = memory_value.transpose(1, 2)  # (B, Nm, V)
    gathered = torch.gather(
        mv[:, None].expand(-1, idx.shape[1], -1, -1), 2, idx[..., None].expand(-1, -1, -1, mv.shape[-1])
    )
    return torch.einsum("bqk,bqkv->bvq", w, gathered)


def local_topk_readout(
    query_key: torch.Tensor, memory_key: torch.Tensor, memory_value: torch.Tensor, top_k: int, radius: int
) -> torch.Tensor:
    """Top-k read-out restricted to a ``(2 radius + 1)^2`` window around each query position in every memory frame.

    The same top-k L2-affinity softmax as :func:`topk_readout` (without the ``1/sqrt(D)`` scale: keys of the
    training-free propagation carry their own scales), computed only over spatially close memory positions, so
    it is linear in the image size. Memory positions outside the image are ignored.

    Args:
        query_key: ``(D, H, W)`` query keys.
        memory_key: ``(T, D, H, W)`` keys of T memory frames.
        memory_value: ``(T, V, H, W)`` values of the memory frames.
        top_k: Candidates kept per query position.
        radius: Window radius in positions.

    Returns:
        ``(V, H, W)`` read-out values.

    """
    h, w = memory_key.shape[-2:]
    t = memory_key.shape[0]
    r = int(radius)
    big = 1e4  # padded positions get a far-away key and are never selected
    mk = F.pad(memory_key, (r,) * 4, value=big)
    mv = F.pad(memory_value, (r,) * 4, value=0.0)
    offsets = [(dx, dy) for dx in range(2 * r + 1) for dy in range(2 * r + 1)]
    # candidate m = offset index * T + frame: memory position (x + dx - r, y + dy - r) of frame t
    aff = torch.cat([-((mk[:, :, dx : dx + h, dy : dy + w] - query_key[None]) ** 2).sum(1) for dx, dy in offsets], 0)
    k = min(int(top_k), aff.shape[0])
    top, idx = torch.topk(aff, k, dim=0)  # (k, H, W)
    weights = torch.zeros_like(aff).scatter_(0, idx, torch.softmax(top, dim=0))  # (M, H, W), zero off the top k
    out = torch.zeros((memory_value.shape[1], h, w), dtype=memory_value.dtype)
    for o, (dx, dy) in enumerate(offsets):
        for f in range(t):
            out += weights[o * t + f] * mv[f, :, dx : dx + h, dy : dy + w]  # values never stacked: O(V H W) memory
    return out


def soft_aggregate(object_probs: torch.Tensor) -> torch.Tensor:
    """STCN soft aggregation of per-object foreground probabilities into class probabilities.

    Args:
        object_probs: ``(O, *spatial)`` foreground probabilities of O objects (classes 1..O).

    Returns:
        ``(O + 1, *spatial)`` probabilities summing to 1 (index 0 background = ``prod(1 - p_o)`` before
        renormalisation through logits).

    """
    p = object_probs.clamp(1e-7, 1 - 1e-7)
    bg = torch.prod(1 - p, dim=0, keepdim=True)
    allp = torch.cat([bg, p], 0).clamp(1e-7, 1 - 1e-7)
    logits = torch.log(allp / (1 - allp))
    return torch.softmax(logits, dim=0)


class STCN(nn.Module):
    """Key encoder, value encoder, top-k memory read-out and decoder (see the module docstring).

    Args:
        in_channels: Image channels.
        config: Network sizes.

    """

    def __init__(self, in_channels: int, config: STCNConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or STCNConfig()
        w = cfg.widths
        self.key_encoder = _Encoder(in_channels, w)
        self.key_proj = nn.Conv2d(w[2], cfg.key_dim, 3, padding=1)
        self.value_encoder = _Encoder(in_channels + 1, w)
        self.value_fuse = nn.Sequential(nn.Conv2d(2 * w[2], cfg.value_dim, 3, padding=1), nn.ReLU(inplace=True))
        self.dec4 = _block(cfg.value_dim + w[2], w[2])
        self.dec2 = _block(w[2] + w[1], w[1])
        self.dec1 = _block(w[1] + w[0], w[0])
        self.head = nn.Conv2d(w[0], 1, 1)

    def encode_key(self, image: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Keys ``(B, key_dim, H/4, W/4)`` and features ``(f1, f2, f4)`` of images ``(B, C, H, W)``."""
        feats = self.key_encoder(image)
        return self.key_proj(feats[2]), feats

    def encode_value(self, image: torch.Tensor, mask: torch.Tensor, f4: torch.Tensor) -> torch.Tensor:
        """Values ``(B, value_dim, H/4, W/4)`` of images ``(B, C, H, W)`` with object masks ``(B, 1, H, W)``."""
        _, _, v4 = self.value_encoder(torch.cat([image, mask], 1))
        out: torch.Tensor = self.value_fuse(torch.cat([v4, f4], 1))
        return out

    def decode(self, readout: torch.Tensor, feats: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Logits ``(B, 1, H, W)`` from a read-out ``(B, value_dim, H/4, W/4)`` and query features."""
        f1, f2, f4 = feats
        x = self.dec4(torch.cat([readout, f4], 1))
        x = self.dec2(torch.cat([F.interpolate(x, size=f2.shape[-2:], mode="bilinear", align_corners=False), f2], 1))
        x = self.dec1(torch.cat([F.interpolate(x, size=f1.shape[-2:], mode="bilinear", align_corners=False), f1], 1))
        out: torch.Tensor = self.head(x)
        return out

    def segment(
        self,
        query_key: torch.Tensor,
        query_feats: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        memory_keys: torch.Tensor,
        memory_values: torch.Tensor,
    ) -> torch.Tensor:
        """Object logits of a query from its memory.

        Args:
            query_key: ``(B, D, h, w)`` query keys.
            query_feats: Query features from :meth:`encode_key` (batch B).
            memory_keys: ``(B, T, D, h, w)`` keys of T memory slices.
            memory_values: ``(B, T, V, h, w)`` values of the memory slices (one object per batch element).

        Returns:
            ``(B, 1, H, W)`` logits of the object in the query slice.

        """
        b, t, d, h, w = memory_keys.shape
        mk = memory_keys.permute(0, 2, 1, 3, 4).reshape(b, d, t * h * w)
        mv = memory_values.permute(0, 2, 1, 3, 4).reshape(b, memory_values.shape[2], t * h * w)
        r = topk_readout(query_key.reshape(b, d, h * w), mk, mv, self.config.top_k).reshape(b, -1, h, w)
        return self.decode(r, query_feats)

    def forward(self, images: torch.Tensor, first_mask: torch.Tensor) -> torch.Tensor:
        """Propagate a mask through a short sequence (the training pass: frame 0 annotated).

        Args:
            images: ``(B, T, C, H, W)`` slices, T >= 2, H and W divisible by :data:`STRIDE`.
            first_mask: ``(B, 1, H, W)`` object mask of frame 0 in [0, 1].

        Returns:
            ``(B, T - 1, H, W)`` logits of frames ``1..T-1``; frame t uses frames ``0..t-1`` as memory (frame 0
            with its given mask, later frames with their predicted probabilities).

        """
        b, t = images.shape[:2]
        keys, feats = self.encode_key(images.flatten(0, 1))
        keys = keys.reshape(b, t, *keys.shape[1:])
        f1, f2, f4 = (f.reshape(b, t, *f.shape[1:]) for f in feats)
        values = [self.encode_value(images[:, 0], first_mask, f4[:, 0])]
        out = []
        for i in range(1, t):
            logit = self.segment(keys[:, i], (f1[:, i], f2[:, i], f4[:, i]), keys[:, :i], torch.stack(values, 1))
            out.append(logit[:, 0])
            if i < t - 1:
                values.append(self.encode_value(images[:, i], torch.sigmoid(logit), f4[:, i]))
        return torch.stack(out, 1)
