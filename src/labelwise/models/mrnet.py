"""MRNet: multi-rater agreement modelling for any number of raters R.

Ji et al., "Learning Calibrated Medical Image Segmentation via Multi-Rater Agreement Modeling", CVPR 2021.

Pieces (see ``docs/multirater.md``):

* **Rater condition** ``c`` (``(B, R)``, non-negative, sums to 1): a linear projection gives the initial
  ``(h, c)`` state of a one-step ConvLSTM run on the encoder bottleneck (:class:`RaterConditioner`), so each
  decoder knows "whose opinion" to produce.
* **Coarse net** (:class:`CoarseNet`): conditioned U-Net -> K-class logits.
* **Multi-rater reconstruction net** (:class:`ReconstructionNet`): image + coarse probabilities -> conditioned
  encoder -> ASPP (MONAI ``SimpleASPP``) -> decoder -> R one-per-rater 1x1 heads; its encoder also provides the
  feature reconstruction loss (encoding of the coarse prediction vs encoding of the soft target).
* **Uncertainty-guided attention**: per-voxel std over the R heads' foreground probabilities plus the coarse
  foreground probability, Gaussian smoothed (kernel 31, sigma 4 by default), min-max normalised per sample, and
  multiplied into the decoder features as ``f * (1 + a)`` before the final head.

Differences from the original (deliberate): K-class softmax + cross-entropy with soft targets instead of
per-channel sigmoid BCE (identical for binary tasks, and exclusive classes stay exclusive), a light U-Net
encoder by default (ResNet-34 as an option, never pretrained), and ``f * (1 + a)`` (a residual attention that
cannot switch features off).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from labelwise.errors import ConfigError
from labelwise.models.blocks import ConvBlock, ConvLSTMCell, UNetDecoder, UNetEncoder, conv_nd, gaussian_smooth
from labelwise.models.blocks.unet_parts import EncoderKind

__all__ = [
    "CoarseNet",
    "MRNet",
    "MRNetOutput",
    "RaterConditioner",
    "ReconstructionNet",
    "check_condition",
    "rater_std_attention",
]


def check_condition(weights: Sequence[float], num_raters: int, atol: float = 1e-3) -> tuple[float, ...]:
    """Validate a rater condition (rater weighting) vector.

    Args:
        weights: One weight per rater, in the model's rater order.
        num_raters: R, the number of raters the model was trained with.
        atol: Tolerance on the sum.

    Returns:
        The weights as a tuple of floats.

    Raises:
        ConfigError: wrong length, a negative or non-finite weight, or a sum that is not 1.

    """
    w = tuple(float(v) for v in weights)
    if len(w) != num_raters:
        raise ConfigError(f"rater weights have {len(w)} entries but the model has {num_raters} raters")
    if any(not math.isfinite(v) or v < 0 for v in w):
        raise ConfigError(f"rater weights must be finite and non-negative, got {list(w)}")
    if abs(sum(w) - 1.0) > atol:
        raise ConfigError(f"rater weights must sum to 1, got {list(w)} (sum {sum(w):.4f})")
    return w


class RaterConditioner(nn.Module):
    """Condition a bottleneck on the rater weighting with a one-step ConvLSTM.

    Args:
        spatial_dims: 2 or 3.
        channels: Bottleneck channels (input and output).
        num_raters: R.

    ``forward(x, condition)``: ``x`` ``(B, C, *s)``, ``condition`` ``(B, R)`` -> ``(B, C, *s)`` (the new hidden
    state).

    """

    def __init__(self, spatial_dims: int, channels: int, num_raters: int) -> None:
        super().__init__()
        self.num_raters = num_raters
        self.proj = nn.Linear(num_raters, 2 * channels)
        self.cell = ConvLSTMCell(spatial_dims, channels, channels)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Run one ConvLSTM step from the state projected from ``condition``."""
        if condition.ndim != 2 or condition.shape[1] != self.num_raters or condition.shape[0] != x.shape[0]:
            raise ValueError(f"condition must be (B={x.shape[0]}, R={self.num_raters}), got {tuple(condition.shape)}")
        state = self.proj(condition.to(x.dtype)).reshape(x.shape[0], -1, *([1] * (x.ndim - 2)))
        h0, c0 = torch.chunk(state.expand(-1, -1, *x.shape[2:]), 2, dim=1)
        h: torch.Tensor = self.cell(x, (h0.contiguous(), c0.contiguous()))[0]
        return h


