"""Weak supervision data: the lesion and healthy image domains built from image-level labels only.

Weakly supervised methods (:mod:`labelwise.methods.cam`, :mod:`labelwise.methods.cltn`) see two sets of images:

* **domain A (lesion)**: every training case whose image-level label ``label`` is not one of ``normal_values``;
* **domain B (healthy)**, from ``healthy_source``:

  - ``"normal"``: the training cases whose image-level label is one of ``normal_values`` (e.g. ``lesion: 0``);
  - ``"periphery"``: for datasets where every image holds a lesion (PH2: all 30 images are naevi or
    melanomas). From each domain-A image, 8 square border crops (4 corners + 4 edge midpoints, side
    ``periphery_fraction`` = 0.2 of the shorter image side) are taken and the ``periphery_keep`` = 2 *brightest*
    kept (in dermoscopy the dark parts of the border are the scope's vignette and the lesion itself is dark,
    healthy skin is the bright part). Each kept crop is mirror-tiled to the full image size, a "healthy-skin
    mosaic", and with ``periphery_mode: inpaint`` (the default) it replaces the **centre** of the lesion image
    (:func:`inpaint_centre`: the central ellipse, blended into the image's own corners): a healthy version of
    each image that keeps its field-of-view border (a dermoscope's dark vignette), so that the two domains differ
    in the centre and not in their layout. ``periphery_mode: mosaic`` uses the mosaic itself (no vignette: the
    domains then differ in layout too and both methods learnt to mark the vignette), ``zoom`` the resized crop
    (texture scale differs), ``periphery_keep: null`` the 4 corners whatever they hold. The rule assumes lesions
    are roughly centred, as in dermoscopy; a lesion reaching the corners, or skin crops that still hold lesion or
    vignette, are noise the method must absorb.
  - ``"auto"``: ``"normal"`` when at least one normal training case exists, otherwise ``"periphery"``.

**No pixel label is read**: images are read with :func:`labelwise.io.read_image` straight from the manifest's
``image`` paths, so training works on a dataset whose label files were deleted.

Handling of heterogeneous images (documented behaviour):

* different sizes: every image is resized (bilinear, anti-aliased, aspect ratio *not* kept) to
  ``image_size x image_size``; predictions are resized back to each image's own size;
* grayscale vs RGB: a 1-channel image in a dataset declared with 3 channels is replicated to 3 channels; any
  other channel mismatch is a :class:`DataError`;
* intensities: per image and channel, the 0.5th..99.5th percentile range maps linearly to [-1, 1] (clipped).

3D volumes are not used directly: :func:`write_slice_label_dataset` turns a labelled volume into a 2D dataset of
slices with slice-level ``lesion`` labels (structure present / absent); the slice masks are kept as a rater
label for evaluation only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from labelwise.data.dataset import Dataset, DatasetWriter
from labelwise.errors import ConfigError, DataError
from labelwise.io import read_image

__all__ = [
    "DomainConfig",
    "Domains",
    "WeakImage",
    "build_domains",
    "centre_weight",
    "inpaint_centre",
    "mirror_tile",
    "normalize_intensity",
    "periphery_crops",
    "prepare_image",
    "read_weak_image",
    "resize_chw",
    "write_example_dataset",
    "write_slice_label_dataset",
]

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


def normalize_intensity(image: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Map each channel's 0.5th..99.5th percentiles linearly to [-1, 1] (clipped).

    Args:
        image: ``(C, *spatial)`` array.
        reference: ``(C, ...)`` array whose percentiles define the map (default: ``image`` itself). The healthy
            versions of ``periphery_mode: inpaint`` use their lesion image, so that the pixels the two share get
            the same values.

    Returns:
        float32 array of the same shape in [-1, 1]; a constant channel becomes 0.

    """
    x = image.astype(np.float32, copy=True)
    ref = x if reference is None else reference
    for c in range(x.shape[0]):
        lo, hi = np.percentile(ref[c], [0.5, 99.5])
        x[c] = 0.0 if hi - lo < 1e-6 else np.clip((x[c] - lo) / (hi - lo) * 2.0 - 1.0, -1.0, 1.0)
    return x


