"""DICOM Segmentation (DICOM-SEG) objects: write a label map against its source series, read one back.

Both directions go through highdicom (the optional extra ``labelwise[dicom]``); without it every function raises
:class:`~labelwise.errors.MissingExtraError` naming the extra.

Geometry. labelwise label maps are ``(X, Y[, Z])`` in the voxel order :func:`labelwise.io.read_image` gives a
DICOM series (x = column, y = row, z = slice sorted along the slice normal) with a RAS affine. DICOM positions are
LPS, so ``diag(-1, -1, 1, 1) @ affine`` maps voxel indices to DICOM patient coordinates. A frame of a SEG is placed
by its ``ImagePositionPatient``: the position must land on voxel ``(0, 0, k)`` of the label grid (within 0.01
voxel), and the frame's orientation and pixel spacing must be those of the grid; the frame's ``(rows, columns)``
pixels are then slice ``k`` transposed. Writing, every source instance must likewise land on one slice of the grid,
and every slice must have its instance.

Segments. One binary segment per foreground class (segment number = class index, segment label = class name),
written as a label-map style array so segments never overlap. Reading accepts BINARY, FRACTIONAL (a pixel
belongs to a segment when its value is at least half the maximum) and LABELMAP segmentations; segments are matched
to class names by label (case and ``_``/``-``/space insensitive, or through an explicit map); two segments claiming
the same voxel are an error, since a label map holds one class per voxel.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labelwise.errors import DataError, require_extra
from labelwise.io.atomic import atomic_path

__all__ = [
    "SEGMENTATION_SOP_CLASSES",
    "SegAlgorithm",
    "normalise_name",
    "read_dicom_seg",
    "read_series_datasets",
    "require_highdicom",
    "write_dicom_seg",
]

logger = logging.getLogger(__name__)

SEGMENTATION_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")
"""Segmentation Storage and Label Map Segmentation Storage."""

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
_VOXEL_TOL = 0.01
_FEATURE = "DICOM-SEG"


def require_highdicom() -> Any:
    """Import and return highdicom, or raise :class:`~labelwise.errors.MissingExtraError` naming ``[dicom]``."""
    return require_extra("highdicom", "dicom", feature=_FEATURE)


def normalise_name(name: str) -> str:
    """Fold case and treat ``_``, ``-`` and spaces alike, for matching structure names to class names.

    Example:
        >>> normalise_name("Kidney left") == normalise_name("kidney_left")
        True

    """
    return " ".join(name.replace("_", " ").replace("-", " ").lower().split())


@dataclass(frozen=True)
class SegAlgorithm:
    """Who made the segmentation (DICOM Algorithm Identification).

    Attributes:
        name: Algorithm name, e.g. ``"labelwise mrnet"``.
        version: Its version (labelwise's version).
        automatic: True for a model's prediction (``AUTOMATIC``), False for fused human labels
            (``SEMIAUTOMATIC``).

    """

    name: str
    version: str
    automatic: bool = True


def read_series_datasets(series: str | Path) -> list[Any]:
    """Read the instances of one DICOM series (a folder, or one file) as pydicom datasets.

    Files that are not DICOM are skipped. The instances are returned sorted along the slice normal.

    Raises:
        DataError: no DICOM instances, several series in the folder, or instances without geometry.

    """
    pydicom = require_extra("pydicom", "dicom", feature=_FEATURE)
    p = Path(series)
    files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
    datasets = []
    for f in files:
        try:
            datasets.append(pydicom.dcmread(f))
        except (pydicom.errors.InvalidDicomError, OSError, EOFError) as exc:
            logger.debug("skipping %s (%s)", f, exc)
    if not datasets:
        raise DataError("no DICOM instances here", p)
    uids = sorted({str(getattr(d, "SeriesInstanceUID", "")) for d in datasets})
    if len(uids) > 1:
        raise DataError(f"holds {len(uids)} DICOM series {uids}; give one series per case", p)
    for d in datasets:
        if "ImagePositionPatient" not in d or "ImageOrientationPatient" not in d:
            raise DataError("DICOM instance has no ImagePositionPatient/ImageOrientationPatient", d.filename or p)
    orientation = np.asarray(datasets[0].ImageOrientationPatient, dtype=np.float64)
    normal = np.cross(orientation[:3], orientation[3:])
    datasets.sort(key=lambda d: float(np.dot(normal, np.asarray(d.ImagePositionPatient, dtype=np.float64))))
    return datasets


def _grid(affine: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Return (voxel -> LPS affine of a 3D grid, its shape); 2D grids get a single slice."""
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) != 3:
        raise DataError(f"label map has shape {shape}; expected 2 or 3 spatial axes")
    return _LPS @ np.asarray(affine, dtype=np.float64), (int(shape[0]), int(shape[1]), int(shape[2]))


