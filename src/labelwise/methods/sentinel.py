"""Quality Sentinel: estimate a mask's Dice with the unseen ground truth, and rank masks for review.

Wang et al., "Quality Sentinel: Estimating Label Quality and Errors in Medical Segmentation Datasets", 2024.

Pipeline (every step a plain function, the method class only wires them):

1. **Reference.** Each training case's ground truth is one rater (``reference_rater``) or the majority vote.
2. **Candidates** of varied quality for every (slice, structure) of the ``train`` split
   (:func:`build_candidates`):

   * seeded, recorded **perturbations** of the reference (:func:`perturb_mask`, built on
     :mod:`labelwise.labels.perturb`: erosion/dilation by k mm, shifts, truncation (missed part), holes,
     dropped components, boundary noise, added blobs (over-segmentation), class swaps with a neighbour);
   * **segmentation-model checkpoints**: a small 2D U-Net is trained on the same slices and its predictions
     after ``checkpoint_steps`` optimiser steps are candidates (as the original uses STU-Net checkpoints);
   * optionally the **other raters'** masks.

   The candidates are balanced over ``dice_bins`` bins of their true Dice, so Dice 0..1 is covered evenly.
3. **Input**: the slice of the image (CT clipped to ``ct_clip`` if set, else scaled by its 0.5/99.5
   percentiles; channels averaged) and the candidate mask, cropped to a square around the *candidate* mask
   (side ``(1 + 2 * crop_margin) * max(h, w)``), resized to ``crop_size``; normalised as in the original
   (image ``(x - 0.5) / 0.25``, mask ``(m - 0.5) / 0.5``).
4. **Model**: :class:`labelwise.models.sentinel.SentinelNet` with structure embeddings
   (:mod:`labelwise.models.text`, learned per-class corrections for the training structures).
5. **Loss** (:func:`sentinel_loss`): weighted MSE (weights 7/5/3/2/1 for true Dice <= 0.3/0.5/0.7/0.9/1) plus
   a pairwise ranking loss ``mean_{i<j} relu(-(p_i - p_j)(y_i - y_j) + margin)``; Adam 1e-3, cosine schedule.
6. **3D** (:func:`score_label_map`): up to ``slices_per_structure`` evenly spaced slices where the candidate
   is non-empty, predicted Dice averaged per structure; per case the mean over structures.

Conventions: Dice of two empty masks is 1 (:func:`dice`). The predicted Dice of an **empty candidate** is
defined as 0.0 (a structure claimed absent; the model only sees non-empty masks) and flagged ``empty``.

The run also keeps the segmentation model (``segmenter`` in ``weights.safetensors``); ``predict(case)`` returns
its class probabilities, and :func:`uncertainty_scores` derives the baselines from them (mean class
probability and mean entropy inside the candidate, Dice with its flip-TTA prediction).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from labelwise.data import Case, Dataset
from labelwise.engine import (
    AugmentConfig,
    PatchSource,
    Plan,
    RunDir,
    StepContext,
    TrainConfig,
    Trainer,
    TrainTask,
    config_from_dict,
    config_to_dict,
    default_device,
    epoch_loader,
    init_distributed,
    load_weights,
    make_optimizer,
    make_plan,
    normalize_image,
    predict_probs,
    predict_slicewise,
    seed_everything,
)
from labelwise.engine.planner import PLAN_NAME
from labelwise.errors import ConfigError, DataError
from labelwise.io import Prediction
from labelwise.methods.base import Method, register_method
from labelwise.models import ModelSpec, build_model, dice_ce_loss
from labelwise.models.sentinel import ClassEmbedding, SentinelNet
from labelwise.models.text import TextBackend, embed_names
from labelwise.models.unet import divisor as unet_divisor

__all__ = [
    "CandidateSet",
    "SegProbs",
    "SentinelConfig",
    "SentinelMethod",
    "SentinelPredictor",
    "StructureScore",
    "as_binary",
    "build_candidates",
    "crop_input",
    "dice",
    "heldout_slices",
    "intensity_unit",
    "mse_weights",
    "perturb_mask",
    "ranking_loss",
    "reference_map",
    "score_label_map",
    "sentinel_loss",
    "slice_indices",
    "structure_names",
    "train_segmenter",
    "uncertainty_scores",
]

logger = logging.getLogger(__name__)

SENTINEL_META = "sentinel.json"
TEXT_CACHE = "text_embeddings.safetensors"


# ----------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class SentinelConfig:
    """Settings of Quality Sentinel.

    Attributes:
        crop_size: Side of the square model input in pixels (the paper: 256, preset ``full``).
        crop_margin: Context around the candidate's bounding box, as a fraction of its larger side per side.
        ct_clip: Clip intensities to this HU window and scale to [0, 1] (the paper: (-200, 200)); None: scale
            each case by its 0.5 and 99.5 percentiles.
        reference_rater: Rater used as ground truth for training; None: majority vote of the raters present.
        structures: Train on these structure names only (default: every foreground class present).
        slices_per_structure: Slices per structure and case (evenly spaced over the structure's extent), for
            training candidates and for 3D scoring.
        perturbations_per_slice: Perturbed candidates drawn per (slice, structure).
        rater_candidates: Use the non-reference raters' masks as candidates too.
        checkpoint_steps: Optimiser steps after which the segmentation model's predictions become candidates
            (empty: no segmentation model is trained and no baselines are available).
        segmenter: Segmentation network (2D, slice-wise for 3D data).
        segmenter_batch: Batch size of the segmentation model.
        segmenter_lr: Learning rate of the segmentation model (Adam).
        dice_bins: Balance the candidates over this many equal-width bins of true Dice (0: no balancing).
        slice_holdout: For 3D cases, group the labelled slices in blocks of this many and keep every second
            block out of training (recorded in ``meta.json``; 0: use every slice).
        text_backend: Structure-name embedding backend (``auto``, ``minilm`` or ``hashed``).
        learn_embeddings: Learn per-class corrections of the training structures' embeddings.
        text_conditioning: Use the gated text condition (False: image-only ablation).
        widths: Backbone stage widths.
        hidden_dim: Width of the gated head.
        mse_edges: Upper edges of the true-Dice bins of the MSE weights.
        mse_weights: Weights of those bins (the paper: 7, 5, 3, 2, 1).
        rank_weight: Weight of the pairwise ranking loss.
        rank_margin: Margin of the ranking loss.
        seed: Seed of candidate generation.
        train: Engine settings (Adam = AdamW with weight decay 0; cosine schedule; monitor ``pearson``).

    """

    crop_size: int = 64
    crop_margin: float = 0.25
    ct_clip: tuple[float, float] | None = None
    reference_rater: str | None = None
    structures: tuple[str, ...] | None = None
    slices_per_structure: int = 10
    perturbations_per_slice: int = 8
    rater_candidates: bool = True
    checkpoint_steps: tuple[int, ...] = (15, 40, 100)
    segmenter: ModelSpec = field(default_factory=lambda: ModelSpec("unet_tiny", {"channels": [16, 32, 64]}))
    segmenter_batch: int = 4
    segmenter_lr: float = 3e-3
    dice_bins: int = 10
    slice_holdout: int = 0
    text_backend: TextBackend = "auto"
    learn_embeddings: bool = True
    text_conditioning: bool = True
    widths: tuple[int, ...] = (16, 32, 64, 128)
    hidden_dim: int = 50
    mse_edges: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9, 1.0)
    mse_weights: tuple[float, ...] = (7.0, 5.0, 3.0, 2.0, 1.0)
    rank_weight: float = 1.0
    rank_margin: float = 0.0
    seed: int = 0
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=8,
            steps_per_epoch=40,
            batch_size=64,
            lr=1e-3,
            weight_decay=0.0,
            schedule="cosine",
            monitor="pearson",
            amp=False,
        )
    )

    def __post_init__(self) -> None:
        if self.crop_size < 16:
            raise ConfigError(f"crop_size must be >= 16, got {self.crop_size}")
        if len(self.mse_edges) != len(self.mse_weights):
            raise ConfigError("mse_edges and mse_weights must have the same length")
        if self.ct_clip is not None and not self.ct_clip[0] < self.ct_clip[1]:
            raise ConfigError(f"ct_clip must be (low, high) with low < high, got {self.ct_clip}")
        if self.slices_per_structure < 1:
            raise ConfigError("slices_per_structure must be >= 1")
        if list(self.checkpoint_steps) != sorted(set(self.checkpoint_steps)) or any(
            s < 1 for s in self.checkpoint_steps
        ):
            raise ConfigError(f"checkpoint_steps must be increasing positive steps, got {self.checkpoint_steps}")


# ----------------------------------------------------------------------------------------------- basics
def as_binary(mask: np.ndarray, what: str = "mask") -> np.ndarray:
    """Check that ``mask`` is binary and return it as bool.

    Args:
        mask: Any array with values in {0, 1} (bool or integer).
        what: Name used in the error message (e.g. ``"case 3, rater fast"``).

    Raises:
        DataError: values other than 0 and 1 (a multi-class map where a binary mask is expected).

    """
    m = np.asarray(mask)
    if m.dtype == bool:
        return m
    vals = np.unique(m)
    if not np.isin(vals, (0, 1)).all():
        raise DataError(
            f"{what}: expected a binary mask (values 0/1) but found values {vals[:8].tolist()}; "
            "pass one structure's mask (label_map == k)"
        )
    return m.astype(bool)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks of the same shape; 1.0 when both are empty (labelwise's quality convention)."""
    if a.shape != b.shape:
        raise DataError(f"mask shapes differ: {a.shape} vs {b.shape}")
    sa, sb = int(a.sum()), int(b.sum())
    if sa + sb == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a, b).sum()) / (sa + sb)


