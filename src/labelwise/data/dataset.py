"""A folder of cases described by a ``dataset.json`` manifest, read lazily, and the writer that creates one."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from labelwise.data.case import Case
from labelwise.data.manifest import MANIFEST_NAME, SPLITS, CaseRecord, Manifest, read_manifest
from labelwise.data.review import (
    LABEL_SOURCES,
    REVIEWED_RATER,
    CaseReview,
    LabelSource,
    ReviewStore,
    case_reviews,
    reviewed_manifest,
)
from labelwise.errors import ConfigError, DataError
from labelwise.io import (
    ImageData,
    read_image,
    read_image_geometry,
    read_label,
    safe_join,
    write_image,
    write_json_atomic,
    write_label,
)
from labelwise.io.paths import check_id

__all__ = ["Dataset", "DatasetWriter"]

logger = logging.getLogger(__name__)


class Dataset:
    """A labelwise dataset folder. Cases are read from disk only when asked for.

    Args:
        root: The dataset folder (or its ``dataset.json``).
        labels: Which labels the cases carry. ``raters`` (default): the raters' files of the manifest.
            ``reviewed``: the reviewed view of :mod:`labelwise.data.review`: a corrected case carries its latest
            correction as the one rater ``reviewed``, a case rejected and not corrected since carries no labels
            and no split, every other case its raters; :attr:`reviews` holds each case's provenance. The files are
            never modified either way.

    Example:
        >>> ds = Dataset("my_dataset")          # doctest: +SKIP
        >>> case = ds["case01"]                 # doctest: +SKIP
        >>> [c.id for c in ds.cases("train")]   # doctest: +SKIP
        >>> Dataset("my_dataset", labels="reviewed").reviews["case01"].status  # doctest: +SKIP
        'corrected'

    """

    def __init__(self, root: str | Path, labels: LabelSource = "raters") -> None:
        path = Path(root)
        self.root = path.parent if path.name == MANIFEST_NAME else path
        if labels not in LABEL_SOURCES:
            raise ConfigError(f"labels must be one of {LABEL_SOURCES}, got {labels!r}")
        self.labels: LabelSource = labels
        manifest = read_manifest(self.root)
        self.reviews: dict[str, CaseReview] = {}
        """Case id -> review status and provenance (filled for ``labels="reviewed"`` only)."""
        if labels == "reviewed":
            self.reviews = case_reviews(ReviewStore(self.root), [r.id for r in manifest.cases])
            manifest = reviewed_manifest(manifest, self.reviews, self.root)
        self.manifest: Manifest = manifest
        self._records = {r.id: r for r in self.manifest.cases}

    # ------------------------------------------------------------------ manifest views
    @property
    def name(self) -> str:
        """Dataset name from the manifest."""
        return self.manifest.name

    @property
    def spatial_dims(self) -> int:
        """2 or 3."""
        return self.manifest.spatial_dims

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names, index 0 is background."""
        return self.manifest.class_names

    @property
    def rater_ids(self) -> tuple[str, ...]:
        """All rater ids of the dataset, in order."""
        return self.manifest.rater_ids

    @property
    def ids(self) -> list[str]:
        """Case ids in manifest order."""
        return list(self._records)

    def provenance(self) -> dict[str, Any]:
        """Where the labels come from, for an output's metadata (``fusion.json``, an export's ``dataset.json``).

        Returns:
            ``{"labels": "raters"}``, or for the reviewed view ``{"labels": "reviewed", "cases": {case:
            CaseReview.to_json()}}`` over the cases that were reviewed (untouched ones left out).

        """
        out: dict[str, Any] = {"labels": self.labels}
        if self.labels == "reviewed":
            out["cases"] = {cid: r.to_json() for cid, r in self.reviews.items() if r.status != "untouched"}
        return out

    def record(self, case_id: str) -> CaseRecord:
        """Return the manifest entry of ``case_id``."""
        try:
            return self._records[case_id]
        except KeyError:
            raise DataError(f"no case {case_id!r} in dataset", self.root / MANIFEST_NAME) from None

    def split_ids(self, split: str | None) -> list[str]:
        """Ids of the cases in ``split`` (None: all cases)."""
        if split is not None and split not in SPLITS:
            raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
        return [r.id for r in self.manifest.cases if split is None or r.split == split]

    def resolve(self, relative: str) -> Path:
        """Return the absolute path of a manifest path, refusing anything outside the dataset folder."""
        root = self.root.resolve()
        path = (root / relative).resolve()
        if root != path and root not in path.parents:
            raise DataError(f"path {relative!r} points outside the dataset folder", self.root / MANIFEST_NAME)
        return path

    # ------------------------------------------------------------------ loading
    def load(self, case_id: str, *, image: bool = True) -> Case:
        """Read one case from disk.

        Args:
            case_id: The case.
            image: False reads only the image's geometry (a NIfTI header), not its voxels, for work that needs
                the labels alone (``labelwise evaluate``): the case's ``image`` is then a read-only NaN
                placeholder of the right shape that takes no memory, and ``image_read`` is False.

        Raises:
            DataError: unreadable files, or raters whose shape/spacing differs from the image's.

        """
        rec = self.record(case_id)
        nd = self.spatial_dims
        img_path = self.resolve(rec.image)
        if image:
            img = read_image(img_path, nd)
        else:
            shape, spacing, affine = read_image_geometry(img_path, nd)
            img = ImageData(np.broadcast_to(np.float32(np.nan), shape), spacing, affine)
        maps = []
        for rater_id, rel in rec.labels.items():
            lab_path = self.resolve(rel)
            lab = read_label(lab_path, nd)
            if lab.array.shape != img.array.shape[1:]:
                raise DataError(
                    f"label shape {lab.array.shape} differs from image shape {img.array.shape[1:]} "
                    f"({img_path.name}) for rater {rater_id}",
                    lab_path,
                )
            if not np.allclose(lab.spacing_mm, img.spacing_mm, rtol=1e-3, atol=1e-4):
                raise DataError(
                    f"label spacing {lab.spacing_mm} mm differs from image spacing {img.spacing_mm} mm",
                    lab_path,
                )
            if rater_id == REVIEWED_RATER and self.labels == "reviewed":
                k = len(self.class_names)
                if lab.array.size and (int(lab.array.min()) < 0 or int(lab.array.max()) >= k):
                    raise DataError(f"correction holds values outside the classes 0..{k - 1}", lab_path)
            maps.append(lab.array)
        raters = np.stack(maps) if maps else np.zeros((0, *img.array.shape[1:]), dtype=np.int16)
        return Case(
            id=rec.id,
            image=img.array,
            spacing_mm=img.spacing_mm,
            affine=img.affine,
            raters=raters,
            rater_ids=tuple(rec.labels),
            image_labels=dict(rec.image_labels),
            class_names=self.class_names,
            split=rec.split,
            labelled_slices=rec.labelled_slices,
            image_read=image,
        )

    def __getitem__(self, case_id: str) -> Case:
        return self.load(case_id)

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[Case]:
        for case_id in self._records:
            yield self.load(case_id)

    def cases(self, split: str | None = None) -> Iterator[Case]:
        """Iterate over the cases of ``split`` (None: all), reading each on demand."""
        for case_id in self.split_ids(split):
            yield self.load(case_id)

    def __repr__(self) -> str:
        labels = "" if self.labels == "raters" else f", labels={self.labels!r}"
        return (
            f"Dataset({self.name!r}, cases={len(self)}, spatial_dims={self.spatial_dims}, "
            f"raters={len(self.rater_ids)}, classes={len(self.class_names)}{labels})"
        )


