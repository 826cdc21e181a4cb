"""Inference: Gaussian-blended sliding windows, flip test-time augmentation, slice-wise 2D on 3D volumes.

:func:`sliding_window` tiles the input with windows of ``patch`` voxels overlapping by ``overlap`` (fraction),
runs the network on batches of windows, weights each output by a Gaussian importance map (sigma = 1/8 of the
patch, as in nnU-Net) and divides by the summed weights. Inputs smaller than the patch are padded and the
output cropped back. :func:`predict_probs` adds softmax and flip TTA (mean of the probabilities over all
``2 ** len(axes)`` flip combinations). :func:`predict_slicewise` applies a 2D network to every slice along the
last axis of a 3D volume (used by 2D methods on 3D data: the output is in the volume's geometry).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["gaussian_importance", "predict_probs", "predict_slicewise", "sliding_window", "window_starts"]


@lru_cache(maxsize=16)
def _gaussian_cpu(patch: tuple[int, ...], sigma_scale: float) -> torch.Tensor:
    axes = []
    for p in patch:
        x = torch.arange(p, dtype=torch.float64) - (p - 1) / 2
        sigma = max(p * sigma_scale, 1e-6)
        axes.append(torch.exp(-0.5 * (x / sigma) ** 2))
    g = axes[0]
    for a in axes[1:]:
        g = g[..., None] * a
    g = g / g.max()
    return torch.clamp(g, min=1e-4).float()  # never zero: border voxels covered by one window stay defined


def gaussian_importance(
    patch: Sequence[int], sigma_scale: float = 0.125, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Gaussian weight map ``(*patch)`` float32, peak 1 at the centre, floor 1e-4."""
    return _gaussian_cpu(tuple(int(p) for p in patch), float(sigma_scale)).to(device)


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Evenly spaced window starts covering ``[0, size)`` with windows of ``patch`` and at least ``overlap``."""
    if size <= patch:
        return [0]
    step = max(patch * (1 - overlap), 1)
    n = math.ceil((size - patch) / step) + 1
    return [round(i * (size - patch) / (n - 1)) for i in range(n)]


def sliding_window(
    fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    patch: Sequence[int],
    overlap: float = 0.5,
    batch_size: int = 4,
    sigma_scale: float = 0.125,
) -> torch.Tensor:
    """Blend ``fn`` over windows of ``image``.

    Args:
        fn: Network: ``(N, C, *patch) -> (N, K, *patch)``.
        image: ``(B, C, *spatial)`` input on the network's device.
        patch: Window size per spatial axis.
        overlap: Fraction of overlap between neighbouring windows, in ``[0, 1)``.
        batch_size: Windows per network call (per batch element).
        sigma_scale: Gaussian sigma as a fraction of the patch size.

    Returns:
        ``(B, K, *spatial)`` float32 blended outputs (e.g. logits).

    """
    patch = tuple(int(p) for p in patch)
    spatial = tuple(image.shape[2:])
    if len(patch) != len(spatial):
        raise ValueError(f"patch {patch} does not match the {len(spatial)} spatial axes of the input")
    pad = [max(p - s, 0) for p, s in zip(patch, spatial, strict=True)]
    if any(pad):
        pads: list[int] = []
        for q in reversed(pad):
            pads += [q // 2, q - q // 2]
        image = F.pad(image, pads)
    full = tuple(image.shape[2:])
    starts = list(itertools.product(*(window_starts(s, p, overlap) for s, p in zip(full, patch, strict=True))))
    weight = gaussian_importance(patch, sigma_scale, image.device)
    b = image.shape[0]
    out: torch.Tensor | None = None
    norm = torch.zeros(full, dtype=torch.float32, device=image.device)
    for st in starts:
        norm[tuple(slice(s, s + p) for s, p in zip(st, patch, strict=True))] += weight
    for i in range(0, len(starts), batch_size):
        chunk = starts[i : i + batch_size]
        sls = [tuple(slice(s, s + p) for s, p in zip(st, patch, strict=True)) for st in chunk]
        x = (
            torch.cat([image[(slice(None), slice(None), *sl)] for sl in sls])
            if len(sls) > 1
            else image[(slice(None), slice(None), *sls[0])]
        )
        y = fn(x).float()
        if out is None:
            out = torch.zeros((b, y.shape[1], *full), dtype=torch.float32, device=image.device)
        y = y * weight
        for j, sl in enumerate(sls):
            out[(slice(None), slice(None), *sl)] += y[j * b : (j + 1) * b]
    assert out is not None
    out /= norm
    if any(pad):
        crop = tuple(slice(q // 2, q // 2 + s) for q, s in zip(pad, spatial, strict=True))
        out = out[(slice(None), slice(None), *crop)]
    return out


def predict_probs(
    net: torch.nn.Module,
    image: np.ndarray | torch.Tensor,
    patch: Sequence[int],
    overlap: float = 0.5,
    tta: bool = False,
    tta_axes: Sequence[int] | None = None,
    batch_size: int = 4,
    device: torch.device | str | None = None,
    amp: bool = True,
) -> np.ndarray:
    """Class probabilities of one normalised image.

    Args:
        net: Segmentation network returning logits ``(N, K, *patch)``; put in eval mode here.
        image: ``(C, *spatial)`` float32 normalised intensities (or ``(B, C, *spatial)`` for a batch of slices).
        patch: Window size.
        overlap: Window overlap fraction.
        tta: Average softmax probabilities over flips of ``tta_axes`` (default: every spatial axis).
        tta_axes: Spatial axes (0-based) to flip.
        batch_size: Windows per network call.
        device: Device (default: the network's).
        amp: bfloat16 autocast on CUDA.

    Returns:
        ``(K, *spatial)`` (or ``(B, K, *spatial)``) float32 probabilities summing to 1 over K.

    """
    dev = torch.device(device) if device is not None else next(net.parameters()).device
    x = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image, dtype=torch.float32)
    batched = x.ndim == len(patch) + 2
    if not batched:
        x = x[None]
    x = x.to(dev)
    nd = x.ndim - 2
    axes = list(range(nd)) if tta_axes is None else list(tta_axes)
    combos = [()] if not tta else [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]
    net.eval()
    use_amp = amp and dev.type == "cuda"
    probs = None
    with torch.inference_mode(), torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
        for combo in combos:
            dims = [2 + a for a in combo]
            xi = torch.flip(x, dims) if dims else x
            logits = sliding_window(net, xi, patch, overlap, batch_size)
            p = torch.softmax(logits, dim=1)
            if dims:
                p = torch.flip(p, dims)
            probs = p if probs is None else probs + p
        assert probs is not None
        arr = (probs / len(combos)).float().cpu().numpy()
    return arr if batched else arr[0]


def predict_slicewise(
    net: torch.nn.Module,
    volume: np.ndarray,
    patch: Sequence[int],
    overlap: float = 0.5,
    tta: bool = False,
    slices_per_batch: int = 8,
    device: torch.device | str | None = None,
    amp: bool = True,
) -> np.ndarray:
    """Apply a 2D network to every slice along the last axis of ``volume`` ``(C, X, Y, Z)``.

    Returns:
        ``(K, X, Y, Z)`` float32 probabilities (flip TTA over the two in-plane axes if ``tta``).

    """
    if volume.ndim != 4:
        raise ValueError(f"slice-wise prediction needs a (C, X, Y, Z) volume, got shape {volume.shape}")
    slices = np.moveaxis(volume, -1, 0)  # (Z, C, X, Y)
    parts = []
    for i in range(0, slices.shape[0], slices_per_batch):
        parts.append(predict_probs(net, slices[i : i + slices_per_batch], patch, overlap, tta, None, 4, device, amp))
    return np.ascontiguousarray(np.moveaxis(np.concatenate(parts), 0, -1))
