"""``labelwise propagate --classes``: only the listed label values are propagated, written back with their values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from labelwise.cli.main import app
from labelwise.io import read_image, read_label, write_image, write_label


def _volume(tmp: Path) -> tuple[Path, Path, np.ndarray]:
    x, y = np.mgrid[:24, :24]
    img = np.zeros((24, 24, 8), np.float32)
    lab = np.zeros((24, 24, 8), np.int16)
    for z in range(8):
        disc = (x - 8 - z // 2) ** 2 + (y - 8) ** 2 <= 16
        square = (x >= 14) & (x < 20) & (y >= 14) & (y < 20)
        img[..., z] = disc * 1.0 + square * 0.5
        lab[..., z][disc] = 7
        lab[..., z][square] = 3
    sparse = np.zeros_like(lab)
    sparse[..., 4] = lab[..., 4]
    write_image(tmp / "img.nii.gz", img[None], (1.0, 1.0, 2.0))
    write_label(tmp / "lab.nii.gz", sparse, (1.0, 1.0, 2.0))
    return tmp / "img.nii.gz", tmp / "lab.nii.gz", lab


def _run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, ["propagate", *args])
    return r.exit_code, r.output


def test_only_listed_values_with_their_own_values(tmp_path: Path) -> None:
    img, lab, truth = _volume(tmp_path)
    out = tmp_path / "out.nii.gz"
    code, output = _run(str(img), "--labels", str(lab), "--out", str(out), "--classes", "7")
    assert code == 0, output
    filled = read_label(out, 3).array
    assert set(np.unique(filled)) == {0, 7}
    np.testing.assert_array_equal(filled[..., 4] == 7, truth[..., 4] == 7)
    probs = tmp_path / "probs.nii.gz"
    code, output = _run(str(img), "--labels", str(lab), "--out", str(out), "--classes", "7,3", "--probs", str(probs))
    assert code == 0, output
    filled = read_label(out, 3).array
    assert set(np.unique(filled)) == {0, 3, 7}
    assert read_image(probs, 3).array.shape[0] == 3  # background, 7, 3
    inside = (filled == truth)[..., [3, 5]].mean()
    assert inside > 0.95  # neighbouring slices are filled with the right values


def test_bad_class_list_is_one_line_error(tmp_path: Path) -> None:
    img, lab, _ = _volume(tmp_path)
    for bad in ("0", "7,7", "x"):
        r = CliRunner().invoke(app, ["propagate", str(img), "--labels", str(lab), "--out", str(tmp_path / "o.nii.gz"),
                                     "--classes", bad])  # fmt: skip
        assert r.exit_code != 0 and "--classes" in str(r.exception), (bad, r.output)
