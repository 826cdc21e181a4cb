"""Add a rater to an existing dataset from a segmentation model's output (``labelwise data import-rater``).

Sources (``--format``):

* ``nifti``: one label map per case, ``SRC/<case>.nii.gz`` (or ``.nii``, or the dataset's own label suffix):
  nnU-Net predictions, a labelwise prediction folder (only ``<case>.nii.gz`` is read), any tool's label maps. A
  single file is accepted for a one-case dataset.
* ``totalsegmentator``: TotalSegmentator's per-structure output ``SRC/<case>/<structure>.nii.gz`` (binary
  masks), or, for a one-case dataset (or a folder named after a case), ``SRC/<structure>.nii.gz``. Structures are
  matched to the dataset's class names by name (case and ``_``/``-``/space insensitive); structures that match no
  class are skipped with a warning; none matching is an error.
* ``dicom-seg``: DICOM Segmentation objects, ``SRC/<case>.dcm`` (or a single file for a one-case dataset). Frames
  are placed on the case image grid by their positions (:func:`labelwise.io.dicom_seg.read_dicom_seg`); when the
  case's source series is known (``dicom``, or the manifest's ``<source>/images/<case>``), every instance the SEG
  references must be in it.
* ``auto``: ``.dcm`` files -> ``dicom-seg``; sub-folders of NIfTI files, or several NIfTI files none of which is
  named after a case of a one-case dataset -> ``totalsegmentator``; otherwise ``nifti``.

``classes_map`` renames what the source calls a class into the dataset's class: label value -> class (``nifti``,
e.g. ``{"5": "liver"}``; with a map, values it does not name become background), structure -> class
(``totalsegmentator``) or segment label -> class (``dicom-seg``). Class targets are names or indices.

Rules: every label map must have the case image's shape and affine (one line naming the file and both shapes
otherwise); values must be classes of the dataset. Cases of the dataset without a source file are listed and the
import is refused unless ``allow_missing`` (then the others are imported); files matching no case are skipped with
a warning; an existing rater name is refused unless ``overwrite``. Everything is read and checked before anything
is written, label files go to ``labels/<case>_<rater><suffix>`` (the suffix the dataset uses), and the manifest is
written last and atomically; the source files are never modified.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from labelwise.data.dataset import Dataset
from labelwise.data.export.dicom_seg import source_series
from labelwise.data.manifest import MANIFEST_NAME, CaseRecord
from labelwise.errors import DataError
from labelwise.io import ImageData, check_id, read_image, read_label, write_json_atomic, write_label
from labelwise.io.dicom_seg import normalise_name, read_dicom_seg

__all__ = ["RATER_FORMATS", "RaterFormat", "RaterImport", "detect_format", "import_rater", "parse_classes_map"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

RaterFormat = Literal["auto", "nifti", "totalsegmentator", "dicom-seg"]
RATER_FORMATS: tuple[str, ...] = ("auto", "nifti", "totalsegmentator", "dicom-seg")
_NIFTI = (".nii.gz", ".nii")
_GEOMETRY_ATOL_MM = 1e-3
_COMPANIONS = ("probs", "samples", "raters", "uncertainty")  # labelwise.io.predictions' extra files


@dataclass
class RaterImport:
    """What :func:`import_rater` did.

    Attributes:
        rater: The new rater id.
        format: The source format used.
        imported: Case ids that got a label map.
        missing: Case ids without a source file (imported without them only with ``allow_missing``).
        extra: Source entries that match no case (skipped).
        skipped_structures: TotalSegmentator structures that match no class (skipped).

    """

    rater: str
    format: str
    imported: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    skipped_structures: list[str] = field(default_factory=list)


def parse_classes_map(text: str) -> dict[str, str]:
    """Parse ``"5=liver,kidney_left=kidney"`` into ``{"5": "liver", "kidney_left": "kidney"}``.

    Raises:
        DataError: an item without ``=`` or with an empty side.

    Example:
        >>> parse_classes_map("5=liver, 6=spleen")
        {'5': 'liver', '6': 'spleen'}

    """
    out: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not key or not value:
            raise DataError(f"classes map item {item!r} is not SOURCE=CLASS")
        out[key] = value
    return out


def _stem(path: Path, suffixes: Iterable[str]) -> str | None:
    for suffix in suffixes:
        if path.name.lower().endswith(suffix):
            return path.name[: -len(suffix)]
    return None


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def detect_format(src: Path, case_ids: list[str]) -> str:
    """Guess the source format of ``src`` (see the module docstring for the rules)."""
    if src.is_file():
        return "dicom-seg" if src.name.lower().endswith(".dcm") else "nifti"
    entries = _visible(src)
    if any(p.is_file() and p.name.lower().endswith(".dcm") for p in entries):
        return "dicom-seg"
    if any(p.is_dir() and any(_stem(f, _NIFTI) for f in p.iterdir()) for p in entries):
        return "totalsegmentator"
    stems = [s for p in entries if p.is_file() and (s := _stem(p, _NIFTI)) is not None]
    if len(case_ids) == 1 and len(stems) > 1 and case_ids[0] not in stems:
        return "totalsegmentator"
    return "nifti"


def _case_sources(
    src: Path, case_ids: list[str], fmt: str, suffixes: tuple[str, ...]
) -> tuple[dict[str, Path], list[str]]:
    """Return ({case: source file or folder}, extra entries) for ``src``."""
    if src.is_file():
        if len(case_ids) != 1:
            raise DataError(f"a single file fits a one-case dataset; this dataset has {len(case_ids)} cases", src)
        return {case_ids[0]: src}, []
    if fmt == "totalsegmentator":
        subdirs = [p for p in _visible(src) if p.is_dir()]
        if not subdirs:  # a single-case folder of <structure>.nii.gz files
            if src.name in case_ids:
                return {src.name: src}, []
            if len(case_ids) == 1:
                return {case_ids[0]: src}, []
            raise DataError(
                f"per-structure files without case folders fit a one-case dataset or a folder named after a case; "
                f"this dataset has {len(case_ids)} cases",
                src,
            )
        found = {p.name: p for p in subdirs}
    else:
        found = {}
        wanted = suffixes if fmt == "nifti" else (".dcm",)
        for p in _visible(src):
            if p.is_file() and p.suffix.lower() == ".json":
                continue  # predictions.json, nnU-Net's dataset.json / plans.json
            if fmt == "nifti" and p.is_file() and _stem(p, tuple(f"_{x}{s}" for x in _COMPANIONS for s in wanted)):
                continue  # a labelwise prediction folder's <case>_probs.nii.gz, ...
            stem = _stem(p, wanted) if p.is_file() else None
            if stem is not None:
                found[stem] = p
            else:
                found.setdefault(f"<{p.name}>", p)  # an unreadable entry counts as extra
    known = set(case_ids)
    return {c: p for c, p in found.items() if c in known}, sorted(p.name for c, p in found.items() if c not in known)


def _class_index(target: str, class_names: tuple[str, ...], source: Path) -> int:
    if target.isdigit() and int(target) < len(class_names):
        return int(target)
    wanted = {normalise_name(n): i for i, n in enumerate(class_names)}
    index = wanted.get(normalise_name(target))
    if index is None:
        raise DataError(f"classes map target {target!r} is not a class of the dataset", source)
    return index


def _check_geometry(lab: ImageData, image: ImageData, path: Path) -> None:
    shape = image.array.shape[1:]
    if lab.array.shape != shape:
        raise DataError(f"label map shape {lab.array.shape} differs from the case image's {shape}", path)
    if not np.allclose(lab.affine, image.affine, atol=_GEOMETRY_ATOL_MM):
        raise DataError(
            f"affine differs from the case image's (max difference "
            f"{float(np.abs(lab.affine - image.affine).max()):.4g} mm): another grid or orientation",
            path,
        )


def _check_values(arr: np.ndarray, class_names: tuple[str, ...], path: Path) -> None:
    if arr.size and (arr.min() < 0 or arr.max() >= len(class_names)):
        bad = sorted(int(v) for v in np.unique(arr) if v < 0 or v >= len(class_names))[:8]
        raise DataError(
            f"label values {bad} are not classes of the dataset (0..{len(class_names) - 1}); map them with "
            "--classes-map VALUE=CLASS",
            path,
        )


class _Reader:
    """Reads one case's source into a label map on the case grid (checks included)."""

    def __init__(
        self,
        ds: Dataset,
        fmt: str,
        classes_map: Mapping[str, str] | None,
        dicom: Path | None,
        report: RaterImport,
    ) -> None:
        self.ds = ds
        self.fmt = fmt
        self.classes_map = dict(classes_map or {})
        self.dicom = dicom
        self.report = report

    def image(self, case_id: str) -> ImageData:
        return read_image(self.ds.resolve(self.ds.record(case_id).image), self.ds.spatial_dims)

    def __call__(self, case_id: str, source: Path) -> tuple[np.ndarray, ImageData]:
        image = self.image(case_id)
        if self.fmt == "nifti":
            return self._nifti(source, image), image
        if self.fmt == "totalsegmentator":
            return self._structures(source, image), image
        series = self._series(case_id)
        label = read_dicom_seg(
            source, image.affine, image.array.shape[1:], self.ds.class_names, self.classes_map, series
        )
        return label, image

    def _series(self, case_id: str) -> Path | None:
        """The case's source DICOM series to check references against: ``--dicom`` or the dataset's source."""
        if self.dicom is not None and not (self.dicom / case_id).exists() and len(self.ds.ids) == 1:
            return self.dicom  # the series itself, for a one-case dataset
        try:
            return source_series(self.ds, case_id, self.dicom)
        except DataError:
            if self.dicom is not None:
                raise
            return None  # no known source series: positions alone place the frames

    def _nifti(self, path: Path, image: ImageData) -> np.ndarray:
        lab = read_label(path, self.ds.spatial_dims)
        _check_geometry(lab, image, path)
        arr = lab.array
        if self.classes_map:
            mapped = np.zeros_like(arr)
            for value, target in self.classes_map.items():
                if not value.lstrip("-").isdigit():
                    raise DataError(f"classes map key {value!r} must be a label value of the source files", path)
                mapped[arr == int(value)] = _class_index(target, self.ds.class_names, path)
            arr = mapped
        _check_values(arr, self.ds.class_names, path)
        return arr

    def _structures(self, folder: Path, image: ImageData) -> np.ndarray:
        names = self.ds.class_names
        wanted = {normalise_name(n): i for i, n in enumerate(names)}
        renamed = {normalise_name(k): v for k, v in self.classes_map.items()}
        out = np.zeros(image.array.shape[1:], dtype=np.int16)
        matched = 0
        for path in _visible(folder):
            structure = _stem(path, _NIFTI)
            if structure is None or not path.is_file():
                self.report.extra.append(str(path))
                continue
            key = normalise_name(structure)
            index = _class_index(renamed[key], names, path) if key in renamed else wanted.get(key, 0)
            if index == 0:
                if structure not in self.report.skipped_structures:
                    self.report.skipped_structures.append(structure)
                continue
            lab = read_label(path, self.ds.spatial_dims)
            _check_geometry(lab, image, path)
            mask = lab.array > 0
            clash = mask & (out != 0) & (out != index)
            if clash.any():
                raise DataError(
                    f"overlaps {names[int(out[clash][0])]!r} in {int(clash.sum())} voxel(s); a label map holds one "
                    "class per voxel",
                    path,
                )
            out[mask] = index
            matched += 1
        if not matched:
            raise DataError(
                f"no structure file matches a class of the dataset ({', '.join(names[1:6])}, ...); map them with "
                "--classes-map STRUCTURE=CLASS",
                folder,
            )
        return out