def resize_chw(array: np.ndarray, size: Sequence[int], mode: Literal["bilinear", "nearest"] = "bilinear") -> np.ndarray:
    """Resize ``(C, H, W)`` to ``(C, *size)`` (bilinear with anti-aliasing when shrinking, or nearest).

    Args:
        array: ``(C, H, W)`` array.
        size: Target ``(H', W')``.
        mode: Interpolation.

    Returns:
        float32 ``(C, H', W')``.

    """
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    if tuple(t.shape[-2:]) == tuple(size):
        return t[0].numpy()
    if mode == "nearest":
        out = F.interpolate(t, size=tuple(size), mode="nearest")
    else:
        out = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return out[0].numpy()


def prepare_image(
    image: np.ndarray, channels: int, size: int, case_id: str = "?", reference: np.ndarray | None = None
) -> np.ndarray:
    """Channel-fix, normalise and resize one image to the working size.

    Args:
        image: ``(C, H, W)`` raw intensities.
        channels: Channels the dataset declares.
        size: Working size S.
        case_id: Named in errors.
        reference: ``(channels, ...)`` raw image whose intensity percentiles normalise ``image`` (default: its own).

    Returns:
        ``(channels, S, S)`` float32 in [-1, 1].

    Raises:
        DataError: a channel count other than ``channels`` that is not grayscale-to-RGB.

    """
    if image.ndim != 3:
        raise DataError(f"case {case_id}: expected a (C, H, W) image, got shape {image.shape}")
    image = _fix_channels(image, channels, case_id, "image")
    if reference is not None:
        reference = _fix_channels(reference, channels, case_id, "reference image")
    return resize_chw(normalize_intensity(image, reference), (size, size))


def _fix_channels(image: np.ndarray, channels: int, case_id: str, what: str) -> np.ndarray:
    """Replicate a grayscale image to RGB when the dataset is RGB; any other mismatch is a DataError."""
    if image.shape[0] == channels:
        return image
    if image.shape[0] == 1 and channels == 3:
        return np.repeat(image, 3, axis=0)
    raise DataError(f"case {case_id}: {what} has {image.shape[0]} channel(s), the dataset declares {channels}")


def periphery_crops(image: np.ndarray, fraction: float, keep: int | None = None) -> list[np.ndarray]:
    """Square crops along the image border: 4 corners, then 4 edge midpoints.

    Args:
        image: ``(C, H, W)`` array.
        fraction: Crop side as a fraction of ``min(H, W)``.
        keep: If given, keep only the ``keep`` crops with the highest mean intensity (in their original order);
            None: the four corners (top-left, top-right, bottom-left, bottom-right).

    Returns:
        ``(C, s, s)`` views with ``s = max(1, round(fraction * min(H, W)))``.

    """
    h, w = image.shape[-2:]
    s = max(1, round(fraction * min(h, w)))
    my, mx = (h - s) // 2, (w - s) // 2
    corners = [image[:, :s, :s], image[:, :s, w - s :], image[:, h - s :, :s], image[:, h - s :, w - s :]]
    if keep is None:
        return corners
    edges = [
        image[:, :s, mx : mx + s],
        image[:, h - s :, mx : mx + s],
        image[:, my : my + s, :s],
        image[:, my : my + s, w - s :],
    ]
    cands = corners + edges
    order = sorted(np.argsort([-float(c.mean()) for c in cands], kind="stable")[: max(1, keep)])
    return [cands[i] for i in order]