def _slice_index(
    inverse: np.ndarray,
    position: Sequence[float],
    depth: int,
    source: str | Path,
) -> int:
    ijk = inverse @ np.array([*(float(v) for v in position), 1.0])
    k = round(float(ijk[2]))
    if abs(ijk[0]) > _VOXEL_TOL or abs(ijk[1]) > _VOXEL_TOL or abs(ijk[2] - k) > _VOXEL_TOL or not 0 <= k < depth:
        raise DataError(
            f"position {[round(float(v), 3) for v in position]} lies at voxel {np.round(ijk[:3], 3).tolist()}, "
            f"not on a slice (0, 0, k) of the {depth}-slice image grid",
            source,
        )
    return k


def _check_plane(
    grid_lps: np.ndarray,
    orientation: Sequence[float],
    pixel_spacing: Sequence[float],
    source: str | Path,
) -> None:
    """The frame's rows run along grid x and its columns along grid y, with the grid's spacing."""
    x_axis, y_axis = grid_lps[:3, 0], grid_lps[:3, 1]
    sx, sy = float(np.linalg.norm(x_axis)), float(np.linalg.norm(y_axis))
    o = np.asarray(orientation, dtype=np.float64)
    if not (np.allclose(o[:3], x_axis / sx, atol=1e-4) and np.allclose(o[3:], y_axis / sy, atol=1e-4)):
        raise DataError(
            f"frame orientation {o.round(4).tolist()} differs from the image grid's "
            f"{np.concatenate([x_axis / sx, y_axis / sy]).round(4).tolist()}",
            source,
        )
    row_spacing, column_spacing = (float(v) for v in pixel_spacing)
    if not (np.isclose(column_spacing, sx, rtol=1e-4) and np.isclose(row_spacing, sy, rtol=1e-4)):
        raise DataError(f"pixel spacing {[row_spacing, column_spacing]} differs from the image's {[sy, sx]}", source)


