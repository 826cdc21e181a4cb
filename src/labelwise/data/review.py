"""Review decisions and corrected label versions of a dataset, and the reviewed view of its labels.

The viewer writes them; every command that reads labels can read them back (``--labels reviewed``, through
``Dataset(root, labels="reviewed")``). Both live beside the dataset and never overwrite its files::

    DATASET/review/reviews.json        # {"format": "labelwise-reviews", "items": {case: [decision, ...]}}
    DATASET/review/corrections.json    # {"format": "labelwise-corrections", "versions": [version, ...]}
    DATASET/review/corrections/<case>/v0001.nii.gz

A decision is ``{"decision": "accept" | "reject" | "flag", "comment", "user", "time", "seq"}``; a version is
``{"case", "version", "file", "user", "time", "slices", "action", "base", "seq"}``. ``seq`` is one counter over
both files, so "was this case corrected after it was rejected?" has an answer even within one second (files from
before ``seq`` existed compare by ``time``).

Safety. The store validates every label map before writing it (:meth:`ReviewStore.save_slices`): the case must
be in the manifest, the map must have the case's shape, an integer (or bool) dtype, no NaN and only values of the
dataset's classes, so no caller can save a corrupt correction. A version is written to a temporary file and
renamed into place, and ``corrections.json`` lists it only after that, so a reader never sees a half-written
version; a version that is listed but missing or unreadable is a :class:`~labelwise.errors.DataError` naming the
file. Every read-modify-write happens under one lock per store, so two browser tabs saving at the same time never
lose an edit: each correction applies to the latest version of the case.

The reviewed view (:func:`reviewed_manifest`, docs/lifecycle.md "Corrections are labels"): per case

* the latest correction is the one rater ``reviewed`` (the originals are not read);
* an accepted case keeps its raters, now marked trusted in its :class:`CaseReview`;
* a case whose latest decision is ``reject`` with no correction after it is set aside: no labels and no split,
  so nothing trains, validates or tests on labels known to be wrong (its image stays, e.g. for pseudo-labels);
* every other case keeps its raters.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from labelwise.data.manifest import MANIFEST_NAME, Manifest, read_manifest
from labelwise.errors import DataError
from labelwise.io import id_problem, read_image, read_label, safe_join, write_json_atomic, write_label

__all__ = [
    "DECISIONS",
    "LABEL_SOURCES",
    "REVIEWED_RATER",
    "REVIEW_DIR",
    "CaseReview",
    "CorrectionVersion",
    "Decision",
    "LabelSource",
    "ReviewCoverage",
    "ReviewStatus",
    "ReviewStore",
    "case_reviews",
    "check_label_map",
    "review_coverage",
    "reviewed_manifest",
]

logger = logging.getLogger(__name__)

Decision = Literal["accept", "reject", "flag"]
DECISIONS: tuple[Decision, ...] = ("accept", "reject", "flag")

LabelSource = Literal["raters", "reviewed"]
"""Which labels a dataset gives: the raters' files, or the reviewed view (corrections, rejections)."""
LABEL_SOURCES: tuple[LabelSource, ...] = ("raters", "reviewed")

ReviewStatus = Literal["untouched", "flagged", "accepted", "rejected", "corrected"]

REVIEWED_RATER = "reviewed"
"""The rater id of a corrected case's labels in the reviewed view."""
REVIEW_DIR = "review"
"""The store's folder inside the dataset folder."""

