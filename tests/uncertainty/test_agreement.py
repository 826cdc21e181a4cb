from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from labelwise.errors import ConfigError, DataError
from labelwise.uncertainty import (
    ChunkCertainty,
    agreement_map,
    certainty,
    chunk_certainty,
    class_iou,
    kept_slices,
    load_quality_scores,
    plurality_vote,
    select_by_scores,
    select_chunks,
)


def test_plurality_vote_ties_go_to_lower_class() -> None:
    preds = np.array([[0, 1, 2, 2], [1, 1, 2, 1], [1, 0, 0, 0]])
    # column 3: votes {2, 1, 0} -> three-way tie -> class 0
    assert plurality_vote(preds).tolist() == [1, 1, 2, 0]
    assert plurality_vote(list(preds), num_classes=3).dtype == np.int16


def test_agreement_map_fraction_agreeing_with_vote() -> None:
    preds = np.array([[0, 1, 2], [0, 1, 1], [0, 0, 1]])
    np.testing.assert_allclose(agreement_map(preds), [1.0, 2 / 3, 2 / 3])
    assert agreement_map(preds[:1]).tolist() == [1.0, 1.0, 1.0]


def test_class_iou_empty_in_both_is_one() -> None:
    a = np.array([[1, 1], [0, 0]])
    b = np.array([[1, 0], [0, 0]])
    # class 1: inter 1, union 2; class 2 absent from both -> 1
    assert class_iou(a, b, 3).tolist() == [0.5, 1.0]
    assert class_iou(a, np.zeros_like(a), 2).tolist() == [0.0]


def test_certainty_hand_derived() -> None:
    a = np.array([1, 1, 0, 0])
    b = np.array([1, 0, 0, 0])
    # vote: position 1 ties (class 1 vs 0) -> 0, so vote = b; IoU(a, vote) = 1/2, IoU(b, vote) = 1 -> 0.75
    assert certainty([a, b], 2) == pytest.approx(0.75)
    assert certainty([a, a, a], 2) == 1.0
    assert certainty(np.zeros((2, 3, 3), int), 4) == 1.0  # all empty: every class empty/empty


def test_chunk_certainty_localises_disagreement() -> None:
    a = np.zeros((4, 4, 6), int)
    a[1:3, 1:3, :] = 1
    b = a.copy()
    b[..., 4:] = 0  # network b misses the structure on slices 4 and 5
    chunks = chunk_certainty([a, b, a], 2, chunk_size=3)
    assert [(c.start, c.stop) for c in chunks] == [(0, 3), (3, 6)]
    assert chunks[0].certainty == 1.0
    # chunk 2: vote = a; IoU(a, a) = 1 twice, IoU(b, a) = 4 / 12 (slice 3 only of 3 slices)
    assert chunks[1].certainty == pytest.approx((1 + 1 + 4 / 12) / 3)
    whole = chunk_certainty([a, b], 2)
    assert len(whole) == 1 and whole[0].stop == 6


def test_bad_inputs() -> None:
    with pytest.raises(DataError, match="different shapes"):
        certainty([np.zeros((2, 2), int), np.zeros((3, 2), int)])
    with pytest.raises(DataError, match="negative"):
        plurality_vote(np.array([[-1, 0]]))
    with pytest.raises(DataError, match="outside"):
        plurality_vote(np.array([[3, 0]]), num_classes=2)
    with pytest.raises(DataError, match="chunk_size"):
        chunk_certainty(np.zeros((1, 2, 2), int), 2, chunk_size=0)
    with pytest.raises(DataError, match="not a spatial axis"):
        chunk_certainty(np.zeros((1, 2, 2), int), 2, axis=5)


def test_selection_threshold_and_nan() -> None:
    decisions = select_chunks("c", [ChunkCertainty(0, 2, 0.9), ChunkCertainty(2, 4, 0.89)])
    assert [d.kept for d in decisions] == [True, False]  # >= threshold is kept
    ext = select_by_scores({"a": 0.95, "b": float("nan"), "c": 0.2}, threshold=0.5)
    assert [(d.case_id, d.kept, d.signal) for d in ext] == [
        ("a", True, "external"),
        ("b", False, "external"),
        ("c", False, "external"),
    ]
    assert math.isnan(ext[1].score)
    assert kept_slices(decisions, "c", 10) == (0, 1)
    assert kept_slices(ext, "a", 3) == (0, 1, 2)
    with pytest.raises(ConfigError):
        select_chunks("c", [], threshold=1.5)


def test_load_quality_scores_json_and_csv(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text(json.dumps({"scores": {"a": 0.5, "b": 1}}))
    assert load_quality_scores(tmp_path / "s.json") == {"a": 0.5, "b": 1.0}
    (tmp_path / "s.csv").write_text("case_id,predicted_dice\nx,0.25\ny,0.75\n")
    assert load_quality_scores(tmp_path / "s.csv") == {"x": 0.25, "y": 0.75}
    (tmp_path / "bad.csv").write_text("id,value\nx,1\n")
    with pytest.raises(DataError, match="columns"):
        load_quality_scores(tmp_path / "bad.csv")
    (tmp_path / "bad.json").write_text('{"a": "high"}')
    with pytest.raises(DataError, match="malformed"):
        load_quality_scores(tmp_path / "bad.json")
