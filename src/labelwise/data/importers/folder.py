"""``folder``: the generic layout for users' own data (no code needed).

Layout::

    SRC/images/<case>.<ext>            # one image per case; ext: .nii/.nii.gz, .png/.bmp/.jpg/.tif, .npy/.npz
    SRC/labels/<case>_<rater>.<ext>    # optional; any number of raters, any subset of them per case
    SRC/cases.csv                      # optional: columns case, split (train/val/test) and image-level labels
    SRC/classes.txt                    # optional: one class name per line, background first

* Case ids are the image file names without extension (letters, digits, ``._-``). A label file belongs to the
  longest case id it starts with followed by ``_``; the rest of its name is the rater id.
* Spatial dimensions: taken from the first label map (2 or 3 axes), else from the first image (2D rasters;
  NIfTI with 2 axes is 2D, with 3 or 4 is 3D; NPY/NPZ with 2 axes is 2D, else 3D). All cases must agree.
* Rater ids (the rest of a label file's name) follow the same rule as case ids; other names are reported.
* **0/255 masks**: a label map whose values are all in {0, 255} (with some 255) is a binary mask saved the usual
  way of PNG tools; with two classes it is read as 0/1. This is decided per file.
* Class names: ``options.class_names``, else ``classes.txt``, else ``("background", "foreground")`` when every
  label map holds only 0/1 or only 0/255, else ``background, class_1, ...`` up to the largest value found.
  Inferring classes from a mix of 0/255 masks and multi-class maps (values above 1) is an error naming a file of
  each kind: the 255s cannot be told apart from class 255, so give the class names or save the maps one way.
  Any value outside ``0..len(class_names)-1`` is an error naming the file.
* ``cases.csv``: every row's ``case`` must have an image; ``split`` (optional column) must be train/val/test or
  empty; every other column is an integer image-level label (empty cell: not set). Cases missing from the csv
  get no image-level labels.
* Split: the csv's ``split`` column when present (cases without a value get no split); otherwise seeded,
  case-level 70/15/15 %, stratified by the first image-level label column when every case has it.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from labelwise.data.dataset import DatasetWriter
from labelwise.data.importers.base import ImportOptions, Track, compact_image, importers
from labelwise.data.manifest import SPLITS, Manifest
from labelwise.data.splits import assign_splits
from labelwise.errors import DataError
from labelwise.io import file_format, id_problem, read_image, read_label

__all__ = ["FRACTIONS", "import_folder", "read_cases_csv"]

FRACTIONS = (0.70, 0.15, 0.15)
_EXTS = (".nii.gz", ".nii", ".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".npy", ".npz")


def _stem(path: Path) -> str | None:
    name = path.name
    low = name.lower()
    for ext in _EXTS:
        if low.endswith(ext):
            return name[: -len(ext)]
    return None


def read_cases_csv(
    path: Path, case_ids: set[str]
) -> tuple[dict[str, str | None], dict[str, dict[str, int]], list[str]]:
    """Parse ``cases.csv`` -> (split per case, image labels per case, image-label column names).

    Raises:
        DataError: no ``case`` column, unknown case, bad split value, non-integer label, duplicate rows.

    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
            fields = [f.strip() for f in (rows[0].keys() if rows else [])]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read csv ({exc})", path) from None
    if rows and "case" not in fields:
        raise DataError(f"needs a 'case' column (columns: {fields})", path)
    label_cols = [f for f in fields if f not in ("case", "split")]
    splits: dict[str, str | None] = {}
    labels: dict[str, dict[str, int]] = {}
    problems = []
    for n, raw in enumerate(rows, start=2):
        if None in raw:  # DictReader puts surplus cells under the key None
            problems.append(f"line {n}: {len(fields) + len(raw[None] or [])} cells, the header has {len(fields)}")
            continue
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        cid = row["case"]
        if cid not in case_ids:
            problems.append(f"line {n}: case {cid!r} has no image in images/")
            continue
        if cid in splits:
            problems.append(f"line {n}: case {cid!r} is listed twice")
        split = row.get("split") or None
        if split is not None and split not in SPLITS:
            problems.append(f"line {n}: split {split!r} is not one of {SPLITS}")
        splits[cid] = split
        labels[cid] = {}
        for col in label_cols:
            if row.get(col):
                try:
                    labels[cid][col] = int(row[col])
                except ValueError:
                    problems.append(f"line {n}: {col}={row[col]!r} is not an integer")
    if problems:
        raise DataError("; ".join(problems), path)
    return splits, labels, label_cols