_ACTIONS = ("paint", "propagate", "revert")
_REVIEWS_FORMAT = "labelwise-reviews"
_CORRECTIONS_FORMAT = "labelwise-corrections"
_VERSION_FILE = re.compile(r"corrections/(?P<case>[^/]+)/v(?P<version>\d{4,})\.nii\.gz")


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class CorrectionVersion:
    """One saved label version of a case.

    Attributes:
        case: Case id.
        version: 1, 2, ... per case.
        file: Path relative to ``DATASET/review`` (``corrections/<case>/v0001.nii.gz``).
        user: Who saved it.
        time: When (ISO 8601 with offset).
        slices: The slices it changed (last axis; ``(0,)`` for 2D).
        action: ``paint`` or ``propagate``.
        base: What the first edit started from (``rater/r1``, ``consensus``, ``correction``, ...).
        seq: Position in the store's history (0: written before the store counted).

    """

    case: str
    version: int
    file: str
    user: str
    time: str
    slices: tuple[int, ...]
    action: str
    base: str
    seq: int = 0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (the entry of ``corrections.json``)."""
        return {**asdict(self), "slices": list(self.slices)}


@dataclass(frozen=True)
class CaseReview:
    """Where one case stands in review: its status and the provenance of the labels the reviewed view gives.

    Attributes:
        case: Case id.
        status: ``untouched`` (no decision, no correction), ``flagged``, ``accepted``, ``rejected`` (latest
            decision ``reject``, no correction after it) or ``corrected`` (has a correction, not rejected since).
        trusted: The latest decision accepts the labels the view gives (the raters, or the latest correction).
        decision: The latest decision (``decision``, ``comment``, ``user``, ``time``, ``seq``), or None.
        correction: The latest saved version, or None.
        versions: Number of saved versions.
        corrected_slices: Every slice any version changed (last axis).

    """

    case: str
    status: ReviewStatus
    trusted: bool = False
    decision: Mapping[str, Any] | None = None
    correction: CorrectionVersion | None = None
    versions: int = 0
    corrected_slices: tuple[int, ...] = ()

    @property
    def labels(self) -> str:
        """What the reviewed view reads for the case: ``reviewed``, ``raters`` or ``none`` (set aside)."""
        return {"corrected": REVIEWED_RATER, "rejected": "none"}.get(self.status, "raters")

    def to_json(self) -> dict[str, Any]:
        """Provenance as written into outputs (``fusion.json``, an export's metadata)."""
        out: dict[str, Any] = {"status": self.status, "labels": self.labels, "trusted": self.trusted}
        if self.decision is not None:
            out["decision"] = {k: self.decision.get(k) for k in ("decision", "user", "time", "comment")}
        if self.correction is not None:
            c = self.correction
            out["correction"] = {
                "version": c.version,
                "file": f"{REVIEW_DIR}/{c.file}",
                "user": c.user,
                "time": c.time,
                "base": c.base,
                "action": c.action,
                "versions": self.versions,
            }
        return out


@dataclass(frozen=True)
class ReviewCoverage:
    """How much of a dataset has been reviewed (``labelwise data check`` and ``data stats``).

    Attributes:
        cases: Cases in the manifest.
        reviewed: Cases with a decision or a correction.
        accepted, rejected, corrected, flagged, untouched: Cases per :data:`ReviewStatus` (they sum to ``cases``).
        trusted: Cases whose latest decision accepts the labels the reviewed view gives.
        newer_than_labels: Corrected cases whose latest version is newer than every rater file of the case (the
            raters' files do not hold the fix: read it with ``--labels reviewed``).
        older_than_labels: Corrected cases with a rater file modified after the latest version was saved (the
            correction may rest on an older label; look at them again).

    """

    cases: int
    reviewed: int
    accepted: int
    rejected: int
    corrected: int
    flagged: int
    untouched: int
    trusted: int
    newer_than_labels: tuple[str, ...] = ()
    older_than_labels: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            **asdict(self),
            "newer_than_labels": list(self.newer_than_labels),
            "older_than_labels": list(self.older_than_labels),
        }

    def summary(self) -> str:
        """One line: ``review: 3/10 cases reviewed (accepted 1, rejected 1, corrected 1, ...)``."""
        line = (
            f"review: {self.reviewed}/{self.cases} cases reviewed (accepted {self.accepted}, rejected "
            f"{self.rejected}, corrected {self.corrected}, flagged {self.flagged}, untouched {self.untouched}; "
            f"trusted {self.trusted}); {len(self.newer_than_labels)} correction(s) newer than the label files"
        )
        if self.older_than_labels:
            line += f", {len(self.older_than_labels)} older (label file changed since): " + ", ".join(
                self.older_than_labels[:10]
            )
        return line


