"""What the multi-rater methods (MRNet, probabilistic U-Net, D-Persona) share on the method skeleton.

* The run's rater order (``raters.json``: the dataset's rater ids at training time, written once by rank 0 and
  recorded as ``rater_ids`` in ``meta.json``) fixes R and the meaning of every rater index (condition vectors,
  per-rater heads). Prediction refuses cases with raters the model never saw.
* Training arrays per case (or per labelled slice for ``slicewise`` 3D training): the normalised image, the rater
  stack ``(R, *spatial)`` int16 with ``-1`` for a rater missing from that case (masked in every loss), and the
  soft mean of the raters present ``(K, *spatial)`` (used to centre foreground patches). Cases without any rater
  are skipped with a warning; a training split without any rated case is a :class:`DataError`.
* Whole-image inference: the image is zero-padded to a multiple of the network's down-sampling factor and run in
  one pass (the methods use image-level latents and attention, so sliding windows would change the result);
  3D volumes trained ``slicewise`` are predicted slice by slice along the last axis.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from labelwise.data import Case, Dataset
from labelwise.data.slices import labelled_slice_indices
from labelwise.engine import AugmentConfig, PatchSource, Plan, TrainConfig, make_plan, normalize_image
from labelwise.errors import ConfigError, DataError
from labelwise.methods.base import FitContext
from labelwise.metrics import soft_dice

__all__ = [
    "RATERS_NAME",
    "MultiRaterSettings",
    "case_rater_stack",
    "check_case_raters",
    "check_raters",
    "load_rater_ids",
    "mean_foreground_soft_dice",
    "multirater_plan",
    "multirater_training",
    "predict_whole",
    "training_arrays",
]

logger = logging.getLogger(__name__)

RATERS_NAME = "raters.json"


class MultiRaterSettings(Protocol):
    """The config fields the shared planning and training code reads (every multi-rater config has them)."""

    @property
    def slicewise(self) -> bool:
        """Train a 2D network on slices of a 3D dataset."""

    @property
    def patch_size(self) -> tuple[int, ...] | None:
        """Training patch (None: the planner's)."""

    @property
    def foreground_p(self) -> float:
        """Fraction of patches centred on the raters' majority foreground."""

    @property
    def augment(self) -> AugmentConfig:
        """Augmentation settings."""

    @property
    def train(self) -> TrainConfig:
        """Engine settings (its ``seed`` seeds the patch order)."""


# --------------------------------------------------------------------------------------------------- training
def check_raters(dataset: Dataset, method: str) -> None:
    """The :meth:`~labelwise.methods.Method.check` of a multi-rater method: the dataset must declare raters.

    Raises:
        DataError: the dataset declares no raters.

    """
    if not dataset.rater_ids:
        raise DataError(f"{dataset.root}: {method} needs a dataset with raters")


def multirater_plan(dataset: Dataset, config: MultiRaterSettings, divisor: int) -> Plan:
    """The plan of a multi-rater run: patch size and normalisation from the ``train`` split."""
    return make_plan(list(dataset.cases("train")), divisor, config.slicewise, config.patch_size)


def multirater_training(fit: FitContext[Any]) -> tuple[tuple[str, ...], PatchSource, list[Case]]:
    """The rater order, the patch source and the validation cases of a multi-rater run.

    Rank 0 writes ``raters.json`` once (a run started afresh in a folder that held an untrained run drops the
    stale one first; a resumed run keeps it); every rank then reads it. The rater order is added to ``fit.meta``.

    Returns:
        ``(rater_ids, source, val_cases)``.

    """
    stale = fit.path / RATERS_NAME
    if fit.dist.is_main and not fit.resumed:
        stale.unlink(missing_ok=True)
    fit.write_json_once(RATERS_NAME, {"rater_ids": list(fit.dataset.rater_ids)})
    rater_ids = load_rater_ids(fit.path)
    fit.meta["rater_ids"] = list(rater_ids)
    config: MultiRaterSettings = fit.config
    arrays, ids = training_arrays(fit.dataset, fit.plan, rater_ids)
    source = PatchSource(
        arrays, fit.plan.patch_size, config.augment, "mean", config.foreground_p, ids, seed=config.train.seed
    )
    return rater_ids, source, list(fit.dataset.cases("val"))


def load_rater_ids(run_dir: Path) -> tuple[str, ...]:
    """Read the run's rater order (:class:`DataError` if missing or malformed)."""
    path = run_dir / RATERS_NAME
    try:
        return tuple(str(r) for r in json.loads(path.read_text(encoding="utf-8"))["rater_ids"])
    except FileNotFoundError:
        raise DataError("no raters.json: not a multi-rater run directory", run_dir) from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"malformed rater list ({exc})", path) from None


def check_case_raters(case: Case, rater_ids: Sequence[str]) -> None:
    """Raise :class:`ConfigError` if ``case`` has a rater the model does not know (ids differ from training)."""
    unknown = sorted(set(case.rater_ids) - set(rater_ids))
    if unknown:
        raise ConfigError(
            f"case {case.id}: raters {unknown} are not among the {len(rater_ids)} raters the model was trained "
            f"with ({list(rater_ids)})"
        )


def case_rater_stack(case: Case, rater_ids: Sequence[str]) -> np.ndarray:
    """The case's raters in the model's order: ``(R, *spatial)`` int16, ``-1`` everywhere for a missing rater.

    Raises:
        ConfigError: the case has a rater the model does not know (rater count/ids differ from training).

    """
    check_case_raters(case, rater_ids)
    labels, present = case.rater_stack(tuple(rater_ids))
    labels[~present] = -1
    return labels


