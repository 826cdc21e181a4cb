"""Supervised baseline: a U-Net trained on one fused label per case (the reference every paper compares to).

Targets (``target``), fused with :mod:`labelwise.labels` (``majority_vote`` with ``tie="lowest"``, ``soft_mean``):

* ``majority``: per-voxel majority vote of the raters present (ties go to the lower class index, i.e.
  background for binary tasks), one-hot;
* ``mean``: the soft mean of the raters' one-hot maps (a probabilistic target; Dice + CE accept soft targets);
* ``rater``: the label of one chosen rater (``rater: <id>``); cases without that rater are skipped.

Cases with no rater are skipped for training. Training uses random patches (``patch_size`` from the planner),
Dice + cross-entropy, and selects the epoch with the best validation Dice (argmax vs the fused validation
target, mean over foreground classes). For 3D datasets ``slicewise: true`` trains a 2D network on the labelled
slices along the last axis (``labelled_slices`` when the dataset declares them) and predicts slice by slice.

This module is also the worked example of the method protocol (:mod:`labelwise.methods.base`):
config dataclass -> ``fit`` (plan, TrainTask, Trainer) -> ``load_predictor`` -> ``predict(case)``.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

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
    config_to_dict,
    init_distributed,
    make_plan,
    normalize_image,
    predict_probs,
    predict_slicewise,
    seed_everything,
)
from labelwise.engine.distributed import barrier
from labelwise.engine.planner import PLAN_NAME
from labelwise.errors import ConfigError, DataError
from labelwise.io import Prediction
from labelwise.labels import majority_vote, soft_mean
from labelwise.methods.base import Method, open_run, register_method
from labelwise.models import MODELS, ModelSpec, build_model, dice_ce_loss
from labelwise.models.unet import divisor as unet_divisor

__all__ = ["SupervisedConfig", "SupervisedMethod", "SupervisedPredictor", "fused_target", "model_case", "pick_slices"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SupervisedConfig:
    """Settings of the supervised baseline.

    Attributes:
        target: Fused target: "majority", "mean" (soft) or "rater" (one rater, named by ``rater``).
        rater: Rater id for ``target: rater``.
        model: Network (registered name + kwargs); the default is the 4-level MONAI U-Net ``unet``.
        patch_size: Training/inference patch (None: derived by the planner from the training data).
        slicewise: Train a 2D network on slices of a 3D dataset and predict slice by slice.
        classes: Train on these foreground classes only (dataset class names; the others become background).
            The model's classes are then ``("background", *classes)`` and predictions use those indices.
        train_slices: With ``slicewise``: train on this many labelled slices per case, evenly spaced over the
            labelled ones; the other labelled slices are held out (listed in ``plan.json`` as
            ``train_slices`` complement) for testing. None: every labelled slice.
        foreground_p: Fraction of patches centred on foreground.
        overlap: Sliding-window overlap at inference.
        tta: Flip test-time augmentation at prediction (not during validation).
        train: Engine settings.
        augment: Augmentation settings.

    """

    target: Literal["majority", "mean", "rater"] = "majority"
    rater: str | None = None
    model: ModelSpec = field(default_factory=ModelSpec)
    patch_size: tuple[int, ...] | None = None
    slicewise: bool = False
    classes: tuple[str, ...] | None = None
    train_slices: int | None = None
    foreground_p: float = 0.33
    overlap: float = 0.5
    tta: bool = True
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.target == "rater" and not self.rater:
            raise ConfigError("target 'rater' needs rater: <rater id>")
        if self.train_slices is not None and (not self.slicewise or self.train_slices < 1):
            raise ConfigError("train_slices needs slicewise: true and a positive count")
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"overlap must be in [0, 1), got {self.overlap}")


def fused_target(case: Case, target: str, num_classes: int, rater: str | None = None) -> np.ndarray | None:
    """The training target of one case as class probabilities.

    Args:
        case: The case (its raters ``(R, *spatial)``).
        target: "majority", "mean" or "rater".
        num_classes: K, including background.
        rater: Rater id for "rater".

    Returns:
        ``(K, *spatial)`` float32 in [0, 1] summing to 1 over K, or None if the case has no usable label.

    """
    if case.num_raters == 0:
        return None
    if target == "rater":
        if rater not in case.rater_ids:
            return None
        maps = case.raters[[case.rater_ids.index(rater)]]
    else:
        maps = case.raters
    if int(maps.max()) >= num_classes or int(maps.min()) < 0:
        raise DataError(f"case {case.id}: label values outside 0..{num_classes - 1}")
    if target == "mean":
        return np.asarray(soft_mean(maps, num_classes=num_classes), dtype=np.float32)
    votes = majority_vote(maps, num_classes=num_classes, tie="lowest")  # ties go to the lower class index
    return np.asarray(np.arange(num_classes).reshape(-1, *([1] * votes.ndim)) == votes[None], dtype=np.float32)


def pick_slices(labelled: list[int], count: int) -> list[int]:
    """``count`` slices evenly spaced over ``labelled`` (first and last included when ``count >= 2``)."""
    if count >= len(labelled):
        return list(labelled)
    pos = np.unique(np.round(np.linspace(0, len(labelled) - 1, count)).astype(int))
    return [labelled[i] for i in pos]


def model_case(case: Case, plan: Plan) -> Case:
    """``case`` with rater labels mapped to the model's classes (unselected classes become background)."""
    if not plan.class_indices:
        return case
    lut = np.zeros(len(plan.dataset_class_names), dtype=np.int16)
    lut[list(plan.class_indices)] = np.arange(len(plan.class_indices), dtype=np.int16)
    return replace(case, raters=lut[case.raters], class_names=plan.class_names)


