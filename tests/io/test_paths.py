"""Path rules of labelwise.io.paths: safe ids, joins that stay inside, outputs that never touch inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from labelwise.errors import DataError
from labelwise.io import check_id, check_output_not_input, id_problem, safe_join


@pytest.mark.parametrize("good", ["case01", "LIDC-IDRI-0001_slice_12.png", "a.b_c-d", "0", "x" * 200])
def test_safe_ids(good: str) -> None:
    assert id_problem(good) is None and check_id(good) == good


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "a..b", ".hidden", "-x", "<b>", "a b", "é", "x" * 201, 3])
def test_unsafe_ids(bad: object) -> None:
    assert id_problem(bad, "rater id") is not None
    with pytest.raises(DataError, match="rater id"):
        check_id(bad, "rater id", "dataset.json")


def test_safe_join_stays_inside(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "images", "a.nii.gz") == tmp_path / "images" / "a.nii.gz"
    assert safe_join(tmp_path, "labels/a_r1.png") == tmp_path / "labels" / "a_r1.png"
    for bad in ("../x", "/etc/passwd", "a/../../x", ""):
        with pytest.raises(DataError, match="inside the folder"):
            safe_join(tmp_path, bad)
    (tmp_path / "out").symlink_to(tmp_path.parent, target_is_directory=True)
    with pytest.raises(DataError, match="resolves outside"):
        safe_join(tmp_path, "out", "x")


def test_output_not_input(tmp_path: Path) -> None:
    data, run = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    (data / "f.nii.gz").write_bytes(b"")
    check_output_not_input(tmp_path / "pred", [data, run, None])
    check_output_not_input(tmp_path / "data-2", [data])  # a sibling with a common prefix is fine
    with pytest.raises(DataError, match="--out is the input"):
        check_output_not_input(data, [run, data])
    with pytest.raises(DataError, match="lies inside the input"):
        check_output_not_input(data / "pred", [data])
    with pytest.raises(DataError, match="contains the input"):
        check_output_not_input(tmp_path, [data])
    with pytest.raises(DataError, match="--probs is the input"):
        check_output_not_input(data / "f.nii.gz", [data / "f.nii.gz"], "--probs")
    (tmp_path / "alias").symlink_to(data, target_is_directory=True)
    with pytest.raises(DataError, match="is the input"):
        check_output_not_input(tmp_path / "alias", [data])
