"""Probabilistic U-Net and D-Persona heads: shapes for R = 2..10, reproducible sampling, losses."""

from __future__ import annotations

import pytest
import torch

from labelwise.models.multirater_losses import bound_constrained_loss, generalised_dice_loss, one_hot_raters
from labelwise.models.prob_unet import PersonaHeads, ProbUNet, posterior_input


@pytest.mark.parametrize("num_raters", [2, 4, 7, 10])
def test_prob_unet_shapes_any_rater_count(num_raters: int) -> None:
    torch.manual_seed(0)
    net = ProbUNet(2, 1, 2, num_raters, latent_dim=6, channels=(4, 8, 16))
    x = torch.randn(2, 1, 16, 16)
    raters = torch.randint(0, 2, (2, num_raters, 16, 16))
    raters[0, 0] = -1  # a missing rater
    oh = one_hot_raters(raters, 2)
    present = raters.flatten(2).min(2).values >= 0
    inp = posterior_input(x, oh, present)
    assert inp.shape == (2, 1 + num_raters + num_raters, 16, 16)
    assert float(inp[0, 1 + num_raters].abs().max()) == 0.0  # presence channel of the missing rater
    assert float(inp[1, 1 + num_raters].min()) == 1.0
    post, prior = net.posterior(inp), net.prior(x)
    assert post.batch_shape == (2,) and post.event_shape == (6,)
    assert (torch.distributions.kl_divergence(post, prior) >= 0).all()
    assert net.sample_logits(x, 5).shape == (5, 2, 2, 16, 16)
    heads = PersonaHeads(2, net.backbone.out_channels, num_raters, 6, hidden=4)
    codes, attn = heads(net.backbone(x), net.draw_prior(x, 5))
    assert codes.shape == (2, num_raters, 6) and attn.shape == (2, num_raters, 5)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, num_raters))


def test_sampling_is_reproducible_with_a_generator() -> None:
    torch.manual_seed(0)
    net = ProbUNet(2, 1, 2, 3, channels=(4, 8)).eval()
    x = torch.randn(1, 1, 8, 8)
    a = net.sample_logits(x, 4, torch.Generator().manual_seed(3))
    b = net.sample_logits(x, 4, torch.Generator().manual_seed(3))
    c = net.sample_logits(x, 4, torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_head_codes_are_convex_mixtures_of_the_samples() -> None:
    torch.manual_seed(0)
    heads = PersonaHeads(2, 4, 3, 2, hidden=4)
    z = torch.tensor([[[0.0, 0.0]], [[1.0, 2.0]], [[-1.0, 4.0]]])  # (N=3, B=1, L=2)
    codes, _ = heads(torch.randn(1, 4, 8, 8), z)
    assert (codes[..., 0] >= -1 - 1e-6).all() and (codes[..., 0] <= 1 + 1e-6).all()
    assert (codes[..., 1] >= -1e-6).all() and (codes[..., 1] <= 4 + 1e-6).all()


def test_generalised_dice_loss_hand_values() -> None:
    t = torch.zeros(1, 2, 4, 4)
    t[0, 1, :2] = 1
    t[0, 0] = 1 - t[0, 1]
    assert float(generalised_dice_loss(t, t)) == pytest.approx(0.0, abs=1e-6)
    assert float(generalised_dice_loss(1 - t, t)) == pytest.approx(1.0, abs=1e-5)
    # invalid samples are ignored
    both = torch.cat([t, 1 - t])
    assert float(generalised_dice_loss(both, torch.cat([t, t]), torch.tensor([1.0, 0.0]))) == pytest.approx(
        0.0, abs=1e-6
    )
    # empty foreground in target: finite
    e = torch.zeros(1, 2, 4, 4)
    e[0, 0] = 1
    assert torch.isfinite(generalised_dice_loss(torch.full((1, 2, 4, 4), 0.5), e))


def test_bound_loss_zero_when_sample_range_matches_rater_range_and_ignores_missing() -> None:
    # raters: r0 = left half, r1 = left quarter, r2 missing (would be everything)
    raters = torch.zeros(1, 3, 4, 4, dtype=torch.long)
    raters[0, 0, :, :2] = 1
    raters[0, 1, :, :1] = 1
    raters[0, 2] = -1
    oh = one_hot_raters(raters, 2)
    present = torch.tensor([[True, True, False]])
    union, inter = oh[0, 0, 1], oh[0, 1, 1]
    samples = torch.stack([torch.stack([1 - m, m])[None] for m in (union, inter)])  # (N=2, B=1, K=2, 4, 4)
    assert float(bound_constrained_loss(samples, oh, present)) == pytest.approx(0.0, abs=1e-6)
    shrunk = torch.stack([torch.stack([1 - m, m])[None] for m in (inter, inter)])
    assert float(bound_constrained_loss(shrunk, oh, present)) > 0.1
