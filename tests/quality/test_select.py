"""``select_cases``: each strategy on a tiny dataset with a known answer, reviewed cases, refusals, outputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from labelwise.data import Dataset, DatasetWriter
from labelwise.data.review import ReviewStore
from labelwise.errors import ConfigError, DataError
from labelwise.io import Prediction, PredictionIndex, write_prediction
from labelwise.quality.select import image_features, k_center, reviewed_cases, select_cases

SIZE = 16
# Raters: "agree" identical, "split" disjoint, the others one pixel of radius apart.
CASES = ("agree", "split", "dup1", "dup2", "stripes", "dark")


def _disc(radius: float, centre: float = SIZE / 2) -> np.ndarray:
    yy, xx = np.indices((SIZE, SIZE))
    return ((yy - centre) ** 2 + (xx - centre) ** 2 < radius**2).astype(np.int16)


def write_select_dataset(dest: Path, raters: int = 2) -> Dataset:
    """Six 16 x 16 cases: ``dup1`` and ``dup2`` have the same image; ``split`` has raters that never overlap."""
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, (SIZE, SIZE)).astype(np.float32)
    images = {
        "agree": noise + 3 * _disc(5),
        "split": rng.normal(0, 1, (SIZE, SIZE)).astype(np.float32) + 3 * _disc(3),
        "dup1": np.tile(np.linspace(0, 1, SIZE, dtype=np.float32), (SIZE, 1)),
        "stripes": np.tile((np.arange(SIZE) % 4 < 2).astype(np.float32), (SIZE, 1)).T,
        "dark": np.where(_disc(7) > 0, -2.0, 0.0).astype(np.float32) + 0.1 * noise,
    }
    images["dup2"] = images["dup1"].copy()
    ids = [f"r{i}" for i in range(raters)]
    writer = DatasetWriter(dest, "select", 2, ("background", "disc"), ids)
    for case in CASES:
        maps = {r: _disc(4 + i) for i, r in enumerate(ids)}
        if case == "agree":
            maps = dict.fromkeys(ids, _disc(5))
        if case == "split" and raters >= 2:
            maps = {r: (_disc(3, 4.0) if i % 2 == 0 else _disc(3, 12.0)) for i, r in enumerate(ids)}
        split = "val" if case == "dark" else "train"
        writer.add_case(case, images[case][None], maps, spacing_mm=(1.0, 1.0), split=split)
    writer.finish()
    return Dataset(dest)


def write_quality_csv(path: Path, rows: list[tuple[str, str, float]]) -> Path:
    """A ``labelwise qa`` table: case, structure, source, predicted_dice, rank."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case", "structure", "source", "predicted_dice", "rank", "n_slices", "empty"])
        for i, (case, source, dice) in enumerate(rows):
            w.writerow([case, "disc", source, f"{dice:.4f}", i + 1, 1, 0])
    return path


def write_predictions(folder: Path, ds: Dataset, uncertain: str, hard: tuple[str, ...] = ()) -> Path:
    """Confident probabilities for every case but ``uncertain`` (0.5 everywhere); ``hard`` cases: label maps only."""
    folder.mkdir(parents=True, exist_ok=True)
    index = PredictionIndex("supervised", ds.class_names, (), [])
    for case_id in ds.ids:
        case = ds.load(case_id)
        fg = _disc(5).astype(np.float32)
        p = np.full((SIZE, SIZE), 0.5, np.float32) if case_id == uncertain else np.clip(fg, 0.02, 0.98)
        probs = np.stack([1 - p, p]).astype(np.float32)
        write_prediction(folder, case_id, Prediction(probs=probs), case.spacing_mm, case.affine)
        if case_id in hard:
            (folder / f"{case_id}_probs.nii.gz").unlink()
        index.cases.append(case_id)
    index.save(folder)
    return folder


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return write_select_dataset(tmp_path_factory.mktemp("select") / "ds")