class CoarseNet(nn.Module):
    """Rater-conditioned U-Net: ``(image (B, C, *s), condition (B, R)) -> logits (B, K, *s)``."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        num_raters: int,
        channels: Sequence[int] = (16, 32, 64, 128),
        encoder: EncoderKind = "light",
    ) -> None:
        super().__init__()
        self.encoder = UNetEncoder(spatial_dims, in_channels, channels, encoder)
        self.condition = RaterConditioner(spatial_dims, self.encoder.out_channels[-1], num_raters)
        self.decoder = UNetDecoder(spatial_dims, self.encoder.out_channels)
        self.head = conv_nd(spatial_dims)(self.decoder.out_channels, num_classes, 1)

    def forward(self, image: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Coarse logits."""
        feats = self.encoder(image)
        feats[-1] = self.condition(feats[-1], condition)
        out: torch.Tensor = self.head(self.decoder(feats))
        return out


def rater_std_attention(
    rater_probs: torch.Tensor, coarse_probs: torch.Tensor, sigma: float = 4.0, kernel_size: int = 31
) -> torch.Tensor:
    """MRNet's uncertainty map: rater std + coarse foreground, Gaussian smoothed, min-max normalised.

    Args:
        rater_probs: ``(B, R, K, *s)`` per-rater class probabilities.
        coarse_probs: ``(B, K, *s)`` coarse class probabilities.
        sigma: Gaussian sigma in voxels.
        kernel_size: Gaussian kernel size (odd).

    Returns:
        ``(B, 1, *s)`` in [0, 1] per sample (a constant map becomes all zeros). With one foreground class the
        std is over the R foreground probabilities; with several it is averaged over foreground classes.

    """
    k = rater_probs.shape[2]
    fg = slice(1, k) if k > 1 else slice(0, 1)
    std = rater_probs[:, :, fg].std(dim=1, unbiased=False).mean(dim=1, keepdim=True)
    coarse_fg = coarse_probs[:, fg].sum(dim=1, keepdim=True)
    a = gaussian_smooth(std + coarse_fg, sigma, kernel_size)
    flat = a.flatten(1)
    lo = flat.min(dim=1).values.reshape(-1, *([1] * (a.ndim - 1)))
    hi = flat.max(dim=1).values.reshape(-1, *([1] * (a.ndim - 1)))
    return (a - lo) / (hi - lo).clamp(min=1e-6)


class ReconstructionNet(nn.Module):
    """Multi-rater reconstruction with R heads, ASPP and uncertainty-guided refinement.

    ``forward(image, coarse_probs, condition)`` returns ``(rater_logits (B, R, K, *s), final_logits (B, K, *s),
    attention (B, 1, *s))``; :meth:`encode` gives the bottleneck used by the feature reconstruction loss.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        num_raters: int,
        channels: Sequence[int] = (16, 32, 64, 128),
        encoder: EncoderKind = "light",
        attention_sigma: float = 4.0,
        attention_kernel: int = 31,
    ) -> None:
        super().__init__()
        from monai.networks.blocks.aspp import SimpleASPP

        self.num_raters = num_raters
        self.num_classes = num_classes
        self.attention_sigma = attention_sigma
        self.attention_kernel = attention_kernel
        self.encoder = UNetEncoder(spatial_dims, in_channels + num_classes, channels, encoder)
        bott = self.encoder.out_channels[-1]
        self.condition = RaterConditioner(spatial_dims, bott, num_raters)
        branch = max(bott // 4, 1)
        self.aspp = SimpleASPP(spatial_dims, bott, branch, norm_type="INSTANCE", acti_type="LEAKYRELU")
        self.decoder = UNetDecoder(spatial_dims, self.encoder.out_channels, bottleneck_channels=4 * branch)
        c0 = self.decoder.out_channels
        conv = conv_nd(spatial_dims)
        self.rater_heads = conv(c0, num_raters * num_classes, 1)
        self.refine = ConvBlock(spatial_dims, c0, c0)
        self.head = conv(c0, num_classes, 1)

    def encode(self, image: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """Bottleneck features ``(B, C_L, *s / divisor)`` of ``[image, probs]`` (no conditioning)."""
        out: torch.Tensor = self.encoder(torch.cat([image, probs], dim=1))[-1]
        return out

    def forward(
        self, image: torch.Tensor, coarse_probs: torch.Tensor, condition: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-rater logits, final (refined) logits and the attention map."""
        feats = self.encoder(torch.cat([image, coarse_probs], dim=1))
        feats[-1] = self.aspp(self.condition(feats[-1], condition))
        f = self.decoder(feats)
        b = f.shape[0]
        rater_logits = self.rater_heads(f).reshape(b, self.num_raters, self.num_classes, *f.shape[2:])
        att = rater_std_attention(
            torch.softmax(rater_logits.detach().float(), dim=2),
            coarse_probs.detach().float(),
            self.attention_sigma,
            self.attention_kernel,
        ).to(f.dtype)
        final = self.head(self.refine(f * (1.0 + att)))
        return rater_logits, final, att


