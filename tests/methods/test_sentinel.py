"""Quality Sentinel: plain functions (crops, losses, perturbations, candidates), the method and `labelwise qa`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.engine.tinydata import disc_dataset
from typer.testing import CliRunner

from labelwise.data import Case, Dataset, DatasetWriter
from labelwise.errors import ConfigError, DataError
from labelwise.methods.sentinel import (
    SentinelConfig,
    as_binary,
    build_candidates,
    crop_input,
    heldout_slices,
    intensity_unit,
    perturb_mask,
    reference_map,
    score_label_map,
    slice_indices,
)
from labelwise.metrics import dice


def _disc(h: int = 32, w: int = 32, r: float = 8, cy: float = 16, cx: float = 16) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


# ------------------------------------------------------------------ basics
def test_dice_conventions_by_hand() -> None:
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    assert dice(a, b) == 1.0  # both empty
    a[0, :2] = True  # 2 px
    assert dice(a, b) == 0.0
    b[0, 1:4] = True  # 3 px, overlap 1 -> 2*1/5
    assert dice(a, b) == pytest.approx(0.4)
    with pytest.raises(DataError, match="differs from"):
        dice(a, b[:3])


def test_as_binary_rejects_multiclass_maps() -> None:
    assert as_binary(np.array([[0, 1]], np.int16)).dtype == bool
    with pytest.raises(DataError, match="binary mask"):
        as_binary(np.array([[0, 1, 2]]), "case x")


def test_intensity_unit_ct_window_and_constant_image() -> None:
    img = np.array([[[-1000.0, -200.0, 0.0, 200.0, 3000.0]]])
    np.testing.assert_allclose(intensity_unit(img, (-200, 200))[0], [0, 0, 0.5, 1, 1])
    assert (intensity_unit(np.full((3, 4, 4), 5.0)) == 0).all()
    rgb = np.stack([np.zeros((2, 2)), np.ones((2, 2)) * 2, np.ones((2, 2)) * 4]) + np.arange(4).reshape(2, 2)
    assert intensity_unit(rgb).shape == (2, 2)  # channels averaged


def test_crop_input_centres_the_mask_and_normalises() -> None:
    img = np.full((40, 40), 0.5, np.float32)
    m = np.zeros((40, 40), bool)
    m[10:20, 10:20] = True  # 10x10 box, margin 0.5 -> 20 px side: mask covers the middle half
    x = crop_input(img, m, 20, margin=0.5)
    assert x.shape == (2, 20, 20) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], 0.0, atol=1e-6)  # (0.5 - 0.5) / 0.25
    assert x[1, 10, 10] == pytest.approx(1.0) and x[1, 0, 0] == pytest.approx(-1.0)
    assert (x[1] > 0).sum() == 100  # 10x10 mask pixels in a 20x20 crop at scale 1


def test_crop_input_errors() -> None:
    with pytest.raises(DataError, match="does not match image shape"):
        crop_input(np.zeros((8, 8), np.float32), np.ones((8, 9), bool), 16)
    with pytest.raises(DataError, match="empty mask"):
        crop_input(np.zeros((8, 8), np.float32), np.zeros((8, 8), bool), 16)
    with pytest.raises(DataError, match="binary"):
        crop_input(np.zeros((8, 8), np.float32), np.full((8, 8), 3), 16)


def test_slice_indices_even_spacing_and_empty() -> None:
    m = np.zeros((4, 4, 30), bool)
    m[1, 1, 5:26] = True  # slices 5..25 (21 slices)
    assert slice_indices(m, 5) == [5, 10, 15, 20, 25]
    assert slice_indices(m, 100) == list(range(5, 26))
    assert slice_indices(m, 3, allowed=[0, 1, 6, 7]) == [6, 7]
    assert slice_indices(np.zeros((2, 2, 5), bool), 3) == []


def test_slice_indices_one_slice_is_the_middle_of_the_structure() -> None:
    # k = 1 is labelwise.data.slices.evenly_spaced's middle item, not the structure's first (edge) slice
    m = np.zeros((4, 4, 30), bool)
    m[1, 1, 5:26] = True  # slices 5..25: the middle is 15
    assert slice_indices(m, 1) == [15]
    assert slice_indices(m, 1, allowed=[6, 7, 8]) == [7]


def test_heldout_slices_alternating_blocks() -> None:
    train, held = heldout_slices(range(10, 22), 3)
    assert train == [10, 11, 12, 16, 17, 18] and held == [13, 14, 15, 19, 20, 21]
    assert heldout_slices([3, 1, 2], 0) == ([1, 2, 3], [])


# ------------------------------------------------------------------ perturbations and candidates
def test_perturbations_cover_dice_and_replay_from_their_record() -> None:
    from labelwise.labels.perturb import Perturbation, replay

    ref = _disc().astype(np.int16)
    ref[_disc(r=5, cy=6, cx=26)] = 2  # a neighbouring structure for class swaps
    out = perturb_mask(ref, 1, 30, np.random.default_rng(3), (1.0, 1.0), swap_p=0.2)
    assert len(out) == 30
    gt = ref == 1
    dices = [d for _, _, d in out]
    assert min(dices) < 0.25 and max(dices) > 0.8  # the sampler spreads Dice over [0, 1]
    kinds = set()
    for mask, rec, d in out:
        assert mask.dtype == bool and mask.shape == gt.shape and dice(mask, gt) == pytest.approx(d)
        kinds.update(r["kind"] for r in rec)
        if rec[0]["kind"] == "class_swap":
            np.testing.assert_array_equal(mask, ref == 2)  # structure 2 claimed as 1
            continue
        np.testing.assert_array_equal(replay(gt, [Perturbation.from_json(r) for r in rec], (1.0, 1.0)) != 0, mask)
    assert "class_swap" in kinds and len(kinds) >= 3
    with pytest.raises(DataError, match="absent"):
        perturb_mask(ref, 5, 2, np.random.default_rng(0))


def _tiny_2d(root: Path, n: int = 4) -> Path:
    rng = np.random.default_rng(0)
    w = DatasetWriter(root, "tiny", 2, ("background", "organ"), ("a", "b"))
    for i in range(n):
        img = rng.normal(0, 0.1, (1, 32, 32)).astype(np.float32)
        m = _disc(r=6 + i, cy=15 + i, cx=16)
        img[0][m] += 1.0
        b = _disc(r=7 + i, cy=15 + i, cx=16)
        w.add_case(
            f"c{i}", img, {"a": m.astype(np.int16), "b": b.astype(np.int16)}, split="train" if i < n - 1 else "test"
        )
    w.finish()
    return root


def test_build_candidates_cover_dice_range_and_record(tmp_path: Path) -> None:
    ds = Dataset(_tiny_2d(tmp_path / "ds"))
    cfg = SentinelConfig(crop_size=16, perturbations_per_slice=40, reference_rater="a", dice_bins=5)
    cs = build_candidates(list(ds.cases("train")), cfg, seed=0)
    assert cs.inputs.shape[1:] == (2, 16, 16) and len(cs) == len(cs.records) == cs.dice.shape[0]
    hist = cs.histogram(5)
    assert all(h > 0 for h in hist), hist  # Dice 0..1 covered
    assert max(hist) <= np.ceil(1.5 * 3 * 41 / 5)  # balancing cap
    sources = {r["source"] for r in cs.records}
    assert "rater:b" in sources and "perturb" in sources
    # a recorded perturbation replays to the recorded Dice
    from labelwise.labels.perturb import Perturbation, replay

    case = ds["c0"]
    gt = reference_map(case, "a") == 1
    i = next(i for i, r in enumerate(cs.records) if r["case"] == "c0" and r["source"] == "perturb")
    recs = [Perturbation.from_json(r) for r in cs.records[i]["record"]]
    assert dice(replay(gt, recs, case.spacing_mm) != 0, gt) == pytest.approx(float(cs.dice[i]))
    assert cs.names == ["organ"]


def test_reference_map_majority_and_rater() -> None:
    raters = np.array([[[1, 1, 0]], [[1, 0, 0]], [[0, 1, 2]]], np.int16)
    case = Case(
        "x",
        np.zeros((1, 1, 3), np.float32),
        (1.0, 1.0),
        np.eye(4),
        raters,
        ("a", "b", "c"),
        class_names=("bg", "p", "q"),
    )
    np.testing.assert_array_equal(reference_map(case), [[1, 1, 0]])
    np.testing.assert_array_equal(reference_map(case, "c"), [[0, 1, 2]])
    assert reference_map(case, "zzz") is None


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        SentinelConfig(crop_size=8)
    with pytest.raises(ConfigError):
        SentinelConfig(checkpoint_steps=(5, 2))
    with pytest.raises(ConfigError):
        SentinelConfig(ct_clip=(200, -200))


# ------------------------------------------------------------------ method + CLI end to end
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sentinel")
    disc_dataset(root / "ds", n_train=3, n_val=1, n_test=1, size=16)
    from labelwise.cli.main import app

    res = CliRunner().invoke(
        app,
        [
            "train",
            "sentinel",
            "--data",
            str(root / "ds"),
            "--out",
            str(root / "run"),
            "--preset",
            "smoke",
            "--set",
            "train.progress=false",
        ],
    )
    assert res.exit_code == 0, res.output
    return root / "ds", root / "run"


def _read(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_qa_cli_ranks_raters_and_evaluates(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from labelwise.cli.main import app

    ds, run = trained
    meta = json.loads((run / "meta.json").read_text(encoding="utf-8"))
    assert meta["candidates"] > 0 and sum(meta["candidate_dice_histogram"]) == meta["candidates"]
    out = tmp_path / "qa"
    res = CliRunner().invoke(
        app,
        [
            "qa",
            "--run",
            str(run),
            "--data",
            str(ds),
            "--raters",
            "--reference",
            "r0",
            "--baselines",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    rows = _read(out / "quality.csv")
    n_cases = len(Dataset(ds))
    assert len(rows) == n_cases  # one row per case: rater r1 (r0 is the reference), structure "disc"
    assert {r["source"] for r in rows} == {"r1"}
    assert {"true_dice", "softmax", "entropy", "tta_dice"} <= set(rows[0])
    queue = _read(out / "review_queue.csv")
    preds = [float(r["predicted_dice"]) for r in queue]
    assert preds == sorted(preds) and [int(r["rank"]) for r in queue] == list(range(1, n_cases + 1))
    ev = json.loads((out / "evaluation.json").read_text(encoding="utf-8"))
    assert set(ev["structure"]) == {"sentinel", "softmax", "entropy", "tta_dice"}
    assert (out / "slices.csv").is_file() and (out / "case_quality.csv").is_file()


def test_qa_perturb_mode_and_bad_input(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from labelwise.cli.main import app
    from labelwise.quality import run_qa

    ds, run = trained
    result = run_qa(run, ds, "perturb", reference="majority", perturbations=3, split="test", device="cpu")
    assert len(result.rows) == 3 and result.evaluation is not None
    assert all(r.true_dice is not None for r in result.rows)
    runner = CliRunner()
    res = runner.invoke(app, ["qa", "--run", str(run), "--data", str(ds), "--out", str(tmp_path / "x")])
    assert res.exit_code != 0 and "exactly one of" in str(res.exception)
    with pytest.raises(DataError, match="unknown structure 'liver'"):
        run_qa(run, ds, "raters", structures=["liver"], device="cpu")
    with pytest.raises(ConfigError, match="needs a reference"):
        run_qa(run, ds, "perturb", device="cpu")


def test_score_label_map_empty_shape_and_3d(trained: tuple[Path, Path]) -> None:
    from labelwise.methods import load_run

    ds, run = trained
    _, _, pred = load_run(run, "cpu")
    case = Dataset(ds)["case04"]
    empty = score_label_map(pred, case, np.zeros(case.spatial_shape, np.int16), structures=["disc"])
    assert empty[0].empty and empty[0].predicted_dice == 0.0
    assert pred.score_slice(case.image, np.zeros(case.spatial_shape, bool), "disc") == 0.0
    with pytest.raises(DataError, match="does not match"):
        score_label_map(pred, case, np.zeros((3, 3), np.int16))
    with pytest.raises(DataError, match="does not match"):
        pred.score_slice(case.image, np.ones((3, 3), bool), "disc")
    s = pred.score_slice(case.image, case.raters[0] > 0, "an unseen structure")  # unseen names still embed
    assert 0.0 <= s <= 1.0
    # 3D: a volume of 25 slices with the structure on 20 -> 10 evenly spaced slices are scored
    vol = np.repeat(case.image[..., None], 25, axis=-1)
    lab = np.repeat(case.raters[0][..., None], 25, axis=-1)
    lab[..., 20:] = 0
    c3 = Case("v", vol, (1.0, 1.0, 1.0), np.eye(4), lab[None], ("r0",), class_names=case.class_names)
    sc = score_label_map(pred, c3, lab)
    assert len(sc) == 1 and len(sc[0].slices) == 10 and sc[0].slices[0] == 0 and sc[0].slices[-1] == 19
    assert sc[0].predicted_dice == pytest.approx(float(np.mean(sc[0].slice_scores)))


def test_qa_masks_folder(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from labelwise.io import write_label
    from labelwise.quality import run_qa, write_qa

    ds_path, run = trained
    ds = Dataset(ds_path)
    pred = tmp_path / "pred"
    pred.mkdir()
    for cid in ds.split_ids("test"):
        case = ds[cid]
        write_label(pred / f"{cid}.nii.gz", case.raters[1], case.spacing_mm, case.affine)
    res = run_qa(run, ds, "masks", masks=pred, split="test", reference="r0", device="cpu")
    assert [r.source for r in res.rows] == ["masks:pred"]
    case = ds[ds.split_ids("test")[0]]
    assert res.rows[0].true_dice == pytest.approx(dice(case.raters[1] == 1, case.raters[0] == 1))
    paths = write_qa(res, tmp_path / "out")
    assert {p.name for p in paths} >= {"quality.csv", "review_queue.csv", "evaluation.json"}
    with pytest.raises(DataError, match="not found"):
        run_qa(run, ds, "masks", masks=tmp_path / "nope", device="cpu")


# ------------------------------------------------------------------ the skeleton: segmenter stage, options, resume
def test_segmenter_is_a_stage_of_the_run(trained: tuple[Path, Path]) -> None:
    _, run = trained
    seg = run / "segmenter"
    assert (seg / "checkpoint.safetensors").is_file() and (seg / "weights.safetensors").is_file()
    meta = json.loads((run / "meta.json").read_text(encoding="utf-8"))
    assert meta["stages"]["segmenter"]["steps"] == 2  # smoke preset: checkpoint_steps [2]
    assert meta["stages"]["main"]["steps"] == 6  # the sentinel: 2 epochs x 3 steps
    assert meta["candidate_sources"]["checkpoint"] > 0


def test_predict_takes_no_options(trained: tuple[Path, Path]) -> None:
    from labelwise.methods import load_run

    ds, run = trained
    _, _, pred = load_run(run, "cpu")
    case = Dataset(ds)["case04"]
    with pytest.raises(ConfigError, match="'sentinel' takes no prediction option 'samples'; it takes: none"):
        pred.predict(case, samples=4)
    assert pred.predict(case, samples=None).probs.shape == (2, *case.spatial_shape)


def test_segmenter_resumes_after_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.numpy import load_file

    from labelwise.methods import get_method, load_method_config
    from labelwise.methods.sentinel.segmenter import SegmenterTask

    ds = disc_dataset(tmp_path / "ds", n_train=2, n_val=0, n_test=0, size=16)
    method = get_method("sentinel")
    # 6 segmenter steps, a resume checkpoint every 2 steps, a snapshot after step 2
    overrides = ["train.progress=false", "train.epochs=1", "train.checkpoint_every=2", "checkpoint_steps=[2,6]"]
    cfg = load_method_config(method, preset="smoke", overrides=overrides)
    method.fit(ds, cfg, tmp_path / "whole")
    step = SegmenterTask.training_step

    def killed_at_step_5(self: SegmenterTask, batch: dict[str, torch.Tensor], ctx: object) -> torch.Tensor:
        if ctx.step == 5:  # type: ignore[attr-defined]
            raise RuntimeError("killed")
        return step(self, batch, ctx)  # type: ignore[arg-type]

    monkeypatch.setattr(SegmenterTask, "training_step", killed_at_step_5)
    with pytest.raises(RuntimeError, match="killed"):
        method.fit(ds, cfg, tmp_path / "resumed")
    assert (tmp_path / "resumed" / "segmenter" / "checkpoint.safetensors").is_file()  # written after step 4
    assert not (tmp_path / "resumed" / "segmenter" / "weights.safetensors").exists()
    monkeypatch.undo()
    method.fit(ds, cfg, tmp_path / "resumed")  # resumes the segmenter after step 4, then trains the sentinel
    for name in ("segmenter/step_000002.safetensors", "segmenter/weights.safetensors", "weights.safetensors"):
        whole, resumed = load_file(str(tmp_path / "whole" / name)), load_file(str(tmp_path / "resumed" / name))
        assert whole.keys() == resumed.keys()
        for key in whole:
            np.testing.assert_array_equal(whole[key], resumed[key], err_msg=f"{name}: {key}")


def test_3d_run_holds_slices_out_and_scores_them(tmp_path: Path) -> None:
    from labelwise.methods import train
    from labelwise.quality import run_qa

    ds = disc_dataset(tmp_path / "ds", n_train=2, n_val=0, n_test=1, size=16, spatial_dims=3)
    run = tmp_path / "run"
    overrides = ["train.progress=false", "slice_holdout=2", "checkpoint_steps=[1,3]", "slices_per_structure=4"]
    train("sentinel", ds, run, overrides=overrides, preset="smoke")
    meta = json.loads((run / "meta.json").read_text(encoding="utf-8"))
    assert sorted(meta["heldout_slices"]) == ds.split_ids("train")
    assert all(v == [2, 3, 6, 7, 10, 11, 14, 15] for v in meta["heldout_slices"].values())  # blocks of 2
    assert meta["stages"]["segmenter"]["steps"] == 3
    assert (run / "segmenter" / "step_000001.safetensors").is_file()
    res = run_qa(run, ds, "raters", split="train", reference="r0", heldout_only=True, baselines=True, device="cpu")
    assert res.rows and all(set(r.slices) <= set(meta["heldout_slices"][r.case]) for r in res.rows)
    assert all(r.baselines is not None and 0.0 <= r.baselines["tta_dice"] <= 1.0 for r in res.rows)


def test_qa_reference_others_is_the_majority_of_the_other_raters(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from labelwise.quality import run_qa

    _, run = trained
    img = np.random.default_rng(0).normal(0, 0.1, (1, 16, 16)).astype(np.float32)
    maps = {"a": _disc(16, 16, 5, 8, 8), "b": _disc(16, 16, 6, 8, 8), "c": _disc(16, 16, 4, 7, 9)}
    w = DatasetWriter(tmp_path / "three", "three", 2, ("background", "disc"), tuple(maps))
    w.add_case("x", img + maps["a"], {k: v.astype(np.int16) for k, v in maps.items()}, split="test")
    w.finish()
    res = run_qa(run, tmp_path / "three", "raters", reference="others", device="cpu")
    got = {r.source: r.true_dice for r in res.rows}
    # two other raters: a 1-1 tie goes to background (the lowest class), so the reference is their intersection
    assert got["a"] == pytest.approx(dice(maps["a"], maps["b"] & maps["c"]))
    assert got["b"] == pytest.approx(dice(maps["b"], maps["a"] & maps["c"]))
    assert got["c"] == pytest.approx(dice(maps["c"], maps["a"] & maps["b"]))
