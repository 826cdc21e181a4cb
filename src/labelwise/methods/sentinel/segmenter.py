"""The segmentation model behind the checkpoint candidates and the uncertainty baselines.

A small 2D U-Net (slice-wise for 3D data) trained on the reference of the training slices, as the run's
``segmenter`` stage (``RUN/segmenter``) on the engine :class:`~labelwise.engine.Trainer`, so it resumes and runs
under DDP like any stage. Its label maps after each of ``checkpoint_steps`` optimiser steps are candidates of
graded quality (the paper uses STU-Net checkpoints): :class:`SegmenterTask` saves the weights at those steps
(``RUN/segmenter/step_<n>.safetensors``; the last step is the stage's ``weights.safetensors``) and
:func:`segmenter_snapshots` turns them into label maps once training is over.

The stage trains ``max(checkpoint_steps)`` steps, Adam (AdamW, weight decay 0) at a constant ``segmenter_lr``,
no mixed precision, patches drawn with seed ``config.seed``, in epochs of 50 steps (or one epoch of
``max(checkpoint_steps)`` steps when that is shorter, or of ``gcd(steps, 50)`` steps when 50 does not divide it,
so that the schedule ends exactly on the last checkpoint step). ``train.checkpoint_every``, ``train.num_workers``
and ``train.progress`` of the method's config apply to it too.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labelwise.data import Case
from labelwise.engine import (
    AugmentConfig,
    PatchSource,
    Plan,
    StepContext,
    TrainConfig,
    TrainTask,
    load_weights,
    normalize_image,
    predict_probs,
    predict_slicewise,
    save_weights,
)
from labelwise.errors import DataError
from labelwise.labels import TargetKind, fused_target
from labelwise.methods.base import Stage
from labelwise.methods.sentinel.config import SentinelConfig
from labelwise.methods.sentinel.inputs import case_slices, take_slice
from labelwise.models import dice_ce_loss

__all__ = [
    "SEGMENTER_EPOCH_STEPS",
    "SegProbs",
    "SegmenterTask",
    "predict_segmenter",
    "seg_slice",
    "segmenter_snapshots",
    "segmenter_stage",
    "snapshot_path",
]

logger = logging.getLogger(__name__)

SEGMENTER_EPOCH_STEPS = 50
"""Optimiser steps per epoch of the segmenter stage (when they divide its length)."""

SegProbs = np.ndarray | dict[int, np.ndarray]
"""Segmentation-model probabilities: ``(K, H, W)`` for a 2D case, or slice index -> ``(K, H, W)`` for 3D."""


def seg_slice(seg: SegProbs, z: int | None) -> np.ndarray:
    """The ``(K, H, W)`` probabilities of slice ``z`` (None: the 2D case) from :data:`SegProbs`.

    Raises:
        DataError: a 3D case's probabilities do not hold slice ``z``.

    """
    if isinstance(seg, dict):
        if z is None or z not in seg:
            raise DataError(f"no segmentation-model probabilities for slice {z}")
        return seg[z]
    return take_slice(seg, z)


def predict_segmenter(
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


def snapshot_path(work_dir: Path, step: int) -> Path:
    """Where the segmenter's weights after ``step`` optimiser steps are saved in its stage folder."""
    return work_dir / f"step_{step:06d}.safetensors"


class SegmenterTask(TrainTask):
    """Dice + CE on the reference of the training slices; saves the weights at the snapshot steps.

    Args:
        net: The segmentation network (``modules["segmenter"]``).
        snapshot_steps: Optimiser steps after which the weights are saved (:func:`snapshot_path`).
        work_dir: The stage folder.

    """

    def __init__(self, net: torch.nn.Module, snapshot_steps: Sequence[int], work_dir: Path) -> None:
        self.modules = {"segmenter": net}
        self.snapshot_steps = frozenset(int(s) for s in snapshot_steps)
        self.work_dir = work_dir

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> torch.Tensor:
        """Save the weights first if ``ctx.step`` steps are done and that is a snapshot step; then the loss."""
        if ctx.micro == 0 and ctx.step in self.snapshot_steps and ctx.dist.is_main:
            save_weights(snapshot_path(self.work_dir, ctx.step), self.modules, {"step": ctx.step})
            logger.info("segmenter snapshot after step %d", ctx.step)
        return dice_ce_loss(ctx.module("segmenter")(batch["image"]), batch["target"])


