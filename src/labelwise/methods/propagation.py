"""Mask propagation along the slices of a volume (FLARE22 propagation module, STCN-style memory read-out).

In-process API (what ``labelwise propagate`` and the viewer call)::

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
* **Trained STCN** (``model=`` a :class:`PropagationModel` from a ``propagation`` run): the network's key and
  value encoders, global top-k read-out and decoder; one object per foreground class, combined by soft
  aggregation.

Reference slices chosen automatically (FLARE22): :func:`propagate_from_reference` takes a reference model's
label map, looks at every ``stride``-th slice, picks per class the slice with the largest area, and propagates
each class from its own reference slice.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import torch

from labelwise.data import Case, Dataset
from labelwise.data.slices import ct_window_channels, labelled_slice_indices
from labelwise.engine import (
    Plan,
    RunDir,
    StepContext,
    TrainConfig,
    Trainer,
    TrainTask,
    config_from_dict,
    config_to_dict,
    crop_or_pad,
    default_device,
    load_weights,
    normalize_image,
    seed_everything,
)
from labelwise.engine.planner import PLAN_NAME
from labelwise.errors import ConfigError, DataError
from labelwise.io import Prediction
from labelwise.methods.base import Method, register_method
from labelwise.methods.cps import CPSConfig, CPSMethod, CPSPredictor, case_target, prepare_image
from labelwise.methods.cps import _plan as cps_plan
from labelwise.models.stcn import STCN, STCNConfig

__all__ = [
    "PropagationConfig",
    "PropagationMethod",
    "PropagationModel",
    "PropagationPredictor",
    "PropagationResult",
    "check_annotations",
    "choose_reference_slices",
    "load_propagation_model",
    "max_jump_at",
    "propagate",
    "propagate_from_reference",
    "read_slice_annotations",
]

logger = logging.getLogger(__name__)


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
        from labelwise.models.stcn import local_topk_readout

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

    def __init__(self, net: Any, normalize: Any, device: torch.device | str = "cpu") -> None:
        self.net = net.eval().to(device)
        self.normalize = normalize
        self.device = torch.device(device)


class _STCNBackend:
    """Trained-network keys/values; one object per foreground class."""

    def __init__(self, model: PropagationModel, volume: np.ndarray) -> None:
        from labelwise.models.stcn import STRIDE

        vol = model.normalize(volume)
        x, y = vol.shape[1:3]
        self.px, self.py = (-x) % STRIDE, (-y) % STRIDE
        vol = np.pad(vol, ((0, 0), (0, self.px), (0, self.py), (0, 0)))
        self.vol = torch.as_tensor(vol, dtype=torch.float32)
        self.shape = (x, y)
        self.model = model
        self._keys: dict[int, tuple[torch.Tensor, tuple[torch.Tensor, ...]]] = {}

    def _encode(self, z: int) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
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
        from labelwise.models.stcn import soft_aggregate

        qk, feats = self._encode(z)
        objects = memory[0][1].shape[0]
        mk = torch.stack([m[0][0] for m in memory])[None].expand(objects, -1, -1, -1, -1)  # (O, T, D, h, w)
        mv = torch.stack([m[1] for m in memory], 1)  # (O, T, V, h, w)
        qf = tuple(f.expand(objects, -1, -1, -1) for f in feats)
        logits = self.model.net.segment(qk.expand(objects, -1, -1, -1), qf, mk, mv)[:, 0]  # (O, H, W)
        p = torch.sigmoid(logits.float()) * present[1:, None, None].to(logits.device)
        x, y = self.shape
        return soft_aggregate(p[:, :x, :y]).cpu()


def propagate(
    volume: np.ndarray,
    annotations: Mapping[int, np.ndarray],
    model: PropagationModel | str | Path | None = None,
    *,
    num_classes: int | None = None,
    allow_empty: bool = False,
    top_k: int = 8,
    radius: int = 3,
    intensity_scale: float = 0.15,
    position_scale: float = 1.5,
    device: torch.device | str | None = None,
) -> PropagationResult:
    """Fill a volume with labels propagated from one or a few annotated slices (see the module docstring).

    Args:
        volume: ``(X, Y, Z)`` or ``(C, X, Y, Z)`` raw intensities (any units; normalised here), Z >= 2.
        annotations: ``{z: (X, Y) integer label slice}``; z indexes the last axis.
        model: None (training-free), a :class:`PropagationModel`, or a ``propagation`` run directory.
        num_classes: K including background (default: max annotated label + 1).
        allow_empty: Accept annotated slices with no foreground (see :func:`check_annotations`).
        top_k: Training-free: memory candidates kept per pixel.
        radius: Training-free: search window radius in pixels.
        intensity_scale: Training-free: intensity difference (in robust standard deviations) that costs as
            much affinity as a displacement of ``position_scale`` pixels.
        position_scale: Training-free: pixel-coordinate scale of the keys.
        device: Device for a trained model given as a run directory.

    Returns:
        A :class:`PropagationResult`; annotated slices are reproduced exactly.

    Raises:
        DataError: bad volume (one slice, wrong dims, non-finite) or bad annotations (see
            :func:`check_annotations`).

    """
    vol = _as_volume(volume)
    ann, k = check_annotations(annotations, vol.shape[1:], num_classes, allow_empty)
    if isinstance(model, (str, Path)):
        model = load_propagation_model(model, device)
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
    from labelwise.models.stcn import soft_aggregate

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
) -> tuple[np.ndarray, dict[int, np.ndarray], Any]:
    """Read a volume and a label map valid on some of its slices (the ``labelwise propagate`` inputs).

    ``labels_path`` is a label map of the volume's size; only the slices in ``slices`` (or, when None, the
    slices that contain any foreground) count as annotations; everything else in it is ignored.

    Returns:
        ``(volume (C, X, Y, Z) float32, {z: (X, Y) int64}, ImageData of the image)``.

    Raises:
        DataError: shape, spacing or orientation differ between image and labels; a slice index outside the
            volume; no annotated slice; an empty listed slice (unless ``allow_empty``).

    """
    from labelwise.data.slices import nonempty_slices
    from labelwise.io import read_image, read_label

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


def load_propagation_model(run_dir: str | Path, device: torch.device | str | None = None) -> PropagationModel:
    """Load the STCN of a ``propagation`` run directory (``stcn.safetensors`` + ``plan.json``)."""
    rd = RunDir(run_dir)
    name, cfg_map = rd.read_config()
    if name != "propagation":
        raise ConfigError(f"{run_dir}: a {name!r} run, not a propagation run")
    cfg: PropagationConfig = config_from_dict(PropagationConfig, cfg_map)
    plan = Plan.load(rd.path / PLAN_NAME)
    net = STCN(plan.channels, cfg.stcn)
    if not rd.weights_path.exists():
        raise DataError("no weights.safetensors (training did not finish an epoch)", rd.path)
    load_weights(rd.weights_path, {"stcn": net})
    ct = cfg.reference.ct_windows

    def normalize(volume: np.ndarray) -> np.ndarray:
        vol = ct_window_channels(volume[0]) if ct else volume
        return normalize_image(vol, plan)

    return PropagationModel(net, normalize, device if device is not None else default_device())


# ---------------------------------------------------------------------------------------------------- the method
@dataclass(frozen=True)
class PropagationConfig:
    """Settings of the ``propagation`` method (FLARE22 two-stage pipeline: reference model + STCN).

    Attributes:
        reference: The reference model (a ``cps`` config; ``cps_weight: 0`` for a supervised reference). Its
            ``classes``, ``train_slices``, ``slice_mode`` and ``ct_windows`` also define the STCN's data.
        anchors: Where propagation starts at prediction: ``"reference"`` (the reference model's largest-area
            slice per class, every ``reference_stride``-th slice searched) or ``"labelled"`` (the case's own
            labelled training slices: the k-annotated-slices use case; 3D datasets only).
        reference_stride: Slice stride of the reference-slice search.
        training_free: Predict with the training-free read-out instead of the trained STCN.
        stcn: Network sizes (default: widths 8-16-32, key 16, value 32, sized for 2 CPU cores; ``full``: 16-32-64,
            32, 64).
        patch_size: Square training crop (multiple of 4; default 64, ``full`` 96).
        frames: Slices per training sequence (3: triplets; 2: pairs).
        min_jump: Maximum slice distance between consecutive training frames at the start.
        max_jump: ... after ``jump_rampup`` of the epochs (the growing maximum jump of STCN's curriculum).
        jump_rampup: Fraction of the epochs over which the maximum jump grows.
        static_p: Fraction of sequences made from one labelled slice and random affine warps of it (STCN's
            static-image stage; also used whenever a slice has no labelled partner within the jump).
        train: Engine settings of the STCN (default: 10 x 30 steps of batch 4 in fp32; ``full``: 100 x 250 of 8).

    """

    reference: CPSConfig = field(default_factory=CPSConfig)
    anchors: Literal["reference", "labelled"] = "reference"
    reference_stride: int = 5
    training_free: bool = False
    stcn: STCNConfig = field(default_factory=lambda: STCNConfig(widths=(8, 16, 32), key_dim=16, value_dim=32))
    patch_size: int = 64
    frames: int = 3
    min_jump: int = 1
    max_jump: int = 10
    jump_rampup: float = 0.5
    static_p: float = 0.2
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=10, steps_per_epoch=30, batch_size=4, amp=False)
    )

    def __post_init__(self) -> None:
        if self.patch_size < 8 or self.patch_size % 4:
            raise ConfigError(f"patch_size must be a multiple of 4 and >= 8, got {self.patch_size}")
        if self.frames < 2:
            raise ConfigError(f"frames must be >= 2, got {self.frames}")
        if not 1 <= self.min_jump <= self.max_jump:
            raise ConfigError(f"need 1 <= min_jump <= max_jump, got {self.min_jump}, {self.max_jump}")
        if not 0 <= self.static_p <= 1:
            raise ConfigError(f"static_p must lie in [0, 1], got {self.static_p}")


def max_jump_at(epoch: int, epochs: int, min_jump: int, max_jump: int, rampup: float) -> int:
    """Maximum slice distance at ``epoch``: linear growth from ``min_jump`` to ``max_jump`` over ``rampup``."""
    t = min(epoch / max(rampup * epochs, 1e-8), 1.0)
    return round(min_jump + (max_jump - min_jump) * t)


def _warp(arrs: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The same random affine warp (rotation +-15 deg, scale 0.9..1.1, shift +-8 %) of ``(C, X, Y)`` arrays."""
    from scipy.ndimage import affine_transform

    shape = arrs[0].shape[1:]
    ang = np.deg2rad(rng.uniform(-15, 15))
    sc = rng.uniform(0.9, 1.1)
    mat = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]]) / sc
    centre = (np.array(shape) - 1) / 2
    shift = rng.uniform(-0.08, 0.08, 2) * np.array(shape)
    offset = centre - mat @ (centre + shift)
    out = []
    for a in arrs:
        order = 1 if np.issubdtype(a.dtype, np.floating) else 0
        out.append(np.stack([affine_transform(ch, mat, offset, order=order, mode="nearest") for ch in a]))
    return out


