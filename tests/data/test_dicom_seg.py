"""DICOM-SEG export of predictions / fused labels and DICOM-SEG import as a rater, on pydicom-built CT series."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from labelwise.cli.main import app
from labelwise.data import Dataset, DatasetWriter
from labelwise.data.export import export_dicom_seg
from labelwise.data.raters import import_rater
from labelwise.errors import DataError, MissingExtraError
from labelwise.io import Prediction, PredictionIndex, read_image, write_prediction
from labelwise.io.dicom_seg import read_dicom_seg

hd = pytest.importorskip("highdicom")
pydicom = pytest.importorskip("pydicom")

runner = CliRunner()
CLASSES = ("background", "liver", "spleen")
# two orientations: axial, and one whose rows run along patient y (and slices go towards -z)
ORIENTATIONS = {"ax": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), "swap": (0.0, 1.0, 0.0, 1.0, 0.0, 0.0)}


def _write_ct_series(folder: Path, arr_zyx: np.ndarray, spacing_xyz: tuple[float, float, float], origin, orientation):
    """A CT series as a scanner writes it: one CT Image Storage instance per slice, files in reverse order."""
    from pydicom.dataset import Dataset as DicomDataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    normal = np.cross(row, col)
    for z in range(arr_zyx.shape[0]):
        uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = DicomDataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "P1", "Test^Patient", "", "O"
        ds.StudyID, ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "1", "20240101", "120000", ""
        ds.ReferringPhysicianName, ds.Modality, ds.Manufacturer = "", "CT", "test"
        ds.SeriesNumber, ds.InstanceNumber = 1, z + 1
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.ImagePositionPatient = [float(v) for v in np.asarray(origin) + z * spacing_xyz[2] * normal]
        ds.PixelSpacing = [float(spacing_xyz[1]), float(spacing_xyz[0])]  # between rows, between columns
        ds.SliceThickness = float(spacing_xyz[2])
        ds.Rows, ds.Columns = arr_zyx.shape[1], arr_zyx.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = arr_zyx[z].astype(np.int16).tobytes()
        ds.save_as(folder / f"IM{arr_zyx.shape[0] - z:04d}.dcm", enforce_file_format=True)


def _prediction(shape: tuple[int, ...], shift: int) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    lab[1:4, 2 + shift : 5 + shift, 1:3] = 1
    lab[4:6, 0:2, 2:4] = 2
    return lab


@pytest.fixture()
def dicom_dataset(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """Two cases imported from DICOM series (``src/images/<case>/``), a prediction folder for both."""
    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    writer = DatasetWriter(
        tmp_path / "ds", name="ct", spatial_dims=3, class_names=CLASSES, rater_ids=("a", "b"), source=str(src)
    )
    preds: dict[str, np.ndarray] = {}
    index = PredictionIndex("mrnet", CLASSES, cases=[])
    for i, (case, orientation) in enumerate(ORIENTATIONS.items()):
        arr = rng.integers(-200, 300, (4, 7, 6)).astype(np.int16)  # (z, rows, columns)
        _write_ct_series(src / "images" / case, arr, (0.7, 0.8, 2.5), (10.0, -20.0, 30.0 + i), orientation)
        img = read_image(src / "images" / case, 3)  # what an import from DICOM stores
        shape = img.array.shape[1:]
        raters = {"a": _prediction(shape, 0), "b": _prediction(shape, 1)}
        writer.add_case(case, img.array.astype(np.int16), raters, img.spacing_mm, img.affine, split="test")
        preds[case] = _prediction(shape, i)
        probs = np.stack([preds[case] == c for c in range(3)]).astype(np.float32)
        write_prediction(tmp_path / "pred", case, Prediction(probs=probs), img.spacing_mm, img.affine)
        index.cases.append(case)
    index.save(tmp_path / "pred")
    writer.finish()
    return tmp_path / "ds", tmp_path / "pred", preds


def test_export_reads_back_with_highdicom(tmp_path: Path, dicom_dataset) -> None:
    ds_path, pred, preds = dicom_dataset
    out = tmp_path / "seg"
    res = runner.invoke(app, ["export", "dicom-seg", "--pred", str(pred), "--data", str(ds_path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"wrote 2 DICOM-SEG file(s) to {out}" in res.output
    for case in ORIENTATIONS:
        seg = hd.seg.segread(out / f"{case}.dcm")
        assert seg.SegmentationType == "BINARY"
        assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "spleen"]
        algo = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
        assert algo.AlgorithmName == "labelwise mrnet"
        # each frame sits at its source instance's position; its pixels are the prediction's slice
        sources = {
            d.SOPInstanceUID: d for d in map(pydicom.dcmread, sorted((ds_path.parent / "src/images" / case).iterdir()))
        }
        img = read_image(ds_path.parent / "src/images" / case, 3)
        lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine
        pixels = seg.pixel_array if seg.pixel_array.ndim == 3 else seg.pixel_array[None]
        rebuilt = np.zeros(preds[case].shape, np.uint8)
        for f, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
            uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
            assert position == pytest.approx([float(v) for v in sources[uid].ImagePositionPatient], abs=1e-4)
            k = round(float((np.linalg.inv(lps) @ [*position, 1.0])[2]))
            number = frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber
            rebuilt[:, :, k][pixels[f].T > 0] = number
        np.testing.assert_array_equal(rebuilt, preds[case])


def test_export_then_import_as_rater_is_the_original(tmp_path: Path, dicom_dataset) -> None:
    ds_path, pred, preds = dicom_dataset
    export_dicom_seg(pred, ds_path, tmp_path / "seg")
    args = ["data", "import-rater", str(tmp_path / "seg"), "--data", str(ds_path), "--name", "model"]
    res = runner.invoke(app, [*args, "--dicom", str(ds_path.parent / "src" / "images")])
    assert res.exit_code == 0, res.output
    assert "added rater model (dicom-seg) to 2 cases" in res.output
    ds = Dataset(ds_path)
    for case in ORIENTATIONS:
        c = ds[case]
        np.testing.assert_array_equal(c.raters[c.rater_ids.index("model")], preds[case])


def test_export_fused_labels(tmp_path: Path, dicom_dataset) -> None:
    ds_path, _, _ = dicom_dataset
    assert runner.invoke(app, ["fuse", "--data", str(ds_path), "--out", str(tmp_path / "fused")]).exit_code == 0
    dicom = ds_path.parent / "src" / "images"
    export_dicom_seg(tmp_path / "fused", tmp_path / "fused", tmp_path / "seg", dicom=dicom)
    seg = hd.seg.segread(tmp_path / "seg" / "ax.dcm")
    algo = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (
        algo.AlgorithmName == "labelwise fuse majority"
        and seg.SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"
    )
    report = import_rater(tmp_path / "fused", tmp_path / "seg", "fused_back", "dicom-seg")
    fused = Dataset(tmp_path / "fused")["swap"]
    np.testing.assert_array_equal(fused.raters[1], fused.raters[0])
    assert report.imported == ["ax", "swap"]


def test_series_without_an_instance_is_refused(tmp_path: Path, dicom_dataset) -> None:
    ds_path, pred, _ = dicom_dataset
    series = ds_path.parent / "src" / "images" / "ax"
    sorted(series.iterdir())[1].unlink()  # one slice of the series is gone
    res = runner.invoke(
        app, ["export", "dicom-seg", "--pred", str(pred), "--data", str(ds_path), "--out", str(tmp_path / "seg")]
    )
    assert res.exit_code == 1
    message = str(res.exception)
    assert message.startswith(f"{series}: series has 3 instances but the label map has 4 slices; no instance for")
    assert "\n" not in message
    assert not (tmp_path / "seg").exists() and not list(tmp_path.glob(".seg*"))


def test_seg_referencing_absent_instances_is_refused_on_import(tmp_path: Path, dicom_dataset) -> None:
    ds_path, pred, _ = dicom_dataset
    export_dicom_seg(pred, ds_path, tmp_path / "seg")
    other = tmp_path / "other" / "ax"
    _write_ct_series(other, np.zeros((4, 7, 6), np.int16), (0.7, 0.8, 2.5), (10.0, -20.0, 30.0), ORIENTATIONS["ax"])
    (tmp_path / "seg" / "swap.dcm").unlink()
    before = (ds_path / "dataset.json").read_text()
    with pytest.raises(DataError, match=r"ax\.dcm: references 4 instance\(s\) missing from the source series"):
        import_rater(ds_path, tmp_path / "seg", "model", "dicom-seg", allow_missing=True, dicom=tmp_path / "other")
    assert (ds_path / "dataset.json").read_text() == before


def test_seg_on_another_grid_is_refused(tmp_path: Path, dicom_dataset) -> None:
    ds_path, pred, _ = dicom_dataset
    export_dicom_seg(pred, ds_path, tmp_path / "seg")
    swap = Dataset(ds_path)["swap"]
    # the axial case's SEG placed on the other case's grid: caught by the frame geometry
    with pytest.raises(DataError, match=r"ax\.dcm: frame orientation .* differs from the image grid's"):
        read_dicom_seg(tmp_path / "seg" / "ax.dcm", swap.affine, swap.spatial_shape, CLASSES)
    # through import-rater the referenced instances (the other case's series) are checked first
    (tmp_path / "seg" / "swap.dcm").unlink()
    (tmp_path / "seg" / "ax.dcm").rename(tmp_path / "seg" / "swap.dcm")
    with pytest.raises(DataError, match=r"swap\.dcm: references 4 instance\(s\) missing from the source series"):
        import_rater(ds_path, tmp_path / "seg", "model", "dicom-seg", allow_missing=True)


def test_missing_highdicom_is_one_line(tmp_path: Path, dicom_dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    ds_path, pred, _ = dicom_dataset
    monkeypatch.setitem(sys.modules, "highdicom", None)  # import highdicom -> ImportError
    with pytest.raises(MissingExtraError) as info:
        export_dicom_seg(pred, ds_path, tmp_path / "seg")
    assert str(info.value) == "DICOM-SEG needs the [dicom] extra: pip install 'labelwise[dicom]'"
    assert not (tmp_path / "seg").exists()
