from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from labelwise.data import Dataset, DatasetWriter
from labelwise.errors import DataError
from labelwise.uncertainty import REPORT_NAME, write_pseudo_labels


def _volume_dataset(root: Path) -> Dataset:
    """One 8x8x8 volume labelled on slices 0..1 only, one unlabelled volume."""
    w = DatasetWriter(root, "vol", 3, ("background", "organ"), ("gt",))
    lab = np.zeros((8, 8, 8), np.int16)
    lab[2:6, 2:6, :2] = 1
    img = np.random.default_rng(0).normal(size=(1, 8, 8, 8)).astype(np.float32)
    w.add_case("a", img, {"gt": lab}, (1.0, 1.0, 2.0), split="train", labelled_slices=(0, 1))
    w.add_case("b", img, None, (1.0, 1.0, 2.0), split="train")
    w.finish()
    return Dataset(root)


def test_write_pseudo_labels_keeps_certain_chunks_and_leaves_source_alone(tmp_path: Path) -> None:
    ds = _volume_dataset(tmp_path / "src")
    before = (tmp_path / "src" / "dataset.json").read_bytes()
    p = np.zeros((8, 8, 8), np.int16)
    p[2:6, 2:6, :] = 1
    q = p.copy()
    q[..., 4:] = 0  # disagreement on slices 4..7
    report = write_pseudo_labels(
        ds, {"a": [p, q], "b": [p, p]}, tmp_path / "new", ("background", "organ"), chunk_size=4
    )
    assert (tmp_path / "src" / "dataset.json").read_bytes() == before
    new = Dataset(tmp_path / "new")
    assert new.rater_ids == ("pseudo",)
    a = new["a"]
    # chunk 0..3 certain, minus the human-labelled slices 0, 1; chunk 4..7 uncertain
    assert a.labelled_slices == (2, 3)
    assert a.raters[0][..., 2].sum() == 16 and a.raters[0][..., 5].sum() == 0
    assert new["b"].labelled_slices == tuple(range(8))
    assert report.kept_units == 3 and len(report.decisions) == 4
    saved = json.loads((tmp_path / "new" / REPORT_NAME).read_text(encoding="utf-8"))
    assert saved["kept_slices"]["a"] == [2, 3] and saved["total_units"] == 4


def test_external_scores_select_whole_cases(tmp_path: Path) -> None:
    ds = _volume_dataset(tmp_path / "src")
    p = np.zeros((8, 8, 8), np.int16)
    report = write_pseudo_labels(
        ds,
        {"a": [p], "b": [p]},
        tmp_path / "new",
        ("background", "organ"),
        scores={"a": 0.95, "b": 0.3},
        skip_labelled=False,
    )
    assert report.cases_written == ["a"] and report.signal == "external"
    assert Dataset(tmp_path / "new")["a"].labelled_slices == tuple(range(8))


def test_refuses_to_overwrite_the_source_and_bad_shapes(tmp_path: Path) -> None:
    ds = _volume_dataset(tmp_path / "src")
    with pytest.raises(DataError, match="new folder"):
        write_pseudo_labels(ds, {}, tmp_path / "src", ("background", "organ"))
    with pytest.raises(DataError, match="prediction shape"):
        write_pseudo_labels(ds, {"a": [np.zeros((8, 8, 7), int)]}, tmp_path / "n2", ("background", "organ"))
