"""Tiny synthetic datasets built in code for engine/method tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from labelwise.data import Dataset, DatasetWriter


def disc_dataset(
    dest: Path,
    n_train: int = 4,
    n_val: int = 2,
    n_test: int = 2,
    size: int = 24,
    raters: int = 2,
    spatial_dims: int = 2,
    classes: tuple[str, ...] = ("background", "disc"),
    channels: int = 1,
    seed: int = 0,
) -> Dataset:
    """Bright discs (balls in 3D) on noise; raters disagree by one pixel of radius."""
    rng = np.random.default_rng(seed)
    w = DatasetWriter(dest, "discs", spatial_dims, classes, [f"r{i}" for i in range(raters)])
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    shape = (size,) * spatial_dims
    grid = np.indices(shape).astype(float)
    for i, split in enumerate(splits):
        centre = rng.uniform(size * 0.35, size * 0.65, spatial_dims)
        radius = rng.uniform(size * 0.15, size * 0.25)
        dist = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)))
        img = (dist < radius).astype(np.float32) * 2 + rng.normal(0, 0.3, shape).astype(np.float32)
        image = np.stack([img + c for c in range(channels)])
        maps = {
            f"r{j}": (dist < radius + (j - (raters - 1) / 2)).astype(np.int16) * (len(classes) - 1)
            for j in range(raters)
        }
        w.add_case(f"case{i:02d}", image, maps, spacing_mm=(1.0,) * spatial_dims, split=split)
    w.finish()
    return Dataset(dest)
