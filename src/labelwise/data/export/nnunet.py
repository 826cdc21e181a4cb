"""Export a labelwise dataset as an nnU-Net v2 raw dataset (``labelwise data export nnunet``).

Output ``DEST/DatasetNNN_Name/``::

    dataset.json                  # channel_names, labels {name: value}, numTraining, file_ending ".nii.gz",
                                  # name, description, and a "labelwise" block (below; nnU-Net ignores it)
    imagesTr/<case>_<XXXX>.nii.gz # one file per channel; train, val and unsplit cases
    labelsTr/<case>.nii.gz        # the chosen label version
    imagesTs/<case>_<XXXX>.nii.gz # test cases
    labelsTs/<case>.nii.gz        # test cases that have the chosen labels (not read by nnU-Net)
    labelsTr_<rater>/, labelsTs_<rater>/   # only with keep_raters: every other rater's maps

Which labels go to ``labelsTr`` (``--labels``):

* ``rater:NAME``: rater NAME's maps. ``fused`` (the CLI) is ``rater:fused``, the rater a ``labelwise fuse``
  output dataset holds.
* ``reviewed``: the latest correction saved by the viewer (``DATASET/review/``), given as :class:`Corrections`;
  cases rejected in review and not corrected since are left out (``skipped``), and the reviewed cases'
  provenance goes to the ``labelwise`` block as ``review``.

A training case without the chosen labels uses the fallback (``--fallback``): ``auto`` (default) takes the
dataset's only rater when it has exactly one (e.g. ``fused`` for a fuse output reviewed in the viewer) and is an
error otherwise; ``error`` lists the cases and writes nothing; ``skip`` leaves them out; ``rater:NAME`` takes that
rater's map. Test cases without labels are exported without (nnU-Net needs none).

Geometry: the same affine and spacing as the dataset's files. 2D datasets are written as NIfTI with a singleton
third axis whose spacing is 999 mm, nnU-Net's own convention for 2D data in NIfTI (``convert_2d_image_to_nifti``
in nnU-Net's dataset conversion utilities), so it never resamples across it; the ``nnunet`` importer scales
that column back. Images keep integer types when they hold integers (uint8/int16), labels are uint8/int16.

The ``labelwise`` block keeps what nnU-Net's layout cannot: ``spatial_dims``, ``rater`` (the rater id of
``labelsTr``), ``labels`` (the choice), ``splits`` (``val`` lives in ``imagesTr`` too), ``image_labels``,
``image_label_names`` and ``labelled_slices``; with it, import -> export -> import is lossless. Partially
labelled volumes: nnU-Net reads unlabelled slices as background; export them only after filling them (or drop
those cases with ``skip``).

The folder is written into a hidden temporary sibling and renamed into place at the end
(:class:`labelwise.io.StagedDir`); an existing ``DatasetNNN_Name`` is replaced only with ``overwrite``, another
dataset with the same id is always refused, and ``dest`` may not be inside the dataset (nor hold it).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from labelwise.data.dataset import Dataset
from labelwise.data.importers.base import compact_image
from labelwise.errors import ConfigError, DataError
from labelwise.io import (
    StagedDir,
    check_output_not_input,
    read_image,
    read_label,
    write_image,
    write_json_atomic,
    write_label,
)

__all__ = ["PSEUDO_3D_SPACING_MM", "Corrections", "NnunetExport", "export_nnunet", "nnunet_folder_name"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

PSEUDO_3D_SPACING_MM = 999.0
"""Spacing of the singleton third axis of 2D cases (nnU-Net's convention)."""

_ENDING = ".nii.gz"


@dataclass(frozen=True)
class Corrections:
    """Reviewed label versions (the viewer's ``review/`` store), as the export needs them.

    Attributes:
        case_ids: Cases that have at least one saved correction.
        load: ``load(case_id)`` returns the latest corrected ``(*spatial)`` label map of a case.
        excluded: Cases set aside in review (rejected, not corrected since): left out of the export.
        provenance: Case id -> review provenance (``CaseReview.to_json()``), written as the block's ``review``.

    """

    case_ids: frozenset[str]
    load: Callable[[str], np.ndarray]
    excluded: frozenset[str] = frozenset()
    provenance: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class NnunetExport:
    """What :func:`export_nnunet` wrote.

    Attributes:
        folder: The ``DatasetNNN_Name`` folder.
        training: Case ids in ``imagesTr``.
        test: Case ids in ``imagesTs``.
        fallback: Case id -> label source used instead of the chosen one (e.g. ``rater:fused``).
        skipped: Case ids left out (``fallback="skip"``).

    """

    folder: Path
    training: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    fallback: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def nnunet_folder_name(dataset_id: int, name: str) -> str:
    """``DatasetNNN_Name`` with the id zero-padded and the name reduced to letters, digits, ``-`` and ``_``.

    Example:
        >>> nnunet_folder_name(7, "qubiq brain-growth")
        'Dataset007_qubiq_brain-growth'

    """
    if not 1 <= dataset_id <= 999:
        raise ConfigError(f"nnU-Net dataset ids are 1..999, got {dataset_id}")
    clean = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_-") or "labelwise"
    return f"Dataset{dataset_id:03d}_{clean}"


def _no_track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    yield from items


def _parse_rater(spec: str, what: str) -> str:
    if not spec.startswith("rater:") or not spec[len("rater:") :]:
        raise ConfigError(f"{what} must be rater:NAME{', reviewed' if what == 'labels' else ''}, got {spec!r}")
    return spec[len("rater:") :]


def _pseudo_3d(array: np.ndarray, affine: np.ndarray, spacing_mm: tuple[float, ...]) -> tuple[Any, Any, Any]:
    """Add nnU-Net's singleton third axis (999 mm) to a 2D ``(..., H, W)`` array and its geometry."""
    out_affine = np.array(affine, dtype=np.float64)
    norm = float(np.linalg.norm(out_affine[:3, 2])) or 1.0
    out_affine[:3, 2] *= PSEUDO_3D_SPACING_MM / norm
    return array[..., None], out_affine, (*spacing_mm[:2], PSEUDO_3D_SPACING_MM)


def export_nnunet(
    dataset: str | Path,
    dest: str | Path,
    dataset_id: int,
    labels: str,
    *,
    corrections: Corrections | None = None,
    fallback: str = "auto",
    name: str | None = None,
    channel_names: Sequence[str] | None = None,
    keep_raters: bool = False,
    overwrite: bool = False,
    track: Callable[[Iterable[Any], str, int | None], Iterable[Any]] | None = None,
) -> NnunetExport:
    """Write ``dataset`` as the nnU-Net v2 raw dataset ``dest/DatasetNNN_Name`` (layout in the module docstring).

    Args:
        dataset: labelwise dataset folder.
        dest: Folder that receives ``DatasetNNN_Name`` (nnU-Net's ``nnUNet_raw``).
        dataset_id: nnU-Net dataset id, 1..999.
        labels: ``rater:NAME`` or ``reviewed``.
        corrections: The reviewed versions; required for ``labels="reviewed"``.
        fallback: ``auto``, ``error``, ``skip`` or ``rater:NAME`` (module docstring).
        name: Dataset name (default: the manifest's name).
        channel_names: One name per image channel (nnU-Net picks its normalisation from them: ``CT`` = CT
            normalisation, anything else z-score); default ``channel_0``, ``channel_1``, ...
        keep_raters: Also write every other rater to ``labelsTr_<rater>`` / ``labelsTs_<rater>``.
        overwrite: Replace an existing ``DatasetNNN_Name``.
        track: Progress wrapper ``track(items, description, total)``.

    Returns:
        An :class:`NnunetExport`.

    Raises:
        ConfigError: bad ``labels``/``fallback``/``dataset_id``/``channel_names``.
        DataError: an unknown rater, training cases without labels (``error``/``auto``), duplicate class names, an
            existing output; nothing is left behind then.

    """
    ds = Dataset(dataset)
    tracker = track or _no_track
    chosen_rater: str | None = None
    if labels == "reviewed":
        if corrections is None:
            raise ConfigError("labels 'reviewed' needs the dataset's corrections")
    else:
        chosen_rater = _parse_rater(labels, "labels")
        if chosen_rater not in ds.rater_ids:
            raise DataError(f"no rater {chosen_rater!r} (raters: {', '.join(ds.rater_ids) or 'none'})", ds.root)
    fallback_rater: str | None = None
    if fallback == "auto":
        only = ds.rater_ids[0] if len(ds.rater_ids) == 1 else None
        fallback_rater = only if only is not None and only != chosen_rater else None
    elif fallback not in ("error", "skip"):
        fallback_rater = _parse_rater(fallback, "fallback")
        if fallback_rater not in ds.rater_ids:
            raise DataError(f"fallback rater {fallback_rater!r} is not a rater of the dataset", ds.root)
    if len(set(ds.class_names)) != len(ds.class_names):
        raise DataError(f"class names must be unique for nnU-Net's labels, got {list(ds.class_names)}", ds.root)
    channels = tuple(channel_names) if channel_names else tuple(f"channel_{i}" for i in range(ds.manifest.channels))
    if len(channels) != ds.manifest.channels:
        raise ConfigError(f"{len(channels)} channel names for {ds.manifest.channels} channel(s)")
    out = Path(dest)
    check_output_not_input(out, [ds.root], "--out")
    folder_name = nnunet_folder_name(dataset_id, name or ds.name)
    if out.is_dir():
        taken = [p.name for p in out.glob(f"Dataset{dataset_id:03d}_*") if p.name != folder_name]
        if taken:
            raise DataError(f"nnU-Net dataset id {dataset_id} is taken by {taken[0]}", out)
    # decide every case's label source before writing anything
    report = NnunetExport(folder=out / folder_name)
    plan: list[tuple[str, bool, str | None]] = []  # (case, is_test, source)
    unlabelled: list[str] = []
    for rec in ds.manifest.cases:
        is_test = rec.split == "test"
        source: str | None
        if chosen_rater is not None:
            source = f"rater:{chosen_rater}" if chosen_rater in rec.labels else None
        else:
            assert corrections is not None
            if rec.id in corrections.excluded:
                report.skipped.append(rec.id)
                continue
            source = "reviewed" if rec.id in corrections.case_ids else None
        if source is None and fallback_rater is not None and fallback_rater in rec.labels:
            source = f"rater:{fallback_rater}"
            report.fallback[rec.id] = source
        if source is None and not is_test:
            if fallback == "skip":
                report.skipped.append(rec.id)
                continue
            unlabelled.append(rec.id)
        plan.append((rec.id, is_test, source))
    if unlabelled:
        listing = ", ".join(unlabelled[:10]) + (", ..." if len(unlabelled) > 10 else "")
        raise DataError(
            f"{len(unlabelled)} training case(s) have no {labels} labels: {listing} "
            "(choose --fallback skip or --fallback rater:NAME)",
            ds.root,
        )
    if report.fallback:
        logger.info("%d case(s) use the fallback labels: %s", len(report.fallback), sorted(report.fallback))
    if any(rec.labelled_slices is not None for rec in ds.manifest.cases):
        logger.warning("partially labelled volumes: nnU-Net reads their unlabelled slices as background")
    extra_raters = [r for r in ds.rater_ids if r != chosen_rater] if keep_raters else []
    nd = ds.spatial_dims
    with StagedDir(
        out / folder_name, overwrite=overwrite, marker="dataset.json", kind="raw dataset (nnU-Net)"
    ) as stage:
        tmp = stage.path
        for case_id, is_test, source in tracker(plan, f"exporting {ds.name}", len(plan)):
            rec = ds.record(case_id)
            img = read_image(ds.resolve(rec.image), nd)
            image, affine, spacing = img.array, img.affine, img.spacing_mm
            if nd == 2:
                image, affine, spacing = _pseudo_3d(image, affine, spacing)
            image = compact_image(image)
            images = "imagesTs" if is_test else "imagesTr"
            for c in range(image.shape[0]):
                write_image(tmp / images / f"{case_id}_{c:04d}{_ENDING}", image[c : c + 1], spacing, affine)
            maps: dict[str, np.ndarray] = {}
            if source == "reviewed":
                assert corrections is not None
                maps["labels"] = corrections.load(case_id)
            elif source is not None:
                maps["labels"] = read_label(ds.resolve(rec.labels[source[len("rater:") :]]), nd).array
            for rater in extra_raters:
                if rater in rec.labels:
                    maps[f"labels_{rater}"] = read_label(ds.resolve(rec.labels[rater]), nd).array
            for key, label in maps.items():
                if label.shape != img.array.shape[1:]:
                    raise DataError(f"case {case_id}: {key} shape {label.shape} != image {img.array.shape[1:]}")
                folder = ("labelsTs" if is_test else "labelsTr") + key[len("labels") :]
                write_label(
                    tmp / folder / f"{case_id}{_ENDING}", label[..., None] if nd == 2 else label, spacing, affine
                )
            (report.test if is_test else report.training).append(case_id)
        block: dict[str, Any] = {
            "version": 1,
            "spatial_dims": nd,
            "rater": chosen_rater or "reviewed",
            "labels": labels,
            "name": ds.name,
            "source": str(ds.root.resolve()),
            "splits": {rec.id: rec.split for rec in ds.manifest.cases if rec.id not in report.skipped},
        }
        if ds.manifest.image_label_names:
            block["image_label_names"] = list(ds.manifest.image_label_names)
            block["image_labels"] = {r.id: r.image_labels for r in ds.manifest.cases if r.image_labels}
        slices = {r.id: list(r.labelled_slices) for r in ds.manifest.cases if r.labelled_slices is not None}
        if slices:
            block["labelled_slices"] = slices
        if report.fallback:
            block["fallback"] = report.fallback
        if corrections is not None and corrections.provenance:
            block["review"] = dict(corrections.provenance)
        write_json_atomic(
            tmp / "dataset.json",
            {
                "channel_names": {str(i): n for i, n in enumerate(channels)},
                "labels": {n: i for i, n in enumerate(ds.class_names)},
                "numTraining": len(report.training),
                "file_ending": _ENDING,
                "name": folder_name.split("_", 1)[1],
                "description": ds.manifest.description or f"exported by labelwise from {ds.name}",
                "labelwise": block,
            },
        )
    logger.info("wrote %s (%d training, %d test cases)", report.folder, len(report.training), len(report.test))
    return report
