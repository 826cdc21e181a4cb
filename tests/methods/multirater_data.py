"""A tiny multi-rater dataset built in code: discs whose raters disagree in radius, some raters missing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from labelwise.data import Dataset, DatasetWriter


def multirater_discs(
    dest: Path, raters: int = 4, size: int = 16, n_train: int = 4, missing: bool = True, unrated: bool = True
) -> Dataset:
    """Discs on noise; rater j draws radius ``r + j - (R - 1) / 2``.

    With ``missing``, training case 1 lacks rater 0 and the val case lacks the last rater; with ``unrated``, one
    extra training case has no rater at all (multi-rater methods skip it). Splits: ``n_train`` (+1) train, 1 val,
    1 test (``case_test``).
    """
    rng = np.random.default_rng(0)
    ids = [f"r{j}" for j in range(raters)]
    w = DatasetWriter(dest, "mr-discs", 2, ("background", "disc"), ids)
    grid = np.indices((size, size)).astype(float)
    names = [(f"case{i}", "train") for i in range(n_train)] + [("case_val", "val"), ("case_test", "test")]
    if unrated:
        names.append(("case_unrated", "train"))
    for i, (name, split) in enumerate(names):
        centre = rng.uniform(size * 0.4, size * 0.6, 2)
        radius = rng.uniform(size * 0.2, size * 0.3)
        dist = np.sqrt(((grid - centre[:, None, None]) ** 2).sum(0))
        image = ((dist < radius) * 2 + rng.normal(0, 0.3, (size, size))).astype(np.float32)[None]
        maps = {rid: (dist < radius + (j - (raters - 1) / 2)).astype(np.int16) for j, rid in enumerate(ids)}
        if missing and i == 1:
            maps.pop(ids[0])
        if missing and name == "case_val":
            maps.pop(ids[-1])
        if name == "case_unrated":
            maps = {}
        w.add_case(name, image, maps, spacing_mm=(1.0, 1.0), split=split)
    w.finish()
    return Dataset(dest)
