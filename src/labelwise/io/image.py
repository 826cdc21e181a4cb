"""Read and write images and label maps with their geometry.

Array layout: images are ``(C, *spatial)`` float32, label maps ``(*spatial)`` integer. Spatial axes are in the
file's voxel-index order (NIfTI: i, j, k as nibabel gives them; 2D raster formats: row, column). The 4x4
``affine`` maps voxel indices to world millimetres (NIfTI RAS+ convention); for 2D raster formats it is
``diag(spacing, 1)`` with spacing 1 mm unless the format says otherwise. Writing an array with the affine it was
read with gives a file that overlays the source exactly in a standard viewer.

Formats (picked by extension): NIfTI (``.nii``, ``.nii.gz``), PNG/BMP/JPEG/TIFF (Pillow), NPY/NPZ (numpy, never
pickled objects), DICOM series (a folder, or ``.dcm``; SimpleITK).
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from labelwise.errors import DataError
from labelwise.io.atomic import atomic_path

__all__ = [
    "RASTER_SUFFIXES",
    "ImageData",
    "file_format",
    "read_image",
    "read_image_geometry",
    "read_label",
    "spacing_affine",
    "write_image",
    "write_label",
]

logger = logging.getLogger(__name__)

RASTER_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")
Format = Literal["nifti", "raster", "npy", "npz", "dicom"]


@dataclass(frozen=True)
class ImageData:
    """An array with its geometry.

    Attributes:
        array: ``(C, *spatial)`` float32 for images, ``(*spatial)`` integer for label maps.
        spacing_mm: Voxel size per spatial axis in millimetres, length ``spatial_dims``.
        affine: ``(4, 4)`` float64 voxel-index -> world (mm) transform.

    """

    array: np.ndarray
    spacing_mm: tuple[float, ...]
    affine: np.ndarray = field(repr=False)


def file_format(path: str | Path) -> Format:
    """Return the format implied by ``path``'s extension (a folder is a DICOM series)."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith(RASTER_SUFFIXES):
        return "raster"
    if name.endswith(".npy"):
        return "npy"
    if name.endswith(".npz"):
        return "npz"
    if name.endswith(".dcm") or p.is_dir():
        return "dicom"
    raise DataError(
        "unsupported file type (expected .nii/.nii.gz, .png/.bmp/.jpg/.tif, .npy/.npz, .dcm or a DICOM folder)",
        path,
    )


def spacing_affine(spacing_mm: tuple[float, ...]) -> np.ndarray:
    """Return ``diag(spacing, 1)`` as a 4x4 affine (2D spacings get a unit third axis)."""
    diag = [*spacing_mm, *([1.0] * (3 - len(spacing_mm)))][:3]
    return np.diag([*diag, 1.0]).astype(np.float64)


def _spacing_from_affine(affine: np.ndarray, spatial_dims: int) -> tuple[float, ...]:
    return tuple(float(v) for v in np.linalg.norm(affine[:3, :spatial_dims], axis=0))


# --------------------------------------------------------------------------------------------- readers


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    import nibabel as nib

    try:
        img: Any = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise DataError(f"cannot read NIfTI file ({type(exc).__name__}: {exc})", path) from None
    zooms = tuple(float(z) for z in img.header.get_zooms())
    return data, np.asarray(img.affine, dtype=np.float64), zooms


def _read_raster(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            frames = []
            for index in range(getattr(im, "n_frames", 1)):
                im.seek(index)
                frame: Image.Image = im
                if frame.mode == "P":
                    frame = frame.convert("RGB")
                elif frame.mode in ("RGBA", "LA", "CMYK", "YCbCr"):
                    frame = frame.convert("RGB" if frame.mode != "LA" else "L")
                frames.append(np.array(frame))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read image ({exc})", path) from None
    # 2D: (H, W) or (H, W, 3); multi-page TIFF: a stack (D, H, W[, 3])
    return frames[0] if len(frames) == 1 else np.stack(frames)


def _read_numpy(path: Path, fmt: Format) -> tuple[np.ndarray, np.ndarray | None, tuple[float, ...] | None]:
    try:
        if fmt == "npy":
            return np.load(path, allow_pickle=False), None, None
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.keys())
            data_keys = [k for k in keys if k not in ("spacing_mm", "affine")]
            if len(data_keys) != 1:
                key = next((k for k in ("image", "label", "data", "arr_0") if k in keys), None)
                if key is None:
                    raise DataError(f"NPZ holds arrays {keys}; expected one array or a key 'image'/'label'", path)
            else:
                key = data_keys[0]
            affine = np.asarray(npz["affine"], dtype=np.float64) if "affine" in keys else None
            spacing = tuple(float(v) for v in npz["spacing_mm"]) if "spacing_mm" in keys else None
            return np.asarray(npz[key]), affine, spacing
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read numpy file ({exc}); object arrays are refused", path) from None


