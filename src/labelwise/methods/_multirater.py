"""Shared plumbing of the multi-rater methods (MRNet, probabilistic U-Net, D-Persona).

* The run's rater order (``raters.json``: the dataset's rater ids at training time) fixes R and the meaning of
  every rater index (condition vectors, per-rater heads). Prediction refuses cases with raters the model never
  saw and rater weightings of another length.
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
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from labelwise.data import Case, Dataset
from labelwise.engine import Plan, normalize_image
from labelwise.errors import ConfigError, DataError
from labelwise.io.atomic import write_json_atomic

__all__ = [
    "RATERS_NAME",
    "case_rater_stack",
    "fg_soft_dice",
    "labelled_slices",
    "load_rater_ids",
    "parse_float_list",
    "predict_whole",
    "prepare_training",
    "save_rater_ids",
    "training_arrays",
]

logger = logging.getLogger(__name__)

RATERS_NAME = "raters.json"


def save_rater_ids(run_dir: Path, rater_ids: Sequence[str]) -> None:
    """Write the run's rater order."""
    write_json_atomic(run_dir / RATERS_NAME, {"rater_ids": list(rater_ids)})


def load_rater_ids(run_dir: Path) -> tuple[str, ...]:
    """Read the run's rater order (:class:`DataError` if missing or malformed)."""
    path = run_dir / RATERS_NAME
    try:
        return tuple(str(r) for r in json.loads(path.read_text(encoding="utf-8"))["rater_ids"])
    except FileNotFoundError:
        raise DataError("no raters.json: not a multi-rater run directory", run_dir) from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"malformed rater list ({exc})", path) from None


def case_rater_stack(case: Case, rater_ids: Sequence[str]) -> np.ndarray:
    """The case's raters in the model's order: ``(R, *spatial)`` int16, ``-1`` everywhere for a missing rater.

    Raises:
        ConfigError: the case has a rater the model does not know (rater count/ids differ from training).

    """
    unknown = sorted(set(case.rater_ids) - set(rater_ids))
    if unknown:
        raise ConfigError(
            f"case {case.id}: raters {unknown} are not among the {len(rater_ids)} raters the model was trained "
            f"with ({list(rater_ids)})"
        )
    labels, present = case.rater_stack(tuple(rater_ids))
    labels[~present] = -1
    return labels


def labelled_slices(case: Case) -> list[int]:
    """Indices along the last axis whose labels are valid."""
    if case.labelled_slices is not None:
        return list(case.labelled_slices)
    return list(range(case.spatial_shape[-1]))


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
            for z in labelled_slices(case):
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


def fg_soft_dice(fg_probs: np.ndarray, raters: np.ndarray, num_classes: int) -> float:
    """QUBIQ soft Dice averaged over foreground classes.

    Args:
        fg_probs: ``(K, *spatial)`` class probabilities.
        raters: ``(R, *spatial)`` integer labels of the raters present (R >= 1).
        num_classes: K.

    Returns:
        Mean over classes 1..K-1 of :func:`labelwise.metrics.soft_dice` (thresholds 0.1..0.9, ``>``).

    """
    from labelwise.metrics import soft_dice

    scores = [soft_dice(np.clip(fg_probs[k], 0.0, 1.0), raters == k) for k in range(1, num_classes)]
    return float(np.mean(scores))


def parse_float_list(value: str | Sequence[float], what: str) -> tuple[float, ...]:
    """``"0.5,0.5,0"`` or a sequence -> floats (:class:`ConfigError` on junk)."""
    if isinstance(value, str):
        try:
            return tuple(float(v) for v in value.replace(" ", "").split(",") if v != "")
        except ValueError:
            raise ConfigError(f"{what}: expected comma-separated numbers, got {value!r}") from None
    return tuple(float(v) for v in value)


def prepare_training(
    dataset: Dataset, run_dir: Path, resumed: bool, divisor: int, config: Any, method: str
) -> tuple[tuple[str, ...], Plan, Any, list[Case]]:
    """Set up a multi-rater training run: rater order, plan, patch source and validation cases.

    Args:
        dataset: Training dataset (train split for the plan and patches, val split for selection).
        run_dir: The run directory (``raters.json`` and ``plan.json`` are written there; a resumed run reuses its
            plan).
        resumed: Whether the run directory already held this run.
        divisor: The network's down-sampling factor (patch sizes are multiples of it).
        config: The method config (``slicewise``, ``patch_size``, ``augment``, ``foreground_p``, ``train.seed``).
        method: Method name for error messages.

    Returns:
        ``(rater_ids, plan, source, val_cases)``; the global seed is set.

    Raises:
        DataError: the dataset declares no raters.

    """
    from labelwise.engine.data import PatchSource
    from labelwise.engine.planner import PLAN_NAME, make_plan
    from labelwise.engine.seed import seed_everything

    rater_ids = tuple(dataset.rater_ids)
    if not rater_ids:
        raise DataError(f"{dataset.root}: {method} needs a dataset with raters")
    save_rater_ids(run_dir, rater_ids)
    plan_path = run_dir / PLAN_NAME
    if resumed and plan_path.exists():
        plan = Plan.load(plan_path)
    else:
        plan = make_plan(list(dataset.cases("train")), divisor, config.slicewise, config.patch_size)
        plan.save(plan_path)
    seed_everything(config.train.seed)
    arrays, ids = training_arrays(dataset, plan, rater_ids)
    source = PatchSource(
        arrays, plan.patch_size, config.augment, "mean", config.foreground_p, ids, seed=config.train.seed
    )
    return rater_ids, plan, source, list(dataset.cases("val"))
