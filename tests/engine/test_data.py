"""Per-sample determinism, rank sharding, recorded augmentation and the planner."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labelwise.data import Case
from labelwise.engine import (
    AugmentConfig,
    PatchSource,
    apply_augment,
    crop_or_pad,
    draw_augment,
    epoch_loader,
    make_plan,
)
from labelwise.engine.planner import normalize_image


def _source() -> PatchSource:
    rng = np.random.default_rng(0)
    cases = []
    for _ in range(3):
        img = rng.normal(size=(1, 20, 20)).astype(np.float32)
        tgt = np.zeros((2, 20, 20), np.float32)
        tgt[0] = 1
        tgt[:, 5:9, 5:9] = [[[0.0]], [[1.0]]]
        cases.append({"image": img, "target": tgt})
    return PatchSource(cases, (8, 8), AugmentConfig(), "target", 0.5, ["a", "b", "c"], seed=4)


def test_crop_or_pad_hand_example() -> None:
    arr = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    out = crop_or_pad(arr, (-1, 2), (3, 3))
    expect = np.array([[0, 0, 0], [2, 3, 0], [6, 7, 0]], np.float32)
    np.testing.assert_array_equal(out[0], expect)


def test_samples_depend_only_on_epoch_and_index() -> None:
    src = _source()
    batches_all = list(epoch_loader(src, seed=1, epoch=2, batch_size=4, num_batches=3))
    resumed = list(epoch_loader(src, seed=1, epoch=2, batch_size=4, num_batches=3, start_batch=1))
    for a, b in zip(batches_all[1:], resumed, strict=True):
        np.testing.assert_array_equal(a["image"].numpy(), b["image"].numpy())
        assert a["aug"] == b["aug"]
    other_epoch = next(iter(epoch_loader(src, seed=1, epoch=3, batch_size=4, num_batches=1)))
    assert not np.array_equal(other_epoch["image"].numpy(), batches_all[0]["image"].numpy())


def test_ranks_split_the_global_batch() -> None:
    src = _source()
    full = list(epoch_loader(src, 0, 0, batch_size=4, num_batches=2))
    r0 = list(epoch_loader(src, 0, 0, 4, 2, rank=0, world_size=2))
    r1 = list(epoch_loader(src, 0, 0, 4, 2, rank=1, world_size=2))
    for f, a, b in zip(full, r0, r1, strict=True):
        np.testing.assert_array_equal(f["image"].numpy(), np.concatenate([a["image"].numpy(), b["image"].numpy()]))
    with pytest.raises(ValueError, match="divisible"):
        list(epoch_loader(src, 0, 0, 3, 1, world_size=2))


def test_augmentation_is_recorded_and_replayable() -> None:
    src = _source()
    batch = next(iter(epoch_loader(src, 0, 0, batch_size=4, num_batches=1)))
    params = json.loads(batch["aug"][0])
    assert {"start", "flip", "rot90", "rotate_deg", "scale", "shift", "gamma"} <= set(params)
    case = src.cases[src.case_ids.index(batch["case"][0])]
    patch = {k: crop_or_pad(v, params["start"], (8, 8)) for k, v in case.items()}
    replay = apply_augment(patch, params)
    np.testing.assert_allclose(replay["image"], batch["image"][0].numpy(), atol=1e-6)


def test_flip_and_rot90_move_labels_with_image() -> None:
    img = np.zeros((1, 4, 4), np.float32)
    img[0, 0, 1] = 1
    lab = (img > 0).astype(np.int16)
    params = {"flip": [0], "rot90": 1, "rotate_deg": 0.0, "scale": 1.0, "shift": 0.0, "gamma": 1.0}
    out = apply_augment({"image": img, "label": lab}, params)
    # flip axis 0: (0,1) -> (3,1); rot90 (counter-clockwise in axes 0,1): (3,1) -> (2,3)
    assert np.argwhere(out["image"][0] > 0).tolist() == [[2, 3]]
    assert np.argwhere(out["label"][0] > 0).tolist() == [[2, 3]]
    assert out["label"].dtype == np.int16


def test_disabled_augment_draws_identity() -> None:
    p = draw_augment(np.random.default_rng(0), (8, 8), AugmentConfig(enabled=False))
    assert p == {"flip": [], "rot90": 0, "rotate_deg": 0.0, "scale": 1.0, "shift": 0.0, "gamma": 1.0}


def _case(img: np.ndarray, lab: np.ndarray) -> Case:
    return Case("c", img, (1.0, 1.0), np.eye(4), lab[None].astype(np.int16), ("r",))


def test_planner_patch_and_normalisation() -> None:
    rng = np.random.default_rng(0)
    mr = [_case(rng.normal(5, 2, (1, 50, 70)).astype(np.float32), np.zeros((50, 70))) for _ in range(3)]
    plan = make_plan(mr, divisor=8)
    assert plan.patch_size == (56, 72)  # median shape rounded up to multiples of 8
    assert plan.normalization[0].scheme == "zscore"
    z = normalize_image(mr[0].image, plan)
    assert abs(float(z.mean())) < 1e-5 and abs(float(z.std()) - 1) < 1e-4
    ct_img = rng.normal(40, 10, (1, 20, 20)).astype(np.float32)
    ct_img[0, :5] = -1000
    lab = np.zeros((20, 20))
    lab[8:12, 8:12] = 1
    ct = make_plan([_case(ct_img, lab)], divisor=4, max_patch_2d=16)
    assert ct.patch_size == (16, 16)
    n = ct.normalization[0]
    assert n.scheme == "ct" and -1000 < n.clip_low < n.clip_high < 100
