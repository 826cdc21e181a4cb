"""``lidc-probunet``: the LIDC-IDRI crops used by the PyTorch Probabilistic U-Net (``data_lidc.pickle``).

Layout (the pre-processed LIDC release linked from github.com/stefanknegt/Probabilistic-Unet-Pytorch, also used
by PHiSeg and SSN): one or more ``*.pickle`` files (``src`` is the file or a folder of them; dicts are merged),
each a dict ``{slice_name: {"image": (128, 128) float32, "masks": [4 x (128, 128)], "series_uid": str}}``.
Mask ``i`` is rater ``rater{i+1}``; many masks are empty (that rater saw no lesion on the slice).

Loaded with the numpy-only unpickler. Case ids are the slice names with unsafe characters replaced by ``_``.
Split: seeded, grouped by ``series_uid`` so that no scan appears in two splits, 70/15/15 % of the series.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labelwise.data.importers._pickled import write_pickled_entries
from labelwise.data.importers.base import ImportOptions, Track, importers
from labelwise.data.manifest import Manifest
from labelwise.errors import DataError
from labelwise.io.safe_pickle import load_pickle

__all__ = ["FRACTIONS", "import_lidc_probunet"]

FRACTIONS = (0.70, 0.15, 0.15)


@importers.register("lidc-probunet")
def import_lidc_probunet(src: Path, dest: Path, options: ImportOptions, track: Track) -> Manifest:
    """Import the Probabilistic U-Net LIDC pickle(s) at ``src`` (a ``.pickle`` file or a folder of them).

    Options read: ``class_names`` (default ``("background", "lesion")``), ``seed``, ``overwrite``.
    """
    files = sorted(src.glob("*.pickle")) + sorted(src.glob("*.pkl")) if src.is_dir() else [src]
    if not files:
        raise DataError("no .pickle files in folder", src)
    data: dict[str, Any] = {}
    for f in files:
        part = load_pickle(f)
        if not isinstance(part, dict):
            raise DataError(f"pickle holds a {type(part).__name__}; expected a dict of slices", f)
        clash = set(part) & set(data)
        if clash:
            raise DataError(f"slice names {sorted(clash)[:3]} appear in more than one pickle", f)
        data.update(part)
    return write_pickled_entries(
        data,
        dest,
        options,
        track,
        name="lidc",
        source=str(src),
        fractions=FRACTIONS,
        default_classes=("background", "lesion"),
        description="LIDC-IDRI 2D crops (Probabilistic U-Net pickle); rater i = mask i; split grouped by series",
    )
