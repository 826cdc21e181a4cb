"""Mask propagation along the slices of a volume (FLARE22 propagation module, STCN-style memory read-out).

The algorithm behind ``labelwise propagate``, the viewer's propagate button and the ``propagation`` method's
prediction (:mod:`labelwise.methods.propagation.method` trains the STCN it can use)::

    result = propagate(volume, {40: label_slice_40, 60: label_slice_60})            # training-free
    result = propagate(volume, {40: label_slice_40}, model=load_propagation_model(run_dir))  # trained STCN
    result.labels   # (X, Y, Z) int16, result.probs  # (K, X, Y, Z) float32

Schedule: every annotated slice is kept as given. From each annotated slice the masks propagate slice by slice
towards the neighbouring annotated slice (or the end of the volume); between two annotated slices ``a < b`` the
forward pass from ``a`` and the backward pass from ``b`` are blended with linear weights
``(b - z) / (b - a)`` and ``(z - a) / (b - a)``. The memory of each step holds the annotated slice and the
previously predicted slice (STCN keeps the first and the latest frame).

Backends:

* **Training-free** (``model=None``): keys are simple per-pixel features, the intensities (robustly z-scored
  per volume and lightly smoothed) divided by ``intensity_scale`` and the pixel coordinates divided by
  ``position_scale``; values are the class probabilities of the memory slice. The read-out is the STCN top-k
  L2-affinity softmax (:func:`labelwise.models.stcn.local_topk_readout`), restricted to a window of
  ``radius`` pixels, which makes it a registration-like label transfer: each pixel takes the labels of the
  most similar nearby pixels of the neighbouring slice.
* **Trained STCN** (``model=`` a :class:`PropagationModel`, e.g. from
  :func:`~labelwise.methods.propagation.load_propagation_model`): the network's key and value encoders, global
  top-k read-out and decoder; one object per foreground class, combined by soft aggregation.

Reference slices chosen automatically (FLARE22): :func:`propagate_from_reference` takes a reference model's
label map, looks at every ``stride``-th slice, picks per class the slice with the largest area, and propagates
each class from its own reference slice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from labelwise.data.slices import nonempty_slices
from labelwise.errors import DataError
from labelwise.io import ImageData, read_image, read_label
from labelwise.models.stcn import STCN, STRIDE, local_topk_readout, soft_aggregate

__all__ = [
    "PropagationModel",
    "PropagationResult",
    "check_annotations",
    "choose_reference_slices",
    "propagate",
    "propagate_from_reference",
    "read_slice_annotations",
]


@dataclass
class PropagationResult:
    """Output of :func:`propagate`.

    Attributes:
        labels: ``(X, Y, Z)`` int16 label map (argmax of ``probs``; annotated slices exactly as given).
        probs: ``(K, X, Y, Z)`` float32 class probabilities summing to 1 over K.
        annotated: The annotated slice indices, sorted.

    """

    labels: np.ndarray
    probs: np.ndarray
    annotated: tuple[int, ...]


class _Backend(Protocol):
    def key(self, z: int) -> Any: ...

    def value(self, z: int, probs: torch.Tensor) -> Any: ...

    def read(self, z: int, memory: list[tuple[Any, Any]], present: torch.Tensor) -> torch.Tensor: ...


def _as_volume(volume: np.ndarray) -> np.ndarray:
    vol = np.asarray(volume)
    if vol.ndim == 3:
        vol = vol[None]
    if vol.ndim != 4:
        raise DataError(f"expected a (X, Y, Z) or (C, X, Y, Z) volume, got shape {vol.shape}")
    if vol.shape[-1] < 2:
        raise DataError(f"the volume has {vol.shape[-1]} slice(s) along the last axis; nothing to propagate")
    if not np.isfinite(vol).all():
        raise DataError("the volume contains NaN or infinite values")
    return vol.astype(np.float32, copy=False)


def check_annotations(
    annotations: Mapping[int, np.ndarray],
    shape: tuple[int, ...],
    num_classes: int | None = None,
    allow_empty: bool = False,
) -> tuple[dict[int, np.ndarray], int]:
    """Validate ``{slice_index: label_slice}`` against a volume of spatial shape ``(X, Y, Z)``.

    Args:
        annotations: Slice index (last axis) -> ``(X, Y)`` integer label slice.
        shape: Spatial shape ``(X, Y, Z)`` of the volume.
        num_classes: K including background (default: max label + 1, at least 2).
        allow_empty: Accept annotated slices without foreground (they then mark where structures end).

    Returns:
        ``(annotations as int64 arrays with Python int keys, K)``.

    Raises:
        DataError: no annotation, an index out of range, a slice of the wrong shape, non-integer or negative
            labels, labels >= K, or an empty annotated slice (unless ``allow_empty``).

    """
    if not annotations:
        raise DataError("no annotated slice given; annotate at least one slice")
    depth = shape[-1]
    out: dict[int, np.ndarray] = {}
    for z, lab in annotations.items():
        zi = int(z)
        if not 0 <= zi < depth:
            raise DataError(f"annotated slice index {zi} is out of range 0..{depth - 1}")
        arr = np.asarray(lab)
        if arr.shape != tuple(shape[:-1]):
            raise DataError(f"annotated slice {zi} has shape {arr.shape}, the volume's slices are {tuple(shape[:-1])}")
        if not np.issubdtype(arr.dtype, np.integer):
            if not np.all(np.equal(np.mod(arr, 1), 0)):
                raise DataError(f"annotated slice {zi} holds non-integer labels")
        arr = arr.astype(np.int64)
        if arr.size and arr.min() < 0:
            raise DataError(f"annotated slice {zi} holds negative labels")
        if not allow_empty and not arr.any():
            raise DataError(
                f"annotated slice {zi} is empty (no foreground); annotate a slice that shows the structures"
            )
        out[zi] = arr
    k = max(int(max(a.max() for a in out.values())) + 1, 2) if num_classes is None else int(num_classes)
    top = max(int(a.max()) for a in out.values())
    if top >= k:
        raise DataError(f"annotations hold label {top}, outside the {k} classes")
    return out, k


def _onehot(label: np.ndarray, k: int) -> torch.Tensor:
    t = torch.as_tensor(label, dtype=torch.int64)
    return torch.nn.functional.one_hot(t, k).permute(2, 0, 1).float()


def _run_schedule(backend: _Backend, anchors: dict[int, torch.Tensor], depth: int, k: int) -> torch.Tensor:
    """Propagate from every anchor towards its neighbours; returns ``(K, X, Y, Z)`` probabilities."""
    order = sorted(anchors)
    first = anchors[order[0]]
    acc = torch.zeros((k, *first.shape[1:], depth), dtype=torch.float32)
    wsum = torch.zeros(depth, dtype=torch.float32)
    present = torch.stack([a.flatten(1).amax(1) for a in anchors.values()]).amax(0) > 0  # (K,) classes annotated
    for i, a in enumerate(order):
        acc[..., a] = anchors[a]
        wsum[a] = 1.0
        ref = (backend.key(a), backend.value(a, anchors[a]))
        for step, stop, bounded in (
            (1, order[i + 1] if i + 1 < len(order) else depth, i + 1 < len(order)),
            (-1, order[i - 1] if i > 0 else -1, i > 0),
        ):
            prev: tuple[Any, Any] | None = None
            for z in range(a + step, stop, step):
                memory = [ref] if prev is None else [ref, prev]
                p = backend.read(z, memory, present)
                w = 1.0 - abs(z - a) / abs(stop - a) if bounded else 1.0
                acc[..., z] += w * p
                wsum[z] += w
                prev = (backend.key(z), backend.value(z, p))
    return acc / wsum.clamp_min(1e-8)


class _IntensityBackend:
    """Training-free keys: robust z-scored, smoothed intensities plus scaled pixel coordinates."""

    def __init__(
        self, volume: np.ndarray, intensity_scale: float, position_scale: float, radius: int, top_k: int
    ) -> None:
        from scipy.ndimage import gaussian_filter

        chans = []
        for c in range(volume.shape[0]):
            x = volume[c]
            lo, hi = np.percentile(x, [0.5, 99.5])
            x = np.clip(x, lo, hi)
            x = (x - x.mean()) / max(float(x.std()), 1e-6)
            chans.append(gaussian_filter(x, sigma=(1.0, 1.0, 0.0)) / intensity_scale)
        feats = torch.as_tensor(np.stack(chans), dtype=torch.float32)  # (C, X, Y, Z)
        xx, yy = torch.meshgrid(
            torch.arange(volume.shape[1], dtype=torch.float32),
            torch.arange(volume.shape[2], dtype=torch.float32),
            indexing="ij",
        )
        self.coords = torch.stack([xx, yy]) / position_scale
        self.feats = feats
        self.radius = radius
        self.top_k = top_k

    def key(self, z: int) -> torch.Tensor:
        return torch.cat([self.feats[..., z], self.coords], 0)

    def value(self, z: int, probs: torch.Tensor) -> torch.Tensor:
        return probs

    def read(self, z: int, memory: list[tuple[Any, Any]], present: torch.Tensor) -> torch.Tensor:
        mk = torch.stack([m[0] for m in memory])
        mv = torch.stack([m[1] for m in memory])
        out = local_topk_readout(self.key(z), mk, mv, self.top_k, self.radius)
        return out / out.sum(0, keepdim=True).clamp_min(1e-8)


class PropagationModel:
    """A trained STCN with the normalisation it was trained with (see :func:`load_propagation_model`).

    Args:
        net: The network (eval mode is set here).
        normalize: Function ``(C, X, Y, Z) -> (C, X, Y, Z)`` float32 applied to volumes before encoding.
        device: Device to run on.

    """

    def __init__(
        self, net: STCN, normalize: Callable[[np.ndarray], np.ndarray], device: torch.device | str = "cpu"
    ) -> None:
        self.net = net.eval().to(device)
        self.normalize = normalize
        self.device = torch.device(device)


_Features = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # STCN key-encoder features at 1/1, 1/2, 1/4


class _STCNBackend:
    """Trained-network keys/values; one object per foreground class."""

    def __init__(self, model: PropagationModel, volume: np.ndarray) -> None:
        vol = model.normalize(volume)
        x, y = vol.shape[1:3]
        self.px, self.py = (-x) % STRIDE, (-y) % STRIDE
        vol = np.pad(vol, ((0, 0), (0, self.px), (0, self.py), (0, 0)))
        self.vol = torch.as_tensor(vol, dtype=torch.float32)
        self.shape = (x, y)
        self.model = model
        self._keys: dict[int, tuple[torch.Tensor, _Features]] = {}

    def _encode(self, z: int) -> tuple[torch.Tensor, _Features]:
        if z not in self._keys:
            if len(self._keys) > 8:
                self._keys.pop(next(iter(self._keys)))
            img = self.vol[None, ..., z].to(self.model.device)
            self._keys[z] = self.model.net.encode_key(img)
        return self._keys[z]

    def key(self, z: int) -> torch.Tensor:
        return self._encode(z)[0]

    def value(self, z: int, probs: torch.Tensor) -> torch.Tensor:
        _, feats = self._encode(z)
        k = probs.shape[0]
        masks = torch.nn.functional.pad(probs[1:], (0, self.py, 0, self.px))[:, None].to(self.model.device)
        img = self.vol[None, ..., z].to(self.model.device).expand(k - 1, -1, -1, -1)
        out: torch.Tensor = self.model.net.encode_value(img, masks, feats[2].expand(k - 1, -1, -1, -1))
        return out  # (O, V, h, w)

    def read(self, z: int, memory: list[tuple[Any, Any]], present: torch.Tensor) -> torch.Tensor:
        qk, feats = self._encode(z)
        objects = memory[0][1].shape[0]
        mk = torch.stack([m[0][0] for m in memory])[None].expand(objects, -1, -1, -1, -1)  # (O, T, D, h, w)
        mv = torch.stack([m[1] for m in memory], 1)  # (O, T, V, h, w)
        f1, f2, f4 = (f.expand(objects, -1, -1, -1) for f in feats)
        logits = self.model.net.segment(qk.expand(objects, -1, -1, -1), (f1, f2, f4), mk, mv)[:, 0]  # (O, H, W)
        p = torch.sigmoid(logits.float()) * present[1:, None, None].to(logits.device)
        x, y = self.shape
        return soft_aggregate(p[:, :x, :y]).cpu()


def propagate(
    volume: np.ndarray,
    annotations: Mapping[int, np.ndarray],
    model: PropagationModel | None = None,
    *,
    num_classes: int | None = None,
    allow_empty: bool = False,
    top_k: int = 8,
    radius: int = 3,
    intensity_scale: float = 0.15,
    position_scale: float = 1.5,
) -> PropagationResult:
    """Fill a volume with labels propagated from one or a few annotated slices (see the module docstring).

    Args:
        volume: ``(X, Y, Z)`` or ``(C, X, Y, Z)`` raw intensities (any units; normalised here), Z >= 2.
        annotations: ``{z: (X, Y) integer label slice}``; z indexes the last axis.
        model: None (training-free) or a trained :class:`PropagationModel`.
        num_classes: K including background (default: max annotated label + 1).
        allow_empty: Accept annotated slices with no foreground (see :func:`check_annotations`).
        top_k: Training-free: memory candidates kept per pixel.
        radius: Training-free: search window radius in pixels.
        intensity_scale: Training-free: intensity difference (in robust standard deviations) that costs as
            much affinity as a displacement of ``position_scale`` pixels.
        position_scale: Training-free: pixel-coordinate scale of the keys.

    Returns:
        A :class:`PropagationResult`; annotated slices are reproduced exactly.

    Raises:
        DataError: bad volume (one slice, wrong dims, non-finite) or bad annotations (see
            :func:`check_annotations`).

    """
    vol = _as_volume(volume)
    ann, k = check_annotations(annotations, vol.shape[1:], num_classes, allow_empty)
    backend: _Backend
    if model is None:
        backend = _IntensityBackend(vol, intensity_scale, position_scale, radius, top_k)
    else:
        backend = _STCNBackend(model, vol)
    # Propagate only the classes that occur in the annotations (plus background), then expand back to K.
    used = np.unique(np.concatenate([np.unique(a) for a in ann.values()] + [np.zeros(1, np.int64)]))
    lut = np.zeros(k, dtype=np.int64)
    lut[used] = np.arange(len(used))
    anchors = {z: _onehot(lut[lab], len(used)) for z, lab in ann.items()}
    with torch.inference_mode():
        compact = _run_schedule(backend, anchors, vol.shape[-1], len(used)).numpy()
    probs = np.zeros((k, *compact.shape[1:]), dtype=np.float32)
    probs[used] = compact
    labels = np.argmax(probs, axis=0).astype(np.int16)
    for z, lab in ann.items():
        labels[..., z] = lab
    return PropagationResult(labels=labels, probs=probs.astype(np.float32), annotated=tuple(sorted(ann)))


def choose_reference_slices(labels: np.ndarray, num_classes: int, stride: int = 5) -> dict[int, int]:
    """Per foreground class, the slice (among every ``stride``-th one) where it has the largest area.

    Args:
        labels: ``(X, Y, Z)`` integer label map (a reference model's prediction).
        num_classes: K including background.
        stride: Look at slices ``0, stride, 2 stride, ...`` (FLARE22: 5).

    Returns:
        ``{class: z}`` for every class present in the looked-at slices (absent classes are left out).

    """
    lab = np.asarray(labels)
    if lab.ndim != 3:
        raise DataError(f"expected a (X, Y, Z) label map, got shape {lab.shape}")
    if stride < 1:
        raise DataError(f"stride must be >= 1, got {stride}")
    zs = np.arange(0, lab.shape[-1], stride)
    out: dict[int, int] = {}
    for c in range(1, num_classes):
        area = (lab[..., zs] == c).sum(axis=(0, 1))
        if area.max() > 0:
            out[c] = int(zs[int(np.argmax(area))])
    return out


def propagate_from_reference(
    volume: np.ndarray,
    reference_labels: np.ndarray,
    num_classes: int,
    model: PropagationModel | None = None,
    stride: int = 5,
    **options: Any,
) -> PropagationResult:
    """FLARE22 inference: each class propagates from its largest-area reference slice; classes are then combined.

    Args:
        volume: ``(X, Y, Z)`` or ``(C, X, Y, Z)`` intensities.
        reference_labels: ``(X, Y, Z)`` reference model's label map.
        num_classes: K including background.
        model: Trained propagation model (None: training-free).
        stride: Slice stride of the reference-slice search.
        **options: Passed to :func:`propagate`.

    Returns:
        A :class:`PropagationResult` (``annotated`` lists the reference slices). Classes the reference model
        never predicts get probability 0.

    """
    vol = _as_volume(volume)
    refs = choose_reference_slices(reference_labels, num_classes, stride)
    fg = torch.zeros((num_classes - 1, *vol.shape[1:]), dtype=torch.float32)
    for c, z in refs.items():
        ann = {z: (np.asarray(reference_labels)[..., z] == c).astype(np.int64)}
        res = propagate(vol, ann, model, num_classes=2, **options)
        fg[c - 1] = torch.as_tensor(res.probs[1])
    probs = (
        soft_aggregate(fg).numpy()
        if refs
        else np.eye(num_classes, dtype=np.float32)[0][:, None, None, None]
        * np.ones((1, *vol.shape[1:]), dtype=np.float32)
    )
    labels = np.argmax(probs, axis=0).astype(np.int16)
    return PropagationResult(labels=labels, probs=probs.astype(np.float32), annotated=tuple(sorted(set(refs.values()))))


def read_slice_annotations(
    image_path: str | Path,
    labels_path: str | Path,
    slices: tuple[int, ...] | None = None,
    allow_empty: bool = False,
) -> tuple[np.ndarray, dict[int, np.ndarray], ImageData]:
    """Read a volume and a label map valid on some of its slices (the ``labelwise propagate`` inputs).

    ``labels_path`` is a label map of the volume's size; only the slices in ``slices`` (or, when None, the
    slices that contain any foreground) count as annotations; everything else in it is ignored.

    Returns:
        ``(volume (C, X, Y, Z) float32, {z: (X, Y) int64}, ImageData of the image)``.

    Raises:
        DataError: shape, spacing or orientation differ between image and labels; a slice index outside the
            volume; no annotated slice; an empty listed slice (unless ``allow_empty``).

    """
    img = read_image(image_path, 3)
    lab = read_label(labels_path, 3)
    if lab.array.shape != img.array.shape[1:]:
        raise DataError(
            f"label map shape {lab.array.shape} differs from the image's {img.array.shape[1:]}", labels_path
        )
    if not np.allclose(lab.spacing_mm, img.spacing_mm, rtol=1e-3, atol=1e-4):
        raise DataError(
            f"label spacing {lab.spacing_mm} mm differs from image spacing {img.spacing_mm} mm", labels_path
        )
    rot_img = img.affine[:3, :3] / np.linalg.norm(img.affine[:3, :3], axis=0)
    rot_lab = lab.affine[:3, :3] / np.linalg.norm(lab.affine[:3, :3], axis=0)
    if not np.allclose(rot_img, rot_lab, atol=1e-3) or not np.allclose(img.affine[:3, 3], lab.affine[:3, 3], atol=1e-2):
        raise DataError("label map orientation/origin differs from the image's (different affine)", labels_path)
    depth = img.array.shape[-1]
    if slices is None:
        chosen = nonempty_slices(lab.array)
        if not chosen:
            raise DataError("the label map has no foreground on any slice; nothing to propagate", labels_path)
    else:
        bad = [z for z in slices if not 0 <= z < depth]
        if bad:
            raise DataError(f"slice index {bad[0]} is out of range 0..{depth - 1}", labels_path)
        chosen = tuple(slices)
    ann = {int(z): lab.array[..., int(z)].astype(np.int64) for z in chosen}
    for z, a in ann.items():
        if not allow_empty and not a.any():
            raise DataError(f"annotated slice {z} is empty (no foreground)", labels_path)
    return img.array, ann, img
