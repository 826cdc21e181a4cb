"""Quality Sentinel losses: the weighted MSE bins, the pairwise ranking loss and their sum (values by hand)."""

from __future__ import annotations

import pytest
import torch

from labelwise.models.sentinel_losses import mse_weights, ranking_loss, sentinel_loss


def test_mse_weights_bins() -> None:
    y = torch.tensor([0.0, 0.3, 0.31, 0.5, 0.69, 0.9, 0.95, 1.0])
    w = mse_weights(y, (0.3, 0.5, 0.7, 0.9, 1.0), (7, 5, 3, 2, 1))
    assert w.tolist() == [7, 7, 5, 5, 3, 2, 1, 1]


def test_ranking_loss_by_hand() -> None:
    y = torch.tensor([1.0, 0.0])
    assert float(ranking_loss(torch.tensor([0.9, 0.1]), y)) == 0.0  # right order
    # wrong order: -(0.1 - 0.9) * (1 - 0) = -0.8 -> relu(0.8) = 0.8
    assert float(ranking_loss(torch.tensor([0.1, 0.9]), y)) == pytest.approx(0.8)
    assert float(ranking_loss(torch.tensor([0.5, 0.5]), y, margin=0.1)) == pytest.approx(0.1)
    assert float(ranking_loss(torch.tensor([0.5]), torch.tensor([1.0]))) == 0.0


def test_sentinel_loss_combines_weighted_mse_and_rank() -> None:
    p, y = torch.tensor([0.5, 0.5]), torch.tensor([0.1, 1.0])
    out = sentinel_loss(p, y, rank_weight=2.0)
    mse = (7 * 0.4**2 + 1 * 0.5**2) / 2
    assert float(out["mse"]) == pytest.approx(mse)
    assert float(out["rank"]) == 0.0
    assert float(out["loss"]) == pytest.approx(mse)