def _image_dims(path: Path) -> int:
    fmt = file_format(path)
    if fmt == "raster":
        return 2
    if fmt == "nifti":
        import nibabel as nib

        try:
            header: Any = nib.load(str(path))
            shape = list(header.shape)
        except Exception as exc:  # nibabel raises many types for corrupt headers
            raise DataError(f"cannot read NIfTI header ({type(exc).__name__}: {exc})", path) from None
        return 2 if len(shape) == 2 else 3
    try:
        with np.load(path, allow_pickle=False, mmap_mode="r") as arr:
            ndim = arr.ndim if hasattr(arr, "ndim") else np.asarray(arr[next(iter(arr.keys()))]).ndim
    except Exception:
        return 3
    return 2 if ndim == 2 else 3


def _label_dims(path: Path) -> int:
    try:
        return read_label(path, 2).array.ndim
    except DataError:
        return read_label(path, 3).array.ndim


class _Problems:
    """Collects problems so that one import run reports all of them."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: Path, message: str) -> None:
        self.items.append(f"{path}: {message}")

    def raise_if_any(self, src: Path) -> None:
        if len(self.items) == 1:
            raise DataError(self.items[0])  # "file: problem", one line
        if self.items:
            listing = "\n  ".join(self.items)
            raise DataError(f"{len(self.items)} problem(s) in the folder layout:\n  {listing}", src)


def _label_values(path: Path, nd: int, problems: _Problems) -> np.ndarray | None:
    try:
        arr = read_label(path, nd).array
    except DataError as exc:
        problems.add(path, exc.problem)
        return None
    if arr.size and arr.min() < 0:
        problems.add(path, f"negative label value {arr.min()}")
        return None
    return arr


def _is_mask255(values: np.ndarray) -> bool:
    """True for the unique values of a binary mask saved as 0/255 (255 present, nothing but 0 and 255)."""
    return bool(values.size and values.max() == 255 and np.isin(values, (0, 255)).all())


def _class_names(src: Path, options: ImportOptions, max_value: int, binary: bool) -> tuple[str, ...]:
    if options.class_names:
        names = tuple(options.class_names)
    elif (src / "classes.txt").is_file():
        text = (src / "classes.txt").read_text(encoding="utf-8")
        names = tuple(line.strip() for line in text.splitlines() if line.strip())
    elif binary:
        names = ("background", "foreground")
    else:
        names = ("background", *(f"class_{i}" for i in range(1, max_value + 1)))
    if len(names) < 2:
        raise DataError(f"need at least background and one class, got {names}", src / "classes.txt")
    return names


@importers.register("folder")
def import_folder(src: Path, dest: Path, options: ImportOptions, track: Track) -> Manifest:
    """Import the generic ``images/`` + ``labels/`` (+ ``cases.csv``, ``classes.txt``) layout at ``src``.

    Every problem of the folder (unsupported or unmatched files, unreadable images or label maps, label values
    outside the classes, shape mismatches, bad csv rows) is collected and reported in one :class:`DataError`.

    Options read: ``class_names``, ``seed``, ``overwrite``.
    """
    image_dir, label_dir = src / "images", src / "labels"
    if not image_dir.is_dir():
        raise DataError("no images/ folder (expected images/<case>.<ext> and labels/<case>_<rater>.<ext>)", src)
    problems = _Problems()
    images: dict[str, Path] = {}
    for p in sorted(image_dir.iterdir()):
        stem = _stem(p)
        if p.name.startswith("."):
            continue
        if stem is None:
            problems.add(p, f"unsupported file in images/ (expected one of {', '.join(_EXTS)})")
        elif stem in images:
            problems.add(p, f"two images for case {stem!r} ({images[stem].name}, {p.name})")
        else:
            images[stem] = p
    if not images:
        problems.add(image_dir, "no images")
        problems.raise_if_any(src)
    by_length = sorted(images, key=len, reverse=True)
    labels: dict[str, dict[str, Path]] = {c: {} for c in images}
    for p in sorted(label_dir.iterdir()) if label_dir.is_dir() else []:
        stem = _stem(p)
        if p.name.startswith("."):
            continue
        if stem is None:
            problems.add(p, f"unsupported file in labels/ (expected one of {', '.join(_EXTS)})")
            continue
        case = next((c for c in by_length if stem.startswith(c + "_") and len(stem) > len(c) + 1), None)
        if case is None:
            problems.add(p, "label file matches no image (expected labels/<case>_<rater>.<ext>)")
            continue
        rater = stem[len(case) + 1 :]
        if (why := id_problem(rater, "rater id")) is not None:
            problems.add(p, f"{why} (expected labels/<case>_<rater>.<ext>)")
            continue
        labels[case][rater] = p
    for case, path in images.items():
        if (why := id_problem(case)) is not None:
            problems.add(path, why)
    rater_ids = sorted({r for rs in labels.values() for r in rs})
    first_label = next((p for rs in labels.values() for p in rs.values()), None)
    try:
        nd = _label_dims(first_label) if first_label is not None else _image_dims(next(iter(images.values())))
    except DataError as exc:
        problems.add(first_label or src, f"cannot tell 2D from 3D: {exc.problem}")
        problems.raise_if_any(src)
        raise

    # first pass over the label maps: value range for class inference (arrays are not kept)
    all_label_files = [(c, r, p) for c, rs in labels.items() for r, p in rs.items()]
    max_value = 0  # largest value of the maps that are not 0/255 masks
    mask255: Path | None = None  # a 0/255 mask, if any
    multiclass: Path | None = None  # a map with values above 1 that is not a 0/255 mask, if any
    for _, _, path in track(all_label_files, "scanning label maps", len(all_label_files)):
        arr = _label_values(path, nd, problems)
        if arr is not None and arr.size:
            vals = np.unique(arr)
            if _is_mask255(vals):
                mask255 = mask255 or path
                continue
            max_value = max(max_value, int(vals.max()))
            if vals.max() > 1 and multiclass is None:
                multiclass = path
    explicit = bool(options.class_names) or (src / "classes.txt").is_file()
    if mask255 is not None and multiclass is not None and not explicit:
        problems.add(
            multiclass,
            f"multi-class label map (values up to {max_value}) among 0/255 binary masks such as {mask255.name}; "
            "give the class names (--classes or classes.txt) or save every map the same way",
        )
        problems.raise_if_any(src)
    class_names = _class_names(src, options, max_value, mask255 is not None or max_value <= 1)
    csv_path = src / "cases.csv"
    csv_splits: dict[str, str | None] = {}
    image_labels: dict[str, dict[str, int]] = {}
    label_cols: list[str] = []
    if csv_path.is_file():
        try:
            csv_splits, image_labels, label_cols = read_cases_csv(csv_path, set(images))
        except DataError as exc:
            problems.add(csv_path, exc.problem)
    writer = DatasetWriter(
        dest,
        name=src.name,
        spatial_dims=nd,
        class_names=class_names,
        rater_ids=rater_ids,
        image_label_names=label_cols,
        description=f"generic folder import of {src.name}",
        source=str(src),
        overwrite=options.overwrite,
    )
    for case, path in track(list(images.items()), f"importing {src.name}", len(images)):
        try:
            img = read_image(path, nd)
        except DataError as exc:
            problems.add(path, exc.problem)
            continue
        maps: dict[str, np.ndarray] = {}
        for rater, lab_path in labels[case].items():
            arr = _label_values(lab_path, nd, problems)
            if arr is None:
                continue
            if len(class_names) == 2 and arr.size and _is_mask255(np.unique(arr)):
                arr = (arr > 0).astype(np.uint8)  # 0/255 binary mask
            if arr.size and arr.max() >= len(class_names):
                bad = sorted(int(v) for v in np.unique(arr) if v >= len(class_names))[:8]
                problems.add(lab_path, f"label values {bad} outside the {len(class_names)} classes {class_names}")
            elif arr.shape != img.array.shape[1:]:
                problems.add(lab_path, f"label shape {arr.shape} differs from image shape {img.array.shape[1:]}")
            else:
                maps[rater] = arr
        if problems.items:
            continue  # keep scanning for problems, write nothing more
        try:
            writer.add_case(
                case,
                compact_image(img.array),
                maps,
                spacing_mm=img.spacing_mm,
                affine=img.affine,
                image_labels=image_labels.get(case),
            )
        except DataError as exc:
            problems.add(path, exc.problem)
    problems.raise_if_any(src)
    if any(v is not None for v in csv_splits.values()):
        writer.set_splits({c: csv_splits.get(c) for c in images})
    else:
        strat_col = label_cols[0] if label_cols else None
        strata = (
            {c: image_labels[c][strat_col] for c in images}
            if strat_col and all(strat_col in image_labels.get(c, {}) for c in images)
            else None
        )
        writer.set_splits(assign_splits(list(images), fractions=FRACTIONS, seed=options.seed, strata=strata))
    return writer.finish()
