"""The planner: settings derived from the training data, saved as ``plan.json`` with every run.

Computed from the ``train`` split only: spatial dims, channels, classes, median spacing and shape, the patch
size, and per-channel intensity normalisation. CT-like channels (minimum below -500) get nnU-Net-style global
normalisation (clip to the 0.5/99.5 percentiles of labelled-foreground intensities, then z-score with their mean
and std); other channels a per-image z-score. Images are not resampled: labelwise trains at native spacing
and writes predictions in the source geometry (the median spacing is recorded for information).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from labelwise.data import Case, Dataset
from labelwise.errors import ConfigError, DataError
from labelwise.io.atomic import write_json_atomic

__all__ = ["PLAN_NAME", "ChannelNorm", "Plan", "make_plan", "normalize_image", "plan_patch_size"]

PLAN_NAME = "plan.json"


@dataclass(frozen=True)
class ChannelNorm:
    """Normalisation of one channel: ``"zscore"`` (per image) or ``"ct"`` (global clip + z-score)."""

    scheme: Literal["zscore", "ct"] = "zscore"
    clip_low: float = 0.0
    clip_high: float = 0.0
    mean: float = 0.0
    std: float = 1.0


@dataclass(frozen=True)
class Plan:
    """Data-derived settings of a run (``plan.json``).

    Attributes:
        spatial_dims: Spatial dims of the network input (2 for slice-wise training on 3D data).
        data_spatial_dims: Spatial dims of the dataset.
        channels: Image channels.
        class_names: Class names (index 0 background); the network has ``len(class_names)`` outputs.
        patch_size: Training/inference patch size, divisible by the network's down-sampling factor.
        median_spacing_mm: Median voxel size of the training images, mm.
        median_shape: Median spatial shape of the training images.
        normalization: One entry per channel.
        slicewise: True if a 2D network is applied slice by slice along the last axis of 3D volumes.
        dataset_class_names: The dataset's class names when the model uses a subset of them (else empty).
        class_indices: Dataset class index of each model output class (empty: identity).
        train_slices: Case id -> slice indices used for training (slice-wise protocols holding out labelled
            slices); empty: every labelled slice.
        dataset_channels: Channels of the dataset images when the method derives ``channels`` from them (e.g.
            CT windows stacked from one HU channel); 0: the same as ``channels``.

    """

    spatial_dims: int
    data_spatial_dims: int
    channels: int
    class_names: tuple[str, ...]
    patch_size: tuple[int, ...]
    median_spacing_mm: tuple[float, ...]
    median_shape: tuple[int, ...]
    normalization: tuple[ChannelNorm, ...]
    slicewise: bool = False
    dataset_class_names: tuple[str, ...] = ()
    class_indices: tuple[int, ...] = ()
    train_slices: dict[str, list[int]] = field(default_factory=dict)
    dataset_channels: int = 0

    @property
    def num_classes(self) -> int:
        """Number of classes including background."""
        return len(self.class_names)

    def to_json(self) -> dict[str, Any]:
        """JSON-able dict."""
        d = asdict(self)
        d["format"] = "labelwise-plan"
        return d

    def save(self, path: str | Path) -> Path:
        """Write atomically."""
        return write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        """Read ``plan.json``; malformed files raise :class:`DataError`."""
        p = Path(path)
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
            d.pop("format", None)
            return cls(
                spatial_dims=int(d["spatial_dims"]),
                data_spatial_dims=int(d["data_spatial_dims"]),
                channels=int(d["channels"]),
                class_names=tuple(d["class_names"]),
                patch_size=tuple(int(v) for v in d["patch_size"]),
                median_spacing_mm=tuple(float(v) for v in d["median_spacing_mm"]),
                median_shape=tuple(int(v) for v in d["median_shape"]),
                normalization=tuple(ChannelNorm(**n) for n in d["normalization"]),
                slicewise=bool(d.get("slicewise", False)),
                dataset_class_names=tuple(d.get("dataset_class_names", ())),
                class_indices=tuple(int(v) for v in d.get("class_indices", ())),
                train_slices={str(k): [int(z) for z in v] for k, v in d.get("train_slices", {}).items()},
                dataset_channels=int(d.get("dataset_channels", 0)),
            )
        except FileNotFoundError:
            raise DataError("no plan.json: not a labelwise run directory", p) from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed plan ({exc})", p) from None

    def select_classes(self, dataset_class_names: Sequence[str], classes: Sequence[str] | None) -> Plan:
        """A copy with the model restricted to ``classes`` (dataset class names; the others become background).

        Raises:
            ConfigError: a name is not a foreground class of the dataset.

        """
        if not classes:
            return self
        names = tuple(dataset_class_names)
        unknown = [c for c in classes if c not in names[1:]]
        if unknown:
            raise ConfigError(f"classes {unknown} are not foreground classes of the dataset {list(names[1:])}")
        return replace(
            self,
            class_names=("background", *classes),
            dataset_class_names=names,
            class_indices=(0, *(names.index(c) for c in classes)),
        )

    def model_case(self, case: Case) -> Case:
        """``case`` with its rater labels mapped to the model's classes (unselected classes become background)."""
        if not self.class_indices:
            return case
        lut = np.zeros(len(self.dataset_class_names), dtype=np.int16)
        lut[list(self.class_indices)] = np.arange(len(self.class_indices), dtype=np.int16)
        return replace(case, raters=lut[case.raters], class_names=self.class_names)

    def check_case(self, case: Case) -> None:
        """Raise :class:`DataError` if ``case`` has other image channels or spatial dims than this plan expects."""
        channels = self.dataset_channels or self.channels
        if case.image.shape[0] != channels or case.spatial_dims != self.data_spatial_dims:
            raise DataError(
                f"case {case.id}: image {case.image.shape} does not fit the model "
                f"({channels} channel(s), {self.data_spatial_dims}D)"
            )

    def check_dataset(self, dataset: Dataset) -> None:
        """Raise :class:`ConfigError` if ``dataset`` has other channels/classes/dims than this plan."""
        m = dataset.manifest
        channels = self.dataset_channels or self.channels
        if m.channels != channels:
            raise ConfigError(
                f"{dataset.root}: dataset has {m.channels} image channel(s), the model expects {channels}"
            )
        expected = self.dataset_class_names or self.class_names
        if tuple(m.class_names) != tuple(expected):
            raise ConfigError(
                f"{dataset.root}: dataset classes {list(m.class_names)} differ from the model's {list(expected)}"
            )
        if m.spatial_dims != self.data_spatial_dims:
            raise ConfigError(
                f"{dataset.root}: dataset is {m.spatial_dims}D, the model was trained on {self.data_spatial_dims}D data"
            )


