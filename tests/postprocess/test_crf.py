"""Dense CRF: the exact torch back-end cleans noisy unaries and agrees with the reference package."""

from __future__ import annotations

import numpy as np
import pytest

from labelwise.postprocess import CRFConfig, dense_crf


def _two_region_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, w = 24, 28
    truth = np.zeros((h, w), bool)
    truth[:, 12:] = True
    img = np.where(truth[None], 40.0, 200.0) + rng.normal(0, 3, (3, h, w))
    noisy = np.clip(np.where(truth, 0.7, 0.3) + rng.normal(0, 0.25, (h, w)), 0.01, 0.99).astype(np.float32)
    return img.astype(np.float32), noisy, truth


def test_dense_crf_torch_cleans_a_noisy_unary_along_image_edges() -> None:
    img, noisy, truth = _two_region_case(np.random.default_rng(0))
    before = ((noisy >= 0.5) == truth).mean()
    out = dense_crf(img, noisy, CRFConfig(reference_side=28))
    after = ((out >= 0.5) == truth).mean()
    assert out.shape == noisy.shape and out.dtype == np.float32
    assert before < 0.95 and after > 0.99
    const = dense_crf(img, np.full_like(noisy, 0.2))
    assert float(const.max()) < 0.5  # a constant unary never flips


def test_dense_crf_torch_agrees_with_reference_package() -> None:
    pytest.importorskip("pydensecrf.densecrf")
    img, noisy, truth = _two_region_case(np.random.default_rng(1))
    cfg = CRFConfig(reference_side=28)
    ours = dense_crf(img, noisy, cfg) >= 0.5
    ref = dense_crf(img, noisy, CRFConfig(reference_side=28, backend="pydensecrf")) >= 0.5
    assert (ours == ref).mean() > 0.97
    assert (ref == truth).mean() > 0.97
