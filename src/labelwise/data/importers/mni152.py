"""``mni152``: the MNI ICBM152 2009a T1 template with its grey/white-matter probability maps (nilearn files).

Layout (``../shared/data/mni152_nilearn``; the files nilearn ships)::

    SRC/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz   # T1, uint8
    SRC/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz   # P(grey matter) x 255
    SRC/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz   # P(white matter) x 255

One 3D case ``mni152`` (197x233x189, 1 mm), classes ``("background", "gray_matter", "white_matter")``, one rater
``p50``: the label is the argmax over ``{background, gm, wm}`` (``P(bg) = 1 - P(gm) - P(wm)``) kept only where
that probability is >= 0.5, background elsewhere; with the 8-bit maps, ``P >= 0.5`` means a stored value
>= 128. The soft maps are kept next to the dataset as ``soft/mni152_gm.nii.gz`` and ``soft/mni152_wm.nii.gz``
(float32 probabilities in [0, 1], same affine) for soft-label and calibration work; the manifest's
``description`` names them. Split: the single case is ``train``; slice-level protocols choose their slices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from labelwise.data.dataset import DatasetWriter
from labelwise.data.importers.base import ImportOptions, Track, compact_image, importers
from labelwise.data.manifest import Manifest
from labelwise.errors import DataError
from labelwise.io import read_image, write_image

__all__ = ["CLASS_NAMES", "import_mni152", "label_from_probabilities"]

CLASS_NAMES = ("background", "gray_matter", "white_matter")
_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


def label_from_probabilities(p_gm: np.ndarray, p_wm: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Hard label from tissue probabilities: argmax over (bg, gm, wm), kept where its probability >= threshold.

    Args:
        p_gm: ``(*spatial)`` float grey-matter probability in [0, 1].
        p_wm: ``(*spatial)`` float white-matter probability in [0, 1], same shape.
        threshold: Minimum winning probability; below it the voxel is background.

    Returns:
        ``(*spatial)`` uint8 in {0, 1, 2}. Ties go to the lower index (bg before gm before wm).

    Example:
        >>> label_from_probabilities(np.array([0.5, 0.3, 0.45, 0.1]), np.array([0.5, 0.6, 0.45, 0.1])).tolist()
        [1, 2, 0, 0]

    """
    probs = np.stack([np.clip(1.0 - p_gm - p_wm, 0.0, 1.0), p_gm, p_wm])
    label = np.argmax(probs, axis=0)
    keep = np.take_along_axis(probs, label[None], axis=0)[0] >= threshold
    return np.where(keep, label, 0).astype(np.uint8)


@importers.register("mni152")
def import_mni152(src: Path, dest: Path, options: ImportOptions, track: Track) -> Manifest:
    """Import the MNI152 template and its GM/WM maps from ``src`` (options read: ``overwrite``)."""
    paths = {k: src / v for k, v in _FILES.items()}
    loaded = {k: read_image(p, 3, channels=1) for k, p in track(list(paths.items()), "reading MNI152", 3)}
    t1 = loaded["t1"]
    for k in ("gm", "wm"):
        if loaded[k].array.shape != t1.array.shape:
            raise DataError(f"shape {loaded[k].array.shape[1:]} differs from the T1 {t1.array.shape[1:]}", paths[k])
    scale = {k: 255.0 if loaded[k].array.max() > 1.0 else 1.0 for k in ("gm", "wm")}
    p_gm = loaded["gm"].array[0] / scale["gm"]
    p_wm = loaded["wm"].array[0] / scale["wm"]
    writer = DatasetWriter(
        dest,
        name="mni152",
        spatial_dims=3,
        class_names=CLASS_NAMES,
        rater_ids=("p50",),
        description=(
            "MNI ICBM152 2009a T1; label p50 = argmax(bg, gm, wm) where P >= 0.5; soft maps in "
            "soft/mni152_gm.nii.gz and soft/mni152_wm.nii.gz (float32 probabilities)"
        ),
        source=str(src),
        overwrite=options.overwrite,
    )
    for k, p in (("gm", p_gm), ("wm", p_wm)):
        write_image(writer.dest / "soft" / f"mni152_{k}.nii.gz", p[None].astype(np.float32), t1.spacing_mm, t1.affine)
    writer.add_case(
        "mni152",
        compact_image(t1.array),
        {"p50": label_from_probabilities(p_gm, p_wm)},
        spacing_mm=t1.spacing_mm,
        affine=t1.affine,
        split="train",
    )
    return writer.finish()
