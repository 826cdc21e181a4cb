"""The importer registry, its options and helpers shared by the per-layout modules.

An importer is a function ``(src, dest, options, track) -> Manifest`` registered under a format name with
``@importers.register("name")``. It reads a public layout at ``src`` and writes a labelwise dataset folder at
``dest`` through :class:`~labelwise.data.DatasetWriter` (the manifest is written last).
:func:`import_dataset` is the entry point. It refuses a ``dest`` that is, contains or lies inside the source
(:func:`labelwise.io.check_output_not_input`), and lets the importer write into a hidden sibling of ``dest``
(:class:`labelwise.io.StagedDir`) that replaces ``dest`` only once the import is complete: a failure never leaves
a ``dataset.json`` (nor a stray folder) behind, and ``overwrite`` never deletes the previous dataset first.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from labelwise.data.manifest import MANIFEST_NAME, Manifest
from labelwise.errors import DataError
from labelwise.io import StagedDir, check_output_not_input
from labelwise.io.paths import ID_MAX_LENGTH
from labelwise.registry import Registry

__all__ = [
    "ImportOptions",
    "Importer",
    "Track",
    "binary_mask",
    "compact_image",
    "import_dataset",
    "importers",
    "safe_case_id",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

Track = Callable[[Iterable[Any], str, "int | None"], Iterable[Any]]
"""``track(items, description, total)`` yields ``items`` (the CLI passes a rich progress bar)."""


@dataclass(frozen=True)
class ImportOptions:
    """Options shared by all importers; each importer documents which ones it reads.

    Attributes:
        task: Sub-task to import (``qubiq``: e.g. ``"task01"``; ``nifti-partial``: the class-map key).
        class_names: Class names overriding the importer's default (index 0 is background).
        seed: Seed of the case-level split.
        overwrite: Replace an existing dataset at ``dest``.

    """

    task: str | None = None
    class_names: tuple[str, ...] | None = None
    seed: int = 0
    overwrite: bool = False


Importer = Callable[[Path, Path, ImportOptions, Track], Manifest]
importers: Registry[Importer] = Registry("importer")


def _no_track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    yield from items


def import_dataset(
    fmt: str,
    src: str | Path,
    dest: str | Path,
    options: ImportOptions | None = None,
    track: Track | None = None,
) -> Manifest:
    """Import the dataset at ``src`` (layout ``fmt``) into a labelwise dataset folder ``dest``.

    Args:
        fmt: A registered importer name (see ``importers.available()``).
        src: Source file or folder.
        dest: Target dataset folder.
        options: Importer options.
        track: Progress wrapper ``track(items, description, total)``; none by default.

    Returns:
        The written manifest.

    Raises:
        ConfigError: unknown format.
        DataError: unreadable or inconsistent source data, ``dest`` overlapping ``src``, ``dest`` holding a
            dataset without ``overwrite`` or other files. ``dest`` is unchanged when this is raised.

    """
    importer = importers.get(fmt)
    src_path, dest_path = Path(src), Path(dest)
    if not src_path.exists():
        raise DataError("source not found", src_path)
    check_output_not_input(dest_path, [src_path], "--out")
    opts = options or ImportOptions()
    with StagedDir(dest_path, overwrite=opts.overwrite, marker=MANIFEST_NAME, kind="dataset") as stage:
        manifest = importer(src_path, stage.path, replace(opts, overwrite=False), track or _no_track)
    logger.info("imported %d cases from %s (%s) into %s", len(manifest.cases), src_path, fmt, dest_path)
    return manifest


_ID_BAD = str.maketrans({c: "_" for c in " /\\:;,()[]{}'\"*?<>|#&=+!@$%^~`"})


def safe_case_id(raw: str) -> str:
    """Map a source name to a valid case id (letters, digits, ``._-``; other characters become ``_``).

    Example:
        >>> safe_case_id("LIDC-IDRI-0001/slice 12.png")
        'LIDC-IDRI-0001_slice_12.png'

    """
    out = raw.translate(_ID_BAD).strip("._-") or "case"
    out = "".join(ch if (ch.isascii() and (ch.isalnum() or ch in "._-")) else "_" for ch in out)
    return re.sub(r"\.{2,}", ".", out)[:ID_MAX_LENGTH]


def binary_mask(array: np.ndarray, source: str | Path) -> np.ndarray:
    """Turn a stored binary mask into ``{0, 1}`` uint8.

    Accepted encodings: bool; integers ``{0, 1}``; 8-bit ``{0, 255}`` (e.g. PNG/BMP masks); floats in ``[0, 1]``
    (thresholded at 0.5, for masks saved after interpolation). Anything else (e.g. values 0, 1, 2) is refused.

    Args:
        array: Mask of any shape.
        source: File (or pickle entry) used in error messages.

    Returns:
        uint8 array of the same shape with values 0/1 (an all-zero mask is returned as is).

    Raises:
        DataError: more than two levels, or floats outside ``[0, 1]`` / NaN.

    """
    a = np.asarray(array)
    if a.dtype == bool:
        return a.astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all() or a.min(initial=0) < 0 or a.max(initial=0) > 1:
            if np.isin(a, (0.0, 255.0)).all():
                return (a > 0).astype(np.uint8)
            raise DataError("binary mask has values outside [0, 1] (or NaN)", source)
        return (a >= 0.5).astype(np.uint8)
    values = np.unique(a)
    if np.isin(values, (0, 1)).all() or np.isin(values, (0, 255)).all():
        return (a > 0).astype(np.uint8)
    raise DataError(f"binary mask has values {values[:8].tolist()}; expected {{0, 1}} or {{0, 255}}", source)


def compact_image(array: np.ndarray) -> np.ndarray:
    """Return ``array`` as uint8/int16 when it holds integers in that range (smaller files), else float32."""
    a = np.asarray(array)
    if np.issubdtype(a.dtype, np.integer) or (np.isfinite(a).all() and np.all(np.mod(a, 1) == 0)):
        lo, hi = (a.min(), a.max()) if a.size else (0, 0)
        if lo >= 0 and hi <= 255:
            return a.astype(np.uint8)
        if lo >= np.iinfo(np.int16).min and hi <= np.iinfo(np.int16).max:
            return a.astype(np.int16)
    return a.astype(np.float32)
