"""Validate a dataset folder and report every problem at once (``labelwise data check``).

Unlike :class:`~labelwise.data.Dataset`, which stops at the first bad file, :func:`check_dataset` reads the
manifest leniently and then every file, collecting all problems with the file (or manifest) and case they
concern:

* manifest: not JSON, wrong format/version, missing fields, duplicate case ids, case or rater ids that are not
  safe ids (:func:`labelwise.io.paths.id_problem`: they become file names), unknown split names, raters not
  declared in ``rater_ids``, image-level labels not declared in ``image_label_names``, paths that are absolute,
  use ``..`` or resolve (through links) outside the folder;
* images: missing, unreadable (corrupt, truncated, wrong extension), wrong number of axes or channels, NaN/inf
  values, zero voxels, constant images (every voxel equal: almost always an export error);
* label maps: missing, unreadable, non-integer values, values outside ``0..len(class_names)-1``, shape or spacing
  different from the image's, ``labelled_slices`` outside the volume;
* the review store (``review/``, :mod:`labelwise.data.review`): unreadable ``reviews.json`` or
  ``corrections.json``, decisions or corrections for cases not in the manifest, a listed version whose file is
  missing or unreadable, whose shape differs from the image's or whose values are not classes, and corrections
  in a dataset that already has a rater named ``reviewed``. The report also carries the review coverage.

Cases are read one at a time, so checking a 3D dataset needs memory for one case only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labelwise.data.manifest import MANIFEST_NAME, MANIFEST_VERSION, SPLITS
from labelwise.data.review import REVIEW_DIR, REVIEWED_RATER, ReviewCoverage, ReviewStore, review_coverage
from labelwise.errors import DataError
from labelwise.io import id_problem, read_image, read_label

__all__ = ["CheckReport", "Problem", "check_dataset"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """One problem: the file (or manifest) it concerns, the case (if any) and what is wrong."""

    path: str
    case: str | None
    message: str

    def __str__(self) -> str:
        where = f" [case {self.case}]" if self.case is not None else ""
        return f"{self.path}{where}: {self.message}"


@dataclass(frozen=True)
class CheckReport:
    """Result of :func:`check_dataset`.

    Attributes:
        root: The dataset folder.
        num_cases: Number of case entries in the manifest (0 if it could not be read).
        problems: Every problem found, in manifest order (the review store's last).
        review: Review coverage, when the dataset has a ``review/`` folder and its files could be read.

    """

    root: Path
    num_cases: int
    problems: tuple[Problem, ...]
    review: ReviewCoverage | None = None

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


def _no_track(items: Iterable[Any], description: str, total: int | None = None) -> Iterator[Any]:
    yield from items


@dataclass
class _Entry:
    id: str
    image: Any
    labels: dict[str, Any]
    image_labels: dict[str, Any]
    split: Any
    labelled_slices: Any


class _Collector:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.manifest = root / MANIFEST_NAME
        self.problems: list[Problem] = []

    def add(self, path: Path | str, case: str | None, message: str) -> None:
        self.problems.append(Problem(str(path), case, message))

    def resolve(self, rel: Any, case: str) -> Path | None:
        if not isinstance(rel, str) or not rel:
            self.add(self.manifest, case, f"path {rel!r} is not a non-empty string")
            return None
        p = Path(rel)
        if p.is_absolute() or ".." in p.parts:
            self.add(self.manifest, case, f"path {rel!r} must be relative and inside the dataset folder")
            return None
        root = self.root.resolve()
        full = (root / p).resolve()
        if full != root and root not in full.parents:
            self.add(self.manifest, case, f"path {rel!r} resolves outside the dataset folder ({full})")
            return None
        return self.root / p


def _load_manifest(col: _Collector) -> tuple[dict[str, Any], list[_Entry]] | None:
    path = col.manifest
    if not path.is_file():
        col.add(path, None, "manifest not found")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        col.add(path, None, f"manifest is not valid JSON ({exc})")
        return None
    if not isinstance(data, dict) or data.get("format") != "labelwise-dataset":
        col.add(path, None, 'not a labelwise dataset manifest (missing "format": "labelwise-dataset")')
        return None
    if data.get("version") != MANIFEST_VERSION:
        col.add(path, None, f"manifest version {data.get('version')!r} is not supported")
    missing = [k for k in ("spatial_dims", "channels", "class_names", "cases") if k not in data]
    if missing:
        col.add(path, None, f"manifest lacks fields {missing}")
        return None
    if data["spatial_dims"] not in (2, 3):
        col.add(path, None, f"spatial_dims must be 2 or 3, got {data['spatial_dims']!r}")
        return None
    if not isinstance(data["class_names"], list) or len(data["class_names"]) < 2:
        col.add(path, None, "class_names needs background and at least one class")
        return None
    rater_ids = data.get("rater_ids", [])
    if not isinstance(rater_ids, list) or not all(isinstance(r, str) for r in rater_ids):
        col.add(path, None, f"rater_ids must be a list of strings, got {rater_ids!r}")
        return None
    if len(set(rater_ids)) != len(rater_ids):
        col.add(path, None, "rater_ids has duplicates")
    if not isinstance(data["cases"], list):
        col.add(path, None, "cases must be a list")
        return None
    entries: list[_Entry] = []
    for n, c in enumerate(data["cases"]):
        if not isinstance(c, dict) or "id" not in c or "image" not in c:
            col.add(path, None, f"case entry #{n} lacks 'id' or 'image'")
            continue
        labels = c.get("labels", {})
        image_labels = c.get("image_labels", {})
        if not isinstance(labels, dict) or not isinstance(image_labels, dict):
            col.add(path, str(c["id"]), "'labels' and 'image_labels' must be objects")
            continue
        entries.append(_Entry(str(c["id"]), c["image"], labels, image_labels, c.get("split"), c.get("labelled_slices")))
    return data, entries


def _check_structure(col: _Collector, data: dict[str, Any], entries: list[_Entry]) -> None:
    seen: dict[str, int] = {}
    for e in entries:
        seen[e.id] = seen.get(e.id, 0) + 1
    for cid, count in seen.items():
        if count > 1:
            col.add(col.manifest, cid, f"duplicate case id (appears {count} times)")
    raters = set(data.get("rater_ids", []))
    for r in data.get("rater_ids", []):
        if (bad := id_problem(r, "rater id")) is not None:
            col.add(col.manifest, None, bad)
    label_names = set(data.get("image_label_names", []))
    for e in entries:
        if (bad := id_problem(e.id)) is not None:
            col.add(col.manifest, e.id, bad)
        if e.split is not None and e.split not in SPLITS:
            col.add(col.manifest, e.id, f"split {e.split!r} is not one of {SPLITS}")
        unknown = sorted(set(e.labels) - raters)
        if unknown:
            col.add(col.manifest, e.id, f"raters {unknown} are not in rater_ids {sorted(raters)}")
        for k, v in e.image_labels.items():
            if k not in label_names:
                col.add(col.manifest, e.id, f"image label {k!r} is not in image_label_names")
            if not isinstance(v, int) or isinstance(v, bool):
                col.add(col.manifest, e.id, f"image label {k}={v!r} is not an integer")


def _check_case(col: _Collector, data: dict[str, Any], e: _Entry) -> tuple[int, ...] | None:
    """Check one case's files; return its image's spatial shape (None: unreadable)."""
    nd = int(data["spatial_dims"])
    num_classes = len(data["class_names"])
    img_path = col.resolve(e.image, e.id)
    img = None
    if img_path is not None:
        if not img_path.exists():
            col.add(img_path, e.id, "image file not found")
        else:
            try:
                img = read_image(img_path, nd)
            except DataError as exc:
                col.add(img_path, e.id, exc.problem)
    if img is not None and img_path is not None:
        if img.array.shape[0] != data["channels"]:
            col.add(img_path, e.id, f"image has {img.array.shape[0]} channels; manifest says {data['channels']}")
        lo, hi = float(img.array.min()), float(img.array.max())
        if lo == hi:
            col.add(img_path, e.id, f"image is constant (every voxel = {lo:g}); empty or failed export?")
    if e.labelled_slices is not None:
        depth = img.array.shape[-1] if img is not None else None
        try:
            slices = [int(i) for i in e.labelled_slices]
        except (TypeError, ValueError):
            col.add(col.manifest, e.id, "labelled_slices must be a list of integers")
        else:
            if depth is not None and any(i < 0 or i >= depth for i in slices):
                col.add(col.manifest, e.id, f"labelled_slices outside 0..{depth - 1}")
    for rater, rel in e.labels.items():
        lab_path = col.resolve(rel, e.id)
        if lab_path is None:
            continue
        if not lab_path.exists():
            col.add(lab_path, e.id, f"label file of rater {rater} not found")
            continue
        try:
            lab = read_label(lab_path, nd)
        except DataError as exc:
            col.add(lab_path, e.id, f"rater {rater}: {exc.problem}")
            continue
        arr = lab.array
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            bad = [int(v) for v in np.unique(arr) if v < 0 or v >= num_classes][:8]
            col.add(
                lab_path,
                e.id,
                f"rater {rater}: label values {bad} outside the {num_classes} classes 0..{num_classes - 1}",
            )
        if img is not None:
            if arr.shape != img.array.shape[1:]:
                col.add(
                    lab_path, e.id, f"rater {rater}: shape {arr.shape} differs from image shape {img.array.shape[1:]}"
                )
            elif not np.allclose(lab.spacing_mm, img.spacing_mm, rtol=1e-3, atol=1e-4):
                col.add(
                    lab_path, e.id, f"rater {rater}: spacing {lab.spacing_mm} mm differs from image {img.spacing_mm} mm"
                )
    return None if img is None else tuple(img.array.shape[1:])


def _check_review(
    col: _Collector, data: dict[str, Any], shapes: dict[str, tuple[int, ...] | None]
) -> ReviewCoverage | None:
    """Check the review store of the dataset; return its coverage (None: no store, or it cannot be read)."""
    if not (col.root / REVIEW_DIR).is_dir():
        return None
    store = ReviewStore(col.root)
    try:
        decisions = store.reviews()
        versions = store.versions()
    except DataError as exc:
        col.add(exc.path or store.dir, None, exc.problem)
        return None
    for case_id in decisions:
        if case_id not in shapes:
            col.add(store.reviews_path, case_id, "review decisions for a case that is not in the manifest")
    nd, k = int(data["spatial_dims"]), len(data["class_names"])
    for v in versions:
        path = store.path(v)
        if v.case not in shapes:
            col.add(store.corrections_path, v.case, f"correction v{v.version} for a case that is not in the manifest")
            continue
        if not path.is_file():
            col.add(path, v.case, f"correction v{v.version} is listed in corrections.json but its file is missing")
            continue
        try:
            array = read_label(path, nd).array
        except DataError as exc:
            col.add(path, v.case, f"correction v{v.version}: {exc.problem}")
            continue
        if array.size and (int(array.min()) < 0 or int(array.max()) >= k):
            bad = [int(x) for x in np.unique(array) if x < 0 or x >= k][:8]
            col.add(path, v.case, f"correction v{v.version}: values {bad} outside the {k} classes 0..{k - 1}")
        shape = shapes[v.case]
        if shape is not None and array.shape != shape:
            col.add(path, v.case, f"correction v{v.version}: shape {array.shape} differs from image shape {shape}")
    if versions and REVIEWED_RATER in data.get("rater_ids", []):
        col.add(
            col.manifest,
            None,
            f"a rater is named {REVIEWED_RATER!r}: --labels reviewed cannot add the "
            "corrections under that name; rename the rater",
        )
    try:
        return review_coverage(col.root)
    except DataError:  # a manifest the strict reader refuses: its problems are already listed
        return None


def check_dataset(
    root: str | Path,
    track: Callable[[Iterable[Any], str, int | None], Iterable[Any]] | None = None,
) -> CheckReport:
    """Check the dataset at ``root`` (folder or its ``dataset.json``) and return every problem found.

    Args:
        root: Dataset folder.
        track: Optional progress wrapper ``track(items, description, total)`` over the cases.

    Returns:
        A :class:`CheckReport`; ``report.ok`` is True when nothing is wrong. Never raises for bad data.

    """
    path = Path(root)
    folder = path.parent if path.name == MANIFEST_NAME else path
    col = _Collector(folder)
    loaded = _load_manifest(col)
    if loaded is None:
        return CheckReport(folder, 0, tuple(col.problems))
    data, entries = loaded
    _check_structure(col, data, entries)
    shapes: dict[str, tuple[int, ...] | None] = {}
    for e in (track or _no_track)(entries, "checking cases", len(entries)):
        shapes[e.id] = _check_case(col, data, e)
    coverage = _check_review(col, data, shapes)
    logger.info("checked %d cases in %s: %d problems", len(entries), folder, len(col.problems))
    return CheckReport(folder, len(entries), tuple(col.problems), coverage)
