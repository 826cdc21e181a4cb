"""Networks of CLTN: a U-GAT-IT-style generator whose attention mask is the segmentation, CAM discriminators.

Du et al., "Consistency label transfer network for weakly supervised medical image segmentation", 2021; the
generator and discriminator follow Kim et al., "U-GAT-IT", ICLR 2020 (CAM attention, AdaILN), written here from
the papers' descriptions.

Generator (:class:`CLTNGenerator`), input ``(B, C, S, S)`` in [-1, 1]:

1. encoder: 7x7 conv, ``n_down`` stride-2 3x3 convs (instance norm, ReLU), ``n_res`` residual blocks;
2. CAM branch: global average- and max-pooled features each go through a bias-free linear unit; the two logits
   form ``cam_logit`` ``(B, 2)`` (a domain classifier: "is this the source domain?") and the units' weights
   re-weight the feature channels; the two weighted maps are concatenated and fused by a 1x1 conv + ReLU;
3. **attention mask head**: a 3x3 conv + sigmoid on the CAM-weighted features: ``m`` at the feature size,
   bilinearly upsampled to the input size: ``mask`` ``(B, 1, S, S)`` in [0, 1], the segmentation;
4. **reconstruction branch**: the encoder features go through ``n_res`` ILN residual blocks and their own
   up-sampling decoder: ``reconstructed``, trained to reproduce the input (an auto-encoder path);
5. decoder: ``n_res`` residual blocks with AdaILN whose gamma/beta come from an MLP on the pooled CAM features;
   after block ``i`` the features are **mixed by the mask**, ``y_i * m + r_i * (1 - m)`` with ``r_i`` the
   reconstruction branch's features after its block ``i``; then ``n_down`` nearest-upsample + 3x3 conv + ILN +
   ReLU stages, 7x7 conv + tanh: ``translated``. Outside the mask the translation is decoded from the
   auto-encoder features, so an identity mapping (healthy input) is cheapest with ``m = 0`` and a change
   (lesion input) needs ``m = 1`` where it happens: that is what drives the mask;
6. fusion: ``fused = translated * mask + input * (1 - mask)`` (only the masked region may change).

Discriminator (:class:`CLTNDiscriminator`): ``n_layers - 1`` stride-2 4x4 spectral-norm convs, one stride-1,
the same CAM branch (logits ``(B, 2)``), and a 4x4 conv to a patch map of real/fake scores. A *global*
discriminator uses more layers (large receptive field) and a *local* one fewer (patch texture).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from labelwise.models.registry import register_model

__all__ = [
    "ILN",
    "AdaILN",
    "CLTNDiscriminator",
    "CLTNGenerator",
    "DiscriminatorOutput",
    "GeneratorOutput",
    "cltn_discriminator",
    "cltn_generator",
    "discriminator_layers",
]


class GeneratorOutput(NamedTuple):
    """What the generator returns (all ``(B, ...)`` float tensors).

    Attributes:
        translated: ``(B, C, S, S)`` translated image in [-1, 1].
        fused: ``(B, C, S, S)`` ``translated * mask + input * (1 - mask)``.
        mask: ``(B, 1, S, S)`` attention mask in [0, 1] (the segmentation).
        cam_logit: ``(B, 2)`` average- and max-pool domain logits ("is this the source domain?").
        heatmap: ``(B, 1, S / 2**n_down, S / 2**n_down)`` channel sum of the CAM-weighted features.
        reconstructed: ``(B, C, S, S)`` output of the reconstruction (auto-encoder) branch in [-1, 1].

    """

    translated: torch.Tensor
    fused: torch.Tensor
    mask: torch.Tensor
    cam_logit: torch.Tensor
    heatmap: torch.Tensor
    reconstructed: torch.Tensor


class DiscriminatorOutput(NamedTuple):
    """Patch scores ``(B, 1, h, w)``, CAM logits ``(B, 2)`` and heatmap ``(B, 1, h', w')``."""

    scores: torch.Tensor
    cam_logit: torch.Tensor
    heatmap: torch.Tensor


def _in_ln(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    in_mean, in_var = x.mean(dim=(2, 3), keepdim=True), x.var(dim=(2, 3), keepdim=True, unbiased=False)
    ln_mean, ln_var = x.mean(dim=(1, 2, 3), keepdim=True), x.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
    return (x - in_mean) / torch.sqrt(in_var + eps), (x - ln_mean) / torch.sqrt(ln_var + eps)


class AdaILN(nn.Module):
    """Adaptive instance-layer normalisation: ``rho * IN(x) + (1 - rho) * LN(x)`` scaled by given gamma/beta.

    Args:
        channels: Feature channels.
        eps: Variance epsilon.

    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.rho = nn.Parameter(torch.full((1, channels, 1, 1), 0.9))

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, C, H, W)``, ``gamma``/``beta`` ``(B, C)``."""
        x_in, x_ln = _in_ln(x, self.eps)
        rho = self.rho.clamp(0, 1)
        out = rho * x_in + (1 - rho) * x_ln
        return out * gamma[:, :, None, None] + beta[:, :, None, None]


class ILN(nn.Module):
    """Instance-layer normalisation with learned rho, gamma and beta (decoder up-sampling stages)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.rho = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``(B, C, H, W)``."""
        x_in, x_ln = _in_ln(x, self.eps)
        rho = self.rho.clamp(0, 1)
        return (rho * x_in + (1 - rho) * x_ln) * self.gamma + self.beta


class _ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(ch, ch, 3, bias=False),
            nn.InstanceNorm2d(ch),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(ch, ch, 3, bias=False),
            nn.InstanceNorm2d(ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x + self.body(x)
        return out


class _ILNResBlock(nn.Module):
    """Residual block with ILN (reconstruction branch)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(ch, ch, 3, bias=False),
            ILN(ch),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(ch, ch, 3, bias=False),
            ILN(ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x + self.body(x)
        return out


def _up_decoder(ch: int, n_down: int, out_channels: int) -> nn.Sequential:
    up: list[nn.Module] = []
    for _ in range(n_down):
        up += [
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.ReflectionPad2d(1),
            nn.Conv2d(ch, ch // 2, 3, bias=False),
            ILN(ch // 2),
            nn.ReLU(True),
        ]
        ch //= 2
    up += [nn.ReflectionPad2d(3), nn.Conv2d(ch, out_channels, 7, bias=False), nn.Tanh()]
    return nn.Sequential(*up)


class _AdaResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3, bias=False))
        self.norm1 = AdaILN(ch)
        self.conv2 = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3, bias=False))
        self.norm2 = AdaILN(ch)

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x), gamma, beta))
        res: torch.Tensor = x + self.norm2(self.conv2(out), gamma, beta)
        return res


