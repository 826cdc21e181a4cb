from __future__ import annotations

import math

import numpy as np
import pytest

from labelwise.errors import ConfigError, DataError
from labelwise.metrics import (
    Confusion,
    accuracy,
    batch_confusion,
    confusion,
    confusion_matrix,
    dice,
    iou,
    overlap_from_counts,
    per_class_confusion,
    per_class_overlap,
    precision,
    sensitivity,
    specificity,
    volume_similarity,
)


def _masks(shape: tuple[int, ...], seed: int, p: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random(shape) < p, rng.random(shape) < p


def test_hand_counts_and_scores() -> None:
    pred = np.array([1, 1, 1, 0, 0, 0, 0], bool)
    target = np.array([1, 1, 0, 1, 0, 0, 0], bool)
    c = confusion(pred, target)
    assert c == Confusion(tp=2, fp=1, fn=1, tn=3)
    assert dice(pred, target) == pytest.approx(4 / 6)
    assert iou(pred, target) == pytest.approx(2 / 4)
    assert precision(pred, target) == pytest.approx(2 / 3)
    assert sensitivity(pred, target) == pytest.approx(2 / 3)
    assert specificity(pred, target) == pytest.approx(3 / 4)
    assert accuracy(pred, target) == pytest.approx(5 / 7)
    assert volume_similarity(pred, target) == pytest.approx(1.0)
    avd = overlap_from_counts(np.array([2, 3, 1, 0]), "abs_volume_difference", voxel_volume_mm3=0.5)
    assert float(avd) == pytest.approx(1.0)  # |3 - 1| voxels * 0.5 mm^3


@pytest.mark.parametrize("n", [1, 7, 8, 9, 255 * 8 + 3, 4096 * 8 + 5])
def test_fused_counter_matches_numpy_for_odd_sizes(n: int) -> None:
    p, t = _masks((n,), n, 0.5)
    c = confusion(p, t)
    assert (c.tp, c.fp, c.fn, c.tn) == (
        int((p & t).sum()),
        int((p & ~t).sum()),
        int((~p & t).sum()),
        int((~p & ~t).sum()),
    )


def test_non_contiguous_and_numeric_inputs() -> None:
    p, t = _masks((20, 30, 40), 1)
    pv, tv = p[:, ::2, 1:], t[:, ::2, 1:]
    expect = 2 * (pv & tv).sum() / (pv.sum() + tv.sum())
    assert dice(pv, tv) == pytest.approx(expect)
    assert dice(pv.astype(np.float32), tv.astype(np.uint8) * 3) == pytest.approx(expect)


def test_empty_conventions() -> None:
    e = np.zeros((3, 3), bool)
    f = np.eye(3, dtype=bool)
    assert dice(e, e) == 1.0
    assert math.isnan(dice(e, e, empty="nnunet"))
    assert math.isnan(dice(e, e, empty="monai"))
    assert dice(e, e, empty="flare") == 1.0
    assert dice(e, e, empty="metricsreloaded") == 1.0
    assert dice(f, e) == 0.0 and dice(e, f) == 0.0
    assert math.isnan(dice(f, e, empty="monai"))  # MONAI ignore_empty: empty reference -> nan
    assert dice(e, f, empty="monai") == 0.0
    assert math.isnan(precision(e, f))  # empty prediction, non-empty reference: undefined
    assert specificity(e, e) == 1.0 and specificity(e, e, empty="nnunet") == 1.0  # tn / tn is defined
    for metric in ("dice", "iou", "precision", "sensitivity", "specificity", "volume_similarity"):
        for a, b in ((e, e), (f, e), (e, f), (f, f)):
            for conv in ("labelwise", "nnunet", "monai"):
                scalar = {
                    "dice": dice,
                    "iou": iou,
                    "precision": precision,
                    "sensitivity": sensitivity,
                    "specificity": specificity,
                    "volume_similarity": volume_similarity,
                }[metric](a, b, empty=conv)
                vec = float(overlap_from_counts(confusion(a, b).counts, metric, empty=conv))  # type: ignore[arg-type]
                assert scalar == vec or (math.isnan(scalar) and math.isnan(vec))  # fmt: skip
    with pytest.raises(ConfigError):
        dice(e, e, empty="bogus")  # type: ignore[arg-type]


def test_bad_inputs_raise_clear_errors() -> None:
    a = np.zeros((4, 4), np.float32)
    b = a.copy()
    b[1, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        dice(a, b)
    with pytest.raises(DataError, match="shape"):
        dice(a, np.zeros((4, 5)))


def test_batch_and_per_class() -> None:
    p, t = _masks((5, 16, 16), 3)
    counts = batch_confusion(p, t)
    assert counts.shape == (5, 4)
    d = overlap_from_counts(counts, "dice")
    assert d == pytest.approx([dice(p[i], t[i]) for i in range(5)])
    rng = np.random.default_rng(0)
    pl = rng.integers(0, 4, (12, 13)).astype(np.int16)
    tl = rng.integers(0, 4, (12, 13)).astype(np.int16)
    cm = confusion_matrix(pl, tl, 4)
    assert cm.sum() == pl.size and cm[2, 1] == int(((pl == 2) & (tl == 1)).sum())
    pc = per_class_confusion(pl, tl, 4)
    assert pc.shape == (3, 4)
    for i, c in enumerate((1, 2, 3)):
        assert tuple(pc[i]) == tuple(confusion(pl == c, tl == c).counts)
    with pytest.raises(DataError, match="outside"):
        confusion_matrix(pl, tl, 3)
    d = per_class_overlap(pl, tl, [1, 3, 5])  # class 5 absent from both: labelwise Dice 1
    assert d[0] == pytest.approx(dice(pl == 1, tl == 1)) and d[1] == pytest.approx(dice(pl == 3, tl == 3))
    assert d[2] == 1.0 and math.isnan(per_class_overlap(pl, tl, [5], empty="nnunet")[0])


def test_matches_medpy_monai_surface_distance() -> None:
    import torch
    from medpy.metric import binary as mb
    from monai.metrics import compute_dice, compute_iou
    from surface_distance import compute_dice_coefficient

    for seed, shape in [(0, (31, 17, 9)), (1, (64, 48)), (2, (7, 9, 11))]:
        p, t = _masks(shape, seed, 0.4)
        assert dice(p, t) == pytest.approx(mb.dc(p, t), abs=1e-12)
        assert iou(p, t) == pytest.approx(mb.jc(p, t), abs=1e-12)
        assert precision(p, t) == pytest.approx(mb.precision(p, t), abs=1e-12)
        assert sensitivity(p, t) == pytest.approx(mb.recall(p, t), abs=1e-12)
        assert specificity(p, t) == pytest.approx(mb.specificity(p, t), abs=1e-12)
        assert dice(p, t) == pytest.approx(compute_dice_coefficient(t, p), abs=1e-12)
        tp_, tt_ = torch.from_numpy(p)[None, None].float(), torch.from_numpy(t)[None, None].float()
        assert dice(p, t) == pytest.approx(float(compute_dice(tp_, tt_)), abs=1e-6)
        assert iou(p, t) == pytest.approx(float(compute_iou(tp_, tt_)), abs=1e-6)
    # empty/empty: medpy 0.5 and MONAI (ignore_empty) both give nan -> our "monai" row
    e = np.zeros((4, 4), bool)
    et = torch.from_numpy(e)[None, None].float()
    assert math.isnan(float(compute_dice(et, et))) and math.isnan(dice(e, e, empty="monai"))