class _SequenceSource:
    """Training sequences ``(T, C, P, P)`` + one object's masks ``(T, 1, P, P)`` from labelled slices."""

    def __init__(self, volumes: list[tuple[np.ndarray, np.ndarray, list[int]]], cfg: PropagationConfig) -> None:
        self.epochs = cfg.train.epochs  # of the schedule in force: STCNTask sets it from the trainer each epoch
        self.volumes = volumes  # (image (C, X, Y, Z), label (X, Y, Z), labelled slices)
        self.cfg = cfg
        self.units = [(v, z) for v, (_, _, zs) in enumerate(volumes) for z in zs]
        if not self.units:
            raise DataError("no labelled slices to train the propagation network on")

    def sample(self, epoch: int, index: int, rng: np.random.Generator) -> dict[str, Any]:
        cfg = self.cfg
        vi, z0 = self.units[int(rng.integers(len(self.units)))]
        img, lab, zs = self.volumes[vi]
        present = [int(c) for c in np.unique(lab[..., z0]) if c > 0]
        obj = int(rng.choice(present)) if present else 1
        jump = max_jump_at(epoch, self.epochs, cfg.min_jump, cfg.max_jump, cfg.jump_rampup)
        partners = [z for z in zs if z != z0 and abs(z - z0) <= jump]
        frames: list[np.ndarray]
        masks: list[np.ndarray]
        if len(partners) >= cfg.frames - 1 and rng.random() >= cfg.static_p:
            chosen = sorted(rng.choice(partners, cfg.frames - 1, replace=False).tolist(), key=lambda z: abs(z - z0))
            seq = [z0, *chosen]
            frames = [img[..., z] for z in seq]
            masks = [(lab[..., z] == obj)[None].astype(np.float32) for z in seq]
        else:
            base_i, base_m = img[..., z0], (lab[..., z0] == obj)[None].astype(np.float32)
            frames, masks = [base_i], [base_m]
            for _ in range(cfg.frames - 1):
                wi, wm = _warp([base_i, base_m], rng)
                frames.append(wi.astype(np.float32))
                masks.append((wm > 0.5).astype(np.float32))
        shape = frames[0].shape[1:]
        p = cfg.patch_size
        fg = np.argwhere(masks[0][0] > 0)
        if len(fg) and rng.random() < 0.7:
            c = fg[int(rng.integers(len(fg)))]
            start = [int(ci) - p // 2 + int(rng.integers(-p // 4, p // 4 + 1)) for ci in c]
        else:
            start = [int(rng.integers(0, max(d - p, 0) + 1)) for d in shape]
        start = [min(max(s, min(0, d - p)), max(0, d - p)) for s, d in zip(start, shape, strict=True)]
        fr = np.stack([crop_or_pad(f, start, (p, p)) for f in frames]).astype(np.float32)
        mk = np.stack([crop_or_pad(m, start, (p, p)) for m in masks]).astype(np.float32)
        return {"frames": fr, "masks": mk}


class STCNTask(TrainTask):
    """BCE + soft Dice of the propagated masks of frames ``1..T-1``."""

    def __init__(self, net: STCN, source: _SequenceSource) -> None:
        self.modules = {"stcn": net}
        self.source = source

    def on_epoch_start(self, epoch: int, ctx: StepContext) -> None:
        """The jump curriculum follows the schedule in force (shorter under a time budget)."""
        self.source.epochs = ctx.epochs

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> torch.Tensor:
        """Loss of one batch of sequences."""
        frames, masks = batch["frames"], batch["masks"]
        logits = ctx.module("stcn")(frames, masks[:, 0])
        target = masks[:, 1:, 0]
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), target)
        p = torch.sigmoid(logits.float())
        inter = (p * target).sum((-2, -1))
        dice = (2 * inter + 1) / (p.sum((-2, -1)) + target.sum((-2, -1)) + 1)
        loss: torch.Tensor = bce + (1 - dice).mean()
        return loss