def mirror_tile(patch: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Tile ``patch`` ``(C, h, w)`` by repeated mirroring to ``(C, *shape)`` (no seams; the patch stays top-left).

    Args:
        patch: ``(C, h, w)`` array.
        shape: Target ``(H, W)``, each at least the patch size.

    Returns:
        ``(C, H, W)`` array of ``patch``'s dtype.

    """
    h, w = patch.shape[1:]
    reps_y, reps_x = -(-int(shape[0]) // h), -(-int(shape[1]) // w)
    rows = [patch if i % 2 == 0 else patch[:, ::-1] for i in range(reps_y)]
    col = np.concatenate(rows, axis=1)
    tiles = [col if j % 2 == 0 else col[:, :, ::-1] for j in range(reps_x)]
    return np.ascontiguousarray(np.concatenate(tiles, axis=2)[:, : int(shape[0]), : int(shape[1])])


def centre_weight(shape: Sequence[int]) -> np.ndarray:
    """Blend weight of :func:`inpaint_centre`: 1 inside the central ellipse, 0 in the corners.

    With ``rho`` the elliptical radius (0 at the centre, 1 on the ellipse inscribed in the image), the weight is
    1 for ``rho <= 0.8``, falls linearly to 0 at ``rho = 1`` and is 0 outside (the four corners).

    Args:
        shape: ``(H, W)``.

    Returns:
        ``(H, W)`` float32 in [0, 1].

    """
    h, w = int(shape[0]), int(shape[1])
    yy = (np.arange(h, dtype=np.float32) + 0.5) / h * 2 - 1
    xx = (np.arange(w, dtype=np.float32) + 0.5) / w * 2 - 1
    rho = np.sqrt(yy[:, None] ** 2 + xx[None, :] ** 2)
    return np.clip((1.0 - rho) / 0.2, 0.0, 1.0).astype(np.float32)


def inpaint_centre(image: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """A "healthy" version of ``image``: its centre replaced by ``skin``, its corners kept.

    ``image * (1 - w) + skin * w`` with ``w`` = :func:`centre_weight`: the central ellipse (where a centred lesion
    lies) shows healthy skin, the corners keep the image's own field-of-view border (a dermoscope's dark
    vignette), so the two domains differ in the centre only and not in their layout.

    Args:
        image: ``(C, H, W)`` lesion image.
        skin: ``(C, H, W)`` healthy-skin mosaic of the same image (:func:`mirror_tile` of a border crop).

    Returns:
        ``(C, H, W)`` float32.

    """
    wgt = centre_weight(image.shape[1:])[None]
    out: np.ndarray = image.astype(np.float32) * (1 - wgt) + skin.astype(np.float32) * wgt
    return out


def build_domains(dataset: Dataset, cfg: DomainConfig, split: str | None = "train") -> Domains:
    """Read the training images (never their masks) and split them into the lesion and healthy domains.

    Args:
        dataset: A 2D dataset with image-level labels.
        cfg: Domain settings.
        split: Split to read (None: all cases).

    Returns:
        The two domains at ``cfg.image_size``.

    Raises:
        DataError: no cases, no image-level label ``cfg.label`` on some case, no lesion image, or
            ``healthy_source: normal`` with no normal image ("only one class present").

    """
    ids = dataset.split_ids(split)
    if not ids:
        raise DataError(f"no cases in split {split!r}", dataset.root)
    channels = dataset.manifest.channels
    missing = [i for i in ids if cfg.label not in dataset.record(i).image_labels]
    if missing:
        known = sorted({k for i in ids for k in dataset.record(i).image_labels})
        raise DataError(
            f"{len(missing)} of {len(ids)} {split or 'all'} case(s) have no image-level label {cfg.label!r} "
            f"(e.g. {missing[0]}); labels present: {known or 'none'}",
            dataset.root,
        )
    lesion, healthy, lesion_ids, healthy_ids, raw_lesion = [], [], [], [], []
    for case_id in ids:
        w = read_weak_image(dataset, case_id, cfg.label)
        if w.label in cfg.normal_values:
            healthy.append(prepare_image(w.image, channels, cfg.image_size, case_id))
            healthy_ids.append(case_id)
        else:
            lesion.append(prepare_image(w.image, channels, cfg.image_size, case_id))
            lesion_ids.append(case_id)
            raw_lesion.append(w)
    if not lesion:
        raise DataError(
            f"only one class present: every {split or ''} case has {cfg.label} in {list(cfg.normal_values)} "
            "(healthy); weak supervision needs lesion images",
            dataset.root,
        )
    source = cfg.healthy_source
    if source == "auto":
        source = "normal" if healthy else "periphery"
    if source == "normal" and not healthy:
        raise DataError(
            f"only one class present: no {split or ''} case has {cfg.label} in {list(cfg.normal_values)}; "
            "use domain.healthy_source=periphery (healthy corner crops) or add normal images",
            dataset.root,
        )
    if source == "periphery":
        healthy, healthy_ids = [], []
        for w in raw_lesion:
            fixed = w.image if w.image.shape[0] == channels else np.repeat(w.image, 3, axis=0)
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
