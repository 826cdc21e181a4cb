"""``batch_surface_scores``: a stack of 2-D pairs in one compiled call equals the per-pair path."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from labelwise.errors import DataError
from labelwise.metrics import batch_surface_scores, surface_distances


def _stack(n: int, shape: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = np.stack([binary_dilation(rng.random(shape) < 0.01, iterations=2) for _ in range(n)])
    t = np.stack([binary_dilation(rng.random(shape) < 0.01, iterations=2) for _ in range(n)])
    p[0] = False  # pred empty
    t[1] = False  # target empty
    p[2] = t[2] = False  # both empty
    p[3, 0, :4] = True  # touches the image border
    p[4] = False
    t[4] = False
    p[4, 2:5, 2:5] = True
    t[4, 60:63, 60:63] = True  # far apart: KD-tree fallback
    return p, t


def _per_pair(p: np.ndarray, t: np.ndarray, spacing: tuple[float, float], **kw: object) -> np.ndarray:
    q, tol, mode, surface, empty = (kw[k] for k in ("percentile", "tolerance_mm", "mode", "surface", "empty"))
    rows = []
    for a, b in zip(p, t, strict=True):
        sd = surface_distances(a, b, spacing, surface=surface)  # type: ignore[arg-type]
        rows.append(
            [
                sd.hausdorff(empty=empty),  # type: ignore[arg-type]
                sd.hausdorff_percentile(q, mode=mode, empty=empty),  # type: ignore[arg-type]
                sd.assd(empty=empty),  # type: ignore[arg-type]
                sd.masd(empty=empty),  # type: ignore[arg-type]
                sd.nsd(tol, empty=empty),  # type: ignore[arg-type]
            ]
        )
    return np.array(rows)


@pytest.mark.parametrize("surface", ["voxels", "surfels"])
@pytest.mark.parametrize(
    ("percentile", "mode", "empty"), [(95.0, "directed_max", "labelwise"), (90.0, "pooled", "monai")]
)
def test_batch_equals_per_pair(surface: str, percentile: float, mode: str, empty: str) -> None:
    p, t = _stack(12, (64, 70), 0)
    spacing = (0.7, 1.3)
    kw = {"percentile": percentile, "tolerance_mm": 1.5, "mode": mode, "surface": surface, "empty": empty}
    got = batch_surface_scores(p, t, spacing, **kw)  # type: ignore[arg-type]
    ref = _per_pair(p, t, spacing, **kw)
    cols = np.stack([got.hausdorff, got.hausdorff_percentile, got.assd, got.masd, got.nsd], axis=1)
    np.testing.assert_allclose(cols, ref, rtol=0, atol=1e-12)  # equal_nan by default


def test_batch_hand_case_and_validation() -> None:
    p = np.zeros((2, 1, 5), bool)
    t = p.copy()
    p[:, 0, 0] = True
    t[0, 0, 1] = True
    s = batch_surface_scores(p, t, (1.0, 2.0))
    assert s.hausdorff[0] == 2.0 and s.nsd[0] == 0.0
    assert math.isnan(s.hausdorff[1]) and s.nsd[1] == 0.0  # target empty (labelwise)
    with pytest.raises(DataError, match=r"\(N, H, W\)"):
        batch_surface_scores(p[0], t[0])
    with pytest.raises(DataError, match="percentile"):
        batch_surface_scores(p, t, percentile=101)
