"""``qubiq``: the QUBIQ challenge NIfTI folders (one dataset per task).

Layout (qubiq.grand-challenge.org; ``src`` is one dataset folder such as ``training_data_v3/brain-growth``)::

    SRC/case01/image.nii.gz
    SRC/case01/task01_seg01.nii.gz ... task01_seg07.nii.gz   # rater j of task i
    SRC/case02/...

Each task (``task01``, ``task02``, ...) becomes its own dataset: pass ``task`` when the folder has more than one.
Slices are 2D (trailing length-1 axes are dropped); 3D volumes are kept 3D; an image with one more axis than its
segmentations has channels on that axis (e.g. the 4 MRI sequences of brain-tumor). Segmentations are binary
(``{0,1}``, ``{0,255}`` or floats thresholded at 0.5). Rater ``rater{j}`` is ``seg0{j}``; every case must have
the same raters (a missing file is an error naming it).
Split: seeded, case-level, 65/15/20 % (39 brain-growth cases -> 25 / 6 / 8).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from labelwise.data.dataset import DatasetWriter
from labelwise.data.importers.base import ImportOptions, Track, binary_mask, compact_image, importers
from labelwise.data.manifest import Manifest
from labelwise.data.splits import assign_splits
from labelwise.errors import ConfigError, DataError
from labelwise.io import read_image, read_label

__all__ = ["FRACTIONS", "import_qubiq"]

FRACTIONS = (0.65, 0.15, 0.20)
_SEG = re.compile(r"^(task\d+)_seg(\d+)\.nii(\.gz)?$")


def _spatial_dims(path: Path) -> int:
    import nibabel as nib

    try:
        header: Any = nib.load(str(path))
        shape = list(header.shape)
    except Exception as exc:  # nibabel raises many types for corrupt headers
        raise DataError(f"cannot read NIfTI header ({type(exc).__name__}: {exc})", path) from None
    while len(shape) > 2 and shape[-1] == 1:
        shape.pop()
    if len(shape) not in (2, 3):
        raise DataError(f"segmentation has shape {tuple(shape)}; expected a 2D slice or 3D volume", path)
    return len(shape)


@importers.register("qubiq")
def import_qubiq(src: Path, dest: Path, options: ImportOptions, track: Track) -> Manifest:
    """Import one QUBIQ dataset folder (``src/case*/image.nii.gz`` + ``task0*_seg0*.nii.gz``).

    Options read: ``task`` (required when several tasks exist), ``class_names`` (default
    ``("background", "foreground")``), ``seed``, ``overwrite``.
    """
    case_dirs = sorted(p for p in src.iterdir() if p.is_dir() and p.name.lower().startswith("case"))
    if not case_dirs:
        raise DataError("no case* folders (expected SRC/case01/image.nii.gz + task01_seg01.nii.gz ...)", src)
    segs: dict[str, dict[str, dict[int, Path]]] = {}
    for d in case_dirs:
        for f in d.iterdir():
            m = _SEG.match(f.name)
            if m:
                segs.setdefault(m.group(1), {}).setdefault(d.name, {})[int(m.group(2))] = f
    if not segs:
        raise DataError("no task0*_seg0*.nii(.gz) files in any case folder", src)
    tasks = sorted(segs)
    task = options.task or (tasks[0] if len(tasks) == 1 else None)
    if task is None:
        raise ConfigError(f"{src} holds tasks {tasks}; choose one with --task")
    if task not in segs:
        raise ConfigError(f"task {task!r} not found in {src}; available: {tasks}")
    by_case = segs[task]
    raters = sorted({j for s in by_case.values() for j in s})
    rater_ids = tuple(f"rater{j}" for j in raters)
    first = next(iter(by_case.values()))
    nd = _spatial_dims(next(iter(first.values())))
    writer = DatasetWriter(
        dest,
        name=f"qubiq-{src.name}-{task}",
        spatial_dims=nd,
        class_names=options.class_names or ("background", "foreground"),
        rater_ids=rater_ids,
        description=f"QUBIQ {src.name} {task}; rater j = seg0j",
        source=str(src),
        overwrite=options.overwrite,
    )
    if len(writer.class_names) != 2:
        raise ConfigError(f"QUBIQ segmentations are binary; got class names {writer.class_names}")
    ids = []
    for d in track(case_dirs, f"importing QUBIQ {src.name} {task}", len(case_dirs)):
        image_path = next((d / n for n in ("image.nii.gz", "image.nii") if (d / n).is_file()), d / "image.nii.gz")
        img = read_image(image_path, nd)
        maps: dict[str, np.ndarray] = {}
        for j, rid in zip(raters, rater_ids, strict=True):
            path = by_case.get(d.name, {}).get(j)
            if path is None:
                raise DataError(
                    f"missing rater file (other cases have raters {raters})", d / f"{task}_seg{j:02d}.nii.gz"
                )
            lab = read_label(path, nd)
            if lab.array.shape != img.array.shape[1:]:
                raise DataError(f"shape {lab.array.shape} differs from image shape {img.array.shape[1:]}", path)
            maps[rid] = binary_mask(lab.array, path)
        writer.add_case(d.name, compact_image(img.array), maps, spacing_mm=img.spacing_mm, affine=img.affine)
        ids.append(d.name)
    writer.set_splits(assign_splits(ids, fractions=FRACTIONS, seed=options.seed))
    return writer.finish()