def _stcn_volumes(
    dataset: Dataset, cfg: PropagationConfig, plan: Plan
) -> list[tuple[np.ndarray, np.ndarray, list[int]]]:
    out = []
    for case in dataset.cases("train"):
        if not case.num_raters:
            continue
        prepared = prepare_image(case, cfg.reference.ct_windows)
        img = normalize_image(prepared.image, plan)
        target = case_target(plan.model_case(case), cfg.reference, plan.num_classes)
        assert target is not None
        label = np.argmax(target, 0).astype(np.int16)
        if case.spatial_dims == 2:
            out.append((img[..., None], label[..., None], [0]))
        else:
            out.append((img, label, list(plan.train_slices.get(case.id, labelled_slice_indices(case)))))
    return out


@register_method("propagation")
class PropagationMethod(Method):
    """Reference model (CPS) + STCN mask propagation from reference (or user-annotated) slices."""

    Config = PropagationConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {
            "reference": CPSMethod.presets["full"],
            "stcn": {"widths": [16, 32, 64], "key_dim": 32, "value_dim": 64},
            "patch_size": 96,
            "train": {"epochs": 100, "steps_per_epoch": 250, "batch_size": 8, "amp": True},
        },
        "cpu": {
            "reference": CPSMethod.presets["cpu"],
            "stcn": {"widths": [8, 16, 32], "key_dim": 16, "value_dim": 32},
            "patch_size": 64,
            "train": {"epochs": 10, "steps_per_epoch": 30, "batch_size": 4, "amp": False},
        },
        "smoke": {
            "reference": {
                "model": {"name": "unet", "kwargs": {"channels": [4, 8, 16], "num_res_units": 1}},
                "train": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2},
            },
            "stcn": {"widths": [4, 8, 8], "key_dim": 8, "value_dim": 8},
            "patch_size": 16,
            "train": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2},
        },
    }
    citation = (
        "Cheng et al., STCN, NeurIPS 2021; Huynh et al., FLARE22 semi-supervised organ segmentation with mask "
        "propagation refinement and uncertainty estimation (MICCAI 2022 challenge)"
    )
    summary = "reference 2D model (CPS) + STCN memory propagation of masks through the slices of a volume"

    @classmethod
    def fit(cls, dataset: Dataset, config: PropagationConfig, run_dir: str | Path) -> None:
        """Train the reference model (``RUN/reference``), then the STCN (``RUN``); both resumable."""
        rd = RunDir(run_dir)
        resumed = rd.prepare(cls.name, config_to_dict(config), dataset)
        if config.anchors == "labelled" and dataset.spatial_dims != 3:
            raise ConfigError("anchors: labelled needs a 3D dataset (slices to propagate along)")
        train_cases = [prepare_image(c, config.reference.ct_windows) for c in dataset.cases("train")]
        plan_path = rd.path / PLAN_NAME
        if not (resumed and plan_path.exists()):
            cps_plan(dataset, train_cases, config.reference).save(plan_path)
        plan = Plan.load(plan_path)
        if config.anchors == "reference":
            CPSMethod.fit(dataset, config.reference, rd.path / "reference")
        seed_everything(config.train.seed)
        net = STCN(plan.channels, config.stcn)
        source = _SequenceSource(_stcn_volumes(dataset, config, plan), config)
        result = Trainer(STCNTask(net, source), config.train, rd.path, source, ()).fit()
        rd.write_meta(
            status="finished",
            best_epoch=result.best_epoch,
            steps=result.steps,
            units=len(source.units),
            train_slices=plan.train_slices,
        )

    @classmethod
    def load_predictor(cls, run_dir: str | Path, device: torch.device | str | None = None) -> PropagationPredictor:
        """Rebuild the reference model and the STCN from the run directory."""
        return PropagationPredictor(run_dir, device)


