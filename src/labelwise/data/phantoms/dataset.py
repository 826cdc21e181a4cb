"""Phantom datasets on disk: the usual dataset folder plus ``truth/`` and ``phantoms.json``, and their readers."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import numpy as np

from labelwise.data.dataset import Dataset, DatasetWriter
from labelwise.data.manifest import CaseRecord
from labelwise.data.phantoms.phantom import Structures, make_phantom
from labelwise.data.phantoms.styles import RaterStyle, describe_style, resolve_styles
from labelwise.data.splits import assign_splits
from labelwise.errors import ConfigError, DataError
from labelwise.io import read_json_object, read_label, write_image, write_json_atomic, write_label

__all__ = ["PHANTOM_INFO_NAME", "make_phantom_dataset", "read_phantom_info", "read_phantom_truth"]

logger = logging.getLogger(__name__)

PHANTOM_INFO_NAME = "phantoms.json"


def make_phantom_dataset(
    dest: str | Path,
    n_cases: int = 20,
    raters: int | Sequence[RaterStyle] = 3,
    *,
    spatial_dims: Literal[2, 3] = 2,
    shape: Sequence[int] | None = None,
    spacing_mm: Sequence[float] | None = None,
    structures: Structures = "organ",
    lesion_fraction: float = 0.6,
    unlabelled_fraction: float = 0.0,
    missing_rater_fraction: float = 0.0,
    split_fractions: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    name: str = "phantoms",
    overwrite: bool = False,
    image_suffix: str = ".nii.gz",
) -> Dataset:
    """Write a labelwise dataset of synthetic phantoms (with their truth) and return it opened.

    Layout: the usual dataset folder (``dataset.json``, ``images/``, ``labels/<case>_<rater>``) plus
    ``truth/<case><suffix>`` (the exact truth label map of every case, including unlabelled ones) and
    ``phantoms.json`` (generation settings, rater styles and every per-case :class:`RaterRecord`; see
    :func:`read_phantom_info`). Case ids are ``case000``, ``case001``, ...

    Splits come from :func:`labelwise.data.splits.assign_splits` stratified by the ``lesion`` image label.
    Unlabelled cases (no rater map: R = 0) are taken from the train split only, so validation and test stay
    labelled: ``round(unlabelled_fraction * n_cases)`` of them, at most the number of train cases.

    Args:
        dest: Target folder.
        n_cases: Number of cases (>= 1).
        raters: Number of simulated raters (>= 0; styles from :data:`DEFAULT_RATER_STYLES`) or explicit styles.
        spatial_dims: 2 or 3.
        shape: Spatial shape (default ``(64, 64)`` / ``(48, 48, 24)``).
        spacing_mm: Voxel size in mm (default 1 mm / ``(1, 1, 2)``).
        structures: ``"organ"`` (binary), ``"lesion"`` (binary) or ``"organ+lesion"`` (3 classes).
        lesion_fraction: Probability that a case has lesions (image label ``lesion`` = 1).
        unlabelled_fraction: Fraction of all cases written without any rater (from the train split).
        missing_rater_fraction: Probability that a given rater is missing for a labelled case (at least one
            rater is always kept).
        split_fractions: Train/val/test fractions.
        seed: Seed of everything.
        name: Dataset name.
        overwrite: Replace an existing dataset at ``dest``.
        image_suffix: File suffix for images and labels (``.nii.gz`` keeps spacing; ``.nii`` writes faster).

    Returns:
        The written :class:`~labelwise.data.Dataset`.

    Example:
        >>> ds = make_phantom_dataset(tmp / "ph", n_cases=6, raters=2)      # doctest: +SKIP
        >>> len(ds), ds.rater_ids                                           # doctest: +SKIP
        (6, ('precise', 'generous'))

    """
    t0 = time.perf_counter()
    if n_cases < 1:
        raise ConfigError(f"n_cases must be >= 1, got {n_cases}")
    for label, v in (
        ("lesion_fraction", lesion_fraction),
        ("unlabelled_fraction", unlabelled_fraction),
        ("missing_rater_fraction", missing_rater_fraction),
    ):
        if not 0.0 <= v <= 1.0:
            raise ConfigError(f"{label} must be in [0, 1], got {v}")
    styles = resolve_styles(raters)
    rng = np.random.default_rng(seed)
    nd = int(spatial_dims)
    shift_dirs = [rng.standard_normal(nd) for _ in styles]
    ids = [f"case{i:03d}" for i in range(n_cases)]
    phantoms = [
        make_phantom(
            np.random.default_rng([seed, i]),
            spatial_dims=spatial_dims,
            shape=shape,
            spacing_mm=spacing_mm,
            raters=styles,
            structures=structures,
            lesion_fraction=lesion_fraction,
            shift_directions=shift_dirs,
        )
        for i in range(n_cases)
    ]
    strata = {cid: p.image_labels["lesion"] for cid, p in zip(ids, phantoms, strict=True)}
    splits = assign_splits(ids, fractions=split_fractions, seed=seed, strata=strata)
    train = [cid for cid in ids if splits[cid] == "train"]
    n_unl = min(round(unlabelled_fraction * n_cases), len(train))
    unlabelled = set(rng.permutation(train)[:n_unl].tolist()) if styles else set(ids)
    first = phantoms[0]
    description = (
        f"labelwise synthetic phantoms ({nd}D, {structures}, seed {seed}); truth in truth/, rater styles and "
        f"per-case draws in {PHANTOM_INFO_NAME}. Raters: " + "; ".join(f"{s.name}: {describe_style(s)}" for s in styles)
    )
    root = Path(dest)
    if overwrite and (root / "dataset.json").exists():
        shutil.rmtree(root / "truth", ignore_errors=True)
    writer = DatasetWriter(
        root,
        name=name,
        spatial_dims=nd,
        class_names=first.class_names,
        rater_ids=[s.name for s in styles],
        image_label_names=("lesion",),
        description=description,
        source="labelwise.data.phantoms.make_phantom_dataset",
        overwrite=overwrite,
        image_suffix=image_suffix,
    )
    cases_info: dict[str, Any] = {}
    records: list[CaseRecord] = []
    suffix = image_suffix
    # Files are written by io's atomic writers in a few threads (each write ends in an fsync, which releases
    # the GIL), then registered; the manifest is still written last, by ``writer.finish()``.
    with ThreadPoolExecutor(max_workers=8) as pool:
        jobs = []
        for cid, p in zip(ids, phantoms, strict=True):
            keep = np.ones(len(styles), dtype=bool)
            if cid in unlabelled:
                keep[:] = False
            elif missing_rater_fraction > 0 and len(styles) > 0:
                keep = rng.random(len(styles)) >= missing_rater_fraction
                if not keep.any():
                    keep[int(rng.integers(len(styles)))] = True
            image_rel, truth_rel = f"images/{cid}{suffix}", f"truth/{cid}{suffix}"
            labels = {rid: f"labels/{cid}_{rid}{suffix}" for j, rid in enumerate(p.rater_ids) if keep[j]}
            jobs.append(pool.submit(write_image, root / image_rel, p.image, p.spacing_mm))
            jobs.append(pool.submit(write_label, root / truth_rel, p.truth, p.spacing_mm))
            for j, rid in enumerate(p.rater_ids):
                if keep[j]:
                    jobs.append(pool.submit(write_label, root / labels[rid], p.raters[j], p.spacing_mm))
            records.append(
                CaseRecord(id=cid, image=image_rel, labels=labels, image_labels=p.image_labels, split=splits[cid])
            )
            cases_info[cid] = {
                "truth": truth_rel,
                "num_lesions": p.num_lesions,
                "raters": [asdict(r) for r, k in zip(p.records, keep, strict=True) if k],
            }
        for job in jobs:
            job.result()
    writer.channels = 1
    for rec in records:
        writer.add_record(rec)
    info = {
        "format": "labelwise-phantoms",
        "version": 1,
        "settings": {
            "n_cases": n_cases,
            "spatial_dims": nd,
            "shape": list(first.truth.shape),
            "spacing_mm": list(first.spacing_mm),
            "structures": structures,
            "lesion_fraction": lesion_fraction,
            "unlabelled_fraction": unlabelled_fraction,
            "missing_rater_fraction": missing_rater_fraction,
            "split_fractions": list(split_fractions),
            "seed": seed,
        },
        "rater_styles": [asdict(s) for s in styles],
        "shift_directions": [list(d / np.linalg.norm(d)) for d in shift_dirs],
        "cases": cases_info,
    }
    write_json_atomic(root / PHANTOM_INFO_NAME, info)
    writer.finish()
    logger.info("wrote %d phantom cases to %s in %.2f s", n_cases, root, time.perf_counter() - t0)
    return Dataset(root)


def read_phantom_info(root: str | Path) -> dict[str, Any]:
    """Read a phantom dataset's ``phantoms.json`` (settings, rater styles, per-case rater records).

    Raises:
        DataError: the folder is not a phantom dataset or the file is unreadable.

    """
    path = Path(root) / PHANTOM_INFO_NAME
    return read_json_object(
        path, "phantom info file", missing=f"no {PHANTOM_INFO_NAME}: not a phantom dataset", fmt="labelwise-phantoms"
    )


def read_phantom_truth(root: str | Path, case_id: str) -> np.ndarray:
    """The exact truth label map ``(*spatial)`` int16 of one case of a phantom dataset.

    Raises:
        DataError: unknown case, or not a phantom dataset.

    """
    info = read_phantom_info(root)
    try:
        rel = info["cases"][case_id]["truth"]
    except KeyError:
        raise DataError(f"no case {case_id!r} in the phantom info", Path(root) / PHANTOM_INFO_NAME) from None
    return read_label(Path(root) / rel, int(info["settings"]["spatial_dims"])).array
