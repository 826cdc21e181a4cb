"""``labelwise predict`` in parts (one folder, no shared index written by the parts) and on a Dask LocalCluster."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.cli.helpers import labelwise
from tests.engine.tinydata import disc_dataset

from labelwise.io import read_prediction

SMOKE = ["--preset", "smoke", "--set", "train.progress=false", "--set", "tta=false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("predict_parts")
    ds = disc_dataset(root / "ds", n_train=3, n_val=1, n_test=4, size=16)
    res = labelwise("train", "supervised", "--data", ds.root, "--out", root / "run", *SMOKE)
    assert res.code == 0, res.output
    return ds.root, root / "run"


def _same_predictions(a: Path, b: Path) -> None:
    index = json.loads((a / "predictions.json").read_text())
    assert index == json.loads((b / "predictions.json").read_text())
    for cid in index["cases"]:
        pa, pb = read_prediction(a, cid, 2), read_prediction(b, cid, 2)
        np.testing.assert_array_equal(pa.label, pb.label)
        np.testing.assert_allclose(pa.probs, pb.probs, atol=1e-6)


def test_predict_parts_then_merge(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = trained
    one, parts = tmp_path / "one", tmp_path / "parts"
    assert labelwise("predict", "--run", run, "--data", data, "--out", one).code == 0
    assert not (tmp_path / ".one.journal.jsonl").exists()
    first = labelwise("predict", "--run", run, "--data", data, "--out", parts, "--num-parts", 2, "--part-id", 1)
    assert first.code == 0, first.output
    assert not (parts / "predictions.json").exists()  # parts never write the shared index
    missing = labelwise("predict", "merge", "--out", parts)
    assert missing.code == 1 and "missing parts: part-0-of-2" in missing.errors[0]
    assert (
        labelwise("predict", "--run", run, "--data", data, "--out", parts, "--num-parts", 2, "--part-id", 0).code == 0
    )
    assert labelwise("predict", "merge", "--out", parts).code == 0
    _same_predictions(one, parts)


# a LocalCluster of 2 worker processes, each loading the model (issue 20: in CI)
def test_predict_on_a_local_cluster(trained: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    data, run = trained
    one, dask = tmp_path / "one", tmp_path / "dask"
    assert labelwise("predict", "--run", run, "--data", data, "--out", one).code == 0
    res = labelwise("predict", "--run", run, "--data", data, "--out", dask, "--scheduler", "local:2")
    assert res.code == 0, res.output
    _same_predictions(one, dask)
