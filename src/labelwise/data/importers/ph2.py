"""``ph2``: the PH2 dermoscopy database (images, lesion masks and the clinical-diagnosis table).

Layout (Mendonça et al., EMBC 2013; the folder names contain spaces)::

    SRC/PH2_dataset.txt                                            # tab-separated: Name, Clinical Diagnosis, ...
    SRC/PH2 Dataset images/IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp
    SRC/PH2 Dataset images/IMDxxx/IMDxxx_lesion/IMDxxx_lesion.bmp

Imported as 2D RGB cases with one rater ``expert`` (``mask > 0``; the masks are 1-bit or RGB 0/255) and
classes ``("background", "lesion")``. Image-level labels, for weak supervision:

* ``diagnosis``: clinical diagnosis, 0 = common nevus, 1 = atypical nevus, 2 = melanoma (from the table);
* ``lesion``: 1 for every case. Every PH2 image contains a lesion, so this label alone carries no
  presence/absence signal: pair PH2 with lesion-free images for presence-based methods, or use ``diagnosis``.

Only table rows with an image folder are imported (the table lists all 200 images; legend lines are skipped).
Split: seeded, stratified by ``diagnosis``, 60/20/20 % (30 cases, 10 per class -> 18 / 6 / 6, 6/2/2 per class).
ISIC-style data (an image folder, a mask folder, a csv of diagnoses) imports with the ``folder`` importer.
"""

from __future__ import annotations

import re
from pathlib import Path

from labelwise.data.dataset import DatasetWriter
from labelwise.data.importers.base import ImportOptions, Track, binary_mask, compact_image, importers
from labelwise.data.manifest import Manifest
from labelwise.data.splits import assign_splits
from labelwise.errors import DataError
from labelwise.io import read_image, read_label

__all__ = ["DIAGNOSES", "FRACTIONS", "import_ph2", "read_ph2_table"]

FRACTIONS = (0.6, 0.2, 0.2)
DIAGNOSES = ("common nevus", "atypical nevus", "melanoma")
_ROW = re.compile(r"^\s*(IMD\d+)\s*\t\s*(\d+)\b")


def read_ph2_table(path: Path) -> dict[str, int]:
    """Parse ``PH2_dataset.txt`` -> ``{image name: clinical diagnosis 0/1/2}`` (legend lines are skipped)."""
    if not path.is_file():
        raise DataError("diagnosis table not found (expected PH2_dataset.txt next to 'PH2 Dataset images')", path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataError(f"cannot read diagnosis table ({exc})", path) from None
    table: dict[str, int] = {}
    for line in text.splitlines():
        m = _ROW.match(line)
        if m:
            value = int(m.group(2))
            if value not in (0, 1, 2):
                raise DataError(f"{m.group(1)}: clinical diagnosis {value} is not 0, 1 or 2", path)
            table[m.group(1)] = value
    if not table:
        raise DataError("no 'IMDxxx<TAB>diagnosis' rows found", path)
    return table


@importers.register("ph2")
def import_ph2(src: Path, dest: Path, options: ImportOptions, track: Track) -> Manifest:
    """Import PH2 from ``src`` (the folder holding ``PH2_dataset.txt`` and ``PH2 Dataset images``).

    Options read: ``seed``, ``overwrite`` (class names are fixed: background, lesion).
    """
    table = read_ph2_table(src / "PH2_dataset.txt")
    images = sorted(src.rglob("*_Dermoscopic_Image/*.bmp"))
    if not images:
        raise DataError("no IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp images found", src)
    writer = DatasetWriter(
        dest,
        name="ph2",
        spatial_dims=2,
        class_names=("background", "lesion"),
        rater_ids=("expert",),
        image_label_names=("diagnosis", "lesion"),
        description="PH2 dermoscopy; diagnosis 0=common nevus 1=atypical nevus 2=melanoma; lesion=1 for all",
        source=str(src),
        overwrite=options.overwrite,
    )
    strata: dict[str, int] = {}
    for img_path in track(images, "importing PH2", len(images)):
        case_id = img_path.stem
        if case_id not in table:
            raise DataError(f"{case_id} has no row in PH2_dataset.txt", img_path)
        mask_path = img_path.parent.parent / f"{case_id}_lesion" / f"{case_id}_lesion.bmp"
        if not mask_path.is_file():
            raise DataError(f"lesion mask of {case_id} not found", mask_path)
        img = read_image(img_path, 2)
        lab = read_label(mask_path, 2)
        if lab.array.shape != img.array.shape[1:]:
            raise DataError(f"mask shape {lab.array.shape} differs from image shape {img.array.shape[1:]}", mask_path)
        writer.add_case(
            case_id,
            compact_image(img.array),
            {"expert": binary_mask(lab.array, mask_path)},
            image_labels={"diagnosis": table[case_id], "lesion": 1},
        )
        strata[case_id] = table[case_id]
    writer.set_splits(assign_splits(sorted(strata), fractions=FRACTIONS, seed=options.seed, strata=strata))
    return writer.finish()
