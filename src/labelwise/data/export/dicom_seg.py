"""Export predictions or fused labels as DICOM Segmentations (``labelwise export dicom-seg``).

``PRED`` is either

* a labelwise prediction folder (``predictions.json`` + ``<case>.nii.gz``, :mod:`labelwise.io.predictions`): every
  listed case's hard label map, algorithm ``labelwise <method>`` (``AUTOMATIC``); or
* a dataset folder (``dataset.json``), e.g. the output of ``labelwise fuse``: one rater's maps (``rater``,
  default ``fused``), algorithm ``labelwise fuse <method>`` from its ``fusion.json`` (``SEMIAUTOMATIC``: fused
  human labels).

Each case's SEG references the DICOM series the case was imported from: ``DICOM/<case>/`` (a folder holding the
series) or ``DICOM/<case>.dcm`` (a single image), where ``DICOM`` is the ``dicom`` argument, or by default
``<source>/images`` of the dataset's manifest (a ``folder`` import of ``images/<case>/`` series). Segments are the
dataset's foreground classes, named by their class names (:func:`labelwise.io.dicom_seg.write_dicom_seg`).

Output: ``OUT/<case>.dcm`` and ``OUT/dicom_seg.json`` (what was exported: source, algorithm, series, files),
written into a hidden sibling folder and renamed into place when every case is done
(:class:`labelwise.io.StagedDir`); an existing export is replaced only with ``overwrite``, any other non-empty
``OUT`` is refused, and ``OUT`` may not be inside the inputs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from labelwise.data.dataset import Dataset
from labelwise.data.manifest import MANIFEST_NAME
from labelwise.errors import DataError
from labelwise.io import (
    PREDICTIONS_NAME,
    PredictionIndex,
    StagedDir,
    check_output_not_input,
    read_label,
    write_json_atomic,
)
from labelwise.io.dicom_seg import SegAlgorithm, require_highdicom, write_dicom_seg

__all__ = ["INDEX_NAME", "export_dicom_seg", "source_series"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

INDEX_NAME = "dicom_seg.json"
"""The index written beside the ``.dcm`` files (also what marks a folder as a DICOM-SEG export)."""


def _no_track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    yield from items


def source_series(ds: Dataset, case_id: str, dicom: Path | None) -> Path:
    """The DICOM series (folder or file) case ``case_id`` was imported from.

    Raises:
        DataError: no ``<case>/`` folder or ``<case>.dcm`` under ``dicom`` (or the manifest's ``source/images``).

    """
    roots = [dicom] if dicom is not None else []
    if dicom is None and ds.manifest.source:
        roots.append(Path(ds.manifest.source) / "images")
    for root in roots:
        for candidate in (root / case_id, root / f"{case_id}.dcm"):
            if candidate.exists():
                return candidate
    where = str(dicom) if dicom is not None else f"{ds.manifest.source or '?'}/images (the dataset's source)"
    raise DataError(
        f"case {case_id}: no source DICOM series {case_id}/ or {case_id}.dcm under {where}; pass --dicom DIR",
        ds.root,
    )


def export_dicom_seg(
    pred: str | Path,
    dataset: str | Path,
    out: str | Path,
    *,
    dicom: str | Path | None = None,
    rater: str = "fused",
    version: str | None = None,
    overwrite: bool = False,
    track: Callable[[Iterable[Any], str, int | None], Iterable[Any]] | None = None,
) -> list[Path]:
    """Write one DICOM Segmentation per case of ``pred`` into ``out``.

    Args:
        pred: Prediction folder or dataset folder (module docstring).
        dataset: The dataset the predictions belong to (class names, case geometry, DICOM source).
        out: Output folder (``<case>.dcm`` files).
        dicom: Folder of the source series (``<case>/`` or ``<case>.dcm``); default ``<source>/images``.
        rater: Rater exported when ``pred`` is a dataset folder.
        version: Algorithm version recorded (default: labelwise's version).
        overwrite: Replace an existing ``out``.
        track: Progress wrapper ``track(items, description, total)``.

    Returns:
        The written files (under ``out``).

    Raises:
        MissingExtraError: highdicom is not installed.
        DataError: not a prediction or dataset folder, class names that differ from the dataset's, a case without
            its DICOM series or whose series does not match the label grid (e.g. missing instances); nothing is
            written then.

    """
    from labelwise import __version__

    require_highdicom()  # before reading anything
    ds = Dataset(dataset)
    pred_path = Path(pred)
    tracker = track or _no_track
    labels: dict[str, Path] = {}
    if (pred_path / PREDICTIONS_NAME).is_file():
        index = PredictionIndex.load(pred_path)
        if tuple(index.class_names) != ds.class_names:
            raise DataError(
                f"prediction classes {list(index.class_names)} differ from the dataset's {list(ds.class_names)}",
                pred_path / PREDICTIONS_NAME,
            )
        labels = {c: pred_path / f"{c}.nii.gz" for c in index.cases}
        algorithm = SegAlgorithm(f"labelwise {index.method}", version or __version__, automatic=True)
    elif (pred_path / MANIFEST_NAME).is_file():
        fused = Dataset(pred_path)
        if fused.class_names != ds.class_names:
            raise DataError(f"classes differ from the dataset's {list(ds.class_names)}", pred_path / MANIFEST_NAME)
        if rater not in fused.rater_ids:
            raise DataError(f"no rater {rater!r} (raters: {', '.join(fused.rater_ids) or 'none'})", pred_path)
        labels = {r.id: fused.resolve(r.labels[rater]) for r in fused.manifest.cases if rater in r.labels}
        method = rater
        fusion = pred_path / "fusion.json"
        if fusion.is_file():
            try:
                method = f"fuse {json.loads(fusion.read_text(encoding='utf-8'))['method']}"
            except (json.JSONDecodeError, KeyError, TypeError):
                logger.warning("%s: unreadable; algorithm named after the rater", fusion)
        algorithm = SegAlgorithm(f"labelwise {method}", version or __version__, automatic=False)
    else:
        raise DataError(f"neither a prediction folder ({PREDICTIONS_NAME}) nor a dataset ({MANIFEST_NAME})", pred_path)
    unknown = [c for c in labels if c not in ds.ids]
    if unknown:
        raise DataError(f"cases {unknown[:5]} are not in the dataset {ds.root}", pred_path)
    if not labels:
        raise DataError("no cases to export", pred_path)
    dicom_root = Path(dicom) if dicom is not None else None
    check_output_not_input(out, [pred_path, ds.root, dicom_root], "--out")
    series = {c: source_series(ds, c, dicom_root) for c in labels}  # every case's series before writing
    written: list[Path] = []
    with StagedDir(out, overwrite=overwrite, marker=INDEX_NAME, kind="DICOM-SEG export") as stage:
        for case_id in tracker(list(labels), "writing DICOM-SEG", len(labels)):
            lab = read_label(labels[case_id], ds.spatial_dims)
            write_dicom_seg(
                stage.path / f"{case_id}.dcm", lab.array, lab.affine, series[case_id], ds.class_names, algorithm
            )
            written.append(Path(out) / f"{case_id}.dcm")
        write_json_atomic(
            stage.path / INDEX_NAME,
            {
                "format": "labelwise-dicom-seg",
                "version": 1,
                "algorithm": algorithm.name,
                "algorithm_version": algorithm.version,
                "source": str(pred_path.resolve()),
                "dataset": str(ds.root.resolve()),
                "class_names": list(ds.class_names),
                "cases": {c: {"file": f"{c}.dcm", "series": str(series[c].resolve())} for c in labels},
            },
        )
    logger.info("wrote %d DICOM-SEG file(s) to %s", len(written), out)
    return written
