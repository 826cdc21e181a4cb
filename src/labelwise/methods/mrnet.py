"""MRNet (Ji et al., CVPR 2021): calibrated segmentation from multi-rater agreement modelling, any R.

Training (per micro-batch of B patches): three rater conditions per image, run as one batch of 3B --
uniform ``1/R_present``, random positive integer weights ``1..max_random_weight`` normalised, and a one-hot random
rater -- each with the soft target ``sum_i c_i * onehot(mask_i)`` over the raters present. Loss::

    main   = (w_u * L(uniform) + w_r * L(random) + w_o * L(one-hot)) / (w_u + w_r + w_o)   # 3, 2, 1
    L(c)   = CE(coarse, target_c) + CE(final, target_c)                                      # soft-label CE
    heads  = mean over present raters r of CE(rater head r, rater r)                         # per-rater heads
    total  = main + rater_head_weight * heads + feature_rec_weight * ||E(x, coarse) - E(x, target)||^2

Missing raters get zero weight in every condition and are excluded from the head loss; cases without raters are
skipped (logged). Selection: the epoch with the best validation soft Dice (QUBIQ thresholds, uniform condition).

Prediction: ``predict(case, rater_weights=...)`` (:class:`MRNetOptions`, its only option) with a weighting over
the training raters (default: the config's ``rater_weights``, else uniform = consensus; ``"0,1,0,..."`` = one rater;
any mix summing to 1) returns the calibrated soft map as ``probs``, the per-rater heads as ``raters`` (and
``rater_probs``), and the rater std as ``uncertainty``. 3D volumes: train with ``slicewise: true`` and predict slice
by slice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from labelwise.data import Case, Dataset
from labelwise.data.slices import labelled_slice_indices
from labelwise.engine import AugmentConfig, Plan, StepContext, TrainConfig, TrainTask, normalize_image
from labelwise.errors import ConfigError
from labelwise.io import Prediction
from labelwise.methods.base import FitContext, Method, MethodPredictor, PredictOptions, Stage, register_method
from labelwise.methods.multirater import (
    check_case_raters,
    check_raters,
    load_rater_ids,
    mean_foreground_soft_dice,
    multirater_plan,
    multirater_training,
    predict_whole,
)
from labelwise.models.blocks import encoder_divisor
from labelwise.models.mrnet import MRNet, check_condition
from labelwise.models.multirater_losses import one_hot_raters, rater_presence, soft_cross_entropy

__all__ = ["MRNetConfig", "MRNetMethod", "MRNetOptions", "MRNetPredictor", "draw_conditions"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MRNetConfig:
    """Settings of MRNet.

    Attributes:
        channels: Encoder widths of the light encoder (stem width for ResNet-34).
        encoder: ``"light"`` (CPU default) or ``"resnet34"`` (the paper's backbone, random init).
        attention_sigma: Gaussian sigma of the uncertainty attention, voxels (paper: 4).
        attention_kernel: Gaussian kernel size (paper: 31).
        condition_loss_weights: Weights of the uniform, random and one-hot condition losses (paper: 3, 2, 1).
        max_random_weight: Random conditions draw integer weights in ``1..max_random_weight`` (paper: 10).
        rater_head_weight: Weight of the per-rater head loss.
        feature_rec_weight: Weight of the feature reconstruction loss (paper: 1/1000).
        rater_weights: Default prediction weighting over the training raters (None: uniform).
        slicewise: Train a 2D network on slices of a 3D dataset and predict slice by slice.
        patch_size: Training patch (None: the planner's, i.e. the median image size up to 256).
        foreground_p: Fraction of patches centred on the raters' majority foreground.
        train: Engine settings (monitor ``soft_dice``).
        augment: Augmentation (paper: flips and +-15 degree rotations).

    """

    channels: tuple[int, ...] = (8, 16, 32, 64)
    encoder: Literal["light", "resnet34"] = "light"
    attention_sigma: float = 4.0
    attention_kernel: int = 31
    condition_loss_weights: tuple[float, float, float] = (3.0, 2.0, 1.0)
    max_random_weight: int = 10
    rater_head_weight: float = 1.0
    feature_rec_weight: float = 1e-3
    rater_weights: tuple[float, ...] | None = None
    slicewise: bool = False
    patch_size: tuple[int, ...] | None = None
    foreground_p: float = 0.33
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=50, steps_per_epoch=20, batch_size=2, lr=1e-3, weight_decay=5e-4, monitor="soft_dice"
        )
    )
    augment: AugmentConfig = field(
        default_factory=lambda: AugmentConfig(rot90_p=0.0, rotate_p=0.5, rotate_deg=15.0, gamma_p=0.0)
    )

    def __post_init__(self) -> None:
        if self.max_random_weight < 1:
            raise ConfigError(f"max_random_weight must be >= 1, got {self.max_random_weight}")
        if any(w < 0 for w in self.condition_loss_weights) or sum(self.condition_loss_weights) <= 0:
            raise ConfigError(
                f"condition_loss_weights must be non-negative with a positive sum, got {self.condition_loss_weights}"
            )
        if self.rater_weights is not None:
            check_condition(self.rater_weights, len(self.rater_weights))


def draw_conditions(present: torch.Tensor, max_random_weight: int = 10) -> torch.Tensor:
    """The three MRNet conditions for each sample, over the raters present.

    Args:
        present: ``(B, R)`` bool; rows without any rater get uniform weights (their losses are masked).
        max_random_weight: Random weights are integers in ``1..max_random_weight`` before normalisation.

    Returns:
        ``(3, B, R)`` float32: uniform, random, one-hot (each row non-negative, summing to 1, zero on missing
        raters). Uses the global torch RNG (seeded and checkpointed by the engine).

    """
    p = present.float()
    none = p.sum(1, keepdim=True) == 0
    p = torch.where(none, torch.ones_like(p), p)
    uniform = p / p.sum(1, keepdim=True)
    rnd = torch.randint(1, max_random_weight + 1, p.shape, device=p.device).float() * p
    rnd = rnd / rnd.sum(1, keepdim=True)
    pick = torch.multinomial(p, 1).squeeze(1)
    onehot = torch.nn.functional.one_hot(pick, p.shape[1]).float()
    return torch.stack([uniform, rnd, onehot])


class MRNetTask(TrainTask):
    """MRNet's joint training of the coarse and reconstruction networks."""

    def __init__(self, net: MRNet, plan: Plan, cfg: MRNetConfig, rater_ids: Sequence[str]) -> None:
        self.modules = {"net": net}
        self.plan = plan
        self.cfg = cfg
        self.rater_ids = tuple(rater_ids)

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        """Loss of one micro-batch (see the module docstring)."""
        image = batch["image"]
        raters = batch["raters"].long()
        k = self.plan.num_classes
        present = rater_presence(raters)
        valid = present.any(1)
        onehot = one_hot_raters(raters, k)  # (B, R, K, *s)
        conds = draw_conditions(present, self.cfg.max_random_weight)  # (3, B, R)
        targets = torch.einsum("jbr,brk...->jbk...", conds, onehot)  # (3, B, K, *s)
        b = image.shape[0]
        cond = conds.reshape(3 * b, -1)
        target = targets.reshape(3 * b, *targets.shape[2:])
        img3 = image.repeat(3, *([1] * (image.ndim - 1)))
        valid3 = valid.repeat(3)
        out = ctx.module("net")(img3, cond)
        per_cond = []
        for j in range(3):
            sl = slice(j * b, (j + 1) * b)
            per_cond.append(
                soft_cross_entropy(out.coarse[sl], target[sl], valid)
                + soft_cross_entropy(out.final[sl], target[sl], valid)
            )
        w = self.cfg.condition_loss_weights
        main = (w[0] * per_cond[0] + w[1] * per_cond[1] + w[2] * per_cond[2]) / sum(w)
        r = raters.shape[1]
        head_logits = out.raters.reshape(3 * b * r, k, *out.raters.shape[3:])
        head_target = onehot.repeat(3, *([1] * (onehot.ndim - 1))).reshape(3 * b * r, k, *onehot.shape[3:])
        heads = soft_cross_entropy(head_logits, head_target, present.repeat(3, 1).reshape(-1))
        net = self.modules["net"]  # the unwrapped module (the call above went through DDP)
        assert isinstance(net, MRNet)
        rec = net.feature_reconstruction_loss(img3, out.coarse, target, valid3)
        loss = main + self.cfg.rater_head_weight * heads + self.cfg.feature_rec_weight * rec
        return {"loss": loss, "main": main.detach(), "heads": heads.detach(), "feature_rec": rec.detach()}

    def validation_step(self, case: Case, ctx: StepContext) -> dict[str, float]:
        """Soft Dice (uniform condition over all training raters) vs the raters present."""
        if case.num_raters == 0:
            return {}
        net = self.modules["net"]
        assert isinstance(net, MRNet)
        r = len(self.rater_ids)
        out = _predict_mrnet(net, case, self.plan, self.cfg.slicewise, (1.0 / r,) * r, ctx.device)
        probs, raters = out["probs"], case.raters
        if self.plan.slicewise:
            idx = list(labelled_slice_indices(case))
            probs, raters = probs[..., idx], raters[..., idx]
        return {"soft_dice": mean_foreground_soft_dice(probs, raters, self.plan.num_classes)}


def _predict_mrnet(
    net: MRNet, case: Case, plan: Plan, slicewise: bool, weights: Sequence[float], device: torch.device
) -> dict[str, np.ndarray]:
    image = normalize_image(case.image, plan)
    cond_row = torch.tensor(weights, dtype=torch.float32, device=device)

    def fn(x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = net(x, cond_row.expand(x.shape[0], -1))
        rprobs = torch.softmax(out.raters.float(), dim=2)
        k = rprobs.shape[2]
        fg = slice(1, k) if k > 1 else slice(0, 1)
        return {
            "probs": torch.softmax(out.final.float(), dim=1),
            "rater_probs": rprobs,
            "uncertainty": rprobs[:, :, fg].std(dim=1, unbiased=False).mean(dim=1),
        }

    net.eval()
    return predict_whole(fn, image, net.divisor, slicewise, device)


def _build(cfg: MRNetConfig, plan: Plan, num_raters: int) -> MRNet:
    return MRNet(
        plan.spatial_dims,
        plan.channels,
        plan.num_classes,
        num_raters,
        cfg.channels,
        cfg.encoder,
        cfg.attention_sigma,
        cfg.attention_kernel,
    )


@dataclass(frozen=True)
class MRNetOptions(PredictOptions):
    """Prediction options of ``mrnet`` (None: the run config's value).

    Attributes:
        rater_weights: One non-negative weight per training rater summing to 1, in the run's rater order; a
            sequence or the CLI's ``"0.5,0.5,0,..."`` (parsed here; the length and the sum are checked by
            :meth:`MRNetPredictor.options`, which knows R). None: the config's ``rater_weights``, else uniform.

    """

    rater_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        value: Any = self.rater_weights
        if value is None:
            return
        items = value.replace(" ", "").split(",") if isinstance(value, str) else value
        try:
            parsed = tuple(float(v) for v in items if v != "")
        except (TypeError, ValueError):
            raise ConfigError(
                f"rater_weights: expected comma-separated numbers or a sequence of numbers, got {value!r}"
            ) from None
        object.__setattr__(self, "rater_weights", parsed)


class MRNetPredictor(MethodPredictor[MRNetConfig, MRNetOptions]):
    """Predicts cases with a trained MRNet run (``rater_ids``: the run's rater order)."""

    Options = MRNetOptions

    def setup(self) -> None:
        """Read the rater order, rebuild the network and load its weights."""
        self.rater_ids = load_rater_ids(self.run.rundir.path)
        self.net = _build(self.config, self.plan, len(self.rater_ids))
        self.run.load({"net": self.net})

    def options(self, **given: Any) -> MRNetOptions:
        """The typed options; ``rater_weights`` is also checked against the R training raters.

        Raises:
            ConfigError: an option ``mrnet`` does not take; weights that are not numbers, of the wrong length
                (not R), negative or non-finite, or not summing to 1.

        """
        opts = super().options(**given)
        self.weighting(opts)
        return opts

    def weighting(self, options: MRNetOptions) -> tuple[float, ...]:
        """The validated rater weighting: the option's, else the config's default, else uniform."""
        r = len(self.rater_ids)
        weights = options.rater_weights
        if weights is None:
            weights = self.config.rater_weights or (1.0 / r,) * r
        return check_condition(weights, r)

    def predict_case(self, case: Case, options: MRNetOptions) -> Prediction:
        """Calibrated soft map for the rater weighting, plus per-rater maps.

        Returns:
            ``probs`` ``(K, *spatial)`` for the weighting; ``raters`` ``(R, *spatial)`` uint8 argmax of each head;
            ``rater_probs`` ``(R, K, *spatial)``; ``uncertainty`` ``(*spatial)`` std over the rater heads.

        Raises:
            ConfigError: the case has raters the model was not trained with.

        """
        weights = self.weighting(options)
        check_case_raters(case, self.rater_ids)
        out = _predict_mrnet(self.net, case, self.plan, self.plan.slicewise, weights, self.device)
        rprobs = out["rater_probs"]
        return Prediction(
            probs=out["probs"].astype(np.float32),
            raters=np.argmax(rprobs, axis=1).astype(np.uint8),
            uncertainty=out["uncertainty"].astype(np.float32),
            rater_probs=rprobs.astype(np.float32),
        )


@register_method("mrnet")
class MRNetMethod(Method):
    """MRNet: rater-conditioned coarse + multi-rater reconstruction networks with uncertainty attention."""

    Config = MRNetConfig
    Predictor = MRNetPredictor
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {
            "encoder": "resnet34",
            "channels": [32, 64, 128, 256],
            "train": {"epochs": 200, "steps_per_epoch": 250, "batch_size": 8, "lr": 1e-4, "weight_decay": 5e-4},
        },
        "smoke": {"channels": [4, 8], "train": {"epochs": 2, "steps_per_epoch": 3, "batch_size": 2}},
    }
    citation = "Ji et al., Learning Calibrated Medical Image Segmentation via Multi-Rater Agreement Modeling, CVPR 2021"
    summary = "calibrated consensus + any rater mix + per-rater maps (rater-conditioned ConvLSTM, R heads)"

    @classmethod
    def check(cls, dataset: Dataset, config: MRNetConfig) -> None:
        """The dataset must have raters, and the default ``rater_weights`` one weight per rater."""
        check_raters(dataset, cls.name)
        if config.rater_weights is not None:
            check_condition(config.rater_weights, len(dataset.rater_ids))

    @classmethod
    def plan(cls, dataset: Dataset, config: MRNetConfig) -> Plan:
        """Patch size and normalisation from the train split (multiples of the encoder's down-sampling)."""
        return multirater_plan(dataset, config, encoder_divisor(config.channels, config.encoder))

    @classmethod
    def build(cls, fit: FitContext[MRNetConfig]) -> Stage:
        """The network over the run's raters, rater-stack patches and validation soft Dice."""
        rater_ids, source, val_cases = multirater_training(fit)
        net = _build(fit.config, fit.plan, len(rater_ids))
        return Stage(MRNetTask(net, fit.plan, fit.config, rater_ids), source, fit.config.train, val_cases)
