"""Where the viewer keeps what users do: review decisions and corrected label versions.

Both live beside the dataset and never overwrite its files::

    DATASET/review/reviews.json                 # {"format": "labelwise-reviews", "items": {case: [decision, ...]}}
    DATASET/review/corrections.json             # {"format": "labelwise-corrections", "versions": [entry, ...]}
    DATASET/review/corrections/<case>/v0001.nii.gz

Every write is atomic, and every read-modify-write happens under one lock per store, so two browser tabs saving at
the same time never lose an edit: each correction is applied to the latest version of the case, and each version
records who made it, when, which slices changed and what it was based on.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from labelwise.errors import DataError
from labelwise.io import read_label, write_json_atomic, write_label

__all__ = ["Decision", "ReviewStore"]

Decision = Literal["accept", "reject", "flag"]
_DECISIONS = ("accept", "reject", "flag")


@dataclass(frozen=True)
class CorrectionVersion:
    """One saved label version."""

    case: str
    version: int
    file: str
    user: str
    time: str
    slices: tuple[int, ...]
    action: str
    base: str


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class ReviewStore:
    """Review decisions and correction versions of one dataset folder.

    Args:
        root: The dataset folder; files go to ``root/review``.

    """

    def __init__(self, root: str | Path) -> None:
        self.dir = Path(root) / "review"
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- reviews
    @property
    def reviews_path(self) -> Path:
        """Path of ``reviews.json``."""
        return self.dir / "reviews.json"

    def _read(self, path: Path, fmt: str, key: str, empty: Any) -> dict[str, Any]:
        if not path.exists():
            return {"format": fmt, key: empty}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"review file is not valid JSON ({exc})", path) from None
        if data.get("format") != fmt:
            raise DataError(f"not a {fmt} file", path)
        return dict(data)

    def reviews(self) -> dict[str, list[dict[str, Any]]]:
        """All decisions by case id, oldest first."""
        return dict(self._read(self.reviews_path, "labelwise-reviews", "items", {})["items"])

    def add_review(self, case_id: str, decision: str, comment: str = "", user: str = "anonymous") -> dict[str, Any]:
        """Append a decision (accept / reject / flag) for ``case_id`` and return it."""
        if decision not in _DECISIONS:
            raise DataError(f"decision must be one of {_DECISIONS}, got {decision!r}")
        entry = {"decision": decision, "comment": comment[:2000], "user": user[:100], "time": _now()}
        with self._lock:
            data = self._read(self.reviews_path, "labelwise-reviews", "items", {})
            data["items"].setdefault(case_id, []).append(entry)
            write_json_atomic(self.reviews_path, data)
        return entry

    # ----------------------------------------------------------------- corrections
    @property
    def corrections_path(self) -> Path:
        """Path of ``corrections.json``."""
        return self.dir / "corrections.json"

    def versions(self, case_id: str | None = None) -> list[CorrectionVersion]:
        """Saved versions (of one case, or all), oldest first."""
        data = self._read(self.corrections_path, "labelwise-corrections", "versions", [])
        out = [
            CorrectionVersion(
                case=v["case"],
                version=int(v["version"]),
                file=v["file"],
                user=v["user"],
                time=v["time"],
                slices=tuple(v["slices"]),
                action=v["action"],
                base=v["base"],
            )
            for v in data["versions"]
        ]
        return [v for v in out if case_id is None or v.case == case_id]

    def latest(self, case_id: str, spatial_dims: int) -> np.ndarray | None:
        """The latest corrected label map of ``case_id`` (``(*spatial)`` int16), or None."""
        versions = self.versions(case_id)
        if not versions:
            return None
        return read_label(self.dir / versions[-1].file, spatial_dims).array

    def save_slices(
        self,
        case_id: str,
        base: np.ndarray,
        base_name: str,
        slices: dict[int, np.ndarray],
        spacing_mm: tuple[float, ...],
        affine: np.ndarray,
        user: str = "anonymous",
        action: str = "paint",
    ) -> CorrectionVersion:
        """Write a new version: the latest version (or ``base`` if none) with ``slices`` replaced.

        Args:
            case_id: Case id.
            base: ``(*spatial)`` label map to start from when the case has no version yet.
            base_name: What ``base`` is (e.g. ``rater/r1``), recorded.
            slices: slice index (last axis; 0 for 2D) -> ``(H, W)`` label slice.
            spacing_mm: Written into the file with ``affine`` (the source geometry).
            affine: ``(4, 4)`` source affine.
            user: Who made the change.
            action: ``paint`` or ``propagate``.

        """
        with self._lock:
            versions = self.versions(case_id)
            spatial_dims = base.ndim
            current = self.latest(case_id, spatial_dims)
            volume = (base if current is None else current).astype(np.int16, copy=True)
            for index, data in slices.items():
                if spatial_dims == 2:
                    if index != 0:
                        raise DataError(f"case {case_id} is 2D: slice index must be 0, got {index}")
                    target_shape = volume.shape
                else:
                    if not 0 <= index < volume.shape[-1]:
                        raise DataError(f"case {case_id}: slice {index} outside 0..{volume.shape[-1] - 1}")
                    target_shape = volume.shape[:-1]
                if data.shape != target_shape:
                    raise DataError(f"case {case_id}: slice shape {data.shape} != expected {target_shape}")
                if spatial_dims == 2:
                    volume[...] = data
                else:
                    volume[..., index] = data
            number = (versions[-1].version + 1) if versions else 1
            rel = f"corrections/{case_id}/v{number:04d}.nii.gz"
            write_label(self.dir / rel, volume, spacing_mm, affine)
            entry = CorrectionVersion(
                case_id, number, rel, user[:100], _now(), tuple(sorted(slices)), action, base_name
            )
            catalogue = self._read(self.corrections_path, "labelwise-corrections", "versions", [])
            catalogue["versions"].append({**entry.__dict__, "slices": list(entry.slices)})
            write_json_atomic(self.corrections_path, catalogue)
            return entry
