"""Reading and writing images and label maps with spacing and affine (NIfTI, rasters, NPY/NPZ, DICOM)."""

from __future__ import annotations

from labelwise.io.atomic import atomic_path, write_bytes_atomic, write_json_atomic, write_text_atomic
from labelwise.io.image import (
    RASTER_SUFFIXES,
    ImageData,
    file_format,
    read_image,
    read_label,
    spacing_affine,
    write_image,
    write_label,
)
from labelwise.io.predictions import (
    PREDICTIONS_NAME,
    Prediction,
    PredictionIndex,
    read_prediction,
    write_prediction,
)
from labelwise.io.safe_pickle import load_pickle, loads_pickle

__all__ = [
    "PREDICTIONS_NAME",
    "RASTER_SUFFIXES",
    "ImageData",
    "Prediction",
    "PredictionIndex",
    "atomic_path",
    "file_format",
    "load_pickle",
    "loads_pickle",
    "read_image",
    "read_label",
    "read_prediction",
    "spacing_affine",
    "write_bytes_atomic",
    "write_image",
    "write_json_atomic",
    "write_label",
    "write_prediction",
    "write_text_atomic",
]