def plan_patch_size(median_shape: Sequence[int], divisor: int, max_size: Sequence[int]) -> tuple[int, ...]:
    """Patch size: the median shape capped by ``max_size``, rounded up to a multiple of ``divisor``."""
    out = []
    for s, cap in zip(median_shape, max_size, strict=True):
        p = min(int(s), int(cap))
        out.append(max(divisor, int(np.ceil(p / divisor) * divisor)))
    return tuple(out)


def normalize_image(image: np.ndarray, plan: Plan) -> np.ndarray:
    """Normalise ``(C, *spatial)`` intensities per the plan; returns float32 of the same shape.

    A constant channel under per-image z-score becomes all zeros.
    """
    out = np.empty(image.shape, dtype=np.float32)
    for c, norm in enumerate(plan.normalization):
        x = image[c].astype(np.float32)
        if norm.scheme == "ct":
            x = (np.clip(x, norm.clip_low, norm.clip_high) - norm.mean) / max(norm.std, 1e-8)
        else:
            x = (x - x.mean()) / max(float(x.std()), 1e-8)
        out[c] = x
    return out


def make_plan(
    cases: Sequence[Case],
    divisor: int,
    slicewise: bool = False,
    patch_size: Sequence[int] | None = None,
    max_patch_2d: int = 256,
    max_patch_3d: Sequence[int] = (128, 128, 128),
) -> Plan:
    """Derive a :class:`Plan` from training cases.

    Args:
        cases: Training cases (the ``train`` split).
        divisor: Network down-sampling factor (patch sizes are multiples of it).
        slicewise: Train a 2D network on slices along the last axis of 3D volumes.
        patch_size: Explicit patch size (validated against ``divisor``) instead of the derived one.
        max_patch_2d: Cap per axis for 2D patches.
        max_patch_3d: Cap per axis for 3D patches.

    Raises:
        DataError: no cases, or mixed channels / dims.

    """
    if not cases:
        raise DataError("no training cases to plan from (is the 'train' split empty?)")
    dims = {c.spatial_dims for c in cases}
    chans = {c.image.shape[0] for c in cases}
    if len(dims) != 1 or len(chans) != 1:
        raise DataError(f"training cases mix spatial dims {sorted(dims)} or channels {sorted(chans)}")
    data_dims = dims.pop()
    nch = chans.pop()
    net_dims = 2 if slicewise else data_dims
    if slicewise and data_dims != 3:
        raise ConfigError("slicewise training needs a 3D dataset")
    shapes = np.array([c.spatial_shape for c in cases])
    spacings = np.array([c.spacing_mm for c in cases], dtype=float)
    median_shape = tuple(int(v) for v in np.median(shapes, axis=0))
    median_spacing = tuple(float(v) for v in np.median(spacings, axis=0))
    if patch_size is not None:
        ps = tuple(int(p) for p in patch_size)
        if len(ps) != net_dims or any(p % divisor for p in ps):
            raise ConfigError(f"patch_size {list(ps)} must have {net_dims} entries divisible by {divisor}")
    else:
        base = median_shape[:2] if slicewise else median_shape
        cap = (max_patch_2d,) * 2 if net_dims == 2 else tuple(max_patch_3d)
        ps = plan_patch_size(base, divisor, cap)
    norms = []
    for ch in range(nch):
        mins = min(float(c.image[ch].min()) for c in cases)
        if mins < -500:
            vals = []
            for c in cases:
                fg = c.raters.max(axis=0) > 0 if c.num_raters else np.ones(c.spatial_shape, bool)
                v = c.image[ch][fg] if fg.any() else c.image[ch].ravel()
                rng = np.random.default_rng(0)
                vals.append(v if v.size <= 100_000 else rng.choice(v, 100_000, replace=False))
            allv = np.concatenate(vals).astype(np.float64)
            lo, hi = np.percentile(allv, [0.5, 99.5])
            clipped = np.clip(allv, lo, hi)
            norms.append(ChannelNorm("ct", float(lo), float(hi), float(clipped.mean()), float(clipped.std())))
        else:
            norms.append(ChannelNorm("zscore"))
    return Plan(
        spatial_dims=net_dims,
        data_spatial_dims=data_dims,
        channels=nch,
        class_names=tuple(cases[0].class_names),
        patch_size=ps,
        median_spacing_mm=median_spacing,
        median_shape=median_shape,
        normalization=tuple(norms),
        slicewise=slicewise,
    )
