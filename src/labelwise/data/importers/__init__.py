"""Importers that turn public dataset layouts (and a generic folder layout) into labelwise dataset folders.

``importers.available()`` lists the format names; :func:`import_dataset` runs one. Each module documents its
layout, labels and the fixed seeded split it assigns (see also ``docs/data.md``).
"""

from __future__ import annotations

from labelwise.data.importers import (
    folder,
    lidc_probunet,
    medical_matting,
    mni152,
    msd,
    nifti_partial,
    nnunet,
    ph2,
    qubiq,
    riga,
)
from labelwise.data.importers.base import (
    Importer,
    ImportOptions,
    Track,
    binary_mask,
    compact_image,
    import_dataset,
    importers,
    safe_case_id,
)
from labelwise.data.importers.nnunet import LabelFolderOptions, parse_rater_mapping

__all__ = [
    "ImportOptions",
    "Importer",
    "LabelFolderOptions",
    "Track",
    "binary_mask",
    "compact_image",
    "folder",
    "import_dataset",
    "importers",
    "lidc_probunet",
    "medical_matting",
    "mni152",
    "msd",
    "nifti_partial",
    "nnunet",
    "parse_rater_mapping",
    "ph2",
    "qubiq",
    "riga",
    "safe_case_id",
]
