"""Readers on good and broken input: every failure is a DataError naming the file."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from labelwise.errors import DataError
from labelwise.io import read_image, read_image_geometry, read_label, write_image, write_label


def _nifti(path: Path, data: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> Path:
    nib.save(nib.Nifti1Image(data, np.diag([*spacing, 1.0])), str(path))
    return path


def test_nifti_3d_image_and_label(tmp_path: Path) -> None:
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    p = _nifti(tmp_path / "a.nii.gz", data, (0.5, 0.7, 2.0))
    img = read_image(p, 3)
    assert img.array.shape == (1, 2, 3, 4) and img.array.dtype == np.float32
    assert img.spacing_mm == pytest.approx((0.5, 0.7, 2.0))
    np.testing.assert_array_equal(read_label(p, 3).array, data)


def test_4d_nifti_where_3d_expected(tmp_path: Path) -> None:
    p = _nifti(tmp_path / "fmri.nii.gz", np.zeros((4, 4, 4, 5), dtype=np.float32) + 1)
    with pytest.raises(DataError, match=r"fmri\.nii\.gz.*5 channels.*expected 1 channel"):
        read_image(p, 3, channels=1)
    with pytest.raises(DataError, match=r"fmri\.nii\.gz.*expected 3 spatial axes"):
        read_label(p, 3)
    assert read_image(p, 3).array.shape == (5, 4, 4, 4)  # without a channel constraint: channels last


def test_2d_png_where_3d_expected(tmp_path: Path) -> None:
    p = tmp_path / "slice.png"
    Image.fromarray(np.zeros((4, 5), dtype=np.uint8)).save(p)
    with pytest.raises(DataError, match=r"slice\.png.*2 axes"):
        read_image(p, 3)


def test_geometry_without_the_voxels(tmp_path: Path) -> None:
    """read_image_geometry gives read_image's shape, spacing and affine; a NIfTI's voxels are never read."""
    cases = {
        "v.nii.gz": np.zeros((4, 5, 6), np.float32),
        "rgb.nii.gz": np.zeros((4, 5, 6, 3), np.float32),
        "five.nii.gz": np.zeros((4, 5, 6, 1, 2), np.float32),
    }
    for name, data in cases.items():
        p = _nifti(tmp_path / name, data, (0.5, 0.7, 2.0))
        img = read_image(p, 3)
        shape, spacing, affine = read_image_geometry(p, 3)
        assert shape == img.array.shape and spacing == img.spacing_mm, name
        np.testing.assert_array_equal(affine, img.affine)
    png = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((4, 5, 3), dtype=np.uint8)).save(png)
    assert read_image_geometry(png, 2)[0] == (3, 4, 5)
    # a volume whose data is cut short: read_image fails, the header alone is still fine
    p = _nifti(tmp_path / "cut.nii.gz", np.random.default_rng(0).random((20, 20, 20)).astype(np.float32))
    raw = gzip.decompress(p.read_bytes())
    p.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(DataError, match="cannot read NIfTI"):
        read_image(p, 3)
    assert read_image_geometry(p, 3)[0] == (1, 20, 20, 20)
    p.write_bytes(b"not a nifti")
    with pytest.raises(DataError, match=r"cut\.nii\.gz: cannot read NIfTI header"):
        read_image_geometry(p, 3)
    with pytest.raises(DataError, match=r"fmri\.nii\.gz.*expected 3 spatial axes"):
        read_image_geometry(_nifti(tmp_path / "fmri.nii.gz", np.zeros((2, 2, 2, 2, 2, 2), np.float32)), 3)


def test_truncated_nifti(tmp_path: Path) -> None:
    p = _nifti(tmp_path / "t.nii.gz", np.random.default_rng(0).random((20, 20, 20)).astype(np.float32))
    raw = gzip.decompress(p.read_bytes())
    p.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(DataError, match=r"t\.nii\.gz: cannot read NIfTI"):
        read_image(p, 3)


def test_corrupt_and_misnamed_files(tmp_path: Path) -> None:
    garbage = tmp_path / "g.nii.gz"
    garbage.write_bytes(b"not a nifti at all")
    with pytest.raises(DataError, match=r"g\.nii\.gz: cannot read NIfTI"):
        read_image(garbage, 3)
    png_named_nii = tmp_path / "p.nii"
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(png_named_nii, format="PNG")
    with pytest.raises(DataError, match=r"p\.nii: cannot read NIfTI"):
        read_image(png_named_nii, 2)
    nii_named_png = tmp_path / "n.png"
    nii_named_png.write_bytes(_nifti(tmp_path / "x.nii", np.zeros((3, 3), np.uint8)).read_bytes())
    with pytest.raises(DataError, match=r"n\.png: cannot read image"):
        read_image(nii_named_png, 2)
    with pytest.raises(DataError, match=r"x\.txt: unsupported file type"):
        read_image(tmp_path / "x.txt", 2)
    with pytest.raises(DataError, match=r"missing\.png: file not found"):
        read_image(tmp_path / "missing.png", 2)


def test_truncated_png(tmp_path: Path) -> None:
    p = tmp_path / "t.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(p)
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(DataError, match=r"t\.png: cannot read image"):
        read_image(p, 2)


def test_npy_object_array_refused(tmp_path: Path) -> None:
    p = tmp_path / "o.npy"
    np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"o\.npy: cannot read numpy file.*object arrays are refused"):
        read_image(p, 2)


def test_npz_keys_and_geometry(tmp_path: Path) -> None:
    arr = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    p = write_image(tmp_path / "a.npz", arr, (0.25, 4.0))
    img = read_image(p, 2)
    np.testing.assert_array_equal(img.array, arr)
    assert img.spacing_mm == (0.25, 4.0)
    two = tmp_path / "two.npz"
    np.savez(two, a=np.zeros((2, 2)), b=np.ones((2, 2)))
    with pytest.raises(DataError, match=r"two\.npz: NPZ holds arrays"):
        read_image(two, 2)
    named = tmp_path / "named.npz"
    np.savez(named, image=np.ones((3, 3)), other=np.zeros(2))
    assert read_image(named, 2).array.shape == (1, 3, 3)


def test_nan_image_and_non_integer_label(tmp_path: Path) -> None:
    data = np.zeros((3, 3, 3), dtype=np.float32)
    data[0, 0, 0] = np.nan
    p = _nifti(tmp_path / "nan.nii.gz", data)
    with pytest.raises(DataError, match=r"nan\.nii\.gz: 1 voxels are NaN"):
        read_image(p, 3)
    q = _nifti(tmp_path / "frac.nii.gz", np.full((3, 3, 3), 0.5, dtype=np.float32))
    with pytest.raises(DataError, match=r"frac\.nii\.gz: label map has non-integer values"):
        read_label(q, 3)


def test_empty_image(tmp_path: Path) -> None:
    p = tmp_path / "e.npy"
    np.save(p, np.zeros((0, 4), dtype=np.float32))
    with pytest.raises(DataError, match=r"e\.npy: image is empty"):
        read_image(p, 2)


def test_colour_label_with_differing_channels(tmp_path: Path) -> None:
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    p = tmp_path / "c.png"
    Image.fromarray(rgb).save(p)
    with pytest.raises(DataError, match=r"c\.png: label map is a colour image"):
        read_label(p, 2)
    grey_rgb = np.repeat(np.array([[0, 255]], dtype=np.uint8)[..., None], 3, axis=-1)
    Image.fromarray(grey_rgb).save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_label(tmp_path / "g.png", 2).array, [[0, 255]])


def test_one_bit_bmp_mask(tmp_path: Path) -> None:
    mask = np.zeros((5, 6), dtype=bool)
    mask[1:3, 2:5] = True
    Image.fromarray(mask).convert("1").save(tmp_path / "m.bmp")
    lab = read_label(tmp_path / "m.bmp", 2).array
    assert lab.dtype == np.int16
    np.testing.assert_array_equal(lab > 0, mask)


def test_multipage_tiff_is_a_stack(tmp_path: Path) -> None:
    pages = [np.full((4, 5), v, dtype=np.uint8) for v in (10, 20, 30)]
    p = tmp_path / "stack.tif"
    Image.fromarray(pages[0]).save(p, save_all=True, append_images=[Image.fromarray(x) for x in pages[1:]])
    img = read_image(p, 3)
    assert img.array.shape == (1, 3, 4, 5)
    np.testing.assert_array_equal(img.array[0, :, 0, 0], [10, 20, 30])
    with pytest.raises(DataError, match=r"stack\.tif: label map has shape \(3, 4, 5\); expected 2"):
        read_label(p, 2)


def _write_dicom_series(folder: Path, arr_zyx: np.ndarray, spacing_xyz, origin, series: str = "1") -> None:
    import SimpleITK as sitk

    folder.mkdir(exist_ok=True)
    vol = sitk.GetImageFromArray(arr_zyx)
    vol.SetSpacing(spacing_xyz)
    vol.SetOrigin(origin)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(arr_zyx.shape[0]):
        sl = vol[:, :, z]
        sl.SetMetaData("0020|000d", "1.2.826.0.1.3680043.2.1125.1")
        sl.SetMetaData("0020|000e", f"1.2.826.0.1.3680043.2.1125.1.{series}")
        sl.SetMetaData("0008|0060", "CT")
        sl.SetMetaData("0020|0032", "\\".join(str(v) for v in vol.TransformIndexToPhysicalPoint((0, 0, z))))
        sl.SetMetaData("0020|0037", "1\\0\\0\\0\\1\\0")
        sl.SetMetaData("0020|0013", str(z + 1))
        # write slices in reverse order: the reader must sort them by position
        writer.SetFileName(str(folder / f"s{series}_slice{arr_zyx.shape[0] - z:03d}.dcm"))
        writer.Execute(sl)


def test_dicom_series(tmp_path: Path) -> None:
    arr = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)  # (z, y, x)
    _write_dicom_series(tmp_path / "series", arr, (0.5, 0.75, 2.0), (10.0, 20.0, 30.0))
    img = read_image(tmp_path / "series", 3)
    assert img.array.shape == (1, 6, 5, 4)  # (x, y, z) like NIfTI
    np.testing.assert_array_equal(img.array[0], arr.transpose(2, 1, 0))
    assert img.spacing_mm == pytest.approx((0.5, 0.75, 2.0))
    # LPS (DICOM) -> RAS (NIfTI): x and y flip sign, z keeps it
    np.testing.assert_allclose(img.affine[:3, 3], (-10.0, -20.0, 30.0))
    np.testing.assert_allclose(np.diag(img.affine)[:3], (-0.5, -0.75, 2.0))
    # written back as NIfTI, the volume keeps its geometry
    out = write_image(tmp_path / "back.nii.gz", img.array, img.spacing_mm, img.affine)
    back = read_image(out, 3)
    np.testing.assert_allclose(back.affine, img.affine, atol=1e-5)


def test_dicom_folder_with_two_series(tmp_path: Path) -> None:
    arr = np.zeros((2, 3, 4), dtype=np.int16)
    _write_dicom_series(tmp_path / "mixed", arr, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), series="1")
    _write_dicom_series(tmp_path / "mixed", arr + 1, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), series="2")
    with pytest.raises(DataError, match=r"mixed: folder holds 2 DICOM series"):
        read_image(tmp_path / "mixed", 3)


def test_dicom_broken(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no DICOM series"):
        read_image(tmp_path / "empty", 3)
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\x00" * 300)
    with pytest.raises(DataError, match=r"bad\.dcm: cannot read DICOM"):
        read_image(bad, 2)


def test_write_label_refuses_floats_and_big_png_values(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="integer arrays"):
        write_label(tmp_path / "f.nii.gz", np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(DataError, match=r"big\.png: raster label maps hold values 0\.\.255"):
        write_label(tmp_path / "big.png", np.full((2, 2), 300, dtype=np.int16))
    assert not (tmp_path / "big.png").exists()