def training_arrays(
    dataset: Dataset, plan: Plan, rater_ids: Sequence[str]
) -> tuple[list[dict[str, np.ndarray]], list[str]]:
    """Per-case (or per-slice) arrays ``{"image", "raters", "mean"}`` of the train split (see module doc)."""
    arrays: list[dict[str, np.ndarray]] = []
    ids: list[str] = []
    k = plan.num_classes
    skipped = []
    for case in dataset.cases("train"):
        if case.num_raters == 0:
            skipped.append(case.id)
            continue
        stack = case_rater_stack(case, rater_ids)
        if int(stack.max()) >= k:
            raise DataError(f"case {case.id}: label values outside 0..{k - 1}")
        present = stack.reshape(stack.shape[0], -1).min(axis=1) >= 0
        onehot = np.arange(k).reshape(-1, 1, *([1] * (stack.ndim - 1))) == stack[present][None]
        mean = onehot.mean(axis=1).astype(np.float32)
        img = normalize_image(case.image, plan)
        if plan.slicewise:
            for z in labelled_slice_indices(case):
                arrays.append({"image": img[..., z], "raters": stack[..., z], "mean": mean[..., z]})
                ids.append(f"{case.id}:{z}")
        else:
            arrays.append({"image": img, "raters": stack, "mean": mean})
            ids.append(case.id)
    if skipped:
        logger.warning("skipping %d training case(s) without any rater: %s", len(skipped), ", ".join(skipped))
    if not arrays:
        raise DataError(f"{dataset.root}: no training case has a rater label")
    return arrays, ids


def mean_foreground_soft_dice(probs: np.ndarray, raters: np.ndarray, num_classes: int) -> float:
    """:func:`labelwise.metrics.soft_dice` (QUBIQ thresholds 0.1..0.9, ``>``) averaged over the foreground classes.

    The same rule as the metric, reduced over every class 1..K-1 (class k: ``probs[k]`` vs the raters' masks of
    k); unlike :func:`labelwise.metrics.mean_foreground_dice` a class absent from prediction and raters is kept
    (it scores 1, soft Dice's ``labelwise`` convention), as the multi-rater methods have always selected on it.

    Args:
        probs: ``(K, *spatial)`` class probabilities (clipped to [0, 1] against rounding).
        raters: ``(R, *spatial)`` integer labels of the raters present (R >= 1).
        num_classes: K.

    """
    scores = [soft_dice(np.clip(probs[k], 0.0, 1.0), raters == k) for k in range(1, num_classes)]
    return float(np.mean(scores))


# --------------------------------------------------------------------------------------------------- inference
def _pad_to(x: torch.Tensor, divisor: int) -> tuple[torch.Tensor, tuple[slice, ...]]:
    spatial = x.shape[2:]
    target = [int(np.ceil(s / divisor) * divisor) for s in spatial]
    pads: list[int] = []
    for s, t in zip(reversed(spatial), reversed(target), strict=True):
        pads += [(t - s) // 2, t - s - (t - s) // 2]
    crop = tuple(slice((t - s) // 2, (t - s) // 2 + s) for s, t in zip(spatial, target, strict=True))
    return (F.pad(x, pads) if any(pads) else x), crop


def _run_batch(
    fn: Callable[[torch.Tensor], dict[str, torch.Tensor]], xb: torch.Tensor, divisor: int, device: torch.device
) -> dict[str, np.ndarray]:
    xp, crop = _pad_to(xb.to(device), divisor)
    with torch.inference_mode():
        out = fn(xp)
    index: Any = (Ellipsis, *crop)
    return {key: val[index].float().cpu().numpy() for key, val in out.items()}


def predict_whole(
    fn: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    image: np.ndarray,
    divisor: int,
    slicewise: bool,
    device: torch.device,
    slices_per_batch: int = 8,
) -> dict[str, np.ndarray]:
    """Run ``fn`` on a whole normalised image and return its outputs in the image's geometry.

    Args:
        fn: ``(B, C, *s) -> {name: (B, ..., *s)}``; every output ends with the spatial axes.
        image: ``(C, *spatial)`` normalised float32.
        divisor: Input sizes are zero-padded to multiples of it (outputs cropped back).
        slicewise: Apply ``fn`` to slices along the last axis of a 3D volume (outputs stacked back on it).
        device: Device to run on.
        slices_per_batch: Slices per call when ``slicewise``.

    Returns:
        ``{name: (..., *spatial)}`` float32 arrays (batch axis removed).

    Example:
        >>> out = predict_whole(lambda x: {"y": x * 2}, np.ones((1, 5, 3), np.float32), 4, False, torch.device("cpu"))
        >>> out["y"].shape, float(out["y"].max())
        ((1, 5, 3), 2.0)

    """
    x = torch.as_tensor(image, dtype=torch.float32)
    if not slicewise:
        return {k: v[0] for k, v in _run_batch(fn, x[None], divisor, device).items()}
    vol = x.movedim(-1, 0)  # (Z, C, X, Y)
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, vol.shape[0], slices_per_batch):
        for key, arr in _run_batch(fn, vol[i : i + slices_per_batch], divisor, device).items():
            parts.setdefault(key, []).append(arr)
    return {k: np.moveaxis(np.concatenate(v, axis=0), 0, -1) for k, v in parts.items()}
