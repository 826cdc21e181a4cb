from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.methods.test_cps import as_rank, run_files

from labelwise.data import Dataset, DatasetWriter
from labelwise.errors import ConfigError, DataError
from labelwise.io import write_image, write_label
from labelwise.methods.propagation import (
    PropagationConfig,
    PropagationModel,
    choose_reference_slices,
    max_jump_at,
    propagate,
    propagate_from_reference,
    read_slice_annotations,
)
from labelwise.models.stcn import STCN, STCNConfig, local_topk_readout, soft_aggregate, topk_readout


def moving_disc(depth: int = 12, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A bright disc drifting by 0.5 px per slice with a radius that shrinks away from the middle."""
    g = np.indices((size, size)).astype(float)
    lab = np.zeros((size, size, depth), np.int16)
    for z in range(depth):
        r = 8 - 0.4 * abs(z - depth // 2)
        lab[..., z] = ((g[0] - 12 - 0.5 * z) ** 2 + (g[1] - 16) ** 2) < r * r
    img = lab * 2.0 + np.random.default_rng(seed).normal(0, 0.3, lab.shape)
    return img.astype(np.float32), lab


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def test_training_free_propagation_from_one_slice() -> None:
    img, lab = moving_disc()
    res = propagate(img, {6: lab[..., 6]})
    assert res.labels.shape == lab.shape and res.probs.shape == (2, *lab.shape)
    np.testing.assert_allclose(res.probs.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(res.labels[..., 6], lab[..., 6])
    dices = [_dice(res.labels[..., z] == 1, lab[..., z] == 1) for z in range(lab.shape[-1])]
    assert min(dices) > 0.9, dices


def test_two_annotations_blend_and_keep_classes() -> None:
    img, lab = moving_disc()
    two = lab.copy()
    two[..., 8:][lab[..., 8:] == 1] = 2  # a second class on the last slices
    res = propagate(img, {2: two[..., 2], 10: two[..., 10]}, num_classes=3)
    np.testing.assert_array_equal(res.labels[..., 10], two[..., 10])
    assert res.annotated == (2, 10)
    assert (res.labels[..., 3] == 2).sum() == 0  # class 2 comes only from the far annotation at the near slice
    assert (res.labels[..., 9] == 2).sum() > 0


@pytest.mark.parametrize(
    ("volume", "ann", "message"),
    [
        (np.zeros((8, 8, 1)), {0: np.ones((8, 8), int)}, "1 slice"),
        (np.zeros((8, 8, 4)), {4: np.ones((8, 8), int)}, "out of range 0..3"),
        (np.zeros((8, 8, 4)), {-1: np.ones((8, 8), int)}, "out of range"),
        (np.zeros((8, 8, 4)), {1: np.zeros((8, 8), int)}, "slice 1 is empty"),
        (np.zeros((8, 8, 4)), {1: np.ones((8, 7), int)}, "shape"),
        (np.zeros((8, 8, 4)), {1: -np.ones((8, 8), int)}, "negative"),
        (np.zeros((8, 8, 4)), {1: np.full((8, 8), 0.5)}, "non-integer"),
        (np.zeros((8, 8, 4)), {}, "no annotated slice"),
        (np.zeros((8, 4)), {0: np.ones(8, int)}, "volume"),
        (np.full((8, 8, 4), np.nan), {1: np.ones((8, 8), int)}, "NaN"),
    ],
)
def test_bad_inputs_give_clear_errors(volume: np.ndarray, ann: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        propagate(volume, ann)


def test_empty_annotation_allowed_on_request() -> None:
    img, lab = moving_disc()
    res = propagate(img, {0: np.zeros_like(lab[..., 0]), 6: lab[..., 6]}, allow_empty=True)
    assert res.labels[..., 0].sum() == 0


def test_choose_reference_slices_largest_area_on_stride() -> None:
    lab = np.zeros((4, 4, 11), np.int16)
    lab[..., 3] = 1  # largest, but not on the stride-5 grid
    lab[:2, :, 5] = 1
    lab[:1, :1, 10] = 1
    lab[0, 0, 0] = 2
    assert choose_reference_slices(lab, 4, stride=5) == {1: 5, 2: 0}
    assert choose_reference_slices(lab, 2, stride=1) == {1: 3}


def test_propagate_from_reference_uses_each_class_own_slice() -> None:
    img, lab = moving_disc()
    res = propagate_from_reference(img, lab, 2, stride=3)
    assert res.annotated == (6,)
    assert _dice(res.labels == 1, lab == 1) > 0.9


def _nifti_pair(
    tmp: Path, lab_affine: np.ndarray | None = None, spacing: tuple[float, ...] = (1.0, 1.0, 2.0)
) -> tuple[Path, Path]:
    img, lab = moving_disc()
    aff = np.diag([1.0, 1.0, 2.0, 1.0])
    write_image(tmp / "img.nii.gz", img[None], (1.0, 1.0, 2.0), aff)
    sparse = np.zeros_like(lab)
    sparse[..., 6] = lab[..., 6]
    write_label(tmp / "lab.nii.gz", sparse, spacing, aff if lab_affine is None else lab_affine)
    return tmp / "img.nii.gz", tmp / "lab.nii.gz"


def test_read_slice_annotations_auto_and_explicit(tmp_path: Path) -> None:
    ip, lp = _nifti_pair(tmp_path)
    vol, ann, _ = read_slice_annotations(ip, lp)
    assert vol.shape == (1, 32, 32, 12) and list(ann) == [6]
    with pytest.raises(DataError, match="slice 3 is empty"):
        read_slice_annotations(ip, lp, (3, 6))
    with pytest.raises(DataError, match="out of range"):
        read_slice_annotations(ip, lp, (12,))


def test_read_slice_annotations_geometry_mismatch(tmp_path: Path) -> None:
    flipped = np.diag([-1.0, 1.0, 2.0, 1.0])
    ip, lp = _nifti_pair(tmp_path, lab_affine=flipped)
    with pytest.raises(DataError, match="orientation"):
        read_slice_annotations(ip, lp)
    ip, lp = _nifti_pair(tmp_path, lab_affine=np.diag([1.0, 1.0, 3.0, 1.0]), spacing=(1.0, 1.0, 3.0))
    with pytest.raises(DataError, match="spacing"):
        read_slice_annotations(ip, lp)


def test_topk_readout_matches_manual_softmax() -> None:
    torch.manual_seed(0)
    q, mk, mv = torch.randn(1, 4, 3), torch.randn(1, 4, 5), torch.randn(1, 2, 5)
    full = topk_readout(q, mk, mv, top_k=5)
    aff = -((q[0, :, :, None] - mk[0, :, None, :]) ** 2).sum(0) / 2.0  # (Nq, Nm), sqrt(D) = 2
    expected = torch.softmax(aff, -1) @ mv[0].T
    torch.testing.assert_close(full[0].T, expected, rtol=1e-5, atol=1e-5)
    one = topk_readout(q, mk, mv, top_k=1)  # top-1: the value of the nearest memory key
    nearest = aff.argmax(-1)
    torch.testing.assert_close(one[0].T, mv[0].T[nearest])


def test_local_readout_identity_and_soft_aggregate() -> None:
    key = torch.randn(3, 6, 7)
    val = torch.rand(2, 6, 7)
    out = local_topk_readout(key, key[None], val[None], top_k=1, radius=2)
    torch.testing.assert_close(out, val)  # each pixel's nearest key in the window is itself
    p = soft_aggregate(torch.rand(3, 4, 4))
    torch.testing.assert_close(p.sum(0), torch.ones(4, 4))


def test_stcn_forward_and_as_propagation_model() -> None:
    torch.manual_seed(0)
    net = STCN(1, STCNConfig(widths=(4, 8, 8), key_dim=4, value_dim=8, top_k=5))
    logits = net(torch.randn(2, 3, 1, 16, 16), torch.ones(2, 1, 16, 16))
    assert logits.shape == (2, 2, 16, 16)
    logits.sum().backward()
    img, lab = moving_disc(depth=5, size=18)  # 18 is not a multiple of 4: padded inside
    model = PropagationModel(net, lambda v: (v - v.mean()) / v.std(), "cpu")
    res = propagate(img, {2: lab[..., 2]}, model)
    assert res.probs.shape == (2, 18, 18, 5)
    np.testing.assert_allclose(res.probs.sum(0), 1.0, atol=1e-5)


def test_jump_schedule_and_config_errors() -> None:
    assert [max_jump_at(e, 10, 1, 9, 0.5) for e in (0, 2, 5, 9)] == [1, 4, 9, 9]
    with pytest.raises(ConfigError):
        PropagationConfig(patch_size=30)
    with pytest.raises(ConfigError):
        PropagationConfig(min_jump=5, max_jump=2)


def _partial_dataset(root: Path) -> Dataset:
    img, lab = moving_disc(depth=12, size=16)
    w = DatasetWriter(root, "disc3d", 3, ("background", "disc"), ("gt",))
    part = np.zeros_like(lab)
    part[..., 2:10] = lab[..., 2:10]
    w.add_case("v", img[None], {"gt": part}, (1.0, 1.0, 1.0), split="train", labelled_slices=tuple(range(2, 10)))
    w.finish()
    return Dataset(root)


def test_method_fit_predict_labelled_anchors_and_cli(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from labelwise.cli.main import app
    from labelwise.methods import get_method, load_method_config, load_run

    ds = _partial_dataset(tmp_path / "ds")
    method = get_method("propagation")
    cfg = load_method_config(
        method, preset="smoke", overrides=["anchors=labelled", "reference.train_slices=3", "train.progress=false"]
    )
    method.fit(ds, cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "reference").exists()  # no reference model with user anchors
    _, _, predictor = load_run(tmp_path / "run", "cpu")
    case = ds["v"]
    pred = predictor.predict(case)
    assert pred.probs.shape == (2, 16, 16, 12)
    free = predictor.predict(case, training_free=True)
    assert free.probs.shape == (2, 16, 16, 12)
    # the CLI: one annotated slice -> a full volume, with and without the trained model
    img, lab = moving_disc(depth=12, size=16)
    write_image(tmp_path / "img.nii.gz", img[None], (1.0, 1.0, 1.0))
    sparse = np.zeros_like(lab)
    sparse[..., 5] = lab[..., 5]
    write_label(tmp_path / "lab.nii.gz", sparse, (1.0, 1.0, 1.0))
    runner = CliRunner()
    for extra in ([], ["--run", str(tmp_path / "run")]):
        out = tmp_path / f"out{len(extra)}.nii.gz"
        r = runner.invoke(
            app,
            [
                "propagate",
                str(tmp_path / "img.nii.gz"),
                "--labels",
                str(tmp_path / "lab.nii.gz"),
                "--out",
                str(out),
                *extra,
            ],
        )
        assert r.exit_code == 0, r.output
        from labelwise.io import read_label

        filled = read_label(out, 3).array
        assert filled.shape == (16, 16, 12)
        np.testing.assert_array_equal(filled[..., 5], lab[..., 5])
    r = runner.invoke(
        app,
        [
            "propagate",
            str(tmp_path / "img.nii.gz"),
            "--labels",
            str(tmp_path / "lab.nii.gz"),
            "--out",
            str(tmp_path / "x.nii.gz"),
            "--slices",
            "40",
        ],
    )
    assert isinstance(r.exception, DataError) and "out of range" in str(r.exception)


def test_method_reference_anchors_on_a_volume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from labelwise.methods import get_method, load_method_config, load_run

    ds = _partial_dataset(tmp_path / "ds")
    method = get_method("propagation")
    cfg = load_method_config(method, preset="smoke", overrides=["reference_stride=2", "train.progress=false"])
    method.fit(ds, cfg, tmp_path / "run")
    assert (tmp_path / "run" / "reference" / "weights.safetensors").is_file()
    _, _, predictor = load_run(tmp_path / "run", "cpu")
    pred = predictor.predict(ds["v"])
    assert pred.probs.shape == (2, 16, 16, 12)
    np.testing.assert_allclose(pred.probs.sum(0), 1.0, atol=1e-4)
    meta = json.loads((tmp_path / "run" / "meta.json").read_text(encoding="utf-8"))
    assert meta["status"] == "finished" and set(meta["stages"]) == {"reference", "main"}
    # rank 1 of the same (finished) run trains nothing more and writes nothing (issue 16: every rank wrote meta)
    before = run_files(tmp_path / "run")
    writes = as_rank(monkeypatch, 1)
    method.fit(ds, cfg, tmp_path / "run")
    assert writes == []
    assert run_files(tmp_path / "run") == before
    # an option the method does not take is one error naming the ones it takes (issue 16: silently ignored)
    with pytest.raises(ConfigError, match=r"'propagation' takes no prediction option 'samples'; it takes: "):
        predictor.predict(ds["v"], samples=2)
    assert predictor.predict(ds["v"], tta=True, training_free=True).probs.shape == (2, 16, 16, 12)
