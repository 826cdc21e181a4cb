"""Tiny weakly labelled 2D datasets built in code (shared by test_cam.py and test_cltn.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from labelwise.data import DatasetWriter


def disc_image(
    rng: np.random.Generator, h: int, w: int, lesion: bool, channels: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Skin-like textured background (0..255) with, if ``lesion``, a dark disc; returns (image, mask)."""
    yy, xx = np.mgrid[:h, :w]
    base = np.array([200.0, 150.0, 130.0][:channels]).reshape(-1, 1, 1)
    img = base + rng.normal(0, 8, (channels, h, w))
    mask = np.zeros((h, w), dtype=np.int16)
    if lesion:
        cy, cx = h / 2 + rng.uniform(-h / 8, h / 8), w / 2 + rng.uniform(-w / 8, w / 8)
        r = rng.uniform(0.18, 0.28) * min(h, w)
        mask = (((yy - cy) ** 2 + (xx - cx) ** 2) <= r**2).astype(np.int16)
        img = np.where(mask[None] > 0, img * 0.35, img)
    return np.clip(img, 0, 255).astype(np.float32), mask


def make_weak_dataset(
    dest: Path,
    n_lesion: int = 8,
    n_normal: int = 6,
    size: tuple[int, int] = (36, 44),
    label: str = "lesion",
    with_masks: bool = True,
    seed: int = 0,
) -> Path:
    """Write a 2D RGB dataset with image label ``label`` (1 lesion / 0 normal) and a ``gt`` mask rater.

    Splits: the last lesion case and the last normal case are ``test``; the others ``train``.
    """
    rng = np.random.default_rng(seed)
    w = DatasetWriter(dest, "weak", 2, ("background", "lesion"), rater_ids=("gt",), image_label_names=(label,))
    for i in range(n_lesion + n_normal):
        lesion = i < n_lesion
        img, mask = disc_image(rng, *size, lesion=lesion)
        last = i in (n_lesion - 1, n_lesion + n_normal - 1)
        w.add_case(
            f"c{i:02d}",
            img,
            {"gt": mask} if with_masks else None,
            image_labels={label: int(lesion)},
            split="test" if last else "train",
        )
    w.finish()
    return dest