def _read_dicom(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    import SimpleITK

    sitk: Any = SimpleITK  # untyped bindings
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            series = reader.GetGDCMSeriesIDs(str(path))
            if len(series) > 1:
                raise DataError(f"folder holds {len(series)} DICOM series {list(series)}; give one per folder", path)
            files = reader.GetGDCMSeriesFileNames(str(path))
            if not files:
                raise DataError("no DICOM series in folder", path)
            reader.SetFileNames(files)
            img = reader.Execute()
        else:
            img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise DataError(f"cannot read DICOM ({str(exc).strip().splitlines()[-1]})", path) from None
    arr = sitk.GetArrayFromImage(img)  # (z, y, x) or (y, x)
    ndim = img.GetDimension()
    arr = np.transpose(arr, tuple(range(ndim))[::-1] + tuple(range(ndim, arr.ndim)))  # -> (x, y, z[, c])
    spacing = tuple(float(s) for s in img.GetSpacing())
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(ndim, ndim)
    affine = np.eye(4)
    affine[:ndim, :ndim] = direction * np.asarray(spacing)[None, :]
    affine[:ndim, 3] = img.GetOrigin()
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])  # DICOM/ITK world is LPS, NIfTI is RAS
    return arr, lps_to_ras @ affine, spacing


def _load(path: str | Path, spatial_dims: int | None) -> tuple[np.ndarray, np.ndarray, tuple[float, ...], Format]:
    """Return (raw array in file axis order with channels last, affine, spacing, format)."""
    p = Path(path)
    fmt = file_format(p)
    if fmt != "dicom" and not p.is_file():
        raise DataError("file not found", p)
    if fmt == "nifti":
        data, affine, zooms = _read_nifti(p)
        return data, affine, zooms, fmt
    if fmt == "raster":
        data = _read_raster(p)
        nd = 2 if spatial_dims is None else spatial_dims
        spacing = (1.0,) * nd
        return data, spacing_affine(spacing), spacing, fmt
    if fmt in ("npy", "npz"):
        data, affine_or_none, spacing_or_none = _read_numpy(p, fmt)
        nd = spatial_dims if spatial_dims is not None else min(data.ndim, 3)
        if spacing_or_none is None:
            spacing_or_none = _spacing_from_affine(affine_or_none, nd) if affine_or_none is not None else (1.0,) * nd
        affine = affine_or_none if affine_or_none is not None else spacing_affine(spacing_or_none)
        return data, affine, spacing_or_none, fmt
    data, affine, spacing = _read_dicom(p)
    return data, affine, spacing, fmt


def _check_finite(array: np.ndarray, path: Path) -> None:
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise DataError(f"{bad} voxels are NaN or infinite", path)


def read_image(path: str | Path, spatial_dims: int, channels: int | None = None) -> ImageData:
    """Read an image as ``(C, *spatial)`` float32 with its spacing and affine.

    Args:
        path: Image file (or DICOM folder).
        spatial_dims: 2 or 3. A file with ``spatial_dims + 1`` axes has channels on its last axis (NIfTI 4D,
            RGB rasters, ``(H, W, C)`` arrays); a file with ``spatial_dims`` axes has one channel. NPY/NPZ
            arrays written by :func:`write_image` are channel-first.
        channels: Expected number of channels, or None for any. ``channels=1`` turns a 4D file where a 3D
            volume is expected (e.g. a time series) into a clear error instead of a many-channel image.

    Raises:
        DataError: unreadable file, wrong number of axes or channels, NaN/inf values, zero voxels.

    """
    p = Path(path)
    data, affine, spacing, fmt = _load(p, spatial_dims)
    layout = _image_layout(tuple(data.shape), fmt, spatial_dims, channels, p)
    arr = data.reshape(layout.file_shape)
    arr = arr[None] if layout.channel_axis is None else np.moveaxis(arr, layout.channel_axis, 0)
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.size == 0:
        raise DataError("image is empty (zero voxels)", p)
    _check_finite(arr, p)
    return ImageData(arr, tuple(spacing[:spatial_dims]), affine)