class DatasetWriter:
    """Create a dataset folder case by case; the manifest is written last, atomically, by :meth:`finish`.

    Until :meth:`finish` runs, the folder has no ``dataset.json`` and is not a dataset, so an interrupted
    import never looks complete. Case and rater ids must be safe ids (:func:`labelwise.io.paths.id_problem`), so
    every file stays inside ``dest``.

    ``overwrite`` deletes the old dataset's manifest, ``images/`` and ``labels/`` right away. To replace a
    dataset only once the new one is complete, write into a :class:`labelwise.io.StagedDir` instead (every
    ``labelwise`` command that takes ``--overwrite`` does).

    Args:
        dest: Target folder. Must not already hold a ``dataset.json`` unless ``overwrite``.
        name: Dataset name.
        spatial_dims: 2 or 3.
        class_names: Class names, index 0 background.
        rater_ids: All rater ids in order (may be empty for unlabelled or image-label-only data).
        image_label_names: Names of the image-level labels.
        overwrite: Replace an existing dataset at ``dest``.
        image_suffix: File suffix for images and labels (NIfTI by default: keeps spacing and affine).

    """

    def __init__(
        self,
        dest: str | Path,
        name: str,
        spatial_dims: int,
        class_names: tuple[str, ...] | list[str],
        rater_ids: tuple[str, ...] | list[str] = (),
        image_label_names: tuple[str, ...] | list[str] = (),
        description: str = "",
        source: str = "",
        overwrite: bool = False,
        image_suffix: str = ".nii.gz",
    ) -> None:
        self.dest = Path(dest)
        for rater_id in rater_ids:
            check_id(rater_id, "rater id", self.dest)
        if (self.dest / MANIFEST_NAME).exists():
            if not overwrite:
                raise DataError("a dataset already exists here (pass overwrite to replace it)", self.dest)
            (self.dest / MANIFEST_NAME).unlink()
            for sub in ("images", "labels"):
                shutil.rmtree(self.dest / sub, ignore_errors=True)
        self.dest.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.spatial_dims = spatial_dims
        self.class_names = tuple(class_names)
        self.rater_ids = tuple(rater_ids)
        self.image_label_names = tuple(image_label_names)
        self.description = description
        self.source = source
        self.suffix = image_suffix
        self.channels: int | None = None
        self.records: list[CaseRecord] = []

    def add_case(
        self,
        case_id: str,
        image: np.ndarray,
        raters: Mapping[str, np.ndarray] | None = None,
        spacing_mm: tuple[float, ...] | None = None,
        affine: np.ndarray | None = None,
        image_labels: Mapping[str, int] | None = None,
        split: str | None = None,
        labelled_slices: tuple[int, ...] | None = None,
    ) -> CaseRecord:
        """Write one case's files and remember its manifest entry.

        Args:
            case_id: Unique id (letters, digits, ``._-``).
            image: ``(C, *spatial)`` array.
            raters: rater id -> ``(*spatial)`` integer label map; must be ids declared in ``rater_ids``.
            spacing_mm: Voxel size in mm (default 1 per axis, or derived from ``affine``).
            affine: ``(4, 4)`` voxel -> world transform to keep for writing results back.
            image_labels: Image-level labels.
            split: "train", "val", "test" or None.
            labelled_slices: Valid slice indices (last axis) for partially labelled volumes.

        """
        check_id(case_id)
        if any(r.id == case_id for r in self.records):
            raise DataError(f"duplicate case id {case_id!r}")
        image = np.asarray(image)
        if image.ndim != self.spatial_dims + 1:
            raise DataError(
                f"case {case_id}: image shape {image.shape} is not (C, *spatial) with {self.spatial_dims} spatial axes"
            )
        if self.channels is None:
            self.channels = int(image.shape[0])
        elif image.shape[0] != self.channels:
            raise DataError(f"case {case_id}: {image.shape[0]} channels, other cases have {self.channels}")
        if spacing_mm is None and affine is not None:
            spacing_mm = tuple(float(v) for v in np.linalg.norm(np.asarray(affine)[:3, : self.spatial_dims], axis=0))
        img_rel = f"images/{case_id}{self.suffix}"
        write_image(safe_join(self.dest, img_rel), image, spacing_mm, affine)
        labels: dict[str, str] = {}
        for rater_id, lab in (raters or {}).items():
            if rater_id not in self.rater_ids:
                raise DataError(f"case {case_id}: rater {rater_id!r} is not one of {self.rater_ids}")
            lab = np.asarray(lab)
            if lab.shape != image.shape[1:]:
                raise DataError(f"case {case_id}: rater {rater_id} shape {lab.shape} != image {image.shape[1:]}")
            rel = f"labels/{case_id}_{rater_id}{self.suffix}"
            write_label(safe_join(self.dest, rel), lab, spacing_mm, affine)
            labels[rater_id] = rel
        rec = CaseRecord(
            id=case_id,
            image=img_rel,
            labels=labels,
            image_labels={k: int(v) for k, v in (image_labels or {}).items()},
            split=split,
            labelled_slices=labelled_slices,
        )
        self.records.append(rec)
        return rec

    def add_record(self, record: CaseRecord) -> None:
        """Add a manifest entry for files already placed in the folder (paths relative to ``dest``)."""
        self.records.append(record)

    def set_splits(self, splits: Mapping[str, str | None]) -> None:
        """Assign splits by case id (cases not named keep theirs)."""
        self.records = [replace(r, split=splits.get(r.id, r.split)) for r in self.records]

    def finish(self) -> Manifest:
        """Validate and write ``dataset.json`` atomically; returns the manifest."""
        manifest = Manifest(
            name=self.name,
            spatial_dims=self.spatial_dims,
            channels=self.channels or 1,
            class_names=self.class_names,
            rater_ids=self.rater_ids,
            cases=tuple(self.records),
            image_label_names=self.image_label_names,
            description=self.description,
            source=self.source,
        )
        path = self.dest / MANIFEST_NAME
        manifest.validate(path)
        write_json_atomic(path, manifest.to_json())
        logger.info("wrote %s (%d cases)", path, len(self.records))
        return manifest