def intensity_unit(image: np.ndarray, ct_clip: tuple[float, float] | None = None) -> np.ndarray:
    """Map a ``(C, *spatial)`` image to one ``(*spatial)`` float32 channel in [0, 1].

    Channels are averaged. With ``ct_clip=(lo, hi)`` values are clipped to the window and scaled linearly;
    otherwise by the image's 0.5 and 99.5 percentiles (a constant image gives zeros).
    """
    x = np.asarray(image, dtype=np.float32)
    x = x.mean(axis=0) if x.ndim >= 3 else x
    if ct_clip is not None:
        lo, hi = float(ct_clip[0]), float(ct_clip[1])
    else:
        lo, hi = (float(v) for v in np.percentile(x, [0.5, 99.5]))
    if hi <= lo:
        return np.zeros_like(x, dtype=np.float32)
    return np.asarray(np.clip((x - lo) / (hi - lo), 0.0, 1.0), dtype=np.float32)


def _box(mask: np.ndarray, margin: float) -> tuple[int, int, int]:
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = max(8, math.ceil(max(y1 - y0, x1 - x0) * (1 + 2 * margin)))
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    return round(cy - side / 2), round(cx - side / 2), side


def _extract(a: np.ndarray, top: int, left: int, side: int, fill: float) -> np.ndarray:
    out = np.full((side, side), fill, dtype=np.float32)
    h, w = a.shape
    ys, ye = max(top, 0), min(top + side, h)
    xs, xe = max(left, 0), min(left + side, w)
    if ys < ye and xs < xe:
        out[ys - top : ye - top, xs - left : xe - left] = a[ys:ye, xs:xe]
    return out


def crop_input(image_unit: np.ndarray, mask: np.ndarray, size: int, margin: float = 0.25) -> np.ndarray:
    """The model input for one 2D slice: image and mask cropped square around the mask, resized, normalised.

    Args:
        image_unit: ``(H, W)`` float32 image in [0, 1] (see :func:`intensity_unit`).
        mask: ``(H, W)`` binary candidate mask; must be non-empty.
        size: Output side in pixels.
        margin: Context per side as a fraction of the mask's larger bounding-box side.

    Returns:
        ``(2, size, size)`` float32: image ``(x - 0.5) / 0.25`` and mask ``(m - 0.5) / 0.5`` (bilinear resize,
        antialiased when shrinking). Outside the image the crop is padded with 0 (image) and 0 (mask).

    Raises:
        DataError: shapes differ or the mask is empty.

    """
    m = as_binary(mask)
    if image_unit.shape != m.shape:
        raise DataError(f"mask shape {m.shape} does not match image shape {image_unit.shape}")
    if not m.any():
        raise DataError("empty mask: there is nothing to crop around (its predicted Dice is defined as 0)")
    top, left, side = _box(m, margin)
    pair = np.stack([_extract(image_unit, top, left, side, 0.0), _extract(m.astype(np.float32), top, left, side, 0.0)])
    t = torch.from_numpy(pair)[None]
    t = torch.nn.functional.interpolate(
        t, size=(size, size), mode="bilinear", align_corners=False, antialias=side > size
    )
    out = t[0].numpy()
    out[0] = (out[0] - 0.5) / 0.25
    out[1] = (np.clip(out[1], 0, 1) - 0.5) / 0.5
    return np.asarray(out, dtype=np.float32)


