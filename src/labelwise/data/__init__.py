"""Cases, datasets (manifest folders), review decisions and corrections, importers, splits and synthetic phantoms."""

from __future__ import annotations

from labelwise.data.case import Case
from labelwise.data.dataset import Dataset, DatasetWriter
from labelwise.data.manifest import MANIFEST_NAME, SPLITS, CaseRecord, Manifest, read_manifest
from labelwise.data.review import (
    LABEL_SOURCES,
    REVIEWED_RATER,
    CaseReview,
    LabelSource,
    ReviewCoverage,
    ReviewStore,
    review_coverage,
)

__all__ = [
    "LABEL_SOURCES",
    "MANIFEST_NAME",
    "REVIEWED_RATER",
    "SPLITS",
    "Case",
    "CaseRecord",
    "CaseReview",
    "Dataset",
    "DatasetWriter",
    "LabelSource",
    "Manifest",
    "ReviewCoverage",
    "ReviewStore",
    "read_manifest",
    "review_coverage",
]