def _label_suffix(ds: Dataset) -> str:
    """The suffix the dataset's label files use (else its image suffix when it can hold labels, else NIfTI)."""
    known = (".nii.gz", ".nii", ".png", ".bmp", ".tif", ".tiff", ".npy", ".npz")
    for rec in ds.manifest.cases:
        for rel in [*rec.labels.values(), rec.image]:
            suffix = next((s for s in known if rel.lower().endswith(s)), None)
            if suffix is not None:
                return suffix
    return ".nii.gz"


def _no_track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    yield from items


def import_rater(
    dataset: str | Path,
    src: str | Path,
    name: str,
    fmt: RaterFormat | str = "auto",
    classes_map: Mapping[str, str] | None = None,
    *,
    allow_missing: bool = False,
    overwrite: bool = False,
    dicom: str | Path | None = None,
    track: Callable[[Iterable[Any], str, int | None], Iterable[Any]] | None = None,
) -> RaterImport:
    """Add rater ``name`` to the dataset at ``dataset`` from a model's output at ``src``.

    Args:
        dataset: Dataset folder (or its ``dataset.json``).
        src: Source folder or file (formats in the module docstring).
        name: New rater id (letters, digits, ``._-``).
        fmt: ``auto``, ``nifti``, ``totalsegmentator`` or ``dicom-seg``.
        classes_map: Source value / structure / segment label -> dataset class (name or index).
        allow_missing: Import the cases that have a source file even when others have none.
        overwrite: Replace an existing rater ``name``.
        dicom: ``dicom-seg`` only: folder of the source DICOM series (``DICOM/<case>/`` or ``DICOM/<case>.dcm``, or
            the series itself for a one-case dataset; default: ``<source>/images`` of the manifest when it holds
            the case's series). Every instance a SEG references must be in the case's series.
        track: Progress wrapper ``track(items, description, total)``.

    Returns:
        A :class:`RaterImport`.

    Raises:
        DataError: anything wrong with the input (nothing is written then).

    """
    ds = Dataset(dataset)
    source = Path(src)
    tracker = track or _no_track
    if not source.exists():
        raise DataError("source not found", source)
    check_id(name, "rater id")
    if name in ds.rater_ids and not overwrite:
        raise DataError(f"rater {name!r} already exists (pass --overwrite to replace it)", ds.root / MANIFEST_NAME)
    if fmt not in RATER_FORMATS:
        raise DataError(f"unknown format {fmt!r}; expected one of {', '.join(RATER_FORMATS)}")
    resolved = detect_format(source, ds.ids) if fmt == "auto" else str(fmt)
    suffix = _label_suffix(ds)
    nifti_suffixes = tuple(dict.fromkeys((*_NIFTI, suffix)))
    found, extra = _case_sources(source, ds.ids, resolved, nifti_suffixes)
    report = RaterImport(rater=name, format=resolved, extra=extra)
    report.missing = [c for c in ds.ids if c not in found]
    for entry in extra:
        logger.warning("%s: matches no case of the dataset; skipped", source / entry)
    if report.missing and not allow_missing:
        listing = ", ".join(report.missing[:10]) + (", ..." if len(report.missing) > 10 else "")
        raise DataError(
            f"{len(report.missing)} of {len(ds.ids)} cases have no {resolved} file: {listing} "
            "(pass --allow-missing to import the others)",
            source,
        )
    if not found:
        raise DataError("no file matches a case of the dataset", source)
    reader = _Reader(ds, resolved, classes_map, Path(dicom) if dicom is not None else None, report)
    # pass 1: read and check everything, write nothing
    for case_id in tracker(list(found), f"checking {resolved} maps", len(found)):
        reader(case_id, found[case_id])
    # pass 2: write under temporary names, then rename all, then the manifest
    staged: list[tuple[Path, Path]] = []
    try:
        for case_id in tracker(list(found), f"writing rater {name}", len(found)):
            label, image = reader(case_id, found[case_id])
            final = ds.root / "labels" / f"{case_id}_{name}{suffix}"
            tmp = final.with_name(f".{final.name[: -len(suffix)]}.import{suffix}")
            write_label(tmp, label, image.spacing_mm, image.affine)
            staged.append((tmp, final))
        for tmp, final in staged:
            os.replace(tmp, final)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    report.imported = list(found)
    report.extra = list(dict.fromkeys(report.extra))
    rel = {c: f"labels/{c}_{name}{suffix}" for c in found}
    records: list[CaseRecord] = []
    for rec in ds.manifest.cases:
        labels = {r: p for r, p in rec.labels.items() if r != name}
        if rec.id in rel:
            labels[name] = rel[rec.id]
        records.append(replace(rec, labels=labels))
    raters = ds.rater_ids if name in ds.rater_ids else (*ds.rater_ids, name)
    manifest = replace(ds.manifest, rater_ids=raters, cases=tuple(records))
    path = ds.root / MANIFEST_NAME
    manifest.validate(path)
    write_json_atomic(path, manifest.to_json())
    stale = [c for c in ds.ids if c not in rel and (ds.root / f"labels/{c}_{name}{suffix}").exists()]
    for case_id in stale:  # an overwritten rater's files of cases it no longer has
        (ds.root / f"labels/{case_id}_{name}{suffix}").unlink()
    logger.info("added rater %s (%d cases, %s) to %s", name, len(found), resolved, ds.root)
    return report