def check_label_map(array: Any, shape: tuple[int, ...], num_classes: int, what: str) -> np.ndarray:
    """Validate a label map a user or a program hands in, and return it as int16.

    Args:
        array: The candidate ``(*spatial)`` label map.
        shape: The shape it must have.
        num_classes: Values must lie in ``0..num_classes-1``.
        what: What it is, for the messages (``case c1: slice 4``).

    Returns:
        The map as a new int16 array.

    Raises:
        DataError: Not an array of that shape, a float/object/complex dtype (NaN named as such), or a value that
            is not a class.

    Example:
        >>> check_label_map(np.array([[0, 1]], dtype=np.uint8), (1, 2), 2, "x").dtype
        dtype('int16')

    """
    arr = np.asarray(array)
    if arr.shape != tuple(shape):
        raise DataError(f"{what}: shape {arr.shape} differs from the expected {tuple(shape)}")
    if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
        raise DataError(f"{what}: {int(np.isnan(arr).sum())} value(s) are NaN; a label map holds class indices")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise DataError(f"{what}: dtype {arr.dtype} is not an integer type; a label map holds class indices")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= num_classes):
        bad = [int(v) for v in np.unique(arr) if v < 0 or v >= num_classes][:8]
        raise DataError(f"{what}: values {bad} are not classes (0..{num_classes - 1})")
    return arr.astype(np.int16)