def write_dicom_seg(
    path: str | Path,
    label: np.ndarray,
    affine: np.ndarray,
    series: str | Path,
    class_names: Sequence[str],
    algorithm: SegAlgorithm,
    series_number: int = 300,
) -> Path:
    """Write ``label`` as a binary DICOM Segmentation referencing the DICOM series it was made on.

    Args:
        path: Output ``.dcm`` file (written atomically).
        label: ``(X, Y[, Z])`` integer label map in the series' voxel order (:func:`labelwise.io.read_image`).
        affine: ``(4, 4)`` RAS voxel -> world affine of ``label`` (as read from the series).
        series: The source DICOM series (folder, or one file for a single image).
        class_names: Class names, index 0 background; segment ``i`` is class ``i`` (every foreground class gets a
            segment, present or not).
        algorithm: Algorithm identification.
        series_number: Series Number of the new SEG series.

    Returns:
        ``path``.

    Raises:
        MissingExtraError: highdicom is not installed.
        DataError: label values outside the classes; a source instance that does not lie on a slice of the
            label grid, a slice without its instance (missing instances), or another orientation or spacing.

    """
    hd = require_highdicom()
    from pydicom.sr.codedict import codes

    out = Path(path)
    lab = np.asarray(label)
    grid_lps, shape = _grid(affine, tuple(lab.shape))
    lab3 = lab.reshape(shape)
    if lab3.size and (lab3.min() < 0 or lab3.max() >= len(class_names)):
        raise DataError(f"label values {int(lab3.min())}..{int(lab3.max())} outside the {len(class_names)} classes")
    sources = read_series_datasets(series)
    inverse = np.linalg.inv(grid_lps)
    _check_plane(grid_lps, sources[0].ImageOrientationPatient, sources[0].PixelSpacing, series)
    slices: dict[int, Any] = {}
    for d in sources:
        k = _slice_index(inverse, d.ImagePositionPatient, shape[2], d.filename or series)
        if (int(d.Rows), int(d.Columns)) != (shape[1], shape[0]):
            raise DataError(f"instance is {d.Rows}x{d.Columns}; the label slice is {shape[1]}x{shape[0]}", d.filename)
        slices[k] = d
    missing = [k for k in range(shape[2]) if k not in slices]
    if missing:
        raise DataError(
            f"series has {len(sources)} instances but the label map has {shape[2]} slices; no instance for "
            f"slices {missing[:10]} (missing instances?)",
            series,
        )
    frames = np.stack([lab3[:, :, k].T for k in range(shape[2])]).astype(
        np.uint8 if len(class_names) <= 256 else np.uint16
    )
    family = codes.cid7162.ArtificialIntelligence
    identification = hd.AlgorithmIdentificationSequence(name=algorithm.name, family=family, version=algorithm.version)
    kind = (
        hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        if algorithm.automatic
        else hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=index,
            segment_label=name[:64],
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=hd.sr.CodedConcept(
                value=str(index), scheme_designator="99LABELWISE", meaning=name[:64]
            ),
            algorithm_type=kind,
            algorithm_identification=identification,
        )
        for index, name in enumerate(class_names[1:], start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=[slices[k] for k in range(shape[2])],
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="labelwise",
        manufacturer_model_name="labelwise",
        software_versions=algorithm.version,
        device_serial_number="0",
        series_description=f"{algorithm.name} segmentation"[:64],
        omit_empty_frames=bool(frames.any()),
    )
    with atomic_path(out) as tmp:
        seg.save_as(tmp)
    return out


def _segment_classes(
    seg: Any, class_names: Sequence[str], names_map: Mapping[str, str] | None, source: Path
) -> dict[int, int]:
    """Segment number -> class index, by segment label."""
    wanted = {normalise_name(n): i for i, n in enumerate(class_names)}
    renamed = {normalise_name(k): v for k, v in (names_map or {}).items()}
    out: dict[int, int] = {}
    unknown = []
    for item in seg.SegmentSequence:
        label = str(item.SegmentLabel)
        target = renamed.get(normalise_name(label), label)
        index = wanted.get(normalise_name(target))
        if index is None or index == 0:
            unknown.append(label)
        else:
            out[int(item.SegmentNumber)] = index
    if unknown:
        raise DataError(
            f"segments {unknown[:8]} match no class of the dataset ({', '.join(class_names[1:8])}"
            f"{', ...' if len(class_names) > 8 else ''}); map them with --classes-map SEGMENT=CLASS",
            source,
        )
    return out


def _frame_item(seg: Any, frame: Any, name: str) -> Any:
    if name in frame:
        return getattr(frame, name)[0]
    shared = seg.SharedFunctionalGroupsSequence[0]
    if name in shared:
        return getattr(shared, name)[0]
    return None