def _slices(case: Case) -> list[int]:
    if case.labelled_slices is not None:
        return list(case.labelled_slices)
    return list(range(case.spatial_shape[-1]))


def _dice_per_class(pred: np.ndarray, target_label: np.ndarray, num_classes: int) -> list[float]:
    """Dice per foreground class; NaN when the class is absent from both (excluded from means)."""
    out = []
    for k in range(1, num_classes):
        p, t = pred == k, target_label == k
        denom = int(p.sum()) + int(t.sum())
        out.append(float("nan") if denom == 0 else 2.0 * int((p & t).sum()) / denom)
    return out


class SupervisedTask(TrainTask):
    """One network, Dice + CE on fused targets, validation Dice on the ``val`` split."""

    def __init__(self, net: torch.nn.Module, plan: Plan, cfg: SupervisedConfig) -> None:
        self.modules = {"net": net}
        self.plan = plan
        self.cfg = cfg

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> torch.Tensor:
        """Dice + CE of one micro-batch of patches."""
        logits = ctx.module("net")(batch["image"])
        return dice_ce_loss(logits, batch["target"])

    def validation_step(self, case: Case, ctx: StepContext) -> dict[str, float]:
        """Mean foreground Dice of the argmax prediction vs the fused target (no TTA)."""
        target = fused_target(model_case(case, self.plan), self.cfg.target, self.plan.num_classes, self.cfg.rater)
        if target is None:
            return {}
        probs = _predict(self.modules["net"], case, self.plan, self.cfg.overlap, tta=False, device=ctx.device)
        label = np.argmax(target, axis=0)
        pred = np.argmax(probs, axis=0)
        if self.plan.slicewise:
            idx = _slices(case)
            label, pred = label[..., idx], pred[..., idx]
        d = _dice_per_class(pred, label, self.plan.num_classes)
        return {"dice": float(np.nanmean(d)) if np.isfinite(d).any() else float("nan")}


def _predict(
    net: torch.nn.Module, case: Case, plan: Plan, overlap: float, tta: bool, device: torch.device
) -> np.ndarray:
    image = normalize_image(case.image, plan)
    if plan.slicewise:
        return predict_slicewise(net, image, plan.patch_size, overlap, tta, device=device)
    return predict_probs(net, image, plan.patch_size, overlap, tta, device=device)


def _training_arrays(ds: Dataset, cfg: SupervisedConfig, plan: Plan) -> tuple[list[dict[str, np.ndarray]], list[str]]:
    arrays, ids = [], []
    for case in ds.cases("train"):
        t = fused_target(model_case(case, plan), cfg.target, plan.num_classes, cfg.rater)
        if t is None:
            continue
        img = normalize_image(case.image, plan)
        if plan.slicewise:
            for z in plan.train_slices.get(case.id, _slices(case)):
                arrays.append({"image": img[..., z], "target": t[..., z]})
                ids.append(f"{case.id}:{z}")
        else:
            arrays.append({"image": img, "target": t})
            ids.append(case.id)
    if not arrays:
        raise DataError(f"{ds.root}: no labelled training cases for target {cfg.target!r}")
    return arrays, ids


def _net_divisor(spec: ModelSpec) -> int:
    """Down-sampling factor of a U-Net-like model: from its ``channels`` argument or the factory's default."""
    channels = spec.kwargs.get("channels")
    if channels is None:
        param = inspect.signature(MODELS.get(spec.name)).parameters.get("channels")
        channels = param.default if param is not None and param.default is not inspect.Parameter.empty else (1,)
    return unet_divisor(channels)