def _training_arrays(
    cases: Sequence[Case], cfg: SentinelConfig, plan: Plan, slice_filter: Mapping[str, Sequence[int]]
) -> tuple[list[dict[str, np.ndarray]], list[str]]:
    target: TargetKind = "rater" if cfg.reference_rater is not None else "majority"
    arrays, ids = [], []
    for case in cases:
        onehot = fused_target(plan.model_case(case), target, plan.num_classes, cfg.reference_rater)
        if onehot is None:
            continue
        img = normalize_image(case.image, plan)
        for z in case_slices(case, slice_filter.get(case.id)):
            arrays.append({"image": take_slice(img, z), "target": take_slice(onehot, z)})
            ids.append(f"{case.id}:{z}")
    return arrays, ids


def segmenter_stage(
    net: torch.nn.Module,
    cases: Sequence[Case],
    cfg: SentinelConfig,
    plan: Plan,
    slice_filter: Mapping[str, Sequence[int]],
    work_dir: Path,
) -> Stage:
    """The segmenter stage: ``max(cfg.checkpoint_steps)`` steps on the training slices, snapshots on the way.

    Args:
        net: The segmentation network (built from ``cfg.segmenter``).
        cases: Labelled training cases.
        cfg: Settings (``checkpoint_steps``, ``segmenter_batch``, ``segmenter_lr``, ``seed``).
        plan: The run's plan (normalisation, patch size, classes).
        slice_filter: Case id -> training slice indices (3D); default: the labelled slices.
        work_dir: The stage folder (``RUN/segmenter``), where the snapshots go.

    Raises:
        DataError: no labelled training slice.

    """
    arrays, ids = _training_arrays(cases, cfg, plan, slice_filter)
    if not arrays:
        raise DataError("no labelled training slices for the segmentation model")
    last = max(cfg.checkpoint_steps)
    per_epoch = last if last <= SEGMENTER_EPOCH_STEPS else math.gcd(last, SEGMENTER_EPOCH_STEPS)
    train = TrainConfig(
        epochs=last // per_epoch,
        steps_per_epoch=per_epoch,
        batch_size=cfg.segmenter_batch,
        lr=cfg.segmenter_lr,
        weight_decay=0.0,
        schedule="constant",
        amp=False,
        seed=cfg.seed,
        checkpoint_every=cfg.train.checkpoint_every,
        num_workers=cfg.train.num_workers,
        progress=cfg.train.progress,
    )
    source = PatchSource(arrays, plan.patch_size, AugmentConfig(), "target", 0.5, ids, seed=cfg.seed)
    task = SegmenterTask(net, [s for s in cfg.checkpoint_steps if s < last], work_dir)
    return Stage(task, source, train, train_cases=len(cases))


def segmenter_snapshots(
    net: torch.nn.Module,
    cases: Sequence[Case],
    cfg: SentinelConfig,
    plan: Plan,
    slice_filter: Mapping[str, Sequence[int]],
    work_dir: Path,
    device: torch.device,
) -> dict[str, list[np.ndarray]]:
    """Label maps of the trained segmenter at each of ``cfg.checkpoint_steps`` (the stage's saved weights).

    Args:
        net: A network of the segmenter's architecture (a copy is loaded; ``net`` itself is not changed).
        cases: The training cases.
        cfg: Settings.
        plan: The run's plan.
        slice_filter: Case id -> slices to predict (3D; other slices stay background).
        work_dir: The segmenter stage folder.
        device: Where to predict.

    Returns:
        ``{case id: [label map (*spatial) int16 per checkpoint step]}``.

    """
    scratch = copy.deepcopy(net).to(device)
    last = max(cfg.checkpoint_steps)
    snaps: dict[str, list[np.ndarray]] = {c.id: [] for c in cases}
    for step in cfg.checkpoint_steps:
        path = work_dir / "weights.safetensors" if step == last else snapshot_path(work_dir, step)
        load_weights(path, {"segmenter": scratch})
        scratch.eval()
        with torch.inference_mode():
            for c in cases:
                zs = slice_filter.get(c.id) if c.spatial_dims == 3 else None
                lab = np.asarray(np.argmax(predict_segmenter(scratch, c, plan, False, device, zs), axis=0), np.int16)
                if zs is not None:
                    full = np.zeros(c.spatial_shape, np.int16)
                    full[..., list(zs)] = lab
                    lab = full
                snaps[c.id].append(lab)
    return snaps
