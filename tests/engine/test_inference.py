"""Sliding-window blending, flip TTA and slice-wise prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labelwise.engine import gaussian_importance, predict_probs, predict_slicewise, sliding_window, window_starts


def test_window_starts_cover_and_overlap() -> None:
    assert window_starts(10, 16, 0.5) == [0]
    assert window_starts(16, 16, 0.5) == [0]
    # 40 voxels, patch 16, step 8 -> ceil(24 / 8) + 1 = 4 windows, last one flush with the end
    assert window_starts(40, 16, 0.5) == [0, 8, 16, 24]
    assert window_starts(41, 16, 0.5) == [0, 6, 12, 19, 25]


def test_gaussian_peak_centre_and_floor() -> None:
    g = gaussian_importance((9, 9))
    assert g.shape == (9, 9)
    assert float(g[4, 4]) == pytest.approx(1.0)
    assert float(g.min()) == pytest.approx(1e-4)


@pytest.mark.parametrize("shape", [(37, 29), (12, 40), (10, 10)])
def test_pointwise_network_is_reproduced_exactly(shape: tuple[int, ...]) -> None:
    """For a voxel-wise function, blending any windows must give the function itself (weights cancel)."""
    x = torch.randn(2, 1, *shape)
    fn = lambda t: torch.cat([t * 2, -t], dim=1)  # noqa: E731
    out = sliding_window(fn, x, (16, 16), overlap=0.5, batch_size=3)
    assert out.shape == (2, 2, *shape)
    torch.testing.assert_close(out, fn(x), atol=1e-5, rtol=1e-5)


def test_matches_monai_gaussian_for_a_convnet() -> None:
    from monai.inferers import sliding_window_inference

    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 2, 3, padding=1).eval()
    x = torch.randn(1, 1, 48, 48)
    with torch.no_grad():
        ours = sliding_window(net, x, (16, 16), 0.5)
        ref = sliding_window_inference(x, (16, 16), 4, net, overlap=0.5, mode="gaussian")
    # both equal the full-image convolution except near window borders, where blending differs slightly
    full = net(x).detach()
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))
    assert float((ours - full)[inner].abs().mean()) < float((ref - full)[inner].abs().mean()) + 1e-3


def test_flip_tta_equals_mean_of_flipped_predictions() -> None:
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 3, 3, padding=1)
    img = np.random.default_rng(0).normal(size=(1, 20, 24)).astype(np.float32)
    probs = predict_probs(net, img, (16, 16), 0.5, tta=True)
    assert probs.shape == (3, 20, 24)
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-5)
    manual = np.zeros_like(probs)
    for axes in [(), (0,), (1,), (0, 1)]:
        flipped = np.flip(img, [1 + a for a in axes]).copy()
        p = predict_probs(net, flipped, (16, 16), 0.5, tta=False)
        manual += np.flip(p, [1 + a for a in axes])
    np.testing.assert_allclose(probs, manual / 4, atol=1e-5)


def test_slicewise_equals_per_slice_prediction() -> None:
    torch.manual_seed(0)
    net = torch.nn.Conv2d(2, 2, 3, padding=1)
    vol = np.random.default_rng(1).normal(size=(2, 12, 10, 5)).astype(np.float32)
    out = predict_slicewise(net, vol, (8, 8), 0.5, slices_per_batch=2)
    assert out.shape == (2, 12, 10, 5)
    for z in range(5):
        np.testing.assert_allclose(out[..., z], predict_probs(net, vol[..., z], (8, 8), 0.5), atol=1e-5)
