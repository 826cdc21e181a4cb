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

import logging
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import torch

from labelwise.data import Case, Dataset
from labelwise.data.slices import evenly_spaced, labelled_slice_indices
from labelwise.engine import (
    AugmentConfig,
    PatchSource,
    Plan,
    StepContext,
    TrainConfig,
    TrainTask,
    make_plan,
    normalize_image,
    predict_probs,
    predict_slicewise,
)
from labelwise.errors import ConfigError, DataError
from labelwise.io import Prediction
from labelwise.labels import TargetKind, fused_target
from labelwise.methods.base import FitContext, Method, MethodPredictor, PredictOptions, Stage, register_method
from labelwise.metrics import mean_foreground_dice
from labelwise.models import ModelSpec, build_model, dice_ce_loss, spec_divisor

__all__ = ["SupervisedConfig", "SupervisedMethod", "SupervisedOptions", "SupervisedPredictor"]

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

    target: TargetKind = "majority"
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
        target = fused_target(self.plan.model_case(case), self.cfg.target, self.plan.num_classes, self.cfg.rater)
        if target is None:
            return {}
        probs = _predict(self.modules["net"], case, self.plan, self.cfg.overlap, tta=False, device=ctx.device)
        label = np.argmax(target, axis=0)
        pred = np.argmax(probs, axis=0)
        if self.plan.slicewise:
            idx = list(labelled_slice_indices(case))
            label, pred = label[..., idx], pred[..., idx]
        return {"dice": mean_foreground_dice(pred, label, self.plan.num_classes)}


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
        t = fused_target(plan.model_case(case), cfg.target, plan.num_classes, cfg.rater)
        if t is None:
            continue
        img = normalize_image(case.image, plan)
        if plan.slicewise:
            for z in plan.train_slices.get(case.id, labelled_slice_indices(case)):
                arrays.append({"image": img[..., z], "target": t[..., z]})
                ids.append(f"{case.id}:{z}")
        else:
            arrays.append({"image": img, "target": t})
            ids.append(case.id)
    if not arrays:
        raise DataError(f"{ds.root}: no labelled training cases for target {cfg.target!r}")
    return arrays, ids


@dataclass(frozen=True)
class SupervisedOptions(PredictOptions):
    """Prediction options of ``supervised`` (None: the run config's value).

    Attributes:
        tta: Flip test-time augmentation.
        overlap: Sliding-window overlap in [0, 1).

    """

    tta: bool | None = None
    overlap: float | None = None

    def __post_init__(self) -> None:
        if self.overlap is not None and not 0 <= self.overlap < 1:
            raise ConfigError(f"overlap must be in [0, 1), got {self.overlap}")


class SupervisedPredictor(MethodPredictor[SupervisedConfig, SupervisedOptions]):
    """Predicts cases with a trained supervised run: class probabilities ``(K, *spatial)``."""

    Options = SupervisedOptions

    def setup(self) -> None:
        """Rebuild the network from ``config.yaml`` + ``plan.json`` and load ``weights.safetensors``."""
        self.net = build_model(self.config.model, self.plan.spatial_dims, self.plan.channels, self.plan.num_classes)
        self.run.load({"net": self.net})

    def predict_case(self, case: Case, options: SupervisedOptions) -> Prediction:
        """Class probabilities of ``case`` in its own geometry."""
        overlap = self.config.overlap if options.overlap is None else options.overlap
        tta = self.config.tta if options.tta is None else options.tta
        probs = _predict(self.net, case, self.plan, overlap, tta, self.device)
        return Prediction(probs=probs.astype(np.float32))


@register_method("supervised")
class SupervisedMethod(Method):
    """U-Net on fused labels (majority / soft mean / one rater)."""

    Config = SupervisedConfig
    Predictor = SupervisedPredictor
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
    def check(cls, dataset: Dataset, config: SupervisedConfig) -> None:
        """The rater of ``target: rater`` must be one of the dataset's."""
        if config.target == "rater" and config.rater not in dataset.rater_ids:
            raise ConfigError(f"rater {config.rater!r} is not one of the dataset's raters {list(dataset.rater_ids)}")

    @classmethod
    def plan(cls, dataset: Dataset, config: SupervisedConfig) -> Plan:
        """Patch size and normalisation from the train split; class subset; the k training slices."""
        train_cases = list(dataset.cases("train"))
        plan = make_plan(train_cases, spec_divisor(config.model), config.slicewise, config.patch_size)
        plan = plan.select_classes(dataset.class_names, config.classes)
        if config.train_slices is not None:
            chosen = {c.id: list(evenly_spaced(labelled_slice_indices(c), config.train_slices)) for c in train_cases}
            plan = replace(plan, train_slices={k: v for k, v in chosen.items() if v})
        return plan

    @classmethod
    def build(cls, fit: FitContext[SupervisedConfig]) -> Stage:
        """One network, patches of the fused targets, validation Dice."""
        config, plan = fit.config, fit.plan
        net = build_model(config.model, plan.spatial_dims, plan.channels, plan.num_classes)
        arrays, ids = _training_arrays(fit.dataset, config, plan)
        source = PatchSource(
            arrays, plan.patch_size, config.augment, "target", config.foreground_p, ids, seed=config.train.seed
        )
        return Stage(SupervisedTask(net, plan, config), source, config.train, list(fit.dataset.cases("val")))