def _maybe_sn(layer: nn.Linear, sn: bool) -> nn.Linear:
    return spectral_norm(layer) if sn else layer


class _CAMBranch(nn.Module):
    """Average/max-pool logits whose weights re-weight the channels; returns (features, logits, heatmap)."""

    def __init__(self, ch: int, sn: bool, act: nn.Module) -> None:
        super().__init__()
        self.gap_fc = _maybe_sn(nn.Linear(ch, 1, bias=False), sn)
        self.gmp_fc = _maybe_sn(nn.Linear(ch, 1, bias=False), sn)
        self.fuse = nn.Conv2d(2 * ch, ch, 1)
        self.act = act

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        gap_logit = self.gap_fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
        gmp_logit = self.gmp_fc(F.adaptive_max_pool2d(x, 1).flatten(1))
        w_gap = self.gap_fc.weight.reshape(1, -1, 1, 1)
        w_gmp = self.gmp_fc.weight.reshape(1, -1, 1, 1)
        feat = self.act(self.fuse(torch.cat([x * w_gap, x * w_gmp], 1)))
        return feat, torch.cat([gap_logit, gmp_logit], 1), feat.sum(dim=1, keepdim=True)


class CLTNGenerator(nn.Module):
    """U-GAT-IT-style generator with an attention-mask head (see the module docstring).

    Args:
        in_channels: Image channels (the output has the same number, so fusion is defined).
        ngf: Channels of the first stage (doubled at each down-sampling).
        n_down: Stride-2 down-sampling stages (the input side must be divisible by ``2**n_down``).
        n_res: Residual blocks in the encoder and (AdaILN) in the decoder.

    """

    def __init__(self, in_channels: int = 3, ngf: int = 16, n_down: int = 2, n_res: int = 2) -> None:
        super().__init__()
        self.n_down = n_down
        enc: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, 7, bias=False),
            nn.InstanceNorm2d(ngf),
            nn.ReLU(True),
        ]
        ch = ngf
        for _ in range(n_down):
            enc += [
                nn.ReflectionPad2d(1),
                nn.Conv2d(ch, ch * 2, 3, stride=2, bias=False),
                nn.InstanceNorm2d(ch * 2),
                nn.ReLU(True),
            ]
            ch *= 2
        enc += [_ResBlock(ch) for _ in range(n_res)]
        self.encoder = nn.Sequential(*enc)
        self.cam = _CAMBranch(ch, sn=False, act=nn.ReLU(True))
        self.mask_head = nn.Conv2d(ch, 1, 3, padding=1)
        self.mlp = nn.Sequential(nn.Linear(ch, ch), nn.ReLU(True), nn.Linear(ch, ch), nn.ReLU(True))
        self.gamma = nn.Linear(ch, ch)
        self.beta = nn.Linear(ch, ch)
        self.dec_res = nn.ModuleList(_AdaResBlock(ch) for _ in range(n_res))
        self.rec_res = nn.ModuleList(_ILNResBlock(ch) for _ in range(n_res))
        self.decoder = _up_decoder(ch, n_down, in_channels)
        self.rec_decoder = _up_decoder(ch, n_down, in_channels)

    def forward(self, x: torch.Tensor) -> GeneratorOutput:
        """Translate ``x`` ``(B, C, S, S)`` in [-1, 1]; returns a :class:`GeneratorOutput`."""
        f = 2**self.n_down
        if x.shape[-1] % f or x.shape[-2] % f:
            raise ValueError(f"input size {tuple(x.shape[-2:])} must be divisible by {f}")
        enc = self.encoder(x)
        feat, cam_logit, heatmap = self.cam(enc)
        m = torch.sigmoid(self.mask_head(feat))
        mask = F.interpolate(m, size=x.shape[-2:], mode="bilinear", align_corners=False)
        h = self.mlp(F.adaptive_avg_pool2d(feat, 1).flatten(1))
        gamma, beta = self.gamma(h), self.beta(h)
        y, r = feat, enc
        for block, rec_block in zip(self.dec_res, self.rec_res, strict=True):
            r = rec_block(r)
            y = block(y, gamma, beta) * m + r * (1 - m)
        translated = self.decoder(y)
        reconstructed = self.rec_decoder(r)
        fused = translated * mask + x * (1 - mask)
        return GeneratorOutput(translated, fused, mask, cam_logit, heatmap, reconstructed)