class ReviewStore:
    """Review decisions and correction versions of one dataset folder.

    Args:
        root: The dataset folder (with ``dataset.json``); files go to ``root/review``.

    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.dir = self.root / REVIEW_DIR
        self._lock = threading.Lock()
        self._manifest: Manifest | None = None
        self._shapes: dict[str, tuple[int, ...]] = {}

    # ----------------------------------------------------------------- the dataset it belongs to
    @property
    def manifest(self) -> Manifest:
        """The dataset's manifest (read once)."""
        if self._manifest is None:
            self._manifest = read_manifest(self.root / MANIFEST_NAME)
        return self._manifest

    def _check_case(self, case_id: str) -> None:
        if not isinstance(case_id, str) or id_problem(case_id) is not None:
            raise DataError(f"{case_id!r} is not a case id", self.root / MANIFEST_NAME)
        if case_id not in {c.id for c in self.manifest.cases}:
            raise DataError(f"no case {case_id!r} in the dataset", self.root / MANIFEST_NAME)

    def case_shape(self, case_id: str) -> tuple[int, ...]:
        """The spatial shape of ``case_id``'s image (read once per case)."""
        if case_id not in self._shapes:
            self._check_case(case_id)
            rec = next(c for c in self.manifest.cases if c.id == case_id)
            path = safe_join(self.root, rec.image)
            self._shapes[case_id] = tuple(read_image(path, self.manifest.spatial_dims).array.shape[1:])
        return self._shapes[case_id]

    # ----------------------------------------------------------------- files
    @property
    def reviews_path(self) -> Path:
        """Path of ``reviews.json``."""
        return self.dir / "reviews.json"

    @property
    def corrections_path(self) -> Path:
        """Path of ``corrections.json``."""
        return self.dir / "corrections.json"

    def _read(self, path: Path, fmt: str, key: str, kind: type) -> dict[str, Any]:
        if not path.exists():
            return {"format": fmt, key: kind()}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"review file is not valid JSON ({exc})", path) from None
        if not isinstance(data, dict) or data.get("format") != fmt:
            raise DataError(f"not a {fmt} file", path)
        if not isinstance(data.get(key), kind):
            raise DataError(f"{key!r} must be a JSON {'object' if kind is dict else 'array'}", path)
        return dict(data)

    def _next_seq(self) -> int:
        """One more than every ``seq`` in both files (call under the lock)."""
        seqs = [int(d.get("seq", 0)) for items in self.reviews().values() for d in items]
        seqs += [v.seq for v in self.versions()]
        return max(seqs, default=0) + 1

    # ----------------------------------------------------------------- reviews
    def reviews(self) -> dict[str, list[dict[str, Any]]]:
        """All decisions by case id, oldest first.

        Raises:
            DataError: ``reviews.json`` is not a reviews file or holds a malformed decision (naming the file).

        """
        items = self._read(self.reviews_path, _REVIEWS_FORMAT, "items", dict)["items"]
        for case_id, decisions in items.items():
            ok = isinstance(decisions, list) and all(
                isinstance(d, dict) and d.get("decision") in DECISIONS and isinstance(d.get("seq", 0), int)
                for d in decisions
            )
            if not ok:
                raise DataError(
                    f"case {case_id}: malformed decisions (each needs a decision in {DECISIONS})", self.reviews_path
                )
        return dict(items)

    def add_review(self, case_id: str, decision: str, comment: str = "", user: str = "anonymous") -> dict[str, Any]:
        """Append a decision (accept / reject / flag) for ``case_id`` and return it.

        Raises:
            DataError: an unknown case or decision.

        """
        if decision not in DECISIONS:
            raise DataError(f"decision must be one of {DECISIONS}, got {decision!r}")
        self._check_case(case_id)
        with self._lock:
            entry = {
                "decision": decision,
                "comment": comment[:2000],
                "user": user[:100],
                "time": _now(),
                "seq": self._next_seq(),
            }
            data = self._read(self.reviews_path, _REVIEWS_FORMAT, "items", dict)
            data["items"].setdefault(case_id, []).append(entry)
            write_json_atomic(self.reviews_path, data)
        return entry

    # ----------------------------------------------------------------- corrections
    def versions(self, case_id: str | None = None) -> list[CorrectionVersion]:
        """Saved versions (of one case, or all), oldest first.

        Raises:
            DataError: ``corrections.json`` is malformed, or names a file outside ``corrections/<case>/``.

        """
        data = self._read(self.corrections_path, _CORRECTIONS_FORMAT, "versions", list)
        out = []
        for n, v in enumerate(data["versions"]):
            try:
                entry = CorrectionVersion(
                    case=str(v["case"]),
                    version=int(v["version"]),
                    file=str(v["file"]),
                    user=str(v["user"]),
                    time=str(v["time"]),
                    slices=tuple(int(s) for s in v["slices"]),
                    action=str(v["action"]),
                    base=str(v["base"]),
                    seq=int(v.get("seq", 0)),
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise DataError(
                    f"version entry #{n} is malformed ({type(exc).__name__}: {exc})", self.corrections_path
                ) from None
            match = _VERSION_FILE.fullmatch(entry.file)
            if match is None or match["case"] != entry.case or int(match["version"]) != entry.version:
                raise DataError(
                    f"version entry #{n} names the file {entry.file!r}, not "
                    f"corrections/{entry.case}/v{entry.version:04d}.nii.gz",
                    self.corrections_path,
                )
            out.append(entry)
        return [v for v in out if case_id is None or v.case == case_id]

    def path(self, version: CorrectionVersion) -> Path:
        """The file of ``version``."""
        return self.dir / version.file

    def read(self, version: CorrectionVersion) -> np.ndarray:
        """The ``(*spatial)`` int16 label map of ``version``, checked against the dataset's classes.

        Raises:
            DataError: the file is missing (listed but absent), unreadable, or holds values that are not classes;
                the message names the file.

        """
        path = self.path(version)
        if not path.is_file():
            raise DataError(
                f"correction v{version.version} of case {version.case} is listed in "
                f"{self.corrections_path.name} but its file is missing",
                path,
            )
        array = read_label(path, self.manifest.spatial_dims).array
        k = len(self.manifest.class_names)
        if array.size and (int(array.min()) < 0 or int(array.max()) >= k):
            raise DataError(f"correction holds values outside the classes 0..{k - 1}", path)
        return array

    def latest(self, case_id: str, spatial_dims: int | None = None) -> np.ndarray | None:
        """The latest corrected label map of ``case_id`` (``(*spatial)`` int16), or None.

        Args:
            case_id: Case id.
            spatial_dims: Unused (the manifest's is read); kept for callers of the viewer-era signature.

        """
        versions = self.versions(case_id)
        return self.read(versions[-1]) if versions else None

    def save_slices(
        self,
        case_id: str,
        base: np.ndarray,
        base_name: str,
        slices: Mapping[int, np.ndarray],
        spacing_mm: tuple[float, ...],
        affine: np.ndarray,
        user: str = "anonymous",
        action: str = "paint",
    ) -> CorrectionVersion:
        """Write a new version: the latest version (or ``base`` if none) with ``slices`` replaced.

        Every array is validated first (:func:`check_label_map`): the case's shape, an integer dtype, no NaN, only
        the dataset's classes. The file is written atomically and listed in ``corrections.json`` only then.

        Args:
            case_id: A case of the dataset.
            base: ``(*spatial)`` label map to start from when the case has no version yet.
            base_name: What ``base`` is (e.g. ``rater/r1``), recorded.
            slices: slice index (last axis; 0 for 2D) -> ``(*spatial[:-1])`` label slice (``(H, W)`` of a 2D case).
            spacing_mm: Written into the file with ``affine`` (the source geometry).
            affine: ``(4, 4)`` source affine.
            user: Who made the change.
            action: ``paint``, ``propagate`` or ``revert`` (a version that undoes the one before it).

        Raises:
            DataError: an unknown case or action, no slices, a slice index outside the case, or a refused array.

        """
        if action not in _ACTIONS:
            raise DataError(f"case {case_id}: action must be one of {_ACTIONS}, got {action!r}")
        shape = self.case_shape(case_id)
        k = len(self.manifest.class_names)
        spatial_dims = len(shape)
        if not slices:
            raise DataError(f"case {case_id}: no slices to save")
        checked: dict[int, np.ndarray] = {}
        for index, data in slices.items():
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
                raise DataError(f"case {case_id}: slice index {index!r} is not an integer")
            depth = 1 if spatial_dims == 2 else shape[-1]
            if not 0 <= int(index) < depth:
                raise DataError(f"case {case_id}: slice {index} outside 0..{depth - 1}")
            target = shape if spatial_dims == 2 else shape[:-1]
            checked[int(index)] = check_label_map(data, target, k, f"case {case_id}: slice {index}")
        with self._lock:
            versions = self.versions(case_id)
            if versions:
                volume = self.read(versions[-1]).copy()
                volume = check_label_map(volume, shape, k, f"{self.path(versions[-1])}")
            else:
                volume = check_label_map(base, shape, k, f"case {case_id}: base {base_name!r}")
            for index, data in checked.items():
                if spatial_dims == 2:
                    volume[...] = data
                else:
                    volume[..., index] = data
            number = (versions[-1].version + 1) if versions else 1
            entry = CorrectionVersion(
                case_id,
                number,
                f"corrections/{case_id}/v{number:04d}.nii.gz",
                user[:100],
                _now(),
                tuple(sorted(checked)),
                action,
                base_name[:200],
                self._next_seq(),
            )
            write_label(self.path(entry), volume, spacing_mm, affine)  # temp file + rename
            catalogue = self._read(self.corrections_path, _CORRECTIONS_FORMAT, "versions", list)
            catalogue["versions"].append(entry.to_json())
            write_json_atomic(self.corrections_path, catalogue)  # listed only once the file exists
            return entry


def _after(correction: CorrectionVersion, decision: Mapping[str, Any]) -> bool:
    """Whether ``correction`` was saved after ``decision`` (a tie in time counts as after)."""
    seq = int(decision.get("seq", 0))
    if correction.seq and seq:
        return correction.seq > seq
    return correction.time >= str(decision.get("time", ""))


def case_reviews(store: ReviewStore, case_ids: Iterable[str]) -> dict[str, CaseReview]:
    """The :class:`CaseReview` of each case in ``case_ids`` (untouched ones included).

    Decisions and corrections for cases not in ``case_ids`` are ignored (``labelwise data check`` reports them).
    """
    decisions = store.reviews()
    versions: dict[str, list[CorrectionVersion]] = {}
    for v in store.versions():
        versions.setdefault(v.case, []).append(v)
    out: dict[str, CaseReview] = {}
    for cid in case_ids:
        history = versions.get(cid, [])
        latest = history[-1] if history else None
        decision = decisions.get(cid, [])
        last = max(decision, key=lambda d: (int(d.get("seq", 0)), str(d.get("time", "")))) if decision else None
        kind = None if last is None else last["decision"]
        status: ReviewStatus
        if latest is not None and not (kind == "reject" and last is not None and not _after(latest, last)):
            status = "corrected"
            trusted = kind == "accept" and last is not None and not _after(latest, last)
        elif kind is not None:
            status = cast(ReviewStatus, {"accept": "accepted", "reject": "rejected", "flag": "flagged"}[kind])
            trusted = kind == "accept"
        else:
            status, trusted = "untouched", False
        out[cid] = CaseReview(
            case=cid,
            status=status,
            trusted=trusted,
            decision=last,
            correction=latest,
            versions=len(history),
            corrected_slices=tuple(sorted({s for v in history for s in v.slices})),
        )
    return out


def reviewed_manifest(manifest: Manifest, reviews: Mapping[str, CaseReview], root: str | Path) -> Manifest:
    """The manifest of the reviewed view: corrected cases read ``reviewed``, rejected cases are set aside.

    Args:
        manifest: The dataset's manifest (not modified).
        reviews: :func:`case_reviews` of its cases.
        root: The dataset folder (to check that each latest version's file exists).

    Returns:
        A manifest whose corrected cases have the single rater ``reviewed`` (the latest version's file;
        ``labelled_slices`` of a partially labelled case gain the corrected slices) and whose rejected cases
        have no labels and no split. ``rater_ids`` gain ``reviewed`` when some case is corrected.

    Raises:
        DataError: a latest version's file is missing (named), or the dataset already has a rater ``reviewed``.

    """
    store_dir = Path(root) / REVIEW_DIR
    corrected = False
    records = []
    for rec in manifest.cases:
        review = reviews.get(rec.id)
        if review is not None and review.status == "corrected" and review.correction is not None:
            path = store_dir / review.correction.file
            if not path.is_file():
                raise DataError(
                    f"correction v{review.correction.version} of case {rec.id} is listed in "
                    "corrections.json but its file is missing",
                    path,
                )
            labelled = rec.labelled_slices
            if labelled is not None:
                labelled = tuple(sorted(set(labelled) | set(review.corrected_slices)))
            rec = replace(
                rec, labels={REVIEWED_RATER: f"{REVIEW_DIR}/{review.correction.file}"}, labelled_slices=labelled
            )
            corrected = True
        elif review is not None and review.status == "rejected":
            rec = replace(rec, labels={}, split=None)
        records.append(rec)
    if corrected and REVIEWED_RATER in manifest.rater_ids:
        raise DataError(
            f"the dataset already has a rater named {REVIEWED_RATER!r}: rename it to read the corrections as labels",
            Path(root) / MANIFEST_NAME,
        )
    rater_ids = (*manifest.rater_ids, REVIEWED_RATER) if corrected else manifest.rater_ids
    return replace(manifest, rater_ids=rater_ids, cases=tuple(records))


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def review_coverage(root: str | Path, manifest: Manifest | None = None) -> ReviewCoverage:
    """Count reviewed, accepted, rejected, corrected, flagged and untouched cases of the dataset at ``root``.

    Args:
        root: The dataset folder.
        manifest: Its manifest (read when not given).

    Raises:
        DataError: unreadable review files.

    """
    folder = Path(root)
    manifest = manifest or read_manifest(folder / MANIFEST_NAME)
    store = ReviewStore(folder)
    reviews = case_reviews(store, [c.id for c in manifest.cases])
    counts = {
        s: sum(r.status == s for r in reviews.values())
        for s in ("accepted", "rejected", "corrected", "flagged", "untouched")
    }
    newer: list[str] = []
    older: list[str] = []
    for rec in manifest.cases:
        review = reviews[rec.id]
        if review.status != "corrected" or review.correction is None:
            continue
        saved = _mtime(store.path(review.correction))
        label_times = [t for rel in rec.labels.values() if (t := _mtime(folder / rel)) is not None]
        if saved is None:
            continue
        if all(saved > t for t in label_times):
            newer.append(rec.id)
        if any(t > saved for t in label_times):
            older.append(rec.id)
    return ReviewCoverage(
        cases=len(reviews),
        reviewed=len(reviews) - counts["untouched"],
        trusted=sum(r.trusted for r in reviews.values()),
        newer_than_labels=tuple(newer),
        older_than_labels=tuple(older),
        **counts,
    )
