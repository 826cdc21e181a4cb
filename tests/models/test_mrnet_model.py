"""MRNet network pieces: condition validation, shapes for R = 2..10, attention, losses with missing raters."""

from __future__ import annotations

import math

import pytest
import torch

from labelwise.errors import ConfigError
from labelwise.methods.mrnet import draw_conditions
from labelwise.models.blocks import ConvLSTMCell, gaussian_smooth
from labelwise.models.mrnet import MRNet, check_condition, rater_std_attention
from labelwise.models.multirater_losses import one_hot_raters, rater_presence, soft_cross_entropy


def test_check_condition_accepts_valid_and_rejects_bad() -> None:
    assert check_condition([0.5, 0.5, 0.0], 3) == (0.5, 0.5, 0.0)
    assert check_condition([1 / 3] * 3, 3) == pytest.approx((1 / 3,) * 3)
    with pytest.raises(ConfigError, match="3 raters"):
        check_condition([0.5, 0.5], 3)  # wrong length
    with pytest.raises(ConfigError, match="non-negative"):
        check_condition([1.5, -0.5], 2)
    with pytest.raises(ConfigError, match="sum to 1"):
        check_condition([0.5, 0.4], 2)
    with pytest.raises(ConfigError, match="finite"):
        check_condition([math.nan, 1.0], 2)


@pytest.mark.parametrize("num_raters", [2, 3, 7, 10])
def test_mrnet_shapes_any_rater_count(num_raters: int) -> None:
    torch.manual_seed(0)
    net = MRNet(2, 1, 2, num_raters, channels=(4, 8, 16))
    cond = torch.full((2, num_raters), 1.0 / num_raters)
    out = net(torch.randn(2, 1, 16, 16), cond)
    assert out.coarse.shape == (2, 2, 16, 16)
    assert out.final.shape == (2, 2, 16, 16)
    assert out.raters.shape == (2, num_raters, 2, 16, 16)
    assert out.attention.shape == (2, 1, 16, 16)
    assert float(out.attention.min()) >= 0.0 and float(out.attention.max()) <= 1.0 + 1e-6


def test_mrnet_3d_and_multiclass() -> None:
    net = MRNet(3, 2, 3, 4, channels=(4, 8))
    out = net(torch.randn(1, 2, 8, 8, 8), torch.full((1, 4), 0.25))
    assert out.final.shape == (1, 3, 8, 8, 8) and out.raters.shape == (1, 4, 3, 8, 8, 8)


def test_condition_changes_the_output_and_bad_shape_is_rejected() -> None:
    torch.manual_seed(0)
    net = MRNet(2, 1, 2, 3, channels=(4, 8)).eval()
    x = torch.randn(1, 1, 8, 8)
    a = net(x, torch.tensor([[1.0, 0.0, 0.0]])).final
    b = net(x, torch.tensor([[0.0, 0.0, 1.0]])).final
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="condition"):
        net(x, torch.tensor([[0.5, 0.5]]))


def test_feature_reconstruction_is_zero_when_prediction_equals_target() -> None:
    torch.manual_seed(0)
    net = MRNet(2, 1, 2, 2, channels=(4, 8)).requires_grad_(False)
    x = torch.randn(2, 1, 8, 8)
    logits = torch.randn(2, 2, 8, 8)
    target = torch.softmax(logits, 1)
    assert float(net.feature_reconstruction_loss(x, logits, target)) == pytest.approx(0.0, abs=1e-10)
    assert float(net.feature_reconstruction_loss(x, logits, 1 - target)) > 0


def test_attention_peaks_where_raters_disagree() -> None:
    # 3 raters agree (fg prob 0) everywhere except a 3x3 square where their probabilities are 0, 0.5 and 1.
    fg = torch.zeros(1, 3, 16, 16)
    fg[0, 1, 6:9, 6:9] = 0.5
    fg[0, 2, 6:9, 6:9] = 1.0
    rater_probs = torch.stack([1 - fg, fg], dim=2)
    coarse = torch.stack([torch.ones(1, 16, 16), torch.zeros(1, 16, 16)], dim=1)
    att = rater_std_attention(rater_probs, coarse, sigma=1.0, kernel_size=5)
    assert att.shape == (1, 1, 16, 16)
    assert float(att.max()) == pytest.approx(1.0) and float(att.min()) == pytest.approx(0.0)
    assert float(att[0, 0, 7, 7]) == pytest.approx(1.0)  # centre of the disagreement
    assert float(att[0, 0, 0, 0]) == pytest.approx(0.0)
    # all raters identical and a constant coarse map -> constant -> all zeros after min-max
    same = rater_std_attention(torch.stack([1 - fg[:, :1].expand(1, 3, 16, 16)] * 2, 2), coarse, 1.0, 5)
    assert float(same.abs().max()) == 0.0


def test_gaussian_smooth_keeps_constants_and_mass() -> None:
    x = torch.full((1, 2, 10, 12), 3.0)
    torch.testing.assert_close(gaussian_smooth(x, 2.0, 31), x)
    d = torch.zeros(1, 1, 21, 21)
    d[0, 0, 10, 10] = 1.0
    s = gaussian_smooth(d, 1.5, 9)
    assert float(s.sum()) == pytest.approx(1.0, abs=1e-5) and float(s[0, 0, 10, 10]) == float(s.max())


def test_convlstm_cell_shapes() -> None:
    cell = ConvLSTMCell(3, 5, 3)
    h, c = cell(torch.zeros(2, 5, 4, 4, 4), (torch.zeros(2, 3, 4, 4, 4), torch.zeros(2, 3, 4, 4, 4)))
    assert h.shape == c.shape == (2, 3, 4, 4, 4)


def test_draw_conditions_respect_missing_raters() -> None:
    torch.manual_seed(0)
    present = torch.tensor([[True, False, True, True], [False, False, False, False]])
    conds = draw_conditions(present, 10)
    assert conds.shape == (3, 2, 4)
    torch.testing.assert_close(conds.sum(-1), torch.ones(3, 2))
    assert (conds[:, 0, 1] == 0).all()  # the missing rater never gets weight
    torch.testing.assert_close(conds[0, 0], torch.tensor([1 / 3, 0, 1 / 3, 1 / 3]))
    assert conds[2, 0].max() == 1.0 and conds[2, 0, 1] == 0
    assert (conds[1, 0][present[0]] > 0).all()


def test_soft_cross_entropy_ignores_invalid_samples() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 4, 4)
    raters = torch.randint(0, 2, (2, 3, 4, 4))
    raters[1] = -1  # second sample: no rater at all
    present = rater_presence(raters)
    assert present.tolist() == [[True] * 3, [False] * 3]
    oh = one_hot_raters(raters, 2)
    assert float(oh[1].abs().sum()) == 0.0
    target = oh.mean(1)
    valid = present.any(1)
    a = soft_cross_entropy(logits, target, valid)
    target2 = target.clone()
    target2[1] = 0.5
    assert float(soft_cross_entropy(logits, target2, valid)) == pytest.approx(float(a))
    assert float(a) == pytest.approx(float(soft_cross_entropy(logits[:1], target[:1])))


def test_resnet34_encoder_pyramid() -> None:
    from labelwise.models.blocks import UNetEncoder

    enc = UNetEncoder(2, 1, (8,), "resnet34")
    feats = enc(torch.randn(2, 1, 64, 64))
    assert enc.divisor == 32
    assert [tuple(f.shape[1:]) for f in feats] == [
        (8, 64, 64), (64, 32, 32), (64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)
    ]  # fmt: skip
