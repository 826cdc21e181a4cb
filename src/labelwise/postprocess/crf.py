"""Dense CRF refinement of a foreground probability map (post-processing of weakly supervised masks: CAM, CLTN).

Dense CRF (Kraehenbuehl & Koltun, NeurIPS 2011), two-label Potts model with a Gaussian (smoothness) kernel and a
bilateral (appearance) kernel, ``iterations`` steps of mean-field inference. Two back-ends:

* ``torch`` (default, no extra dependency): **exact** mean field. Every pairwise message is a dense
  ``N x N`` kernel product (no permutohedral-lattice approximation), computed in row chunks so memory stays at
  ``chunk * N`` floats. To keep ``N`` small the image and the unary are resized so that the longer side is at
  most ``max_side`` pixels (the result is resized back); the spatial bandwidths are scaled by the same factor.
  Exact at the reduced size; up to 4096 pixels (64 x 64) both kernel matrices are kept in memory, above that
  they are recomputed per chunk in every iteration (slower, same result). Messages
  use symmetric normalisation ``D^-1/2 K D^-1/2`` and exclude the pixel itself.
* ``pydensecrf``: the reference C++ implementation through the ``pydensecrf2`` package (optional, install
  ``labelwise[crf]``), used as a cross-check in the tests. It approximates the kernels with a permutohedral
  lattice and works at full resolution.

Parameters follow the CLTN/CAM+CRF code's defaults: Gaussian ``sxy=3``, ``compat=3``; bilateral ``sxy=80``,
``srgb=13``, ``compat=10``; 10 iterations. Spatial bandwidths are in pixels of an image of side
``reference_side`` (256, the working size of the original code), colour bandwidth in 0..255 units.

The other post-processing steps: :mod:`labelwise.postprocess.threshold` (Otsu, probability rescaling) and
:mod:`labelwise.postprocess.components` (hole filling, largest component).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from labelwise.errors import ConfigError, require_extra

__all__ = ["CRFConfig", "dense_crf"]


@dataclass(frozen=True)
class CRFConfig:
    """Dense CRF settings (defaults: the original's).

    Attributes:
        gaussian_sxy: Gaussian kernel spatial bandwidth (pixels at ``reference_side``).
        gaussian_compat: Gaussian kernel Potts weight.
        bilateral_sxy: Bilateral kernel spatial bandwidth (pixels at ``reference_side``).
        bilateral_srgb: Bilateral kernel colour bandwidth (0..255 units).
        bilateral_compat: Bilateral kernel Potts weight.
        iterations: Mean-field iterations.
        backend: ``torch`` (exact, dense, downsampled) or ``pydensecrf`` (reference C++ package).
        max_side: Longest side the torch back-end works at.
        reference_side: Image side the spatial bandwidths refer to.

    """

    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0
    iterations: int = 10
    backend: Literal["torch", "pydensecrf"] = "torch"
    max_side: int = 64
    reference_side: int = 256

    def __post_init__(self) -> None:
        if self.iterations < 0 or self.max_side < 4:
            raise ConfigError("crf.iterations must be >= 0 and crf.max_side >= 4")
        if min(self.gaussian_sxy, self.bilateral_sxy, self.bilateral_srgb) <= 0:
            raise ConfigError("crf bandwidths must be > 0")


def _to_rgb255(image: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` any range -> ``(3, H, W)`` float32 in 0..255 (min-max per image; grayscale replicated)."""
    x = image.astype(np.float32)
    if x.shape[0] == 1:
        x = np.repeat(x, 3, axis=0)
    x = x[:3]
    lo, hi = float(x.min()), float(x.max())
    return np.zeros_like(x) if hi - lo < 1e-8 else (x - lo) / (hi - lo) * 255.0


def dense_crf(image: np.ndarray, prob: np.ndarray, cfg: CRFConfig | None = None) -> np.ndarray:
    """Refine a foreground probability map with a dense CRF.

    Args:
        image: ``(C, H, W)`` image, any intensity range (min-max scaled to 0..255 per image; 1 channel is
            replicated to RGB).
        prob: ``(H, W)`` foreground probability in [0, 1].
        cfg: CRF settings (default: the original's).

    Returns:
        ``(H, W)`` float32 refined foreground probability in [0, 1]. An all-zero or all-one input stays
        (almost) constant.

    """
    cfg = cfg or CRFConfig()
    if prob.shape != image.shape[1:]:
        raise ValueError(f"prob shape {prob.shape} != image spatial shape {image.shape[1:]}")
    p = np.clip(prob.astype(np.float32), 1e-5, 1 - 1e-5)
    rgb = _to_rgb255(image)
    if cfg.backend == "pydensecrf":
        return _dense_crf_reference(rgb, p, cfg)
    return _dense_crf_torch(rgb, p, cfg)


def _dense_crf_reference(rgb: np.ndarray, p: np.ndarray, cfg: CRFConfig) -> np.ndarray:
    dcrf = require_extra("pydensecrf.densecrf", "crf", feature="crf.backend=pydensecrf")
    h, w = p.shape
    scale = max(h, w) / cfg.reference_side
    d = dcrf.DenseCRF2D(w, h, 2)
    d.setUnaryEnergy(np.ascontiguousarray(-np.log(np.stack([1 - p, p]).reshape(2, -1))))
    d.addPairwiseGaussian(sxy=cfg.gaussian_sxy * scale, compat=cfg.gaussian_compat)
    im = np.ascontiguousarray(np.round(rgb).clip(0, 255).astype(np.uint8).transpose(1, 2, 0))
    d.addPairwiseBilateral(
        sxy=cfg.bilateral_sxy * scale, srgb=cfg.bilateral_srgb, rgbim=im, compat=cfg.bilateral_compat
    )
    q = np.asarray(d.inference(cfg.iterations), dtype=np.float32).reshape(2, h, w)
    fg: np.ndarray = q[1]
    return fg


def _dense_crf_torch(rgb: np.ndarray, p: np.ndarray, cfg: CRFConfig, chunk: int = 1024) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    h, w = p.shape
    f = min(1.0, cfg.max_side / max(h, w))
    hs, ws = max(1, round(h * f)), max(1, round(w * f))
    img_t = torch.from_numpy(rgb)[None]
    prob_t = torch.from_numpy(p)[None, None]
    if (hs, ws) != (h, w):
        img_t = F.interpolate(img_t, size=(hs, ws), mode="bilinear", align_corners=False, antialias=True)
        prob_t = F.interpolate(prob_t, size=(hs, ws), mode="bilinear", align_corners=False, antialias=True)
    scale = max(hs, ws) / cfg.reference_side
    yy, xx = torch.meshgrid(torch.arange(hs, dtype=torch.float32), torch.arange(ws, dtype=torch.float32), indexing="ij")
    pos = torch.stack([yy.reshape(-1), xx.reshape(-1)], 1)  # (N, 2) pixels
    col = img_t[0].reshape(3, -1).T  # (N, 3)
    n = pos.shape[0]
    pg = pos / (cfg.gaussian_sxy * scale)
    fb = torch.cat([pos / (cfg.bilateral_sxy * scale), col / cfg.bilateral_srgb], 1)

    def kernel(feat: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        k = torch.exp(-0.5 * torch.cdist(feat[lo:hi], feat).square())
        k[torch.arange(hi - lo), torch.arange(lo, hi)] = 0.0  # no self-message
        return k

    # Small images: keep both N x N kernels (at most 2 * 4096^2 floats = 128 MiB); larger: recompute per chunk.
    cache: dict[int, torch.Tensor] = {}
    if n <= 4096:
        cache = {id(pg): kernel(pg, 0, n), id(fb): kernel(fb, 0, n)}

    def apply(feat: torch.Tensor, q: torch.Tensor, norm: torch.Tensor | None) -> torch.Tensor:
        src = q if norm is None else q * norm[:, None]
        if id(feat) in cache:
            out = cache[id(feat)] @ src
        else:
            out = torch.empty_like(q)
            for lo in range(0, n, chunk):
                hi = min(lo + chunk, n)
                out[lo:hi] = kernel(feat, lo, hi) @ src
        return out if norm is None else out * norm[:, None]

    ones = torch.ones(n, 1)
    norm_g = apply(pg, ones, None)[:, 0].clamp_min(1e-20).rsqrt()
    norm_b = apply(fb, ones, None)[:, 0].clamp_min(1e-20).rsqrt()
    pr = prob_t.reshape(-1)
    logp = torch.stack([torch.log(1 - pr), torch.log(pr)], 1)  # (N, 2) = -unary
    q = torch.softmax(logp, 1)
    for _ in range(cfg.iterations):
        msg = cfg.gaussian_compat * apply(pg, q, norm_g) + cfg.bilateral_compat * apply(fb, q, norm_b)
        q = torch.softmax(logp + msg, 1)  # Potts: agreeing labels lower the energy
    fg = q[:, 1].reshape(1, 1, hs, ws)
    if (hs, ws) != (h, w):
        fg = F.interpolate(fg, size=(h, w), mode="bilinear", align_corners=False)
    return fg[0, 0].clamp(0, 1).numpy().astype(np.float32)