@dataclass(frozen=True)
class _Layout:
    """Where an image file keeps its channels.

    The file's array reshaped to ``file_shape`` (a 5D NIfTI's singleton axis dropped) has them on ``channel_axis``
    (None: one channel, no axis); ``shape`` is ``(C, *spatial)``.
    """

    file_shape: tuple[int, ...]
    channel_axis: int | None
    shape: tuple[int, ...]


def _image_layout(shape: tuple[int, ...], fmt: Format, spatial_dims: int, channels: int | None, path: Path) -> _Layout:
    """The channel layout of an image file of array ``shape`` (the one rule of :func:`read_image`)."""
    original = shape
    if fmt == "nifti" and len(shape) == spatial_dims + 2 and shape[spatial_dims] == 1:
        shape = (*shape[:spatial_dims], shape[-1])  # (X, Y, Z, 1, C) 5D NIfTI
    if len(shape) == spatial_dims:
        layout = _Layout(shape, None, (1, *shape))
    elif len(shape) == spatial_dims + 1:
        if fmt in ("npy", "npz"):  # written channel-first by write_image
            layout = _Layout(shape, 0, shape)
        else:
            layout = _Layout(shape, len(shape) - 1, (shape[-1], *shape[:-1]))
    else:
        raise DataError(
            f"image has {len(original)} axes {original}; expected {spatial_dims} spatial axes "
            f"(+ optionally one channel axis)",
            path,
        )
    if channels is not None and layout.shape[0] != channels:
        raise DataError(
            f"image has shape {original} = {layout.shape[0]} channels of {spatial_dims}D; expected "
            f"{channels} channel(s) (is this a {spatial_dims + 1}D file where a {spatial_dims}D one is expected?)",
            path,
        )
    return layout


def read_image_geometry(path: str | Path, spatial_dims: int) -> tuple[tuple[int, ...], tuple[float, ...], np.ndarray]:
    """The ``(C, *spatial)`` shape, spacing and affine :func:`read_image` would return, without the voxels.

    NIfTI files are read from their header only (a compressed volume is not decompressed), which is what lets
    ``labelwise evaluate`` skip the images it does not score; other formats are read whole.

    Raises:
        DataError: unreadable file or a shape :func:`read_image` refuses.

    """
    p = Path(path)
    if file_format(p) != "nifti":
        img = read_image(p, spatial_dims)
        return tuple(img.array.shape), img.spacing_mm, img.affine
    if not p.is_file():
        raise DataError("file not found", p)
    import nibabel as nib

    try:
        nii: Any = nib.load(str(p))
        shape = tuple(int(n) for n in nii.shape)
        affine = np.asarray(nii.affine, dtype=np.float64)
        zooms = tuple(float(z) for z in nii.header.get_zooms())
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise DataError(f"cannot read NIfTI header ({type(exc).__name__}: {exc})", p) from None
    layout = _image_layout(shape, "nifti", spatial_dims, None, p)
    if int(np.prod(layout.shape)) == 0:
        raise DataError("image is empty (zero voxels)", p)
    return layout.shape, zooms[:spatial_dims], affine


def read_label(path: str | Path, spatial_dims: int) -> ImageData:
    """Read a label map as ``(*spatial)`` int16 with its spacing and affine.

    Float files are accepted only when every value is an integer. A single trailing axis of length 1 is
    squeezed. Values are returned as stored: range checks against class names belong to the caller
    (:func:`labelwise.data.check_dataset`).

    Raises:
        DataError: unreadable file, wrong number of axes, NaN/inf or non-integer values.

    """
    p = Path(path)
    data, affine, spacing, _ = _load(p, spatial_dims)
    if data.ndim == spatial_dims + 1 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == spatial_dims + 1 and data.shape[-1] in (3, 4):
        # RGB(A) masks: accept only when the colour channels agree (grey stored as RGB)
        if not (data[..., :3] == data[..., :1]).all():
            raise DataError("label map is a colour image with differing channels; expected a grey/index map", p)
        data = data[..., 0]
    if data.ndim != spatial_dims:
        raise DataError(f"label map has shape {tuple(data.shape)}; expected {spatial_dims} spatial axes", p)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    if np.issubdtype(data.dtype, np.floating):
        _check_finite(data, p)
        if not np.all(np.mod(data, 1) == 0):
            raise DataError("label map has non-integer values; expected class indices", p)
    if data.size and (data.min() < np.iinfo(np.int16).min or data.max() > np.iinfo(np.int16).max):
        raise DataError(f"label values {data.min()}..{data.max()} do not fit int16", p)
    return ImageData(np.ascontiguousarray(data, dtype=np.int16), tuple(spacing[:spatial_dims]), affine)