class PropagationPredictor:
    """Predicts cases with a trained ``propagation`` run.

    Args:
        run_dir: The run directory.
        device: Device (default: CUDA if available).

    """

    def __init__(self, run_dir: str | Path, device: torch.device | str | None = None) -> None:
        rd = RunDir(run_dir)
        _, cfg_map = rd.read_config()
        self.config: PropagationConfig = config_from_dict(PropagationConfig, cfg_map)
        self.plan = Plan.load(rd.path / PLAN_NAME)
        self.model = load_propagation_model(run_dir, device)
        self.reference = CPSPredictor(rd.path / "reference", device) if self.config.anchors == "reference" else None

    def predict(self, case: Case, training_free: bool | None = None, **options: Any) -> Prediction:
        """Class probabilities ``(K, *spatial)``: propagated through a 3D case, the reference's for a 2D one.

        Args:
            case: A case of the training dataset's kind.
            training_free: Use the training-free read-out (default: the config's ``training_free``).
            **options: ``tta`` is passed to the reference model; others are ignored.

        """
        free = self.config.training_free if training_free is None else training_free
        model = None if free else self.model
        k = self.plan.num_classes
        if case.spatial_dims == 2:
            if self.reference is None:
                raise ConfigError("a 2D case needs the reference model (anchors: reference)")
            return self.reference.predict(case, tta=options.get("tta"))
        if self.config.anchors == "reference":
            assert self.reference is not None
            ref = self.reference.predict(case, tta=options.get("tta"))
            assert ref.label is not None
            res = propagate_from_reference(case.image, ref.label, k, model, self.config.reference_stride)
        else:
            mc = self.plan.model_case(case)
            zs = self.plan.train_slices.get(case.id) or list(labelled_slice_indices(mc))
            if not zs or not mc.num_raters:
                raise DataError(f"case {case.id}: anchors 'labelled' needs labelled slices in the case")
            target = case_target(mc, self.config.reference, k)
            assert target is not None
            label = np.argmax(target, 0)
            ann = {int(z): label[..., z] for z in zs}
            res = propagate(case.image, ann, model, num_classes=k, allow_empty=True)
        return Prediction(probs=res.probs)
