"""``nifti-partial``: one NIfTI volume with label maps that cover only a range of its slices.

``src`` is a folder. Which files play which role is read from ``src/partial.json`` when present::

    {"image": "ct.nii.gz",                       # the full volume, (X, Y, Z)
     "raters": {"model": "seg.nii.gz", "fast": "seg_fast.nii.gz"},   # label maps, (X, Y, n) with n <= Z
     "slice_start": 82,                          # first slice (last axis) the label maps cover, or
     "reference": "ct_crop.nii.gz",              # ... the cropped image the labels belong to (offset found by
                                                 #     matching it against the volume), if slice_start is absent
     "class_map": "class_map.json", "class_map_key": "total"}   # {"1": "spleen", ...}; optional

Without ``partial.json`` the TotalSegmentator test layout (``../shared/data/totalsegmentator_example``) is
assumed: image ``example_ct.nii.gz`` (122x101x112), raters ``model`` = ``example_seg.nii.gz`` and ``fast`` =
``example_seg_fast.nii.gz`` (122x101x30 each), reference ``example_ct_sm.nii.gz`` (= slices 82..111), class map
``class_map.json`` key ``total`` (``options.task`` overrides the key).

Each rater map is placed into a full-size map (zeros elsewhere) and the case records ``labelled_slices`` (the
covered slice indices): labels outside them are *unknown*, not background. Class names come from the class map:
index 0 ``background``, index i the map's name for i (``class_<i>`` for ids the map lacks).
Split: the one volume is the single case, in split ``train``; slice-level protocols (k labelled slices for
training, the other labelled slices for testing) select slices from ``labelled_slices`` with their own seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from labelwise.data.dataset import DatasetWriter
from labelwise.data.importers.base import ImportOptions, Track, compact_image, importers, safe_case_id
from labelwise.data.manifest import Manifest
from labelwise.errors import DataError
from labelwise.io import read_image, read_label

__all__ = ["TOTALSEGMENTATOR_SPEC", "class_names_from_map", "find_slice_offset", "import_nifti_partial"]

TOTALSEGMENTATOR_SPEC: dict[str, Any] = {
    "image": "example_ct.nii.gz",
    "raters": {"model": "example_seg.nii.gz", "fast": "example_seg_fast.nii.gz"},
    "reference": "example_ct_sm.nii.gz",
    "class_map": "class_map.json",
    "class_map_key": "total",
}


def class_names_from_map(path: Path, key: str | None) -> tuple[str, ...]:
    """Read ``{"id": name}`` (optionally nested under ``key``) into contiguous class names (0 = background)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read class map ({exc})", path) from None
    if key is not None:
        if not isinstance(data, dict) or key not in data:
            keys = list(data) if isinstance(data, dict) else []
            raise DataError(f"class map has no key {key!r} (keys: {keys})", path)
        data = data[key]
    try:
        mapping = {int(k): str(v) for k, v in data.items()}
    except (AttributeError, ValueError) as exc:
        raise DataError(f"class map must be {{id: name}} with integer ids ({exc})", path) from None
    if not mapping or min(mapping) < 1:
        raise DataError("class map ids must start at 1 (0 is background)", path)
    return ("background", *(mapping.get(i, f"class_{i}") for i in range(1, max(mapping) + 1)))


def find_slice_offset(volume: np.ndarray, crop: np.ndarray, source: Path) -> int:
    """Index along the last axis where ``crop`` ``(X, Y, n)`` sits inside ``volume`` ``(X, Y, Z)``.

    The best match (smallest mean absolute difference) must be exact up to 1e-3 of the intensity range.
    """
    if volume.shape[:-1] != crop.shape[:-1] or crop.shape[-1] > volume.shape[-1]:
        raise DataError(f"reference shape {crop.shape} does not fit inside the volume {volume.shape}", source)
    n = crop.shape[-1]
    errors = [
        float(np.abs(volume[..., z : z + n].astype(np.float64) - crop).mean()) for z in range(volume.shape[-1] - n + 1)
    ]
    best = int(np.argmin(errors))
    scale = float(np.ptp(volume)) or 1.0
    if errors[best] > 1e-3 * scale:
        raise DataError("reference image does not match any slice range of the volume", source)
    return best


@importers.register("nifti-partial")
def import_nifti_partial(src: Path, dest: Path, options: ImportOptions, track: Track) -> Manifest:
    """Import one partially labelled NIfTI volume (see the module docstring for the layout).

    Options read: ``task`` (class-map key), ``class_names`` (overrides the class map), ``overwrite``.
    """
    spec_path = src / "partial.json"
    if spec_path.is_file():
        try:
            spec = json.loads(spec_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"not valid JSON ({exc})", spec_path) from None
        if not isinstance(spec, dict) or "image" not in spec or not isinstance(spec.get("raters"), dict):
            raise DataError('expected {"image": file, "raters": {id: file}, ...}', spec_path)
    else:
        spec = dict(TOTALSEGMENTATOR_SPEC)
    image_path = src / str(spec["image"])
    img = read_image(image_path, 3, channels=1)
    depth = img.array.shape[-1]
    offset: int | None = spec.get("slice_start")
    if offset is None and spec.get("reference"):
        ref_path = src / str(spec["reference"])
        ref = read_image(ref_path, 3, channels=1)
        offset = find_slice_offset(img.array[0], ref.array[0], ref_path)
    if options.class_names:
        class_names = tuple(options.class_names)
    elif spec.get("class_map"):
        class_names = class_names_from_map(src / str(spec["class_map"]), options.task or spec.get("class_map_key"))
    else:
        raise DataError("no class names: add a class_map to partial.json or pass class names", src)
    rater_ids = tuple(str(r) for r in spec["raters"])
    maps: dict[str, np.ndarray] = {}
    covered: tuple[int, ...] | None = None
    for rid in track(rater_ids, "importing label maps", len(rater_ids)):
        path = src / str(spec["raters"][rid])
        lab = read_label(path, 3)
        n = lab.array.shape[-1]
        start = offset if offset is not None else (0 if n == depth else None)
        if start is None:
            raise DataError(f"covers {n} of {depth} slices; give slice_start or reference in partial.json", path)
        if lab.array.shape[:-1] != img.array.shape[1:-1] or start < 0 or start + n > depth:
            raise DataError(
                f"label map {lab.array.shape} at slice {start} does not fit the image {img.array.shape[1:]}", path
            )
        if lab.array.size and (lab.array.min() < 0 or lab.array.max() >= len(class_names)):
            raise DataError(
                f"label values {lab.array.min()}..{lab.array.max()} outside the {len(class_names)} classes", path
            )
        full = np.zeros(img.array.shape[1:], dtype=lab.array.dtype)
        full[..., start : start + n] = lab.array
        maps[rid] = full
        rng = tuple(range(start, start + n))
        if covered is not None and covered != rng:
            raise DataError(
                f"covers slices {rng[0]}..{rng[-1]}, another rater covers {covered[0]}..{covered[-1]}", path
            )
        covered = rng
    writer = DatasetWriter(
        dest,
        name=safe_case_id(src.name),
        spatial_dims=3,
        class_names=class_names,
        rater_ids=rater_ids,
        description=f"{image_path.name} with label maps on slices {covered[0]}..{covered[-1]}" if covered else "",
        source=str(src),
        overwrite=options.overwrite,
    )
    case_id = safe_case_id(image_path.name.split(".")[0])
    writer.add_case(
        case_id,
        compact_image(img.array),
        maps,
        spacing_mm=img.spacing_mm,
        affine=img.affine,
        split="train",
        labelled_slices=covered,
    )
    return writer.finish()