@dataclass
class MRNetOutput:
    """Outputs of :class:`MRNet` for one batch.

    Attributes:
        coarse: ``(B, K, *s)`` coarse logits.
        raters: ``(B, R, K, *s)`` per-rater head logits.
        final: ``(B, K, *s)`` refined logits: the calibrated map for the given condition.
        attention: ``(B, 1, *s)`` uncertainty attention in [0, 1].

    """

    coarse: torch.Tensor
    raters: torch.Tensor
    final: torch.Tensor
    attention: torch.Tensor


class MRNet(nn.Module):
    """Coarse net + multi-rater reconstruction net, both conditioned on the rater weighting.

    Args:
        spatial_dims: 2 or 3 (labelwise trains it in 2D; 3D volumes are processed slice by slice).
        in_channels: Image channels C.
        num_classes: K classes including background.
        num_raters: R >= 1 (any number; nothing is hard-coded).
        channels: Encoder widths of the light encoder (``channels[0]`` is the stem width for ResNet-34).
        encoder: ``"light"`` or ``"resnet34"``.
        attention_sigma: Gaussian sigma of the attention smoothing (voxels).
        attention_kernel: Gaussian kernel size.

    Example:
        >>> net = MRNet(2, 1, 2, num_raters=3, channels=(4, 8))
        >>> out = net(torch.zeros(2, 1, 8, 8), torch.full((2, 3), 1 / 3))
        >>> tuple(out.final.shape), tuple(out.raters.shape)
        ((2, 2, 8, 8), (2, 3, 2, 8, 8))

    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        num_raters: int,
        channels: Sequence[int] = (16, 32, 64, 128),
        encoder: EncoderKind = "light",
        attention_sigma: float = 4.0,
        attention_kernel: int = 31,
    ) -> None:
        super().__init__()
        if num_raters < 1:
            raise ConfigError(f"MRNet needs at least one rater, got {num_raters}")
        self.num_raters = num_raters
        self.num_classes = num_classes
        self.coarse = CoarseNet(spatial_dims, in_channels, num_classes, num_raters, channels, encoder)
        self.reconstruction = ReconstructionNet(
            spatial_dims, in_channels, num_classes, num_raters, channels, encoder, attention_sigma, attention_kernel
        )
        self.divisor = self.coarse.encoder.divisor

    def forward(self, image: torch.Tensor, condition: torch.Tensor) -> MRNetOutput:
        """Run both networks for ``image`` ``(B, C, *s)`` and ``condition`` ``(B, R)``."""
        coarse = self.coarse(image, condition)
        rater_logits, final, att = self.reconstruction(image, torch.softmax(coarse.float(), 1).detach(), condition)
        return MRNetOutput(coarse=coarse, raters=rater_logits, final=final, attention=att)

    def feature_reconstruction_loss(
        self,
        image: torch.Tensor,
        coarse_logits: torch.Tensor,
        soft_target: torch.Tensor,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean squared distance between the encodings of (image, coarse prediction) and (image, soft target).

        The target branch is detached; the caller scales the result (1/1000 in the original).

        Args:
            image: ``(B, C, *s)``.
            coarse_logits: ``(B, K, *s)``.
            soft_target: ``(B, K, *s)`` class probabilities.
            valid: ``(B,)`` sample weights.

        """
        enc_pred = self.reconstruction.encode(image, torch.softmax(coarse_logits.float(), 1).to(image.dtype))
        with torch.no_grad():
            enc_target = self.reconstruction.encode(image, soft_target.to(image.dtype))
        per = (enc_pred.float() - enc_target.float()).pow(2).flatten(1).mean(1)
        if valid is None:
            return per.mean()
        w = valid.float()
        return (per * w).sum() / w.sum().clamp(min=1.0)
