"""``labelwise qa`` in parts (merged to exactly one run's tables) and on a Dask LocalCluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.cli.helpers import labelwise
from tests.engine.tinydata import disc_dataset

TABLES = ("quality.csv", "review_queue.csv", "case_quality.csv", "slices.csv", "evaluation.json")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("qa_parts")
    disc_dataset(root / "ds", n_train=3, n_val=1, n_test=3, size=16)
    res = labelwise(
        "train", "sentinel", "--data", root / "ds", "--out", root / "run", "--preset", "smoke",
        "--set", "train.progress=false",
    )  # fmt: skip
    assert res.code == 0, res.output
    return root / "ds", root / "run"


def _qa(ds: Path, run: Path, out: Path, *extra: object) -> int:
    res = labelwise("qa", "--run", run, "--data", ds, "--raters", "--reference", "r0", "--out", out, *extra)
    assert res.code == 0, res.output
    return res.code


def test_qa_parts_merge_to_exactly_one_run(trained: tuple[Path, Path], tmp_path: Path) -> None:
    ds, run = trained
    one, sharded = tmp_path / "one", tmp_path / "sharded"
    _qa(ds, run, one)
    for k in range(3):
        _qa(ds, run, sharded, "--num-parts", 3, "--part-id", k)
    missing = labelwise("qa", "merge", "--out", tmp_path / "nothing")
    assert missing.code == 1 and "no parts to merge" in missing.errors[0]
    assert labelwise("qa", "merge", "--out", sharded).code == 0
    for name in TABLES:
        assert (sharded / name).read_bytes() == (one / name).read_bytes(), name
    perturb = labelwise(
        "qa", "--run", run, "--data", ds, "--perturb", 2, "--reference", "r0", "--out", tmp_path / "p",
        "--num-parts", 2, "--part-id", 0,
    )  # fmt: skip
    assert perturb.code == 2 and "cannot be split into parts" in perturb.errors[0]


# a LocalCluster of 2 worker processes, each loading the model (issue 20: in CI)
def test_qa_on_a_local_cluster(trained: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    ds, run = trained
    one, dask = tmp_path / "one", tmp_path / "dask"
    _qa(ds, run, one)
    _qa(ds, run, dask, "--scheduler", "local:2")
    for name in TABLES[:4]:
        assert (dask / name).read_bytes() == (one / name).read_bytes(), name


def test_a_bad_mask_fails_its_case_only(trained: tuple[Path, Path], tmp_path: Path) -> None:
    import numpy as np

    from labelwise.data import Dataset
    from labelwise.io import write_label

    ds_root, run = trained
    ds = Dataset(ds_root)
    masks = tmp_path / "masks"
    ids = ds.split_ids(None)
    for cid in ids:
        case = ds[cid]
        label = case.raters[0] if cid != ids[0] else np.zeros((3, 3), np.int16)  # one mask of the wrong shape
        write_label(masks / f"{cid}.nii.gz", label.astype(np.uint8), case.spacing_mm, case.affine)
    res = labelwise("qa", "--run", run, "--data", ds_root, "--masks", masks, "--out", tmp_path / "q")
    assert res.code == 1 and res.errors == [f"error: 1 case(s) failed: {ids[0]}"]
    assert f"case {ids[0]} failed" in res.stderr and "has shape (3, 3)" in res.stderr
    rows = (tmp_path / "q" / "quality.csv").read_text().splitlines()[1:]
    assert {r.split(",")[0] for r in rows} == set(ids[1:])  # every other case scored
