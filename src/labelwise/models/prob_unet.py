"""Probabilistic U-Net and D-Persona's stage-II projection heads, for any number of raters.

Kohl et al., "A Probabilistic U-Net for Segmentation of Ambiguous Images", NeurIPS 2018; Wu et al., "Diversified and
Personalized Multi-Rater Medical Image Segmentation", CVPR 2024.

* :class:`GaussianEncoder`: U-Net encoder -> global average pool -> 1x1 conv -> mean and log-std of an
  axis-aligned Gaussian over a ``latent_dim`` code (prior: image only; posterior: image + all R raters, one-hot
  foreground channels plus one presence channel per rater so missing raters are visible, not zeros).
* :class:`Fcomb`: the latent code broadcast over space, concatenated to the backbone's last feature map and
  mixed by a few 1x1 convolutions into K-class logits.
* :class:`ProbUNet`: backbone + prior + posterior + Fcomb; ``sample_logits`` draws N prior samples
  reproducibly from a ``torch.Generator``.
* :class:`PersonaHeads`: R heads; head r runs a conv block on the (frozen) backbone features, pools them to a
  query ``q_r`` and attends over the N prior samples ``Z``: ``z_r = softmax(q_r Z^T / sqrt(L)) Z``, decoded by
  the frozen Fcomb into rater r's segmentation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Independent, Normal

from labelwise.errors import ConfigError
from labelwise.models.blocks import Backbone, ConvBlock, UNetEncoder, conv_nd
from labelwise.models.blocks.unet_parts import EncoderKind

__all__ = ["Fcomb", "GaussianEncoder", "PersonaHeads", "ProbUNet", "posterior_input"]


def posterior_input(image: torch.Tensor, raters_onehot: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """The posterior net's input: ``[image, fg one-hot of each rater, presence of each rater]``.

    Args:
        image: ``(B, C, *s)``.
        raters_onehot: ``(B, R, K, *s)`` one-hot rater maps (zeros for missing raters).
        present: ``(B, R)`` bool.

    Returns:
        ``(B, C + R * max(K - 1, 1) + R, *s)``.

    """
    b, r, k = raters_onehot.shape[:3]
    fg = raters_onehot[:, :, 1:] if k > 1 else raters_onehot
    spatial = image.shape[2:]
    pres = present.to(image.dtype).reshape(b, r, *([1] * len(spatial))).expand(b, r, *spatial)
    return torch.cat([image, fg.reshape(b, -1, *spatial).to(image.dtype), pres], dim=1)


class GaussianEncoder(nn.Module):
    """Image (+ labels) -> axis-aligned Gaussian ``N(mu, diag(sigma^2))`` over a ``latent_dim`` code."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        latent_dim: int,
        channels: Sequence[int] = (16, 32, 64, 128),
        encoder: EncoderKind = "light",
    ) -> None:
        super().__init__()
        self.encoder = UNetEncoder(spatial_dims, in_channels, channels, encoder)
        self.head = conv_nd(spatial_dims)(self.encoder.out_channels[-1], 2 * latent_dim, 1)
        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor) -> Independent:  # type: ignore[type-arg]
        """The distribution for ``x`` ``(B, in, *s)``; batch shape ``(B,)``, event shape ``(latent_dim,)``."""
        h = self.encoder(x)[-1]
        h = h.flatten(2).mean(2).reshape(h.shape[0], h.shape[1], *([1] * (h.ndim - 2)))
        mu, log_sigma = torch.chunk(self.head(h).flatten(1).float(), 2, dim=1)
        return Independent(Normal(mu, torch.exp(log_sigma.clamp(-10, 5))), 1)