class CLTNDiscriminator(nn.Module):
    """PatchGAN discriminator with a CAM branch and spectral normalisation (see the module docstring).

    Args:
        in_channels: Image channels.
        ndf: Channels of the first layer (doubled per stride-2 layer).
        n_layers: Total conv layers before the CAM branch (>= 2); ``n_layers - 2`` halve the size after the
            first stride-2 layer, so the input must be at least ``2**(n_layers - 1) * 4`` pixels.

    """

    def __init__(self, in_channels: int = 3, ndf: int = 16, n_layers: int = 5) -> None:
        super().__init__()
        if n_layers < 2:
            raise ValueError(f"n_layers must be >= 2, got {n_layers}")
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            spectral_norm(nn.Conv2d(in_channels, ndf, 4, 2)),
            nn.LeakyReLU(0.2, True),
        ]
        ch = ndf
        for _ in range(n_layers - 2):
            layers += [nn.ReflectionPad2d(1), spectral_norm(nn.Conv2d(ch, ch * 2, 4, 2)), nn.LeakyReLU(0.2, True)]
            ch *= 2
        layers += [nn.ReflectionPad2d(1), spectral_norm(nn.Conv2d(ch, ch * 2, 4, 1)), nn.LeakyReLU(0.2, True)]
        ch *= 2
        self.body = nn.Sequential(*layers)
        self.cam = _CAMBranch(ch, sn=True, act=nn.LeakyReLU(0.2, True))
        self.head = nn.Sequential(nn.ReflectionPad2d(1), spectral_norm(nn.Conv2d(ch, 1, 4, 1, bias=False)))

    def forward(self, x: torch.Tensor) -> DiscriminatorOutput:
        """Score ``x`` ``(B, C, S, S)``; returns a :class:`DiscriminatorOutput`."""
        feat, cam_logit, heatmap = self.cam(self.body(x))
        return DiscriminatorOutput(self.head(feat), cam_logit, heatmap)


def discriminator_layers(image_size: int, wanted: int) -> int:
    """``wanted`` layers, reduced so that the patch map of an ``image_size`` input keeps at least 2x2 pixels."""
    fit = int(math.log2(max(image_size, 8))) - 2
    return max(2, min(wanted, fit))


@register_model("cltn_generator")
def cltn_generator(
    spatial_dims: int, in_channels: int, out_channels: int, ngf: int = 16, n_down: int = 2, n_res: int = 2
) -> CLTNGenerator:
    """Registry factory of :class:`CLTNGenerator` (2D only; ``out_channels`` must equal ``in_channels``)."""
    if spatial_dims != 2 or out_channels != in_channels:
        raise ValueError("cltn_generator is 2D and maps C channels to C channels")
    return CLTNGenerator(in_channels, ngf, n_down, n_res)


@register_model("cltn_discriminator")
def cltn_discriminator(
    spatial_dims: int, in_channels: int, out_channels: int = 1, ndf: int = 16, n_layers: int = 5
) -> CLTNDiscriminator:
    """Registry factory of :class:`CLTNDiscriminator` (2D only; one score channel)."""
    if spatial_dims != 2 or out_channels != 1:
        raise ValueError("cltn_discriminator is 2D with one score channel")
    return CLTNDiscriminator(in_channels, ndf, n_layers)
