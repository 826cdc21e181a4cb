"""``msd``: a Medical Segmentation Decathlon task folder (``TaskNN_Name/``).

Layout::

    SRC/dataset.json              # name, modality {"0": "FLAIR", ...}, labels {"0": "background", ...},
                                  # numTraining, training [{"image": "./imagesTr/x.nii.gz", "label": ...}],
                                  # test ["./imagesTs/y.nii.gz", ...]
    SRC/imagesTr/<case>.nii.gz    # 3D, or 4D (X, Y, Z, C) for multi-modal tasks (C = len(modality))
    SRC/labelsTr/<case>.nii.gz
    SRC/labelsTr_<rater>/<case>.nii.gz   # optional: more raters, as for ``nnunet``
    SRC/imagesTs/<case>.nii.gz

* Cases are the entries of ``training`` (split ``train``) and ``test`` (split ``test``); files not listed are
  ignored (the Decathlon archives hold macOS ``._*`` companions). Case id: the image file name without
  ``.nii.gz``.
* ``dataset.json`` must agree with the files: listed files exist, ``numTraining`` equals the number of
  ``training`` entries, images have ``len(modality)`` channels, label values are keys of ``labels``
  (``{"0": "background", "1": ...}``, consecutive from 0).
* Raters: the folder of the ``label`` entries is rater ``label``; ``labelsTr_<x>`` folders holding files of
  the same names are rater ``<x>``; an explicit mapping (``--raters labelsTr=expert``) imports exactly the named
  folders.
* Geometry: spacing and affine as read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labelwise.data.dataset import DatasetWriter
from labelwise.data.importers.base import ImportOptions, Track, compact_image, importers, safe_case_id
from labelwise.data.importers.nnunet import (
    DEFAULT_RATER,
    LabelFolderOptions,
    class_names_from_labels,
    labelled_case,
    rater_folders,
)
from labelwise.data.manifest import Manifest
from labelwise.errors import DataError
from labelwise.io import read_image, read_json_object

__all__ = ["import_msd"]

_ENDING = ".nii.gz"


def _inside(src: Path, rel: Any, json_path: Path) -> Path:
    if not isinstance(rel, str) or not rel:
        raise DataError(f"expected a file path, got {rel!r}", json_path)
    path = (src / rel).resolve()
    if src.resolve() not in path.parents:
        raise DataError(f"path {rel!r} points outside the task folder", json_path)
    return path


def _case_id(path: Path) -> str:
    name = path.name
    for ending in (".nii.gz", ".nii"):
        if name.endswith(ending):
            return name[: -len(ending)]
    return path.stem


@importers.register("msd")
def import_msd(src: Path, dest: Path, options: ImportOptions, track: Track) -> Manifest:
    """Import a Medical Segmentation Decathlon task folder (see the module docstring).

    Options read: ``class_names`` (override), ``overwrite``, and :attr:`LabelFolderOptions.raters`.
    """
    json_path = src / "dataset.json"
    data = read_json_object(
        json_path, "dataset.json", missing="no dataset.json here (expected a Decathlon TaskNN_Name folder)"
    )
    if "channel_names" in data and "training" not in data:
        raise DataError("this is an nnU-Net v2 dataset.json (channel_names): import it as nnunet", json_path)
    missing = [k for k in ("modality", "labels", "training") if k not in data]
    if missing:
        raise DataError(f"missing keys {missing} (Decathlon dataset.json)", json_path)
    modality = data["modality"]
    if not isinstance(modality, dict) or not modality:
        raise DataError(f'"modality" must be {{"0": name, ...}}, got {modality!r}', json_path)
    labels = data["labels"]
    if not isinstance(labels, dict):
        raise DataError(f'"labels" must be {{"0": "background", ...}}, got {labels!r}', json_path)
    # Decathlon labels are {value: name}; turn them into nnU-Net's {name: value} for the shared checks
    try:
        inverted: dict[str, Any] = {str(name): int(value) for value, name in labels.items()}
    except (TypeError, ValueError):
        raise DataError(f'"labels" keys must be integers, got {sorted(labels)}', json_path) from None
    class_names = class_names_from_labels(inverted, json_path, options.class_names)
    training, test = data["training"], data.get("test", [])
    if not isinstance(training, list) or not isinstance(test, list):
        raise DataError('"training" and "test" must be lists', json_path)
    if "numTraining" in data and int(data["numTraining"]) != len(training):
        raise DataError(f"numTraining is {data['numTraining']} but training lists {len(training)} cases", json_path)
    entries: list[tuple[Path, Path | None, str]] = []
    for item in training:
        if not isinstance(item, dict) or "image" not in item or "label" not in item:
            raise DataError(f'a training entry must be {{"image": ..., "label": ...}}, got {item!r}', json_path)
        entries.append((_inside(src, item["image"], json_path), _inside(src, item["label"], json_path), "train"))
    for item in test:
        image = item.get("image") if isinstance(item, dict) else item
        entries.append((_inside(src, image, json_path), None, "test"))
    if not entries:
        raise DataError("training and test list no cases", json_path)
    for image, label, _ in entries:
        for path in (image, label):
            if path is not None and not path.is_file():
                raise DataError("file listed in dataset.json does not exist", path)
    label_dirs = {label.parent.name for _, label, _ in entries if label is not None}
    if len(label_dirs) > 1:
        raise DataError(f"training labels come from several folders {sorted(label_dirs)}", json_path)
    base = next(iter(label_dirs), "labelsTr")
    mapping = options.raters if isinstance(options, LabelFolderOptions) else ()
    folders = rater_folders(src, base, mapping, DEFAULT_RATER)
    writer = DatasetWriter(
        dest,
        name=str(data.get("name") or src.name),
        spatial_dims=3,
        class_names=class_names,
        rater_ids=tuple(folders.values()),
        description=str(data.get("description", "")) or f"Decathlon task {src.name}",
        source=str(src),
        overwrite=options.overwrite,
    )
    channels = len(modality)
    for image_path, label_path, split in track(entries, f"importing {src.name}", len(entries)):
        image = read_image(image_path, 3)
        if image.array.shape[0] != channels:
            raise DataError(
                f"image has {image.array.shape[0]} channel(s); dataset.json lists {channels} modalities", image_path
            )
        maps = {}
        if label_path is not None:
            for folder, rater in folders.items():
                path = src / folder / label_path.name
                if path.is_file():
                    maps[rater] = labelled_case(path, image, 3, class_names)
                elif folder == base:
                    raise DataError("label file missing", path)
        writer.add_case(
            safe_case_id(_case_id(image_path)),
            compact_image(image.array),
            maps,
            spacing_mm=image.spacing_mm,
            affine=image.affine,
            split=split,
        )
    return writer.finish()