@pytest.fixture(scope="module")
def qa_csv(ds: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = [("agree", "r0", 0.9), ("agree", "r1", 0.35), ("split", "r0", 0.5), ("dup1", "r0", 0.8)]
    rows += [("dup2", "r0", 0.7), ("stripes", "r0", 0.95), ("dark", "r0", 0.6), ("elsewhere", "r0", 0.01)]
    return write_quality_csv(tmp_path_factory.mktemp("qa") / "quality.csv", rows)


def test_quality_worst_label_first(ds: Dataset, qa_csv: Path) -> None:
    sel = select_cases(ds, "quality", 3, qa=qa_csv, reviewed=())
    assert sel.case_ids == ["agree", "split", "dark"]  # agree's worst row (0.35) counts, 'elsewhere' is ignored
    first = sel.proposals[0]
    assert first.signals == {"quality": pytest.approx(0.35)} and first.score == pytest.approx(0.65)
    assert "predicted Dice 0.350" in first.reason and "r1" in first.reason
    assert select_cases(ds, "quality", 3, qa=qa_csv.parent, reviewed=()).case_ids == sel.case_ids  # the qa folder


def test_uncertainty_most_uncertain_first_hard_maps_left_out(ds: Dataset, tmp_path: Path) -> None:
    pred = write_predictions(tmp_path / "pred", ds, uncertain="stripes", hard=("dark",))
    sel = select_cases(ds, "uncertainty", 10, pred=pred, reviewed=())
    assert sel.case_ids[0] == "stripes" and "dark" not in sel.case_ids and len(sel.case_ids) == 5
    assert sel.proposals[0].signals["uncertainty"] == pytest.approx(1.0)  # entropy of 0.5/0.5, normalised
    assert "entropy of probs" in sel.proposals[0].reason


def test_disagreement_split_raters_first_identical_last(ds: Dataset) -> None:
    sel = select_cases(ds, "disagreement", 10, reviewed=())
    assert sel.case_ids[0] == "split" and sel.case_ids[-1] == "agree"
    assert sel.proposals[0].signals["disagreement"] == pytest.approx(1.0)  # disjoint raters: Dice 0
    assert sel.proposals[-1].signals["disagreement"] == pytest.approx(0.0)
    assert "inter-rater mean pairwise Dice 0.000 over 2 raters" in sel.proposals[0].reason


def test_diversity_does_not_pick_both_duplicates(ds: Dataset) -> None:
    sel = select_cases(ds, "diversity", 5, reviewed=())
    assert len(sel.case_ids) == 5 and len({"dup1", "dup2"} & set(sel.case_ids)) == 1
    assert all(p.score > 0 for p in sel.proposals[1:])  # every later pick adds a new image
    every = select_cases(ds, "diversity", 6, reviewed=())
    assert every.case_ids[-1] in ("dup1", "dup2") and every.proposals[-1].score == pytest.approx(0.0)


def test_diversity_counts_reviewed_cases_as_covered(ds: Dataset) -> None:
    sel = select_cases(ds, "diversity", 4, reviewed={"dup1"})
    assert "dup1" not in sel.case_ids and "dup2" not in sel.case_ids  # its twin is covered by the review
    assert sel.skipped_reviewed == ("dup1",)


def test_k_center_and_features() -> None:
    pts = np.array([[0.0], [0.1], [5.0], [5.0], [11.0]])
    assert [i for i, _ in k_center(pts, 3)] == [2, 4, 0]  # most typical first, then the farthest
    picks = k_center(pts, 2, centres=np.array([[0.0], [11.0]]))
    assert [i for i, _ in picks] == [2, 1] and picks[0][1] == pytest.approx(5.0)


def test_image_features_equal_for_equal_images(ds: Dataset) -> None:
    f = image_features(ds, ["dup1", "dup2", "stripes"])
    assert f.shape == (3, 16 * 16 + 16)
    np.testing.assert_array_equal(f[0], f[1])
    assert np.linalg.norm(f[0] - f[2]) > 0.1


def test_mix_ranks_by_every_signal_then_spreads(ds: Dataset, qa_csv: Path, tmp_path: Path) -> None:
    pred = write_predictions(tmp_path / "pred", ds, uncertain="split")
    sel = select_cases(ds, "mix", 3, qa=qa_csv, pred=pred, reviewed=())
    assert sel.signals == ("quality", "uncertainty", "disagreement")
    assert sel.case_ids[0] == "split"  # most uncertain, most disagreement, second-worst quality
    assert set(sel.proposals[0].signals) == {"quality", "uncertainty", "disagreement"}
    assert sel.proposals[0].reason.startswith("rank-average")
    assert len(set(sel.case_ids)) == 3 and not {"dup1", "dup2"} <= set(sel.case_ids)


def test_random_is_seeded(ds: Dataset) -> None:
    a = select_cases(ds, "random", 4, seed=3, reviewed=())
    assert a.case_ids == select_cases(ds, "random", 4, seed=3, reviewed=()).case_ids
    orders = {tuple(select_cases(ds, "random", 6, seed=s, reviewed=()).case_ids) for s in range(5)}
    assert len(orders) > 1


def test_reviewed_cases_are_skipped_unless_included(tmp_path: Path, qa_csv: Path) -> None:
    ds = write_select_dataset(tmp_path / "ds")
    store = ReviewStore(ds.root)
    store.add_review("agree", "accept")
    store.add_review("split", "flag")
    assert reviewed_cases(ds) == ("agree", "split")
    sel = select_cases(ds, "quality", 2, qa=qa_csv)
    assert sel.case_ids == ["dark", "dup2"] and sel.skipped_reviewed == ("agree", "split")
    assert select_cases(ds, "quality", 2, qa=qa_csv, include_reviewed=True).case_ids == ["agree", "split"]


def test_missing_inputs_are_one_clear_error(ds: Dataset, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'quality' needs --qa"):
        select_cases(ds, "quality", reviewed=())
    with pytest.raises(ConfigError, match="'uncertainty' needs --pred"):
        select_cases(ds, "uncertainty", reviewed=())
    single = write_select_dataset(tmp_path / "one", raters=1)
    with pytest.raises(ConfigError, match="'disagreement' needs a dataset with at least two raters"):
        select_cases(single, "disagreement", reviewed=())
    with pytest.raises(ConfigError, match="'mix' needs at least one signal"):
        select_cases(single, "mix", reviewed=())
    with pytest.raises(ConfigError, match="unknown strategy"):
        select_cases(ds, "worst", reviewed=())
    other = write_quality_csv(tmp_path / "other.csv", [("nowhere", "r0", 0.2)])
    with pytest.raises(DataError, match="no row of the quality table names a candidate"):
        select_cases(ds, "quality", qa=other, reviewed=())
    with pytest.raises(DataError, match="no quality table here"):
        select_cases(ds, "quality", qa=tmp_path, reviewed=())
    hard = write_predictions(tmp_path / "hard", ds, uncertain="split", hard=tuple(ds.ids))
    with pytest.raises(DataError, match="only hard label maps"):
        select_cases(ds, "uncertainty", pred=hard, reviewed=())


def test_write_json_and_csv(ds: Dataset, qa_csv: Path, tmp_path: Path) -> None:
    sel = select_cases(ds, "quality", 2, qa=qa_csv, reviewed=())
    doc = json.loads(sel.write(tmp_path / "queue.json").read_text())
    assert doc["format"] == "labelwise-next" and doc["strategy"] == "quality" and doc["n"] == 2
    assert [c["case"] for c in doc["cases"]] == ["agree", "split"]
    assert doc["cases"][0]["signals"] == {"quality": 0.35} and doc["cases"][0]["split"] == "train"
    rows = list(csv.DictReader((sel.write(tmp_path / "queue.csv")).open()))
    assert [r["case"] for r in rows] == ["agree", "split"] and rows[0]["quality"] == "0.35"
    with pytest.raises(ConfigError, match=r"\.json or a \.csv"):
        sel.write(tmp_path / "queue.txt")
    assert select_cases(ds, "diversity", 3, reviewed=()).to_json()["cases"][0]["score"] is None


def test_mix_does_not_propose_two_duplicates_in_a_row(tmp_path: Path) -> None:
    """The two worst labels belong to the same image: mix proposes one, then the next-worst other image."""
    ds = write_select_dataset(tmp_path / "ds", raters=1)
    rows = [("dup1", "r0", 0.10), ("dup2", "r0", 0.11), ("dark", "r0", 0.5), ("agree", "r0", 0.7)]
    rows += [("split", "r0", 0.8), ("stripes", "r0", 0.9)]
    qa = write_quality_csv(tmp_path / "quality.csv", rows)
    assert select_cases(ds, "quality", 2, qa=qa, reviewed=()).case_ids == ["dup1", "dup2"]
    sel = select_cases(ds, "mix", 3, qa=qa, reviewed=())
    assert sel.signals == ("quality",)
    assert sel.case_ids[:2] == ["dup1", "dark"] and sel.case_ids[2] != "dup2"
    last = select_cases(ds, "mix", 6, qa=qa, reviewed=())
    dup2 = last.proposals[last.case_ids.index("dup2")]
    assert dup2.rank >= 5 and "image-feature weight 0.00" in dup2.reason  # only the lowest-ranked 'stripes' ties
