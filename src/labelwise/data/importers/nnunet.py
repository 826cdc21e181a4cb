"""``nnunet``: an nnU-Net v2 raw dataset (``DatasetNNN_Name/``).

Layout::

    SRC/dataset.json                    # channel_names, labels, numTraining, file_ending (nnU-Net v2)
    SRC/imagesTr/<case>_0000<ending>    # one file per channel: _0000, _0001, ... (RGB PNG: one file, 3 channels)
    SRC/labelsTr/<case><ending>         # label map of every training case
    SRC/labelsTr_<rater>/<case><ending> # optional: more raters (any subset of the cases)
    SRC/imagesTs/<case>_0000<ending>    # optional: test cases
    SRC/labelsTs[_<rater>]/<case><ending>  # optional (not part of nnU-Net; labelwise's export writes it)

* ``dataset.json`` must agree with the files: every case has exactly the channels of ``channel_names``, every
  file ends with ``file_ending``, ``numTraining`` equals the number of cases in ``imagesTr``, and every label
  value is listed in ``labels``. The first disagreement is a :class:`DataError` naming the file.
* Classes: ``labels`` (``{name: value}``, values consecutive from 0, background 0) gives the class names in
  value order. **Region-based labels** (a value that is a list, e.g. ``"whole tumor": [1, 2, 3]``) describe
  overlapping training targets, not the classes stored in the files: they are refused unless class names for
  the stored values are given (``--classes``), which are then used as is.
* Raters: folder ``labelsTr`` is rater ``label`` (or the rater named in the ``labelwise`` block, below),
  ``labelsTr_<x>`` is rater ``<x>``; ``labelsTs`` / ``labelsTs_<x>`` hold the same raters for test cases. An
  explicit mapping (``LabelFolderOptions.raters``, the CLI's ``--raters labelsTr=expert,labelsTr_fast=fast``)
  imports exactly the folders it names.
* 2D: PNG/BMP/TIFF endings, 2-axis NIfTI, or NIfTI whose third axis has length 1 (nnU-Net's pseudo-3D
  convention for 2D data). The out-of-plane column of a pseudo-3D affine (nnU-Net writes 999 mm there) is
  scaled back to unit length.
* Split: ``imagesTr`` cases are ``train``, ``imagesTs`` cases ``test``.
* Geometry: spacing and affine are kept as read (channels and labels must share the first channel's).

An optional ``"labelwise"`` block in ``dataset.json`` (written by ``labelwise data export nnunet``; nnU-Net
ignores unknown keys) restores what the nnU-Net layout cannot hold: ``name``, ``spatial_dims``, ``rater`` (the
rater id of ``labelsTr``), ``splits`` (``{case: split}``, e.g. ``val``), ``image_labels`` and
``labelled_slices`` per case, and ``image_label_names``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labelwise.data.dataset import DatasetWriter
from labelwise.data.importers.base import ImportOptions, Track, compact_image, importers, safe_case_id
from labelwise.data.manifest import SPLITS, Manifest
from labelwise.errors import DataError
from labelwise.io import ImageData, check_id, file_format, read_image, read_json_object, read_label

__all__ = [
    "DEFAULT_RATER",
    "LabelFolderOptions",
    "NnunetSpec",
    "class_names_from_labels",
    "import_nnunet",
    "labelled_case",
    "parse_rater_mapping",
    "rater_folders",
    "read_nnunet_json",
]

logger = logging.getLogger(__name__)

DEFAULT_RATER = "label"
"""Rater id of ``labelsTr`` when neither a mapping nor a ``labelwise`` block names it."""

_RASTER_ENDINGS = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")
_GEOMETRY_ATOL_MM = 1e-3


@dataclass(frozen=True)
class LabelFolderOptions(ImportOptions):
    """Import options of the ``nnunet`` and ``msd`` importers: :class:`ImportOptions` plus label folders.

    Attributes:
        raters: ``((folder, rater_id), ...)``: import exactly these label folders (e.g.
            ``(("labelsTr", "expert"), ("labelsTr_fast", "fast"))``); empty: every ``labelsTr*`` folder, named
            by the default rule (module docstring).

    """

    raters: tuple[tuple[str, str], ...] = ()


def parse_rater_mapping(text: str) -> tuple[tuple[str, str], ...]:
    """Parse ``"labelsTr=expert,labelsTr_fast=fast"`` into ``(("labelsTr", "expert"), ("labelsTr_fast", "fast"))``.

    Raises:
        DataError: an item without ``=``, an empty side, or a folder or rater named twice.

    Example:
        >>> parse_rater_mapping("labelsTr=expert, labelsTr_fast=fast")
        (('labelsTr', 'expert'), ('labelsTr_fast', 'fast'))

    """
    pairs: list[tuple[str, str]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        folder, sep, rater = (s.strip() for s in item.partition("="))
        if not sep or not folder or not rater:
            raise DataError(f"rater mapping item {item!r} is not FOLDER=RATER")
        pairs.append((folder, rater))
    folders = [f for f, _ in pairs]
    raters = [r for _, r in pairs]
    if len(set(folders)) != len(folders) or len(set(raters)) != len(raters):
        raise DataError(f"rater mapping {text!r} names a folder or a rater twice")
    return tuple(pairs)


def rater_folders(
    src: Path, base: str, mapping: Sequence[tuple[str, str]], default_rater: str = DEFAULT_RATER
) -> dict[str, str]:
    """Return ``{label folder name: rater id}`` for the label folders of ``src``.

    Args:
        src: Dataset folder.
        base: The main label folder (``labelsTr``); ``<base>_<x>`` folders are rater ``<x>``.
        mapping: Explicit ``(folder, rater)`` pairs; when given, exactly these folders (each must exist).
        default_rater: Rater id of ``base`` itself without a mapping.

    Raises:
        DataError: a mapped folder that does not exist, or a rater id that is not a valid id.

    """
    if mapping:
        out = {}
        for folder, rater in mapping:
            if not (src / folder).is_dir():
                raise DataError(f"label folder {folder!r} of the rater mapping does not exist", src / folder)
            out[folder] = rater
    else:
        out = {}
        for p in sorted(src.iterdir()):
            if p.is_dir() and (p.name == base or p.name.startswith(base + "_")):
                out[p.name] = default_rater if p.name == base else p.name[len(base) + 1 :]
        unmapped = [n for n in out if n != base]
        if unmapped:
            logger.info("label folders %s import as raters %s", unmapped, [out[n] for n in unmapped])
    for folder, rater in out.items():
        check_id(rater, "rater id", src / folder)
    return out


def class_names_from_labels(labels: Any, source: Path, override: Sequence[str] | None) -> tuple[str, ...]:
    """Class names from an nnU-Net ``labels`` block ``{name: value}``, ordered by value.

    Args:
        labels: The ``labels`` mapping.
        source: ``dataset.json``, for messages.
        override: Class names given by the user (``--classes``): used as is, and required for region-based
            labels.

    Raises:
        DataError: not a mapping; values not consecutive from 0; region-based labels without ``override``.

    """
    if not isinstance(labels, dict) or not labels:
        raise DataError('"labels" must be a non-empty {name: value} mapping', source)
    regions = {str(k): v for k, v in labels.items() if isinstance(v, list | tuple)}
    if regions and not override:
        raise DataError(
            f"region-based labels {sorted(regions)} are overlapping training regions, not stored classes; "
            "name the stored label values with --classes bg,name1,name2,... to import them",
            source,
        )
    if override:
        return tuple(override)
    if "ignore" in labels:
        logger.warning(
            "%s: label 'ignore' marks unannotated voxels for nnU-Net; labelwise imports it as an ordinary class",
            source,
        )
    try:
        by_value = {int(v): str(k) for k, v in labels.items()}
    except (TypeError, ValueError):
        raise DataError(f'"labels" values must be integers, got {labels}', source) from None
    if len(by_value) != len(labels) or sorted(by_value) != list(range(len(by_value))):
        raise DataError(f"label values must be consecutive integers 0..K-1 (nnU-Net's rule), got {labels}", source)
    return tuple(by_value[i] for i in range(len(by_value)))


@dataclass(frozen=True)
class NnunetSpec:
    """The parts of an nnU-Net ``dataset.json`` that the importer uses."""

    channel_names: tuple[str, ...]
    class_names: tuple[str, ...]
    num_training: int
    file_ending: str
    name: str
    description: str = ""
    labelwise: dict[str, Any] = field(default_factory=dict)


def _load_json(path: Path) -> dict[str, Any]:
    return read_json_object(path, "dataset.json", missing="no dataset.json here")


def read_nnunet_json(src: Path, class_names: Sequence[str] | None = None) -> NnunetSpec:
    """Read and check ``src/dataset.json`` (nnU-Net v2).

    Raises:
        DataError: missing keys, an MSD/nnU-Net v1 ``dataset.json`` (``modality``), bad values.

    """
    path = src / "dataset.json"
    data = _load_json(path)
    if "channel_names" not in data and "modality" in data:
        raise DataError("this is a Decathlon / nnU-Net v1 dataset.json (modality, training): import it as msd", path)
    missing = [k for k in ("channel_names", "labels", "numTraining", "file_ending") if k not in data]
    if missing:
        raise DataError(f"missing keys {missing} (nnU-Net v2 dataset.json)", path)
    channels = data["channel_names"]
    try:
        by_index = {int(k): str(v) for k, v in channels.items()}
    except (AttributeError, TypeError, ValueError):
        raise DataError(f'"channel_names" must be {{"0": name, ...}}, got {channels!r}', path) from None
    if sorted(by_index) != list(range(len(by_index))) or not by_index:
        raise DataError(f'"channel_names" indices must be 0..C-1, got {sorted(by_index)}', path)
    ending = data["file_ending"]
    if not isinstance(ending, str) or not ending.startswith("."):
        raise DataError(f'"file_ending" must be a string like ".nii.gz", got {ending!r}', path)
    try:
        num_training = int(data["numTraining"])
    except (TypeError, ValueError):
        raise DataError(f'"numTraining" must be an integer, got {data["numTraining"]!r}', path) from None
    extra = data.get("labelwise", {})
    if not isinstance(extra, dict):
        raise DataError('"labelwise" must be an object', path)
    return NnunetSpec(
        channel_names=tuple(by_index[i] for i in range(len(by_index))),
        class_names=class_names_from_labels(data["labels"], path, class_names),
        num_training=num_training,
        file_ending=ending,
        name=str(extra.get("name") or data.get("name") or src.name),
        description=str(data.get("description", "")),
        labelwise=extra,
    )


_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def _channel_files(folder: Path, ending: str) -> dict[str, dict[int, Path]]:
    """``{case: {channel: file}}`` of an ``imagesTr``/``imagesTs`` folder."""
    cases: dict[str, dict[int, Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if not p.name.endswith(ending):
            raise DataError(f"does not end with file_ending {ending!r} of dataset.json", p)
        m = _CHANNEL.match(p.name[: -len(ending)])
        if m is None:
            raise DataError(f"image name is not <case>_<XXXX>{ending} (4-digit channel id)", p)
        cases.setdefault(m["case"], {})[int(m["channel"])] = p
    return cases


def _same_geometry(a: ImageData, b: ImageData, shape_a: tuple[int, ...], shape_b: tuple[int, ...], path: Path) -> None:
    if shape_a != shape_b:
        raise DataError(f"shape {shape_b} differs from the case image's {shape_a}", path)
    if not np.allclose(a.affine, b.affine, atol=_GEOMETRY_ATOL_MM):
        raise DataError("affine differs from the case's first channel (not co-registered?)", path)


def _unit_out_of_plane(affine: np.ndarray) -> np.ndarray:
    """Scale the third column of a pseudo-3D 2D affine back to unit length (nnU-Net writes 999 mm there)."""
    out = np.array(affine, dtype=np.float64)
    norm = float(np.linalg.norm(out[:3, 2]))
    if norm > 0:
        out[:3, 2] /= norm
    return out


def _spatial_dims(first: Path, ending: str, declared: Any) -> int:
    if declared in (2, 3):
        return int(declared)
    if ending.lower() in _RASTER_ENDINGS:
        return 2
    if file_format(first) == "nifti":
        import nibabel as nib

        try:
            shape = tuple(nib.load(str(first)).shape)  # type: ignore[attr-defined]
        except Exception as exc:  # nibabel raises many types for corrupt headers
            raise DataError(f"cannot read NIfTI header ({type(exc).__name__}: {exc})", first) from None
        return 2 if len(shape) == 2 or (len(shape) >= 3 and shape[2] == 1) else 3
    return 3


def read_case_image(
    files: Mapping[int, Path], num_channels: int, spatial_dims: int, case: str, ending: str
) -> ImageData:
    """Read one case's channel files into a ``(C, *spatial)`` image with the first channel's geometry.

    Args:
        files: Channel index -> file (``<case>_<XXXX><ending>``).
        num_channels: Channels declared in ``dataset.json``.
        spatial_dims: 2 or 3.
        case: Case id, for messages.
        ending: The ``file_ending``, for naming a missing file.

    Raises:
        DataError: a missing channel file (named), channels that disagree in shape or affine, or a channel
            count other than ``num_channels``.

    """
    folder = next(iter(files.values())).parent
    arrays: list[np.ndarray] = []
    ref: ImageData | None = None
    for index in range(max(num_channels, max(files) + 1)):
        path = files.get(index)
        if path is None:
            if sum(a.shape[0] for a in arrays) == num_channels:
                break  # e.g. one RGB file holds all three channels
            raise DataError(
                f"missing channel file (dataset.json declares {num_channels} channels)",
                folder / f"{case}_{index:04d}{ending}",
            )
        img = read_image(path, spatial_dims)
        if spatial_dims == 2 and img.affine.shape == (4, 4):
            img = ImageData(img.array, img.spacing_mm, _unit_out_of_plane(img.affine))
        if ref is None:
            ref = img
        else:
            _same_geometry(ref, img, ref.array.shape[1:], img.array.shape[1:], path)
        arrays.append(img.array)
    assert ref is not None
    image = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
    if image.shape[0] != num_channels:
        raise DataError(f"has {image.shape[0]} channels; dataset.json declares {num_channels}", files[0])
    return ImageData(image, ref.spacing_mm, ref.affine)


def labelled_case(path: Path, image: ImageData, spatial_dims: int, class_names: Sequence[str]) -> np.ndarray:
    """Read a label map and check it against its case image and the class list.

    Raises:
        DataError: unreadable file, another shape or affine than the image, values not in ``class_names``.

    """
    lab = read_label(path, spatial_dims)
    affine = _unit_out_of_plane(lab.affine) if spatial_dims == 2 else lab.affine
    _same_geometry(image, ImageData(lab.array, lab.spacing_mm, affine), image.array.shape[1:], lab.array.shape, path)
    values = np.unique(lab.array)
    bad = [int(v) for v in values if v < 0 or v >= len(class_names)]
    if bad:
        raise DataError(
            f"label values {bad[:8]} are not in the dataset.json labels (0..{len(class_names) - 1}: "
            f"{', '.join(class_names[:6])}{', ...' if len(class_names) > 6 else ''})",
            path,
        )
    return lab.array


def _extra_maps(extra: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = extra.get(key, {})
    if not isinstance(value, dict):
        raise DataError(f'"labelwise.{key}" must be an object', path)
    return value


@importers.register("nnunet")
def import_nnunet(src: Path, dest: Path, options: ImportOptions, track: Track) -> Manifest:
    """Import an nnU-Net v2 raw dataset folder (see the module docstring for the layout and checks).

    Options read: ``class_names`` (required for region-based labels), ``overwrite``, and
    :attr:`LabelFolderOptions.raters`.
    """
    if not src.is_dir():
        raise DataError("expected an nnU-Net dataset folder (DatasetNNN_Name with dataset.json)", src)
    spec = read_nnunet_json(src, options.class_names)
    json_path = src / "dataset.json"
    if not (src / "imagesTr").is_dir():
        raise DataError("no imagesTr/ folder", src)
    train = _channel_files(src / "imagesTr", spec.file_ending)
    test = _channel_files(src / "imagesTs", spec.file_ending) if (src / "imagesTs").is_dir() else {}
    if len(train) != spec.num_training:
        raise DataError(f"numTraining is {spec.num_training} but imagesTr holds {len(train)} cases", json_path)
    if not train and not test:
        raise DataError("no images in imagesTr/ or imagesTs/", src)
    both = sorted(set(train) & set(test))
    if both:
        raise DataError(f"cases {both[:5]} are in both imagesTr and imagesTs", src)
    mapping = options.raters if isinstance(options, LabelFolderOptions) else ()
    default_rater = str(spec.labelwise.get("rater") or DEFAULT_RATER)
    folders = rater_folders(src, "labelsTr", mapping, default_rater)
    if train and not mapping and "labelsTr" not in folders:
        raise DataError("no labelsTr/ folder (nnU-Net needs a label map for every training case)", src)
    test_folders = {ts: r for f, r in folders.items() if (src / (ts := f.replace("labelsTr", "labelsTs", 1))).is_dir()}
    first = next(iter((train or test).values()))
    nd = _spatial_dims(first[min(first)], spec.file_ending, spec.labelwise.get("spatial_dims"))
    # label files per folder; every file must belong to a case of its images folder
    labels: dict[str, dict[str, Path]] = {c: {} for c in (*train, *test)}
    for group, folder_map in ((train, folders), (test, test_folders)):
        for folder, rater in folder_map.items():
            for p in sorted((src / folder).iterdir()):
                if p.name.startswith("."):
                    continue
                if not p.name.endswith(spec.file_ending):
                    raise DataError(f"does not end with file_ending {spec.file_ending!r} of dataset.json", p)
                case = p.name[: -len(spec.file_ending)]
                if case not in group:
                    images = "imagesTr" if group is train else "imagesTs"
                    raise DataError(f"label file has no image {case}_0000{spec.file_ending} in {images}/", p)
                labels[case][rater] = p
    if "labelsTr" in folders:
        unlabelled = [c for c in train if folders["labelsTr"] not in labels[c]]
        if unlabelled:
            raise DataError(
                f"{len(unlabelled)} training case(s) have no label file: {', '.join(unlabelled[:5])}", src / "labelsTr"
            )
    splits = _extra_maps(spec.labelwise, "splits", json_path)
    image_labels = _extra_maps(spec.labelwise, "image_labels", json_path)
    slices = _extra_maps(spec.labelwise, "labelled_slices", json_path)
    bad_splits = sorted({str(v) for v in splits.values() if v is not None and v not in SPLITS})
    if bad_splits:
        raise DataError(f'"labelwise.splits" has unknown splits {bad_splits}', json_path)
    writer = DatasetWriter(
        dest,
        name=spec.name,
        spatial_dims=nd,
        class_names=spec.class_names,
        rater_ids=tuple(folders.values()),
        image_label_names=tuple(spec.labelwise.get("image_label_names", ())),
        description=spec.description or f"nnU-Net dataset {src.name} (channels: {', '.join(spec.channel_names)})",
        source=str(src),
        overwrite=options.overwrite,
    )
    cases = [(c, files, "train") for c, files in train.items()] + [(c, files, "test") for c, files in test.items()]
    for case, files, default_split in track(cases, f"importing {src.name}", len(cases)):
        image = read_case_image(files, len(spec.channel_names), nd, case, spec.file_ending)
        maps = {r: labelled_case(p, image, nd, spec.class_names) for r, p in labels[case].items()}
        writer.add_case(
            safe_case_id(case),
            compact_image(image.array),
            maps,
            spacing_mm=image.spacing_mm,
            affine=image.affine,
            image_labels=image_labels.get(case),
            split=splits.get(case, default_split),
            labelled_slices=tuple(int(i) for i in slices[case]) if slices.get(case) is not None else None,
        )
    return writer.finish()