class Fcomb(nn.Module):
    """Mix a latent code into features: ``(B, F, *s), (B, L) -> (B, K, *s)`` logits via 1x1 convolutions."""

    def __init__(
        self, spatial_dims: int, feature_channels: int, latent_dim: int, num_classes: int, layers: int = 3
    ) -> None:
        super().__init__()
        conv = conv_nd(spatial_dims)
        mods: list[nn.Module] = []
        c = feature_channels + latent_dim
        for _ in range(max(layers - 1, 0)):
            mods += [conv(c, feature_channels, 1), nn.ReLU(inplace=True)]
            c = feature_channels
        mods.append(conv(c, num_classes, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Logits for features and one code per batch element."""
        zmap = z.to(features.dtype).reshape(*z.shape, *([1] * (features.ndim - 2))).expand(-1, -1, *features.shape[2:])
        out: torch.Tensor = self.net(torch.cat([features, zmap], dim=1))
        return out


class ProbUNet(nn.Module):
    """Probabilistic U-Net whose posterior sees all R raters.

    Args:
        spatial_dims: 2 or 3.
        in_channels: Image channels C.
        num_classes: K classes including background.
        num_raters: R >= 1.
        latent_dim: Size L of the latent code (6 in D-Persona).
        channels: Encoder widths (light encoder; stem width for ResNet-34).
        encoder: ``"light"`` or ``"resnet34"`` (backbone, prior and posterior).
        fcomb_layers: 1x1 convolutions in Fcomb.

    Example:
        >>> net = ProbUNet(2, 1, 2, num_raters=3, channels=(4, 8))
        >>> net.sample_logits(torch.zeros(1, 1, 8, 8), 5).shape
        torch.Size([5, 1, 2, 8, 8])

    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        num_raters: int,
        latent_dim: int = 6,
        channels: Sequence[int] = (16, 32, 64, 128),
        encoder: EncoderKind = "light",
        fcomb_layers: int = 3,
    ) -> None:
        super().__init__()
        if num_raters < 1:
            raise ConfigError(f"the probabilistic U-Net needs at least one rater, got {num_raters}")
        self.num_raters = num_raters
        self.num_classes = num_classes
        self.latent_dim = latent_dim
        self.backbone = Backbone(spatial_dims, in_channels, channels, encoder)
        self.prior = GaussianEncoder(spatial_dims, in_channels, latent_dim, channels, encoder)
        post_in = in_channels + num_raters * max(num_classes - 1, 1) + num_raters
        self.posterior = GaussianEncoder(spatial_dims, post_in, latent_dim, channels, encoder)
        self.fcomb = Fcomb(spatial_dims, self.backbone.out_channels, latent_dim, num_classes, fcomb_layers)
        self.divisor = self.backbone.divisor

    def forward(self, image: torch.Tensor, posterior_in: torch.Tensor) -> tuple[torch.Tensor, Independent, Independent]:  # type: ignore[type-arg]
        """The training pass: backbone features, prior and posterior of ``image`` ``(B, C, *s)``.

        Training calls this through the engine's (possibly DDP-wrapped) module, so that under DDP the gradients
        of every part are averaged across processes.

        Args:
            image: ``(B, C, *s)``.
            posterior_in: ``(B, C + R (K - 1) + R, *s)`` from :func:`posterior_input`.

        Returns:
            ``(features (B, F, *s), prior, posterior)``; the distributions have batch shape ``(B,)``.

        """
        return self.backbone(image), self.prior(image), self.posterior(posterior_in)

    def decode_samples(self, features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Decode codes ``(N, B, L)`` with features ``(B, F, *s)`` into logits ``(N, B, K, *s)``."""
        n, b = z.shape[:2]
        feats = features.unsqueeze(0).expand(n, *features.shape).reshape(n * b, *features.shape[1:])
        out: torch.Tensor = self.fcomb(feats, z.reshape(n * b, -1))
        return out.reshape(n, b, self.num_classes, *features.shape[2:])

    def draw_prior(self, image: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` codes ``(n, B, L)`` from the prior (reparameterised: differentiable w.r.t. the prior net)."""
        dist = self.prior(image)
        mu, sigma = dist.base_dist.loc, dist.base_dist.scale
        eps = torch.randn((n, *mu.shape), generator=generator, device=mu.device if generator is None else None)
        out: torch.Tensor = mu + sigma * eps.to(mu.device)
        return out

    def sample_logits(self, image: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, B, K, *s)`` logits of ``n`` prior samples for ``image`` ``(B, C, *s)``."""
        return self.decode_samples(self.backbone(image), self.draw_prior(image, n, generator))


class PersonaHeads(nn.Module):
    """D-Persona stage II: one attention-based projection head per rater.

    Args:
        spatial_dims: 2 or 3.
        feature_channels: Channels F of the backbone features the heads read.
        num_raters: R.
        latent_dim: L.
        hidden: Width of each head's conv block.

    ``forward(features (B, F, *s), samples (N, B, L)) -> (codes (B, R, L), attention (B, R, N))``.

    """

    def __init__(
        self, spatial_dims: int, feature_channels: int, num_raters: int, latent_dim: int, hidden: int = 16
    ) -> None:
        super().__init__()
        self.num_raters = num_raters
        self.latent_dim = latent_dim
        self.blocks = nn.ModuleList([ConvBlock(spatial_dims, feature_channels, hidden) for _ in range(num_raters)])
        self.queries = nn.ModuleList([nn.Linear(hidden, latent_dim) for _ in range(num_raters)])
        self.keys = nn.Linear(latent_dim, latent_dim)

    def forward(self, features: torch.Tensor, samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each rater's code as an attention-weighted mix of the samples."""
        z = samples.transpose(0, 1).float()  # (B, N, L)
        keys = self.keys(z)
        codes, attns = [], []
        for block, query in zip(self.blocks, self.queries, strict=True):
            q = query(block(features).flatten(2).mean(2).float())  # (B, L)
            attn = torch.softmax(torch.einsum("bl,bnl->bn", q, keys) / math.sqrt(self.latent_dim), dim=1)
            codes.append(torch.einsum("bn,bnl->bl", attn, z))
            attns.append(attn)
        return torch.stack(codes, 1), torch.stack(attns, 1)