# --------------------------------------------------------------------------------------------- writers


def _write(path: Path, data: np.ndarray, affine: np.ndarray, spacing_mm: tuple[float, ...]) -> Path:
    fmt = file_format(path)
    with atomic_path(path) as tmp:
        if fmt == "nifti":
            import nibabel as nib

            img: Any = nib.Nifti1Image(data, affine)  # type: ignore[no-untyped-call]
            img.header.set_zooms(tuple(spacing_mm) + img.header.get_zooms()[len(spacing_mm) :])
            img.header.set_xyzt_units("mm")
            img.set_qform(affine, code=1)
            img.set_sform(affine, code=1)
            nib.save(img, str(tmp))
        elif fmt == "npy":
            np.save(tmp, data, allow_pickle=False)
        elif fmt == "npz":
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, data=data, spacing_mm=np.asarray(spacing_mm), affine=affine)
        elif fmt == "raster":
            from PIL import Image

            Image.fromarray(data).save(tmp, format=_pil_format(path))
        else:
            raise DataError("writing DICOM is not supported; write NIfTI instead", path)
    return path


def _pil_format(path: Path) -> str:
    suffix = path.suffix.lower()
    return {".png": "PNG", ".bmp": "BMP", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}[suffix]


def write_image(
    path: str | Path,
    array: np.ndarray,
    spacing_mm: tuple[float, ...] | None = None,
    affine: np.ndarray | None = None,
) -> Path:
    """Write a ``(C, *spatial)`` image atomically; returns the path.

    Channels go to the last axis for NIfTI and rasters (one channel: no channel axis); NPY/NPZ keep
    channel-first. Raster formats require C in {1, 3} and are written as uint8 after clipping to 0..255 (use
    NIfTI or NPZ for anything quantitative). ``affine`` defaults to ``diag(spacing_mm, 1)``.
    """
    p = Path(path)
    arr = np.asarray(array)
    spatial_dims = arr.ndim - 1
    spacing = tuple(spacing_mm) if spacing_mm is not None else (1.0,) * spatial_dims
    aff = np.asarray(affine, dtype=np.float64) if affine is not None else spacing_affine(spacing)
    fmt = file_format(p)
    if fmt in ("npy", "npz"):
        return _write(p, arr, aff, spacing)
    out = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
    if fmt == "raster":
        if arr.shape[0] not in (1, 3) or spatial_dims != 2:
            raise DataError(f"raster formats hold 2D images with 1 or 3 channels, got {arr.shape}", p)
        out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return _write(p, np.ascontiguousarray(out), aff, spacing)


def write_label(
    path: str | Path,
    label: np.ndarray,
    spacing_mm: tuple[float, ...] | None = None,
    affine: np.ndarray | None = None,
) -> Path:
    """Write a ``(*spatial)`` integer label map atomically (uint8 when it fits, else int16); returns the path."""
    p = Path(path)
    arr = np.asarray(label)
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise DataError(f"label maps must be integer arrays, got {arr.dtype}", p)
    spacing = tuple(spacing_mm) if spacing_mm is not None else (1.0,) * arr.ndim
    aff = np.asarray(affine, dtype=np.float64) if affine is not None else spacing_affine(spacing)
    fits_u8 = arr.size == 0 or (arr.min() >= 0 and arr.max() <= 255)
    out = arr.astype(np.uint8 if fits_u8 else np.int16)
    if file_format(p) == "raster" and not fits_u8:
        raise DataError("raster label maps hold values 0..255 only; use NIfTI", p)
    return _write(p, np.ascontiguousarray(out), aff, spacing)
