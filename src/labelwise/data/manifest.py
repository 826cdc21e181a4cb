"""The versioned ``dataset.json`` manifest: what a labelwise dataset folder contains.

Layout of a dataset folder::

    DATASET/
      dataset.json            # this manifest, written last and atomically
      images/<case>.nii.gz    # any format labelwise.io reads; paths are relative to the manifest
      labels/<case>_<rater>.nii.gz

Manifest fields (version 1)::

    {"format": "labelwise-dataset", "version": 1, "name": str, "spatial_dims": 2 | 3, "channels": int,
     "class_names": [str, ...], "rater_ids": [str, ...], "image_label_names": [str, ...],
     "cases": [{"id": str, "image": path, "labels": {rater_id: path}, "image_labels": {name: int},
                "split": "train" | "val" | "test" | null, "labelled_slices": [int, ...] | null}],
     "description": str, "source": str}

Case and rater ids become file names and appear in reports, so both must be safe ids
(:func:`labelwise.io.paths.id_problem`: ``[A-Za-z0-9][A-Za-z0-9._-]*`` without ``..``); a manifest with any
other id is refused when loaded and reported by ``labelwise data check``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from labelwise.errors import DataError
from labelwise.io.jsonfile import read_json_object
from labelwise.io.paths import id_problem

__all__ = ["MANIFEST_NAME", "MANIFEST_VERSION", "SPLITS", "CaseRecord", "Manifest", "read_manifest"]

MANIFEST_NAME = "dataset.json"
MANIFEST_VERSION = 1
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class CaseRecord:
    """One case entry of the manifest (paths relative to the manifest's folder)."""

    id: str
    image: str
    labels: dict[str, str] = field(default_factory=dict)
    image_labels: dict[str, int] = field(default_factory=dict)
    split: str | None = None
    labelled_slices: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Manifest:
    """The parsed ``dataset.json``."""

    name: str
    spatial_dims: int
    channels: int
    class_names: tuple[str, ...]
    rater_ids: tuple[str, ...]
    cases: tuple[CaseRecord, ...]
    image_label_names: tuple[str, ...] = ()
    description: str = ""
    source: str = ""
    version: int = MANIFEST_VERSION

    def to_json(self) -> dict[str, Any]:
        """Return the JSON-ready dict (the inverse of :meth:`from_json`)."""
        d = asdict(self)
        out: dict[str, Any] = {"format": "labelwise-dataset", "version": d.pop("version")}
        cases = d.pop("cases")
        out.update(d)
        out["cases"] = [
            {k: (list(v) if isinstance(v, tuple) else v) for k, v in c.items() if v not in (None, {}, ())}
            for c in cases
        ]
        for key in ("class_names", "rater_ids", "image_label_names"):
            out[key] = list(out[key])
        return out

    @classmethod
    def from_json(cls, data: Any, path: Path) -> Manifest:
        """Parse and validate a manifest dict; ``path`` is used in error messages."""
        if not isinstance(data, dict) or data.get("format") != "labelwise-dataset":
            raise DataError('not a labelwise dataset manifest (missing "format": "labelwise-dataset")', path)
        version = data.get("version")
        if version != MANIFEST_VERSION:
            raise DataError(f"manifest version {version!r} is not supported (expected {MANIFEST_VERSION})", path)
        try:
            cases = tuple(
                CaseRecord(
                    id=str(c["id"]),
                    image=str(c["image"]),
                    labels={str(k): str(v) for k, v in c.get("labels", {}).items()},
                    image_labels={str(k): int(v) for k, v in c.get("image_labels", {}).items()},
                    split=c.get("split"),
                    labelled_slices=(
                        tuple(int(i) for i in c["labelled_slices"]) if c.get("labelled_slices") is not None else None
                    ),
                )
                for c in data["cases"]
            )
            manifest = cls(
                name=str(data.get("name", path.parent.name)),
                spatial_dims=int(data["spatial_dims"]),
                channels=int(data["channels"]),
                class_names=tuple(str(n) for n in data["class_names"]),
                rater_ids=tuple(str(r) for r in data.get("rater_ids", [])),
                cases=cases,
                image_label_names=tuple(str(n) for n in data.get("image_label_names", [])),
                description=str(data.get("description", "")),
                source=str(data.get("source", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed manifest ({type(exc).__name__}: {exc})", path) from None
        manifest.validate(path)
        return manifest

    def validate(self, path: Path) -> None:
        """Check structural rules that need no file access; raise :class:`DataError` listing all problems."""
        problems: list[str] = []
        if self.spatial_dims not in (2, 3):
            problems.append(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if self.channels < 1:
            problems.append(f"channels must be >= 1, got {self.channels}")
        if len(self.class_names) < 2:
            problems.append("class_names needs background and at least one class")
        if len(set(self.rater_ids)) != len(self.rater_ids):
            problems.append("rater_ids has duplicates")
        problems += [p for r in self.rater_ids if (p := id_problem(r, "rater id")) is not None]
        seen: set[str] = set()
        for c in self.cases:
            if (bad := id_problem(c.id)) is not None:
                problems.append(bad)
            if c.id in seen:
                problems.append(f"duplicate case id {c.id!r}")
            seen.add(c.id)
            if c.split is not None and c.split not in SPLITS:
                problems.append(f"case {c.id}: split {c.split!r} is not one of {SPLITS}")
            unknown = set(c.labels) - set(self.rater_ids)
            if unknown:
                problems.append(f"case {c.id}: raters {sorted(unknown)} are not in rater_ids")
            for rel in [c.image, *c.labels.values()]:
                if Path(rel).is_absolute() or ".." in Path(rel).parts:
                    problems.append(f"case {c.id}: path {rel!r} must be relative and inside the dataset folder")
        if problems:
            raise DataError("invalid manifest: " + "; ".join(problems), path)


def read_manifest(path: Path) -> Manifest:
    """Read ``dataset.json`` (or a folder containing it)."""
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise DataError(f"no {MANIFEST_NAME} here (import data with `labelwise data import` first)", path)
    return Manifest.from_json(read_json_object(path, "manifest"), path)