def read_dicom_seg(
    path: str | Path,
    affine: np.ndarray,
    shape: tuple[int, ...],
    class_names: Sequence[str],
    names_map: Mapping[str, str] | None = None,
    series: str | Path | None = None,
) -> np.ndarray:
    """Read a DICOM Segmentation onto an image grid as a label map.

    Args:
        path: The SEG ``.dcm`` file.
        affine: ``(4, 4)`` RAS affine of the target image grid (the case image).
        shape: ``(X, Y[, Z])`` spatial shape of the grid.
        class_names: The dataset's class names (index 0 background).
        names_map: Segment label -> class name, for labels that differ from the class names.
        series: The source DICOM series of the case, if available: every instance the SEG references must be
            in it.

    Returns:
        ``(*shape)`` int16 label map (0 where no segment is set).

    Raises:
        MissingExtraError: highdicom is not installed.
        DataError: not a DICOM Segmentation; a segment label that matches no class; a frame off the grid (another
            position, orientation or spacing); overlapping segments; referenced instances missing from ``series``.

    """
    hd = require_highdicom()
    source = Path(path)
    try:
        seg = hd.seg.segread(source)
    except Exception as exc:  # pydicom / highdicom raise many types for non-SEG or corrupt files
        raise DataError(f"cannot read as a DICOM Segmentation ({type(exc).__name__}: {exc})", source) from None
    if str(seg.SOPClassUID) not in SEGMENTATION_SOP_CLASSES:
        raise DataError(f"not a DICOM Segmentation (SOP class {seg.SOPClassUID})", source)
    if series is not None:
        present = {str(d.SOPInstanceUID) for d in read_series_datasets(series)}
        referenced = [
            str(inst.ReferencedSOPInstanceUID)
            for ref in getattr(seg, "ReferencedSeriesSequence", [])
            for inst in ref.ReferencedInstanceSequence
        ]
        absent = [uid for uid in referenced if uid not in present]
        if absent:
            raise DataError(
                f"references {len(absent)} instance(s) missing from the source series {series} (e.g. {absent[0]})",
                source,
            )
    classes = _segment_classes(seg, class_names, names_map, source)
    grid_lps, shape3 = _grid(affine, tuple(shape))
    inverse = np.linalg.inv(grid_lps)
    pixels = np.asarray(seg.pixel_array)
    if pixels.ndim == 2:
        pixels = pixels[None]
    kind = str(seg.SegmentationType)
    threshold = 1
    if kind == "FRACTIONAL":
        threshold = (int(getattr(seg, "MaximumFractionalValue", 255)) + 1) // 2
    out = np.zeros(shape3, dtype=np.int16)
    for index, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        position = _frame_item(seg, frame, "PlanePositionSequence")
        orientation = _frame_item(seg, frame, "PlaneOrientationSequence")
        measures = _frame_item(seg, frame, "PixelMeasuresSequence")
        if position is None or orientation is None or measures is None:
            raise DataError(f"frame {index + 1} has no plane position, orientation or pixel spacing", source)
        _check_plane(grid_lps, orientation.ImageOrientationPatient, measures.PixelSpacing, source)
        k = _slice_index(inverse, position.ImagePositionPatient, shape3[2], source)
        data = pixels[index]
        if data.shape != (shape3[1], shape3[0]):
            raise DataError(
                f"frame {index + 1} is {data.shape[0]}x{data.shape[1]}; the image slice is {shape3[1]}x{shape3[0]}",
                source,
            )
        if kind == "LABELMAP":
            values = {int(v) for v in np.unique(data) if v}
            unknown = sorted(values - set(classes))
            if unknown:
                raise DataError(f"frame {index + 1} holds segment numbers {unknown} that are not described", source)
            layer = np.zeros(data.shape, dtype=np.int16)
            for number in values:
                layer[data == number] = classes[number]
            masks = [(layer > 0, layer)]
        else:
            number = int(_frame_item(seg, frame, "SegmentIdentificationSequence").ReferencedSegmentNumber)
            if number not in classes:
                raise DataError(f"frame {index + 1} refers to segment {number}, which is not described", source)
            mask = data >= threshold
            masks = [(mask, np.full(data.shape, classes[number], dtype=np.int16))]
        target = out[:, :, k]
        for mask, values_map in masks:
            mask_xy, values_xy = mask.T, values_map.T
            clash = mask_xy & (target != 0) & (target != values_xy)
            if clash.any():
                other = int(target[clash][0])
                raise DataError(
                    f"segments of classes {class_names[other]!r} and {class_names[int(values_xy[clash][0])]!r} "
                    f"overlap in {int(clash.sum())} pixel(s) of slice {k}; a label map holds one class per voxel",
                    source,
                )
            target[mask_xy] = values_xy[mask_xy]
    return out.reshape(tuple(shape))
