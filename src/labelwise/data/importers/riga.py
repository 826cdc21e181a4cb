"""``riga``: RIGA-style retinal fundus data with six raters' optic disc / cup masks in ``Rater1..6`` folders.

Layout (one or more subsets; a subset is any folder, ``src`` included, that holds an image folder and
``Rater<k>`` folders; file stems match)::

    SRC/<subset>/images/<name>.<png|bmp|jpg|tif>        # image folder: images, Images, image or img
    SRC/<subset>/Rater1/<name>.<png|bmp|jpg|tif>        # rater 1's mask for <name>
    ...
    SRC/<subset>/Rater6/<name>.<ext>

Masks are grey-level maps: 0 = background, 1 or 128 = optic disc (the rim, outside the cup), 2 or 255 = optic
cup; any other level is an error naming the file. Classes: ``("background", "disc", "cup")``; the whole disc is
``label >= 1``. Every image must have a mask from every rater folder (a missing file is an error naming it).
Case ids: ``<subset>_<name>`` (``<name>`` alone when ``src`` itself is the subset), with unsafe characters
replaced by ``_``.
Split: cases of a subset whose name contains ``messidor`` (any case) are the ``test`` split, as in the usual RIGA
protocol (train on BinRushed + Magrabia, test on MESSIDOR); the rest is split 90/10 % train/val, seeded. When no
subset is MESSIDOR, all cases are split 70/10/20 %, seeded.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from labelwise.data.dataset import DatasetWriter
from labelwise.data.importers.base import ImportOptions, Track, compact_image, importers, safe_case_id
from labelwise.data.manifest import Manifest
from labelwise.data.splits import assign_splits
from labelwise.errors import DataError
from labelwise.io import RASTER_SUFFIXES, read_image, read_label

__all__ = ["CLASS_NAMES", "import_riga", "riga_label"]

CLASS_NAMES = ("background", "disc", "cup")
_IMAGE_DIRS = ("images", "image", "img")
_RATER = re.compile(r"^rater(\d+)$", re.IGNORECASE)


def riga_label(mask: np.ndarray, source: Path) -> np.ndarray:
    """Map a RIGA grey-level mask (0 / 1|128 / 2|255) to class indices 0 / 1 / 2 (uint8)."""
    out = np.full(mask.shape, 255, dtype=np.uint8)
    out[mask == 0] = 0
    out[(mask == 1) | (mask == 128)] = 1
    out[(mask == 2) | (mask == 255)] = 2
    if (out == 255).any():
        bad = np.unique(mask[out == 255])[:8].tolist()
        raise DataError(f"mask values {bad} are not 0 (background), 1/128 (disc) or 2/255 (cup)", source)
    return out


def _subsets(src: Path) -> list[tuple[Path, Path, dict[str, Path]]]:
    found = []
    for folder in sorted([src, *(p for p in src.rglob("*") if p.is_dir())]):
        children = {c.name: c for c in folder.iterdir() if c.is_dir()} if folder.is_dir() else {}
        raters = {f"rater{int(m.group(1))}": c for n, c in children.items() if (m := _RATER.match(n))}
        image_dir = next((c for n, c in children.items() if n.lower() in _IMAGE_DIRS), None)
        if raters and image_dir is not None:
            found.append((folder, image_dir, raters))
    return found


@importers.register("riga")
def import_riga(src: Path, dest: Path, options: ImportOptions, track: Track) -> Manifest:
    """Import RIGA-style ``Rater1..6`` folders from ``src`` (options read: ``seed``, ``overwrite``)."""
    subsets = _subsets(src)
    if not subsets:
        raise DataError("no folder with an 'images' folder and Rater1..RaterN folders", src)
    rater_ids = tuple(sorted({r for _, _, rs in subsets for r in rs}, key=lambda r: int(r[5:])))
    jobs: list[tuple[str, Path, dict[str, Path], str]] = []
    for folder, image_dir, raters in subsets:
        subset = "" if folder == src else safe_case_id(str(folder.relative_to(src)).replace("/", "-"))
        for image_file in sorted(p for p in image_dir.iterdir() if p.suffix.lower() in RASTER_SUFFIXES):
            masks: dict[str, Path] = {}
            for rid in rater_ids:
                rdir = raters.get(rid)
                cands = sorted(rdir.glob(f"{image_file.stem}.*")) if rdir is not None else []
                cands = [c for c in cands if c.suffix.lower() in RASTER_SUFFIXES]
                if not cands:
                    missing = (rdir or folder / f"Rater{rid[5:]}") / f"{image_file.stem}.*"
                    raise DataError(f"missing mask of rater {rid} for image {image_file.name}", missing)
                masks[rid] = cands[0]
            case_id = safe_case_id(f"{subset}_{image_file.stem}" if subset else image_file.stem)
            jobs.append((case_id, image_file, masks, subset))
    if not jobs:
        raise DataError("no images found in the image folders", src)
    writer = DatasetWriter(
        dest,
        name="riga",
        spatial_dims=2,
        class_names=CLASS_NAMES,
        rater_ids=rater_ids,
        description="RIGA-style fundus images; 1 = disc rim, 2 = cup; MESSIDOR subset = test",
        source=str(src),
        overwrite=options.overwrite,
    )
    for case_id, img_path, masks, _ in track(jobs, "importing RIGA", len(jobs)):
        img = read_image(img_path, 2)
        maps = {}
        for rid, mpath in masks.items():
            lab = read_label(mpath, 2)
            if lab.array.shape != img.array.shape[1:]:
                raise DataError(f"mask shape {lab.array.shape} differs from image {img.array.shape[1:]}", mpath)
            maps[rid] = riga_label(lab.array, mpath)
        writer.add_case(case_id, compact_image(img.array), maps)
    test = [c for c, _, _, s in jobs if "messidor" in s.lower()]
    rest = [c for c, _, _, s in jobs if "messidor" not in s.lower()]
    if test:
        splits = assign_splits(rest, fractions=(0.9, 0.1, 0.0), seed=options.seed) if rest else {}
        splits.update(dict.fromkeys(test, "test"))
    else:
        splits = assign_splits(rest, fractions=(0.7, 0.1, 0.2), seed=options.seed)
    writer.set_splits(splits)
    return writer.finish()
