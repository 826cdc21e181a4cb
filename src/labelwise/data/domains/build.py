"""The two training domains: settings (:class:`DomainConfig`), reading images without their masks, building them.

See :mod:`labelwise.data.domains` for the rules.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from labelwise.data.dataset import Dataset
from labelwise.data.domains.healthy import inpaint_centre, mirror_tile, periphery_crops
from labelwise.data.domains.images import fix_channels, prepare_image
from labelwise.errors import ConfigError, DataError
from labelwise.io import read_image

__all__ = ["DomainConfig", "Domains", "WeakImage", "build_domains", "check_domains", "read_weak_image"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DomainConfig:
    """Where the two image domains come from.

    Attributes:
        label: Name of the image-level label (e.g. ``lesion``, ``diagnosis``).
        normal_values: Values of ``label`` that mean "healthy"; every other value means "lesion". Empty: every
            labelled image holds a lesion (PH2's ``diagnosis``).
        healthy_source: ``auto``, ``normal`` or ``periphery`` (see the module docstring).
        image_size: Working size in pixels (square); images are resized to it.
        periphery_fraction: Side of the corner crops as a fraction of the shorter image side (``periphery``).
        periphery_mode: ``inpaint`` (the crop's mirror-tiled mosaic replaces the centre of the image, whose
            corners are kept), ``mosaic`` (the mosaic alone) or ``zoom`` (the crop resized).
        periphery_keep: Keep the ``periphery_keep`` brightest of 8 border crops (4 corners + 4 edge midpoints);
            None: the 4 corners.

    """

    label: str = "lesion"
    normal_values: tuple[int, ...] = (0,)
    healthy_source: Literal["auto", "normal", "periphery"] = "auto"
    image_size: int = 128
    periphery_fraction: float = 0.2
    periphery_mode: Literal["mosaic", "zoom", "inpaint"] = "inpaint"
    periphery_keep: int | None = 2

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ConfigError(f"domain.image_size must be >= 16, got {self.image_size}")
        if not 0.05 <= self.periphery_fraction <= 0.5:
            raise ConfigError(f"domain.periphery_fraction must be in [0.05, 0.5], got {self.periphery_fraction}")


@dataclass(frozen=True)
class WeakImage:
    """One image with its image-level label and nothing else.

    Attributes:
        id: Case id.
        image: ``(C, H, W)`` float32 raw intensities as stored.
        label: The image-level label value, or None when the case has none.

    """

    id: str
    image: np.ndarray = field(repr=False)
    label: int | None


@dataclass(frozen=True)
class Domains:
    """The two training domains at the working size.

    Attributes:
        lesion: ``(N, C, S, S)`` float32 in [-1, 1], domain A.
        healthy: ``(M, C, S, S)`` float32 in [-1, 1], domain B.
        lesion_ids: Case ids of ``lesion``.
        healthy_ids: Ids of ``healthy`` (``<case>`` or ``<case>:border<k>`` for periphery crops).
        source: ``normal`` or ``periphery``: what domain B is.
        periphery_mode: How periphery crops became domain-B images (``inpaint``/``mosaic``/``zoom``); None
            for ``normal``.

    """

    lesion: np.ndarray = field(repr=False)
    healthy: np.ndarray = field(repr=False)
    lesion_ids: tuple[str, ...]
    healthy_ids: tuple[str, ...]
    source: str
    periphery_mode: str | None = None

    def describe(self) -> str:
        """One line saying exactly what the method sees."""
        if self.source == "normal":
            what = "normal images"
        elif self.periphery_mode == "inpaint":
            what = "lesion images with their centre replaced by a mosaic of one of their border crops"
        else:
            what = "healthy-skin mosaics made from border crops of lesion images"
        return f"domain A: {len(self.lesion_ids)} lesion images; domain B: {len(self.healthy_ids)} {what}"


def read_weak_image(dataset: Dataset, case_id: str, label: str) -> WeakImage:
    """Read a case's image and image-level label; never touches its label files.

    Args:
        dataset: A 2D dataset.
        case_id: Case id.
        label: Name of the image-level label.

    Raises:
        DataError: a 3D dataset, or an unreadable image.

    """
    if dataset.spatial_dims != 2:
        raise DataError(
            "weak supervision works on 2D images; turn volumes into slices with write_slice_label_dataset",
            dataset.root,
        )
    rec = dataset.record(case_id)
    img = read_image(dataset.resolve(rec.image), 2)
    value = rec.image_labels.get(label)
    return WeakImage(rec.id, img.array.astype(np.float32, copy=False), None if value is None else int(value))


def check_domains(dataset: Dataset, cfg: DomainConfig, split: str | None = "train") -> str:
    """Check, from the manifest alone (no image is read), that :func:`build_domains` can build both domains.

    Args:
        dataset: A 2D dataset with image-level labels.
        cfg: Domain settings.
        split: Split to check (None: all cases).

    Returns:
        What domain B will be: ``normal`` or ``periphery`` (``healthy_source: auto`` resolved).

    Raises:
        DataError: no cases, no image-level label ``cfg.label`` on some case, a 3D dataset, no lesion image, or
            ``healthy_source: normal`` with no normal image ("only one class present").

    """
    ids = dataset.split_ids(split)
    if not ids:
        raise DataError(f"no cases in split {split!r}", dataset.root)
    missing = [i for i in ids if cfg.label not in dataset.record(i).image_labels]
    if missing:
        known = sorted({k for i in ids for k in dataset.record(i).image_labels})
        raise DataError(
            f"{len(missing)} of {len(ids)} {split or 'all'} case(s) have no image-level label {cfg.label!r} "
            f"(e.g. {missing[0]}); labels present: {known or 'none'}",
            dataset.root,
        )
    if dataset.spatial_dims != 2:
        raise DataError(
            "weak supervision works on 2D images; turn volumes into slices with write_slice_label_dataset",
            dataset.root,
        )
    normal = sum(int(dataset.record(i).image_labels[cfg.label]) in cfg.normal_values for i in ids)
    if normal == len(ids):
        raise DataError(
            f"only one class present: every {split or ''} case has {cfg.label} in {list(cfg.normal_values)} "
            "(healthy); weak supervision needs lesion images",
            dataset.root,
        )
    source: str = cfg.healthy_source
    if source == "auto":
        source = "normal" if normal else "periphery"
    if source == "normal" and not normal:
        raise DataError(
            f"only one class present: no {split or ''} case has {cfg.label} in {list(cfg.normal_values)}; "
            "use domain.healthy_source=periphery (healthy corner crops) or add normal images",
            dataset.root,
        )
    return source


def build_domains(dataset: Dataset, cfg: DomainConfig, split: str | None = "train") -> Domains:
    """Read the training images (never their masks) and split them into the lesion and healthy domains.

    Args:
        dataset: A 2D dataset with image-level labels.
        cfg: Domain settings.
        split: Split to read (None: all cases).

    Returns:
        The two domains at ``cfg.image_size``.

    Raises:
        DataError: what :func:`check_domains` raises (checked before any image is read), or an unreadable image.

    """
    source = check_domains(dataset, cfg, split)
    channels = dataset.manifest.channels
    lesion, healthy, lesion_ids, healthy_ids, raw_lesion = [], [], [], [], []
    for case_id in dataset.split_ids(split):
        w = read_weak_image(dataset, case_id, cfg.label)
        if w.label in cfg.normal_values:
            healthy.append(prepare_image(w.image, channels, cfg.image_size, case_id))
            healthy_ids.append(case_id)
        else:
            lesion.append(prepare_image(w.image, channels, cfg.image_size, case_id))
            lesion_ids.append(case_id)
            raw_lesion.append(w)
    if source == "periphery":
        healthy, healthy_ids = [], []
        for w in raw_lesion:
            fixed = fix_channels(w.image, channels, w.id, "image")
            for k, crop in enumerate(periphery_crops(fixed, cfg.periphery_fraction, cfg.periphery_keep)):
                reference = None
                if cfg.periphery_mode == "mosaic":
                    crop = mirror_tile(crop, fixed.shape[1:])
                elif cfg.periphery_mode == "inpaint":
                    crop, reference = inpaint_centre(fixed, mirror_tile(crop, fixed.shape[1:])), fixed
                healthy.append(prepare_image(crop, channels, cfg.image_size, w.id, reference))
                healthy_ids.append(f"{w.id}:border{k}")
    out = Domains(
        lesion=np.stack(lesion).astype(np.float32),
        healthy=np.stack(healthy).astype(np.float32),
        lesion_ids=tuple(lesion_ids),
        healthy_ids=tuple(healthy_ids),
        source=source,
        periphery_mode=cfg.periphery_mode if source == "periphery" else None,
    )
    logger.info("%s", out.describe())
    return out