def slice_indices(mask: np.ndarray, k: int, allowed: Sequence[int] | None = None) -> list[int]:
    """Up to ``k`` evenly spaced indices (last axis) of the slices where a 3D ``mask`` is non-empty.

    Args:
        mask: ``(*spatial)`` 3D binary mask.
        k: Maximum number of slices.
        allowed: Restrict to these slice indices (e.g. the labelled or held-out slices).

    Returns:
        Sorted slice indices (empty list for an empty mask).

    """
    present = np.nonzero(np.asarray(mask).reshape(-1, mask.shape[-1]).any(axis=0))[0]
    if allowed is not None:
        present = np.intersect1d(present, np.asarray(list(allowed), dtype=int))
    if present.size <= k:
        return [int(v) for v in present]
    pos = np.round(np.linspace(0, present.size - 1, k)).astype(int)
    return [int(v) for v in present[np.unique(pos)]]


def heldout_slices(labelled: Sequence[int], block: int) -> tuple[list[int], list[int]]:
    """Split labelled slice indices into (train, held out): alternating blocks of ``block`` slices (0: all train)."""
    idx = sorted(int(v) for v in labelled)
    if block <= 0:
        return idx, []
    train = [z for i, z in enumerate(idx) if (i // block) % 2 == 0]
    return train, [z for z in idx if z not in set(train)]


# ----------------------------------------------------------------------------------------------- losses
def mse_weights(target: torch.Tensor, edges: Sequence[float], weights: Sequence[float]) -> torch.Tensor:
    """Per-sample MSE weight: ``weights[i]`` for the first edge with ``target <= edges[i]`` (last weight above)."""
    w = torch.full_like(target, float(weights[-1]))
    for e, v in reversed(list(zip(edges, weights, strict=True))):
        w = torch.where(target <= e, torch.full_like(target, float(v)), w)
    return w


def ranking_loss(pred: torch.Tensor, target: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """Pairwise ranking loss ``mean_{i<j} relu(-(p_i - p_j)(y_i - y_j) + margin)`` over a batch (0 if B < 2)."""
    b = pred.shape[0]
    if b < 2:
        return pred.sum() * 0.0
    dp = pred[:, None] - pred[None, :]
    dy = target[:, None] - target[None, :]
    iu = torch.triu_indices(b, b, offset=1, device=pred.device)
    return torch.relu(-(dp * dy)[iu[0], iu[1]] + margin).mean()


def sentinel_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    edges: Sequence[float] = (0.3, 0.5, 0.7, 0.9, 1.0),
    weights: Sequence[float] = (7.0, 5.0, 3.0, 2.0, 1.0),
    rank_weight: float = 1.0,
    margin: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Weighted MSE + ranking loss of predicted vs true Dice, both ``(B,)`` in [0, 1].

    Returns:
        ``{"loss", "mse", "rank"}`` scalars; ``mse = mean(w(y) * (p - y)^2)``.

    """
    mse = (mse_weights(target, edges, weights) * (pred - target) ** 2).mean()
    rank = ranking_loss(pred, target, margin)
    return {"loss": mse + rank_weight * rank, "mse": mse.detach(), "rank": rank.detach()}


# ----------------------------------------------------------------------------------------------- perturbations
def perturb_mask(
    ref_slice: np.ndarray,
    k: int,
    n: int,
    rng: np.random.Generator,
    spacing_mm: Sequence[float] = (1.0, 1.0),
    swap_p: float = 0.1,
) -> list[tuple[np.ndarray, list[dict[str, Any]], float]]:
    """``n`` seeded, recorded perturbations of structure ``k`` of a 2D reference map, Dice 0..1 covered evenly.

    Uses :func:`labelwise.labels.perturb.sample_candidates` (erosion/dilation by mm, shifts, truncation,
    boundary noise, holes, added blobs, dropped components; each candidate aims at a target Dice drawn from
    its own bin of [0, 1]). With probability ``swap_p`` per candidate, if the slice holds another structure,
    a class swap (:func:`labelwise.labels.perturb.class_swap`) replaces it: the mask of a neighbouring
    structure claimed as ``k``.

    Args:
        ref_slice: ``(H, W)`` integer reference label map.
        k: The structure's class index (must be present).
        n: Number of candidates.
        rng: Generator (the only source of randomness).
        spacing_mm: In-plane pixel size, mm.
        swap_p: Probability of a class swap per candidate.

    Returns:
        ``[(mask (H, W) bool, records (JSON-ready, replayable on ref_slice == k), true Dice)]``.

    """
    from labelwise.labels.perturb import class_swap, sample_candidates

    gt = np.asarray(ref_slice) == k
    if not gt.any():
        raise DataError(f"structure {k} is absent from this slice: nothing to perturb")
    out: list[tuple[np.ndarray, list[dict[str, Any]], float]] = []
    for c in sample_candidates(gt, n, spacing_mm=tuple(spacing_mm), seed=rng):
        out.append((np.asarray(c.mask, dtype=bool), [p.to_json() for p in c.perturbations], float(c.dice)))
    others = [int(j) for j in np.unique(ref_slice) if j not in (0, k)]
    if others:
        for i in range(len(out)):
            if rng.random() < swap_p:
                j = others[int(rng.integers(len(others)))]
                swapped, rec = class_swap(np.asarray(ref_slice), k, j)
                m = np.asarray(swapped == k)
                out[i] = (m, [rec.to_json()], dice(m, gt))
    return out


# ----------------------------------------------------------------------------------------------- candidates
def reference_map(case: Case, rater: str | None = None) -> np.ndarray | None:
    """The ground-truth label map ``(*spatial)`` int16 of a case: one rater, or the per-voxel majority vote.

    Majority ties go to the lower class index. Returns None when the case has no (such) rater.
    """
    if case.num_raters == 0:
        return None
    if rater is not None:
        if rater not in case.rater_ids:
            return None
        return np.asarray(case.raters[case.rater_ids.index(rater)], dtype=np.int16)
    if case.num_raters == 1:
        return np.asarray(case.raters[0], dtype=np.int16)
    k = int(case.raters.max()) + 1
    counts = np.stack([(case.raters == c).sum(axis=0) for c in range(k)])
    return np.asarray(np.argmax(counts, axis=0), dtype=np.int16)


@dataclass
class CandidateSet:
    """Training (or evaluation) candidates as model-ready arrays.

    Attributes:
        inputs: ``(N, 2, S, S)`` float16 model inputs (see :func:`crop_input`).
        structure: ``(N,)`` int64 index into ``names``.
        names: Structure names.
        dice: ``(N,)`` float32 true Dice of each candidate with the reference on its slice.
        records: Per candidate: case, slice, structure, source and the perturbation record.

    """

    inputs: np.ndarray
    structure: np.ndarray
    names: list[str]
    dice: np.ndarray
    records: list[dict[str, Any]]

    def __len__(self) -> int:
        return int(self.dice.shape[0])

    def histogram(self, bins: int = 10) -> list[int]:
        """Counts of true Dice in ``bins`` equal bins of [0, 1]."""
        return [int(v) for v in np.histogram(self.dice, bins=bins, range=(0.0, 1.0))[0]]


def _slices_of(case: Case, allowed: Sequence[int] | None) -> list[int | None]:
    if case.spatial_dims == 2:
        return [None]
    idx = (
        list(allowed)
        if allowed is not None
        else (list(case.labelled_slices) if case.labelled_slices is not None else list(range(case.spatial_shape[-1])))
    )
    return [int(z) for z in idx]


def _take(a: np.ndarray, z: int | None) -> np.ndarray:
    return a if z is None else a[..., z]


def structure_names(dataset_classes: Sequence[str], wanted: Sequence[str] | None) -> list[tuple[int, str]]:
    """(class index, name) of the structures to use; unknown names raise :class:`DataError` listing the classes."""
    classes = list(dataset_classes)
    if wanted is None:
        return [(i, n) for i, n in enumerate(classes) if i > 0]
    out = []
    for n in wanted:
        if n not in classes:
            raise DataError(f"unknown structure {n!r}; the dataset's structures are {classes[1:]}")
        out.append((classes.index(n), n))
    return out


def build_candidates(
    cases: Sequence[Case],
    cfg: SentinelConfig,
    seed: int,
    slice_filter: Mapping[str, Sequence[int]] | None = None,
    snapshots: Mapping[str, Sequence[np.ndarray]] | None = None,
    perturbations_per_slice: int | None = None,
    balance: bool = True,
) -> CandidateSet:
    """Generate candidates with their true Dice for every (slice, structure) of ``cases``.

    Args:
        cases: Labelled cases (the reference from ``cfg.reference_rater`` or the majority vote).
        cfg: Settings (structures, slices per structure, perturbations, crop, intensity window, bins).
        seed: Seed of the perturbations and the balancing.
        slice_filter: Case id -> allowed slice indices (3D); default: the labelled slices.
        snapshots: Case id -> label maps ``(*spatial)`` predicted by segmentation-model checkpoints.
        perturbations_per_slice: Override of ``cfg.perturbations_per_slice``.
        balance: Balance over ``cfg.dice_bins`` Dice bins.

    Returns:
        The candidate set (possibly empty: ``N = 0``).

    """
    rng = np.random.default_rng(seed)
    n_pert = cfg.perturbations_per_slice if perturbations_per_slice is None else perturbations_per_slice
    inputs: list[np.ndarray] = []
    dices: list[float] = []
    records: list[dict[str, Any]] = []
    names: list[str] = []
    name_idx: dict[str, int] = {}
    struct: list[int] = []

    def add(x: np.ndarray, d: float, name: str, rec: dict[str, Any]) -> None:
        if name not in name_idx:
            name_idx[name] = len(names)
            names.append(name)
        inputs.append(x.astype(np.float16))
        dices.append(d)
        struct.append(name_idx[name])
        records.append(rec)

    for case in cases:
        ref = reference_map(case, cfg.reference_rater)
        if ref is None:
            continue
        unit = intensity_unit(case.image, cfg.ct_clip)
        allowed = slice_filter.get(case.id) if slice_filter is not None else None
        zs_all = _slices_of(case, allowed)
        others_r = (
            [(rid, case.raters[i]) for i, rid in enumerate(case.rater_ids) if rid != cfg.reference_rater]
            if cfg.rater_candidates and case.num_raters > 1
            else []
        )
        for k, name in structure_names(case.class_names, cfg.structures):
            gt3 = ref == k
            if not gt3.any():
                continue
            zs: list[int | None] = [None]
            if case.spatial_dims == 3:
                zs = list(slice_indices(gt3, cfg.slices_per_structure, [int(v) for v in zs_all if v is not None]))
            for z in zs:
                img, gt = _take(unit, z), _take(gt3, z)
                if not gt.any():
                    continue
                ref_z = _take(ref, z)
                base = {"case": case.id, "slice": z, "structure": name}
                for cand, rec, _d in perturb_mask(ref_z, k, n_pert, rng, case.spacing_mm[:2]) if n_pert else []:
                    if cand.any():
                        add(
                            crop_input(img, cand, cfg.crop_size, cfg.crop_margin),
                            dice(cand, gt),
                            name,
                            {**base, "source": "perturb", "record": rec},
                        )
                for rid, rmap in others_r:
                    cand = _take(rmap, z) == k
                    if cand.any():
                        add(
                            crop_input(img, cand, cfg.crop_size, cfg.crop_margin),
                            dice(cand, gt),
                            name,
                            {**base, "source": f"rater:{rid}", "record": []},
                        )
                for s, snap in enumerate((snapshots or {}).get(case.id, [])):
                    cand = _take(snap, z) == k
                    if cand.any():
                        add(
                            crop_input(img, cand, cfg.crop_size, cfg.crop_margin),
                            dice(cand, gt),
                            name,
                            {**base, "source": f"checkpoint:{cfg.checkpoint_steps[s]}", "record": []},
                        )
    s = cfg.crop_size
    cs = CandidateSet(
        inputs=np.stack(inputs) if inputs else np.zeros((0, 2, s, s), np.float16),
        structure=np.asarray(struct, dtype=np.int64),
        names=names,
        dice=np.asarray(dices, dtype=np.float32),
        records=records,
    )
    if balance and cfg.dice_bins > 0 and len(cs):
        cs = _balance(cs, cfg.dice_bins, rng)
    return cs


def _balance(cs: CandidateSet, bins: int, rng: np.random.Generator) -> CandidateSet:
    """Keep at most ``ceil(1.5 N / bins)`` candidates per Dice bin (random subset) so Dice 0..1 is even."""
    b = np.minimum((cs.dice * bins).astype(int), bins - 1)
    cap = math.ceil(1.5 * len(cs) / bins)
    keep: list[int] = []
    for i in range(bins):
        idx = np.nonzero(b == i)[0]
        keep.extend(idx if idx.size <= cap else rng.choice(idx, cap, replace=False))
    k = np.sort(np.asarray(keep, dtype=int))
    return CandidateSet(cs.inputs[k], cs.structure[k], cs.names, cs.dice[k], [cs.records[i] for i in k])


# ----------------------------------------------------------------------------------------------- segmenter
def _seg_training(
    cases: Sequence[Case], cfg: SentinelConfig, plan: Plan, slice_filter: Mapping[str, Sequence[int]]
) -> tuple[list[dict[str, np.ndarray]], list[str]]:
    arrays, ids = [], []
    for case in cases:
        ref = reference_map(case, cfg.reference_rater)
        if ref is None:
            continue
        img = normalize_image(case.image, plan)
        onehot = (np.arange(plan.num_classes).reshape(-1, *([1] * ref.ndim)) == ref[None]).astype(np.float32)
        for z in _slices_of(case, slice_filter.get(case.id)):
            arrays.append({"image": _take(img, z), "target": _take(onehot, z)})
            ids.append(f"{case.id}:{z}")
    return arrays, ids


def _seg_predict(
    net: torch.nn.Module,
    case: Case,
    plan: Plan,
    tta: bool,
    device: torch.device,
    slices: Sequence[int] | None = None,
) -> np.ndarray:
    """Class probabilities ``(K, *spatial)``; for 3D with ``slices``: ``(K, H, W, len(slices))`` of those only."""
    img = normalize_image(case.image, plan)
    if plan.slicewise:
        if slices is not None:
            img = img[..., list(slices)]
        return predict_slicewise(net, img, plan.patch_size, 0.5, tta, device=device, amp=False)
    return predict_probs(net, img, plan.patch_size, 0.5, tta, device=device, amp=False)


SegProbs = np.ndarray | dict[int, np.ndarray]
"""Segmentation-model probabilities: ``(K, H, W)`` for a 2D case, or slice index -> ``(K, H, W)`` for 3D."""


def _seg_slice(seg: SegProbs, z: int | None) -> np.ndarray:
    if isinstance(seg, dict):
        if z is None or z not in seg:
            raise DataError(f"no segmentation-model probabilities for slice {z}")
        return seg[z]
    return _take(seg, z)


def train_segmenter(
    cases: Sequence[Case],
    cfg: SentinelConfig,
    plan: Plan,
    slice_filter: Mapping[str, Sequence[int]],
    device: torch.device,
) -> tuple[torch.nn.Module, dict[str, list[np.ndarray]]]:
    """Train the slice-wise segmentation model and snapshot its label maps at ``cfg.checkpoint_steps``.

    Returns:
        ``(network after the last step, {case id: [label map (*spatial) int16 per checkpoint]})``.

    """
    net = build_model(cfg.segmenter, plan.spatial_dims, plan.channels, plan.num_classes).to(device)
    arrays, ids = _seg_training(cases, cfg, plan, slice_filter)
    if not arrays:
        raise DataError("no labelled training slices for the segmentation model")
    source = PatchSource(arrays, plan.patch_size, AugmentConfig(), "target", 0.5, ids, seed=cfg.seed)
    tcfg = TrainConfig(lr=cfg.segmenter_lr, weight_decay=0.0, batch_size=cfg.segmenter_batch)
    opt = make_optimizer(net.parameters(), tcfg)
    snaps: dict[str, list[np.ndarray]] = {c.id: [] for c in cases}
    step, epoch = 0, 0
    last = max(cfg.checkpoint_steps)
    while step < last:
        for batch in epoch_loader(source, cfg.seed, epoch, cfg.segmenter_batch, 50):
            net.train()
            opt.zero_grad(set_to_none=True)
            loss = dice_ce_loss(net(batch["image"].to(device)), batch["target"].to(device))
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            step += 1
            if step in cfg.checkpoint_steps:
                net.eval()
                with torch.inference_mode():
                    for c in cases:
                        zs = slice_filter.get(c.id) if c.spatial_dims == 3 else None
                        lab = np.asarray(np.argmax(_seg_predict(net, c, plan, False, device, zs), axis=0), np.int16)
                        if zs is not None:
                            full = np.zeros(c.spatial_shape, np.int16)
                            full[..., list(zs)] = lab
                            lab = full
                        snaps[c.id].append(lab)
                logger.info("segmenter checkpoint at step %d (loss %.3f)", step, float(loss.detach()))
            if step >= last:
                break
        epoch += 1
    net.eval()
    return net, snaps


# ----------------------------------------------------------------------------------------------- training
class _CandidateSource:
    """Samples candidates uniformly with random flips / transposes of the crop (both channels alike)."""

    def __init__(self, cs: CandidateSet) -> None:
        self.cs = cs

    def sample(self, epoch: int, index: int, rng: np.random.Generator) -> dict[str, Any]:
        i = int(rng.integers(len(self.cs)))
        x = self.cs.inputs[i].astype(np.float32)
        if rng.random() < 0.5:
            x = x[:, :, ::-1]
        if rng.random() < 0.5:
            x = x[:, ::-1, :]
        if rng.random() < 0.5:
            x = x.transpose(0, 2, 1)
        return {"x": np.ascontiguousarray(x), "k": int(self.cs.structure[i]), "y": float(self.cs.dice[i])}


class SentinelTask(TrainTask):
    """Regress Dice with weighted MSE + ranking; validate Pearson r / MAE on perturbed val candidates."""

    def __init__(self, net: SentinelNet, emb: ClassEmbedding, cfg: SentinelConfig, val_sets: dict[str, CandidateSet]):
        self.modules = {"sentinel": net, "embedding": emb}
        self.cfg = cfg
        self.val_sets = val_sets
        self.emb = emb

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        """Loss of one batch of candidates."""
        e = ctx.module("embedding")(batch["k"])
        pred = ctx.module("sentinel")(batch["x"], e)
        c = self.cfg
        return sentinel_loss(pred.float(), batch["y"].float(), c.mse_edges, c.mse_weights, c.rank_weight, c.rank_margin)

    def validation_step(self, case: Case, ctx: StepContext) -> dict[str, float]:
        """Pearson r and MAE (as ``neg_mae``) of the val case's perturbed candidates."""
        cs = self.val_sets.get(case.id)
        if cs is None or len(cs) < 2:
            return {}
        net = self.modules["sentinel"]
        fallback = embed_names(cs.names, self.cfg.text_backend)
        table = self.emb.lookup(cs.names, fallback)
        preds = []
        for i in range(0, len(cs), 256):
            x = torch.from_numpy(cs.inputs[i : i + 256].astype(np.float32)).to(ctx.device)
            e = table[torch.from_numpy(cs.structure[i : i + 256]).to(table.device)]
            preds.append(net(x, e).float().cpu().numpy())
        p = np.concatenate(preds)
        from labelwise.metrics import mae, pearson

        return {"pearson": pearson(p, cs.dice), "neg_mae": -mae(p, cs.dice)}


def _segmenter_divisor(spec: ModelSpec) -> int:
    """Down-sampling factor of the U-Net-like segmenter (its ``channels`` argument or the factory default)."""
    import inspect

    from labelwise.models import MODELS

    channels = spec.kwargs.get("channels")
    if channels is None:
        param = inspect.signature(MODELS.get(spec.name)).parameters.get("channels")
        channels = param.default if param is not None and param.default is not inspect.Parameter.empty else (1,)
    return unet_divisor(channels)


def _build_net(cfg: SentinelConfig, text_dim: int) -> SentinelNet:
    return SentinelNet(2, text_dim, cfg.widths, cfg.hidden_dim, cfg.text_conditioning)


@register_method("sentinel")
class SentinelMethod(Method):
    """Quality Sentinel: text-conditioned Dice regression from (image, candidate mask, structure name)."""

    Config = SentinelConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {
            "crop_size": 256,
            "ct_clip": [-200, 200],
            "perturbations_per_slice": 16,
            "checkpoint_steps": [10, 20, 30, 40, 50, 100, 200, 300, 400, 500],
            "train": {"epochs": 100, "steps_per_epoch": 100, "batch_size": 128},
        },
        "ct": {"ct_clip": [-200, 200]},
        "smoke": {
            "crop_size": 16,
            "perturbations_per_slice": 3,
            "checkpoint_steps": [2],
            "segmenter": {"name": "unet_tiny", "kwargs": {"channels": [4, 8, 16]}},
            "widths": [4, 8],
            "hidden_dim": 8,
            "text_backend": "hashed",
            "train": {"epochs": 2, "steps_per_epoch": 3, "batch_size": 8},
        },
    }
    citation = (
        "Wang et al., Quality Sentinel: Estimating Label Quality and Errors in Medical Segmentation Datasets, 2024"
    )
    summary = "Predicts each mask's Dice without ground truth (image + mask + structure name) to rank labels"

    @classmethod
    def fit(cls, dataset: Dataset, config: SentinelConfig, run_dir: str | Path) -> None:
        """Generate candidates, train the segmenter snapshots and the sentinel, write the run directory."""
        rd = RunDir(run_dir)
        resumed = rd.prepare(cls.name, config_to_dict(config), dataset)
        if config.reference_rater is not None and config.reference_rater not in dataset.rater_ids:
            raise ConfigError(
                f"reference_rater {config.reference_rater!r} is not one of the raters {list(dataset.rater_ids)}"
            )
        structure_names(dataset.class_names, config.structures)  # unknown names fail early
        seed_everything(config.train.seed)
        device = default_device()
        train_cases = [c for c in dataset.cases("train") if c.num_raters]
        if not train_cases:
            raise DataError(f"{dataset.root}: no labelled cases in the train split")
        slice_filter: dict[str, list[int]] = {}
        held: dict[str, list[int]] = {}
        for c in train_cases:
            if c.spatial_dims == 3:
                labelled = c.labelled_slices if c.labelled_slices is not None else range(c.spatial_shape[-1])
                slice_filter[c.id], held[c.id] = heldout_slices(list(labelled), config.slice_holdout)
        plan_path = rd.path / PLAN_NAME
        slicewise = dataset.spatial_dims == 3
        div = _segmenter_divisor(config.segmenter)
        if resumed and plan_path.exists():
            plan = Plan.load(plan_path)
        else:
            plan = make_plan(train_cases, div, slicewise)
            plan.save(plan_path)
        seg_net: torch.nn.Module | None = None
        snaps: dict[str, list[np.ndarray]] = {}
        if config.checkpoint_steps:
            seg_net, snaps = train_segmenter(train_cases, config, plan, slice_filter, device)
        cands = build_candidates(train_cases, config, config.seed, slice_filter, snaps)
        if len(cands) < 2:
            raise DataError(f"{dataset.root}: fewer than 2 training candidates (are the masks empty?)")
        logger.info("sentinel: %d candidates, Dice histogram %s", len(cands), cands.histogram())
        val_sets = {
            c.id: build_candidates(
                [c], config, config.seed + 1 + i, None, None, max(4, config.perturbations_per_slice), balance=False
            )
            for i, c in enumerate(dataset.cases("val"))
            if c.num_raters
        }
        base = embed_names(cands.names, config.text_backend, rd.path / TEXT_CACHE)
        emb = ClassEmbedding(cands.names, base, config.learn_embeddings)
        net = _build_net(config, base.shape[1])
        task = SentinelTask(net, emb, config, val_sets)
        if seg_net is not None:
            seg_net.requires_grad_(False)
            task.modules["segmenter"] = seg_net
        val_cases = [c for c in dataset.cases("val") if c.id in val_sets]
        result = Trainer(task, config.train, rd.path, _CandidateSource(cands), val_cases).fit()
        if init_distributed().is_main:
            from labelwise.io.atomic import write_json_atomic
            from labelwise.models.text import minilm_available

            backend = config.text_backend
            if backend == "auto":
                backend = "minilm" if minilm_available() else "hashed"
            write_json_atomic(
                rd.path / SENTINEL_META,
                {
                    "structures": cands.names,
                    "text_backend": backend,
                    "text_dim": int(base.shape[1]),
                    "segmenter": seg_net is not None,
                },
            )
            rd.write_meta(
                status="finished",
                best_epoch=result.best_epoch,
                val_metrics=result.best_metrics,
                steps=result.steps,
                train_cases=len(train_cases),
                val_cases=len(val_cases),
                candidates=len(cands),
                candidate_dice_histogram=cands.histogram(),
                candidate_sources=_count_sources(cands),
                heldout_slices=held,
            )

    @classmethod
    def load_predictor(cls, run_dir: str | Path, device: torch.device | str | None = None) -> SentinelPredictor:
        """Rebuild the sentinel (and its segmentation model) from the run directory."""
        return SentinelPredictor(run_dir, device)


def _count_sources(cs: CandidateSet) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in cs.records:
        key = str(r["source"]).split(":")[0]
        out[key] = out.get(key, 0) + 1
    return out


# ----------------------------------------------------------------------------------------------- scoring
@dataclass(frozen=True)
class StructureScore:
    """Predicted quality of one structure of one candidate label map.

    Attributes:
        structure: Structure name.
        predicted_dice: Mean predicted Dice over the scored slices (0.0 for an empty candidate).
        slices: Scored slice indices (3D) or ``(None,)`` (2D); empty for an empty candidate.
        slice_scores: Predicted Dice per scored slice.
        empty: The candidate has no voxel of this structure in the allowed slices.
        baselines: Uncertainty baselines (name -> score), when requested.
        slice_baselines: Per baseline, the per-slice scores.

    """

    structure: str
    predicted_dice: float
    slices: tuple[int | None, ...]
    slice_scores: tuple[float, ...]
    empty: bool = False
    baselines: dict[str, float] = field(default_factory=dict)
    slice_baselines: dict[str, tuple[float, ...]] = field(default_factory=dict)


def uncertainty_scores(
    probs: np.ndarray, mask: np.ndarray, k: int, tta_label: np.ndarray | None = None
) -> dict[str, float]:
    """Uncertainty baselines for one candidate mask of class ``k`` on one slice.

    Args:
        probs: ``(K, H, W)`` segmentation-model class probabilities (flip-TTA mean).
        mask: ``(H, W)`` non-empty binary candidate.
        k: The structure's class index.
        tta_label: ``(H, W)`` argmax of the TTA-mean prediction (default: argmax of ``probs``).

    Returns:
        ``{"softmax": mean p_k inside the candidate, "entropy": 1 - mean normalised entropy inside the
        candidate, "tta_dice": Dice(candidate, tta_label == k)}``; each in [0, 1], higher = better.

    """
    m = as_binary(mask)
    p = np.clip(probs[:, m], 1e-8, 1.0)
    ent = float((-(p * np.log(p)).sum(axis=0) / math.log(max(probs.shape[0], 2))).mean())
    lab = np.argmax(probs, axis=0) if tta_label is None else tta_label
    return {"softmax": float(probs[k][m].mean()), "entropy": 1.0 - ent, "tta_dice": dice(m, lab == k)}


class SentinelPredictor:
    """A trained sentinel: scores masks; ``predict(case)`` gives the segmentation model's probabilities.

    Args:
        run_dir: The run directory.
        device: Device (default: CUDA if available).

    """

    def __init__(self, run_dir: str | Path, device: torch.device | str | None = None) -> None:
        import json

        rd = RunDir(run_dir)
        _, cfg_map = rd.read_config()
        self.config: SentinelConfig = config_from_dict(SentinelConfig, cfg_map)
        if not rd.weights_path.exists():
            raise DataError("no weights.safetensors (training did not finish an epoch)", rd.path)
        meta_path = rd.path / SENTINEL_META
        if not meta_path.is_file():
            raise DataError(f"no {SENTINEL_META} (training did not finish)", rd.path)
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        self.structures: list[str] = list(meta["structures"])
        self.text_backend: TextBackend = meta["text_backend"]
        self.device = torch.device(device) if device is not None else default_device()
        self.plan = Plan.load(rd.path / PLAN_NAME)
        self.net = _build_net(self.config, int(meta["text_dim"]))
        self.text_cache = rd.path / TEXT_CACHE
        base = embed_names(self.structures, self.text_backend, self.text_cache)
        self.emb = ClassEmbedding(self.structures, base, self.config.learn_embeddings)
        modules: dict[str, torch.nn.Module] = {"sentinel": self.net, "embedding": self.emb}
        self.segmenter: torch.nn.Module | None = None
        if meta.get("segmenter"):
            self.segmenter = build_model(
                self.config.segmenter, self.plan.spatial_dims, self.plan.channels, self.plan.num_classes
            )
            modules["segmenter"] = self.segmenter
        load_weights(rd.weights_path, modules)
        for m in modules.values():
            m.to(self.device).eval()

    def embeddings(self, names: Sequence[str]) -> torch.Tensor:
        """``(N, D)`` embeddings; names unseen in training get their text/hashed vector (logged)."""
        from labelwise.models.text import normalize_name

        unseen = sorted({n for n in names if normalize_name(n) not in self.emb.index})
        if unseen:
            logger.info("structures not seen in training (text embedding only): %s", unseen)
        with torch.inference_mode():
            fallback = embed_names(names, self.text_backend)
            return self.emb.lookup(names, fallback).to(self.device)

    def score_inputs(self, inputs: np.ndarray, names: Sequence[str], batch: int = 256) -> np.ndarray:
        """Predicted Dice ``(N,)`` float32 of model inputs ``(N, 2, S, S)`` (see :func:`crop_input`)."""
        if len(inputs) != len(names):
            raise DataError(f"{len(inputs)} inputs for {len(names)} structure names")
        if len(inputs) == 0:
            return np.zeros(0, np.float32)
        uniq = sorted(set(names))
        table = self.embeddings(uniq)
        idx = torch.as_tensor([uniq.index(n) for n in names], device=self.device)
        out = []
        with torch.inference_mode():
            for i in range(0, len(inputs), batch):
                x = torch.as_tensor(np.asarray(inputs[i : i + batch], dtype=np.float32), device=self.device)
                out.append(self.net(x, table[idx[i : i + batch]]).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def score_slice(self, image: np.ndarray, mask: np.ndarray, structure: str) -> float:
        """Predicted Dice of one 2D mask.

        Args:
            image: ``(C, H, W)`` or ``(H, W)`` raw image slice.
            mask: ``(H, W)`` binary mask of ``structure``.
            structure: Structure name (unseen names use their text embedding).

        Returns:
            Predicted Dice in [0, 1]; 0.0 for an empty mask (documented convention).

        Raises:
            DataError: shape mismatch or a non-binary mask.

        """
        img = np.asarray(image)
        img = img[None] if img.ndim == 2 else img
        m = as_binary(mask, f"mask of {structure!r}")
        if m.shape != img.shape[1:]:
            raise DataError(f"mask shape {m.shape} does not match image shape {img.shape[1:]}")
        if not m.any():
            return 0.0
        x = crop_input(intensity_unit(img, self.config.ct_clip), m, self.config.crop_size, self.config.crop_margin)
        return float(self.score_inputs(x[None], [structure])[0])

    def segmenter_probs(self, case: Case, slices: Sequence[int] | None = None) -> SegProbs:
        """Flip-TTA class probabilities of the run's segmentation model.

        Returns:
            ``(K, *spatial)`` float32; for a 3D case with ``slices``: a dict slice index -> ``(K, H, W)``.

        """
        if self.segmenter is None:
            raise ConfigError("this sentinel run has no segmentation model (checkpoint_steps was empty)")
        if case.spatial_dims == 3 and slices is not None:
            zs = [int(z) for z in slices]
            probs = _seg_predict(self.segmenter, case, self.plan, True, self.device, zs)
            return {z: np.ascontiguousarray(probs[..., i]) for i, z in enumerate(zs)}
        return _seg_predict(self.segmenter, case, self.plan, True, self.device)

    def predict(self, case: Case, **options: Any) -> Prediction:
        """The segmentation model's class probabilities (protocol method; score masks with :func:`score_label_map`)."""
        probs = self.segmenter_probs(case)
        assert isinstance(probs, np.ndarray)
        return Prediction(probs=np.asarray(probs, dtype=np.float32))


def score_label_map(
    predictor: SentinelPredictor,
    case: Case,
    label_map: np.ndarray,
    structures: Sequence[str] | None = None,
    allowed_slices: Sequence[int] | None = None,
    seg_probs: SegProbs | None = None,
) -> list[StructureScore]:
    """Score every structure of a candidate label map of ``case`` (2D or 3D).

    Args:
        predictor: The trained sentinel.
        case: The case (image and class names).
        label_map: ``(*spatial)`` integer candidate map with the case's class indices.
        structures: Structure names to score (default: every foreground class present in ``label_map``);
            names not among the case's classes raise :class:`DataError`. Requested structures absent from the
            candidate get predicted Dice 0.0 and ``empty=True``.
        allowed_slices: 3D: restrict to these slice indices (default: the case's labelled slices).
        seg_probs: Segmentation-model probabilities (see :meth:`SentinelPredictor.segmenter_probs`): adds the
            uncertainty baselines.

    Returns:
        One :class:`StructureScore` per structure, in class order.

    """
    lab = np.asarray(label_map)
    if lab.shape != case.spatial_shape:
        raise DataError(f"case {case.id}: candidate shape {lab.shape} does not match the image {case.spatial_shape}")
    if allowed_slices is None and case.spatial_dims == 3 and case.labelled_slices is not None:
        allowed_slices = case.labelled_slices
    if structures is None:
        present = set(np.unique(lab).tolist()) - {0}
        if case.spatial_dims == 3 and allowed_slices is not None:
            present = set(np.unique(lab[..., list(allowed_slices)]).tolist()) - {0}
        todo = [(k, n) for k, n in enumerate(case.class_names) if k in present]
        bad = sorted(k for k in present if k >= len(case.class_names))
        if bad:
            raise DataError(f"case {case.id}: candidate has class indices {bad} beyond the {case.num_classes} classes")
    else:
        todo = structure_names(case.class_names, structures)
    unit = intensity_unit(case.image, predictor.config.ct_clip)
    jobs: list[tuple[int, int | None, np.ndarray]] = []
    inputs: list[np.ndarray] = []
    base_rows: list[dict[str, float]] = []
    for j, (k, _name) in enumerate(todo):
        m3 = lab == k
        zs: list[int | None] = (
            [None]
            if case.spatial_dims == 2
            else list(slice_indices(m3, predictor.config.slices_per_structure, allowed_slices))
        )
        for z in zs:
            m = _take(m3, z)
            if not m.any():
                continue
            jobs.append((j, z, m))
            inputs.append(crop_input(_take(unit, z), m, predictor.config.crop_size, predictor.config.crop_margin))
            if seg_probs is not None:
                base_rows.append(uncertainty_scores(_seg_slice(seg_probs, z), m, k))
    preds = predictor.score_inputs(
        np.stack(inputs) if inputs else np.zeros((0, 2, 1, 1), np.float32), [todo[j][1] for j, _, _ in jobs]
    )
    out = []
    for j, (_k, name) in enumerate(todo):
        rows = [i for i, (jj, _, _) in enumerate(jobs) if jj == j]
        if not rows:
            out.append(StructureScore(name, 0.0, (), (), empty=True))
            continue
        sl = tuple(jobs[i][1] for i in rows)
        sc = tuple(float(preds[i]) for i in rows)
        bl: dict[str, float] = {}
        sbl: dict[str, tuple[float, ...]] = {}
        if base_rows:
            for key in base_rows[rows[0]]:
                vals = tuple(base_rows[i][key] for i in rows)
                sbl[key] = vals
                bl[key] = float(np.mean(vals))
        out.append(StructureScore(name, float(np.mean(sc)), sl, sc, False, bl, sbl))
    return out
