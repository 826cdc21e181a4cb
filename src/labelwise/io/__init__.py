"""Reading and writing images and label maps with spacing and affine (NIfTI, rasters, NPY/NPZ, DICOM)."""

from __future__ import annotations

from labelwise.io.atomic import (
    STALE_MARKER,
    StagedDir,
    atomic_path,
    new_file_mode,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from labelwise.io.image import (
    RASTER_SUFFIXES,
    ImageData,
    file_format,
    read_image,
    read_image_geometry,
    read_label,
    spacing_affine,
    write_image,
    write_label,
)
from labelwise.io.jsonfile import read_json_object
from labelwise.io.paths import ID_PATTERN, check_id, check_output_not_input, id_problem, safe_join
from labelwise.io.predictions import (
    PREDICTIONS_NAME,
    Prediction,
    PredictionIndex,
    read_prediction,
    write_prediction,
)
from labelwise.io.safe_pickle import load_pickle, loads_pickle

__all__ = [
    "ID_PATTERN",
    "PREDICTIONS_NAME",
    "RASTER_SUFFIXES",
    "STALE_MARKER",
    "ImageData",
    "Prediction",
    "PredictionIndex",
    "StagedDir",
    "atomic_path",
    "check_id",
    "check_output_not_input",
    "file_format",
    "id_problem",
    "load_pickle",
    "loads_pickle",
    "new_file_mode",
    "read_image",
    "read_image_geometry",
    "read_json_object",
    "read_label",
    "read_prediction",
    "safe_join",
    "spacing_affine",
    "write_bytes_atomic",
    "write_image",
    "write_json_atomic",
    "write_label",
    "write_prediction",
    "write_text_atomic",
]
