"""Label perturbations: hand-derived effects, exact replay from records, and the Dice-covering sampler."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labelwise import metrics
from labelwise.data.phantoms import make_phantom
from labelwise.errors import ConfigError, DataError
from labelwise.labels import (
    Perturbation,
    add_blobs,
    apply_perturbation,
    boundary_noise,
    class_swap,
    drop_components,
    erode_dilate,
    holes,
    random_perturbation,
    replay,
    sample_candidates,
    shift,
    truncate,
)
from labelwise.labels.perturb import PerturbationKind


def _square() -> np.ndarray:
    m = np.zeros((9, 9), dtype=np.uint8)
    m[3:6, 3:6] = 1
    return m


def test_erode_dilate_hand_counts() -> None:
    # The boundary lies half a voxel outside the square: face neighbours are 0.5 mm out, diagonal ones 0.91 mm.
    assert int(erode_dilate(_square(), 0.4)[0].sum()) == 9
    assert int(erode_dilate(_square(), 0.6)[0].sum()) == 9 + 12
    assert int(erode_dilate(_square(), 1.0)[0].sum()) == 25
    assert erode_dilate(_square(), -0.6)[0].sum() == 1  # only the centre voxel is deeper than 0.6 mm
    assert erode_dilate(_square(), -2.0)[0].sum() == 0


def test_erode_dilate_is_spacing_aware() -> None:
    # rows 1 mm apart, columns 2 mm: a 1 mm dilation reaches the rows above and below only (3 + 3 voxels)
    grown, rec = erode_dilate(_square(), 1.0, spacing_mm=(1.0, 2.0))
    assert int(grown.sum()) == 15
    assert grown[2, 3:6].all() and not grown[3:6, 2].any()
    assert rec.params == {"distance_mm": 1.0, "label": None}


def test_erode_dilate_multiclass_never_overwrites_other_class() -> None:
    m = np.zeros((1, 8), dtype=np.int16)
    m[0, 2:4] = 1
    m[0, 4:6] = 2
    grown, _ = erode_dilate(m, 1.0)
    assert grown.tolist() == [[0, 1, 1, 1, 2, 2, 2, 0]]
    only2, _ = erode_dilate(m, -0.6, label=2)
    assert only2.tolist() == [[0, 0, 1, 1, 0, 0, 0, 0]]


def test_shift_holes_blobs_truncate_swap_by_hand() -> None:
    m = _square()
    s, rec = shift(m, (1, -2))
    assert s[4:7, 1:4].all() and s.sum() == 9 and rec.params == {"offset_voxels": [1, -2]}
    assert shift(m, (9, 0))[0].sum() == 0
    h, _ = holes(m, [[4, 4]], [0.0])
    assert h.sum() == 8 and h[4, 4] == 0
    b, _ = add_blobs(np.zeros((9, 9), np.uint8), [[4, 4]], [1.0], label=3)
    assert int((b == 3).sum()) == 5  # centre + 4 face neighbours within 1 mm
    r = np.zeros((8, 4), np.uint8)
    r[2:6] = 1  # rows 2..5: extent 3 mm along axis 0
    t, _ = truncate(r, [1, 0], 0.5)  # cut at 5 - 1.5 = 3.5 mm: rows 4, 5 go
    assert t[2:4].all() and t[4:].sum() == 0
    assert truncate(r, [1, 0], 0.0)[0].sum() == r.sum()
    assert truncate(r, [0, 1], 1.0)[0].sum() == 0
    mc = np.array([[0, 1, 2, 2]])
    assert class_swap(mc, 1, 2)[0].tolist() == [[0, 2, 1, 1]]


def test_drop_components_in_label_order() -> None:
    m = np.zeros((6, 6), np.uint8)
    m[0:2, 0:2] = 1  # component 1 (first in scan order)
    m[4:6, 4:6] = 1  # component 2
    out, rec = drop_components(m, [1])
    assert out[0:2, 0:2].sum() == 0 and out[4:6, 4:6].all()
    assert rec.kind == "drop_components" and rec.params == {"components": [1]}


def test_boundary_noise_zero_amplitude_is_identity_and_seeded() -> None:
    p = make_phantom(0, shape=(48, 48), raters=0)
    m = p.truth
    assert (boundary_noise(m, 0.0, 4.0, seed=1)[0] == m).all()
    a, rec = boundary_noise(m, 2.0, 4.0, seed=1)
    assert not (a == m).all()
    assert (boundary_noise(m, 2.0, 4.0, seed=1)[0] == a).all()
    assert not (boundary_noise(m, 2.0, 4.0, seed=2)[0] == a).all()
    assert rec.params == {"amplitude_mm": 2.0, "scale_mm": 4.0, "seed": 1}


@pytest.mark.parametrize(
    "kind",
    ["erode_dilate", "shift", "holes", "drop_components", "boundary_noise", "add_blobs", "truncate", "class_swap"],
)
def test_every_kind_replays_from_its_json_record(kind: PerturbationKind) -> None:
    p = make_phantom(2, shape=(40, 40), raters=0, structures="organ+lesion", lesion=True)
    spacing = (1.0, 1.5)
    rng = np.random.default_rng(5)
    out, rec = random_perturbation(p.truth, rng, kind, spacing)
    assert rec.kind == kind
    back = Perturbation.from_json(json.loads(json.dumps(rec.to_json())))
    assert back == rec
    again = apply_perturbation(p.truth, back, spacing)
    assert again.dtype == out.dtype and (again == out).all()


def test_unknown_kind_and_bad_input() -> None:
    with pytest.raises(ConfigError, match="unknown perturbation kind"):
        Perturbation.from_json({"kind": "melt", "params": {}})
    with pytest.raises(DataError, match="2D or 3D"):
        shift(np.zeros(4, np.uint8), [1])
    with pytest.raises(DataError, match="integer or bool"):
        erode_dilate(np.zeros((4, 4)), 1.0)
    with pytest.raises(DataError, match="spacing_mm"):
        erode_dilate(np.zeros((4, 4), np.uint8), 1.0, spacing_mm=(1.0,))
    with pytest.raises(DataError, match="two foreground classes"):
        random_perturbation(_square(), np.random.default_rng(0), "class_swap")


def test_sampler_covers_dice_evenly_and_replays() -> None:
    p = make_phantom(0, shape=(64, 64), raters=0)
    mask = p.truth.astype(bool)
    cands = sample_candidates(mask, 100, seed=3)
    dice = np.array([c.dice for c in cands])
    hist, _ = np.histogram(dice, bins=10, range=(0.0, 1.0))
    assert hist.min() >= 5, hist  # every tenth of [0, 1] is populated (10 expected per bin)
    assert dice.min() < 0.05 and dice.max() > 0.95
    assert np.abs(dice - np.array([c.target_dice for c in cands])).mean() < 0.05
    for c in cands:
        assert c.mask.dtype == np.bool_
        assert (replay(mask, c.perturbations) == c.mask).all()
        assert metrics.dice(mask, c.mask) == pytest.approx(c.dice)
    assert {c.perturbations[-1].kind for c in cands} >= {"erode_dilate", "shift", "truncate", "boundary_noise"}
    again = sample_candidates(mask, 100, seed=3)
    assert all((a.mask == b.mask).all() for a, b in zip(cands, again, strict=True))


def test_sampler_3d_anisotropic() -> None:
    p = make_phantom(1, spatial_dims=3, shape=(24, 24, 12), raters=0)
    spacing = p.spacing_mm
    cands = sample_candidates(p.truth.astype(np.uint8), 10, seed=0, spacing_mm=spacing)
    dice = np.array([c.dice for c in cands])
    assert dice.min() < 0.2 and dice.max() > 0.8
    assert all((replay(p.truth.astype(np.uint8), c.perturbations, spacing) == c.mask).all() for c in cands)


def test_sampler_refuses_empty_and_multiclass() -> None:
    with pytest.raises(DataError, match="empty"):
        sample_candidates(np.zeros((8, 8), bool), 3)
    with pytest.raises(DataError, match="binary"):
        sample_candidates(np.array([[0, 1], [2, 0]], np.uint8), 3)
