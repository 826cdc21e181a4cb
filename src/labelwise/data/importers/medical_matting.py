"""``medical-matting``: the Medical Matting pickles of QUBIQ / LIDC (a ``.pkl`` inside a ``.zip``, or the ``.pkl``).

Layout (Wang et al., MICCAI 2021, github.com/wangsssky/MedicalMatting, e.g. ``brain_growth_alpha.zip``): a dict
``{case_id: {"series_uid": str, "image": (H, W) uint8, "masks": [R x (H, W) {0,1}], "alpha": (H, W) uint8}}``.
Mask ``i`` is rater ``rater{i+1}`` (QUBIQ's ``seg0{i+1}``). ``alpha`` is the authors' soft matte derived from the
raters, not raw data, and is not imported (the rater mean carries the same information).

Loaded with the numpy-only unpickler; any other object in the pickle is refused.
Split: seeded, case-level (by ``series_uid``), 65/15/20 % -> 25 / 6 / 8 for the 39 brain-growth cases.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from labelwise.data.importers._pickled import write_pickled_entries
from labelwise.data.importers.base import ImportOptions, Track, importers
from labelwise.data.manifest import Manifest
from labelwise.errors import DataError
from labelwise.io.safe_pickle import load_pickle, loads_pickle

__all__ = ["FRACTIONS", "import_medical_matting"]

FRACTIONS = (0.65, 0.15, 0.20)


@importers.register("medical-matting")
def import_medical_matting(src: Path, dest: Path, options: ImportOptions, track: Track) -> Manifest:
    """Import a Medical Matting pickle (``src``: the ``.zip`` holding one ``.pkl``, or the ``.pkl`` itself).

    Options read: ``class_names`` (default ``("background", "foreground")``), ``seed``, ``overwrite``.
    """
    if src.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(src) as zf:
                members = [m for m in zf.namelist() if m.lower().endswith((".pkl", ".pickle"))]
                if len(members) != 1:
                    raise DataError(f"zip holds {len(members)} pickles {members}; expected exactly one", src)
                data = loads_pickle(zf.read(members[0]), f"{src}:{members[0]}")
                stem = Path(members[0]).stem
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise DataError(f"cannot read zip ({exc})", src) from None
    elif src.suffix.lower() in (".pkl", ".pickle"):
        data = load_pickle(src)
        stem = src.stem
    else:
        raise DataError("expected a .zip holding a .pkl, or a .pkl/.pickle file", src)
    name = stem.removesuffix("_alpha")
    return write_pickled_entries(
        data,
        dest,
        options,
        track,
        name=name,
        source=str(src),
        fractions=FRACTIONS,
        default_classes=("background", "foreground"),
        description=f"Medical Matting pickle {src.name} ({name}); rater i = mask i; alpha matte not imported",
    )
