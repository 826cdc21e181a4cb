"""Shared writer for the pickle layouts (Medical Matting, Probabilistic U-Net LIDC): a dict of 2D entries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labelwise.data.dataset import DatasetWriter
from labelwise.data.importers.base import ImportOptions, Track, binary_mask, compact_image, safe_case_id
from labelwise.data.manifest import Manifest
from labelwise.data.splits import assign_splits
from labelwise.errors import DataError

__all__ = ["write_pickled_entries"]


def _entry_arrays(key: str, value: Any, source: str) -> tuple[np.ndarray, list[np.ndarray], str]:
    where = f"{source}[{key!r}]"
    if not isinstance(value, Mapping) or "image" not in value or "masks" not in value:
        raise DataError("entry is not a dict with 'image' and 'masks'", where)
    image = np.asarray(value["image"])
    masks = value["masks"]
    if isinstance(masks, np.ndarray):
        masks = list(masks)
    if not isinstance(masks, Sequence) or not all(isinstance(m, np.ndarray) for m in masks):
        raise DataError("'masks' is not a list of arrays", where)
    if image.ndim != 2 or image.size == 0:
        raise DataError(f"image has shape {image.shape}; expected a 2D slice (H, W)", where)
    if not np.issubdtype(image.dtype, np.number) or not np.isfinite(image).all():
        raise DataError("image is not numeric or holds NaN/inf", where)
    out = []
    for r, m in enumerate(masks):
        if m.shape != image.shape:
            raise DataError(f"mask {r} has shape {m.shape}, image has {image.shape}", where)
        out.append(binary_mask(m, f"{where}['masks'][{r}]"))
    group = str(value.get("series_uid", key))
    return image, out, group


def write_pickled_entries(
    data: Any,
    dest: Path,
    options: ImportOptions,
    track: Track,
    *,
    name: str,
    source: str,
    fractions: tuple[float, float, float],
    default_classes: tuple[str, str],
    description: str,
) -> Manifest:
    """Write a ``{key: {"image": (H, W), "masks": [(H, W), ...], "series_uid": str}}`` dict as a 2D dataset.

    Rater ``rater{i+1}`` is mask ``i``. Cases sharing a ``series_uid`` (one scan/patient) share a split; the split is
    seeded by ``options.seed`` with ``fractions`` over series. Masks are converted with
    :func:`~labelwise.data.importers.base.binary_mask`.
    """
    if not isinstance(data, Mapping) or not data:
        raise DataError("pickle does not hold a non-empty dict of cases", source)
    keys = sorted(data, key=str)
    ids = [safe_case_id(str(k)) for k in keys]
    if len(set(ids)) != len(ids):
        raise DataError("case keys collide after making them valid ids", source)
    max_raters = max(len(v["masks"]) if isinstance(v, Mapping) and "masks" in v else 0 for v in data.values())
    if max_raters == 0:
        raise DataError("no entry has any mask", source)
    rater_ids = tuple(f"rater{i + 1}" for i in range(max_raters))
    class_names = options.class_names or default_classes
    if len(class_names) != 2:
        raise DataError(f"these masks are binary; got {len(class_names)} class names {class_names}", source)
    writer = DatasetWriter(
        dest,
        name=name,
        spatial_dims=2,
        class_names=class_names,
        rater_ids=rater_ids,
        description=description,
        source=source,
        overwrite=options.overwrite,
    )
    groups: dict[str, str] = {}
    for key, case_id in track(list(zip(keys, ids, strict=True)), f"importing {name}", len(keys)):
        image, masks, group = _entry_arrays(str(key), data[key], source)
        groups[case_id] = group
        writer.add_case(case_id, compact_image(image)[None], raters=dict(zip(rater_ids, masks, strict=False)))
    writer.set_splits(assign_splits(ids, fractions=fractions, seed=options.seed, groups=groups))
    return writer.finish()