def _plan(dataset: Dataset, train_cases: list[Case], config: SupervisedConfig) -> Plan:
    plan = make_plan(train_cases, _net_divisor(config.model), config.slicewise, config.patch_size)
    if config.classes:
        names = tuple(dataset.class_names)
        unknown = [c for c in config.classes if c not in names[1:]]
        if unknown:
            raise ConfigError(f"classes {unknown} are not foreground classes of {dataset.root}")
        plan = replace(
            plan,
            class_names=("background", *config.classes),
            dataset_class_names=names,
            class_indices=(0, *(names.index(c) for c in config.classes)),
        )
    if config.train_slices is not None:
        plan = replace(plan, train_slices={c.id: pick_slices(_slices(c), config.train_slices) for c in train_cases})
    return plan


@register_method("supervised")
class SupervisedMethod(Method):
    """U-Net on fused labels (majority / soft mean / one rater)."""

    Config = SupervisedConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {"train": {"epochs": 200, "steps_per_epoch": 250}},
        "smoke": {
            "model": {"name": "unet_tiny", "kwargs": {}},
            "train": {"epochs": 2, "steps_per_epoch": 4, "batch_size": 2},
        },
    }
    citation = "Ronneberger et al., U-Net, MICCAI 2015; Isensee et al., nnU-Net, Nature Methods 2021"
    summary = "U-Net on a fused label (majority, soft mean or one rater)"

    @classmethod
    def fit(cls, dataset: Dataset, config: SupervisedConfig, run_dir: str | Path) -> None:
        """Plan, train with the engine, and write the run directory (resumes an interrupted run)."""
        rd = RunDir(run_dir)
        cfg_map = config_to_dict(config)
        resumed = rd.prepare(cls.name, cfg_map, dataset)
        if config.target == "rater" and config.rater not in dataset.rater_ids:
            raise ConfigError(f"rater {config.rater!r} is not one of the dataset's raters {list(dataset.rater_ids)}")
        train_cases = list(dataset.cases("train"))
        plan_path = rd.path / PLAN_NAME
        dist = init_distributed()
        if dist.is_main and not (resumed and plan_path.exists()):
            _plan(dataset, train_cases, config).save(plan_path)
        barrier()
        plan = Plan.load(plan_path)
        seed_everything(config.train.seed)
        net = build_model(config.model, plan.spatial_dims, plan.channels, plan.num_classes)
        arrays, ids = _training_arrays(dataset, config, plan)
        source = PatchSource(
            arrays, plan.patch_size, config.augment, "target", config.foreground_p, ids, seed=config.train.seed
        )
        val_cases = list(dataset.cases("val"))
        task = SupervisedTask(net, plan, config)
        result = Trainer(task, config.train, rd.path, source, val_cases).fit()
        if dist.is_main:
            rd.write_meta(
                status="finished",
                best_epoch=result.best_epoch,
                val_metrics=result.best_metrics,
                stopped_early=result.stopped_early,
                steps=result.steps,
                train_cases=len(train_cases),
                val_cases=len(val_cases),
            )

    @classmethod
    def load_predictor(cls, run_dir: str | Path, device: torch.device | str | None = None) -> SupervisedPredictor:
        """Rebuild the network from ``config.yaml`` + ``plan.json`` and load ``weights.safetensors``."""
        return SupervisedPredictor(run_dir, device)


class SupervisedPredictor:
    """Predicts cases with a trained supervised run.

    Args:
        run_dir: The run directory.
        device: Device (default: CUDA if available).

    """

    def __init__(self, run_dir: str | Path, device: torch.device | str | None = None) -> None:
        run = open_run(run_dir, SupervisedConfig, device)
        self.config: SupervisedConfig = run.config
        self.plan, self.device = run.plan, run.device
        self.net = build_model(self.config.model, self.plan.spatial_dims, self.plan.channels, self.plan.num_classes)
        run.load({"net": self.net})

    def predict(self, case: Case, tta: bool | None = None, overlap: float | None = None, **options: Any) -> Prediction:
        """Class probabilities ``(K, *spatial)`` of ``case`` in its own geometry.

        Args:
            case: Any case with the plan's channels and dims.
            tta: Flip TTA (default: the config's ``tta``).
            overlap: Sliding-window overlap (default: the config's).
            **options: Ignored (accepted for protocol compatibility).

        """
        if case.image.shape[0] != self.plan.channels or case.spatial_dims != self.plan.data_spatial_dims:
            raise DataError(
                f"case {case.id}: image {case.image.shape} does not fit the model "
                f"({self.plan.channels} channel(s), {self.plan.data_spatial_dims}D)"
            )
        probs = _predict(
            self.net,
            case,
            self.plan,
            self.config.overlap if overlap is None else overlap,
            self.config.tta if tta is None else tta,
            self.device,
        )
        return Prediction(probs=probs.astype(np.float32))
