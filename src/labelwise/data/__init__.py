"""Cases, datasets (manifest folders), importers, splits and synthetic phantoms."""

from __future__ import annotations

from labelwise.data.case import Case
from labelwise.data.dataset import Dataset, DatasetWriter
from labelwise.data.manifest import MANIFEST_NAME, SPLITS, CaseRecord, Manifest, read_manifest

__all__ = [
    "MANIFEST_NAME",
    "SPLITS",
    "Case",
    "CaseRecord",
    "Dataset",
    "DatasetWriter",
    "Manifest",
    "read_manifest",
]
