"""Weakly labelled datasets: slices of labelled volumes with presence labels, and a tiny example dataset."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from labelwise.data.dataset import Dataset, DatasetWriter
from labelwise.errors import DataError

__all__ = ["write_example_dataset", "write_slice_label_dataset"]

logger = logging.getLogger(__name__)


def write_slice_label_dataset(
    source: Dataset,
    dest: str | Path,
    structure: Sequence[int],
    axis: int = 2,
    rater: str | None = None,
    block: int = 8,
    window: tuple[float, float] | None = (-200.0, 300.0),
    overwrite: bool = False,
) -> Path:
    """Turn labelled 3D volumes into a 2D dataset with slice-level presence labels.

    Each slice along ``axis`` becomes one case with image label ``lesion`` = 1 if any voxel of ``structure`` is in
    the slice, else 0. The slice's binary structure mask is stored as rater ``"mask"`` for **evaluation only**
    (weak methods never read it). Splits: consecutive slices are grouped in blocks of ``block``; block ``b`` goes
    to test if ``b % 4 == 1``, to val if ``b % 4 == 3``, otherwise to train (neighbouring slices stay together).

    Args:
        source: 3D dataset with at least one rater label map per case.
        dest: New dataset folder.
        structure: Label values forming the structure (e.g. ``[5]`` for the liver in TotalSegmentator).
        axis: Spatial axis to slice along (0, 1 or 2).
        rater: Rater whose map defines presence (default: the first rater of each case).
        block: Slices per split block.
        window: Intensity window applied before writing (CT HU), or None to keep raw intensities.
        overwrite: Replace an existing dataset at ``dest``.

    Returns:
        ``dest``.

    Raises:
        DataError: a 2D source, a case without labels, or no slice with / without the structure.

    """
    if source.spatial_dims != 3:
        raise DataError("write_slice_label_dataset needs a 3D dataset", source.root)
    writer = DatasetWriter(
        dest,
        f"{source.name}-slices",
        2,
        ("background", "structure"),
        rater_ids=("mask",),
        image_label_names=("lesion",),
        description=f"slices along axis {axis} of {source.name}; lesion = structure {list(structure)} present",
        source=str(source.root),
        overwrite=overwrite,
    )
    counts = [0, 0]
    for case in source.cases():
        if case.num_raters == 0:
            raise DataError(f"case {case.id} has no label map to derive slice labels from", source.root)
        lab = case.raters[case.rater_ids.index(rater) if rater else 0]
        mask = np.isin(lab, np.asarray(structure))
        img = case.image.astype(np.float32)
        if window is not None:
            img = np.clip(img, window[0], window[1])
        spacing = tuple(s for i, s in enumerate(case.spacing_mm) if i != axis)
        for z in range(case.spatial_shape[axis]):
            present = int(np.take(mask, z, axis=axis).any())
            counts[present] += 1
            b = z // block
            split = "test" if b % 4 == 1 else "val" if b % 4 == 3 else "train"
            writer.add_case(
                f"{case.id}_s{z:03d}",
                np.take(img, z, axis=axis + 1),
                {"mask": np.take(mask, z, axis=axis).astype(np.int16)},
                spacing_mm=spacing,
                image_labels={"lesion": present},
                split=split,
            )
    if min(counts) == 0:
        raise DataError(f"structure {list(structure)} is in {counts[1]} of {sum(counts)} slices: need both kinds")
    writer.finish()
    logger.info("wrote %s: %d slices with, %d without the structure", dest, counts[1], counts[0])
    return Path(dest)


def write_example_dataset(
    dest: str | Path, n_lesion: int = 4, n_normal: int = 3, size: int = 32, seed: int = 0
) -> Dataset:
    """Write a tiny weakly labelled RGB dataset (smoke tests, the method contract test).

    Skin-coloured noise images; lesion images hold a dark disc (radius 18-28 % of the side) near the centre.
    Image label ``lesion`` is 1 or 0; the disc mask is stored as rater ``gt`` (for evaluation only). Splits: one
    lesion and one normal image are ``test``, the rest ``train``.

    Args:
        dest: New dataset folder (replaced if it holds a dataset).
        n_lesion: Lesion images (>= 2).
        n_normal: Normal images (>= 2).
        size: Image side in pixels.
        seed: Random seed.

    Returns:
        The written dataset.

    """
    rng = np.random.default_rng(seed)
    w = DatasetWriter(dest, "weak-example", 2, ("background", "lesion"), ("gt",), ("lesion",), overwrite=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n_lesion + n_normal):
        lesion = i < n_lesion
        img = np.array([200.0, 150.0, 130.0]).reshape(3, 1, 1) + rng.normal(0, 8, (3, size, size))
        mask = np.zeros((size, size), np.int16)
        if lesion:
            cy, cx = size / 2 + rng.uniform(-size / 8, size / 8, 2)
            r = rng.uniform(0.18, 0.28) * size
            mask = (((yy - cy) ** 2 + (xx - cx) ** 2) <= r**2).astype(np.int16)
            img = np.where(mask[None] > 0, img * 0.35, img)
        test = i in (n_lesion - 1, n_lesion + n_normal - 1)
        w.add_case(
            f"case{i:02d}",
            np.clip(img, 0, 255).astype(np.float32),
            {"gt": mask},
            image_labels={"lesion": int(lesion)},
            split="test" if test else "train",
        )
    w.finish()
    return Dataset(dest)
