"""Cross Pseudo Supervision (CPS) for semi-supervised segmentation, the FLARE22 reference module.

Chen et al., "Semi-Supervised Semantic Segmentation with Cross Pseudo Supervision", CVPR 2021; used on 2D CT
slices by Huynh et al. (FLARE22). Two networks ``a`` and ``b`` (same or different architectures, always
differently initialised) are trained jointly:

* **supervised loss** on labelled images/slices: Dice + CE (``supervised_loss: dice_ce``, labelwise's default)
  or CE + Lovasz-softmax (``ce_lovasz``, the FLARE22 choice), for each network;
* **cross pseudo supervision** on every image of the batch (labelled and unlabelled): CE of network a against
  the argmax of network b and vice versa, weighted by ``lambda(t) = cps_weight * exp(-5 (1 - t/T)^2)`` with
  t the optimiser step and ``T = rampup * total steps`` (constant ``cps_weight`` after T). ``cps_weight: 0``
  gives the supervised-only baseline with the same networks and data.

Prediction fuses both networks: the mean of their softmax probabilities.

Data: labelled and unlabelled units come from the same manifest. For 2D datasets a case with raters is labelled
and a case with ``R = 0`` unlabelled. For 3D datasets the networks are 2D and work on slices along the last
axis: labelled slices are the case's ``labelled_slices`` (or ``train_slices`` of them, the k-labelled-slice
protocol of :func:`labelwise.data.slices.k_slice_split`; the chosen ones are recorded in ``plan.json``), every
other slice is unlabelled. ``pseudo_labels`` adds the slices of a pseudo-label dataset written by
``labelwise pseudo-label`` (rater ``pseudo``) as extra labelled slices (retraining stage). If there is no
unlabelled unit, CPS uses the labelled images only.

CT windowing (``ct_windows: true``) turns a one-channel HU image into the three FLARE22 windows
(:data:`labelwise.data.slices.FLARE_CT_WINDOWS`) before the planner's normalisation.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from labelwise.data import Case, Dataset
from labelwise.data.slices import ct_window_channels, k_slice_split, labelled_slice_indices
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
    seed_everything,
)
from labelwise.errors import ConfigError, DataError
from labelwise.io import Prediction
from labelwise.labels import fused_target
from labelwise.methods.base import FitContext, Method, MethodPredictor, PredictOptions, Stage, register_method
from labelwise.metrics import mean_foreground_dice
from labelwise.models import ModelSpec, build_model, dice_ce_loss, spec_divisor
from labelwise.uncertainty import PSEUDO_RATER

__all__ = [
    "CPSConfig",
    "CPSMethod",
    "CPSOptions",
    "CPSPredictor",
    "CPSTask",
    "case_target",
    "cps_weight",
    "fused_probs",
    "lovasz_softmax_loss",
    "prepare_image",
]

logger = logging.getLogger(__name__)


def _cpu_model() -> ModelSpec:
    """Default network: a 4-level 2D U-Net (16..128 channels, one residual unit); ``full`` uses 32..256, two."""
    return ModelSpec("unet", {"channels": [16, 32, 64, 128], "num_res_units": 1})


def _cpu_train() -> TrainConfig:
    """Default schedule sized for 2 CPU cores (160 steps of batch 4; docs/semisupervised.md, "Default budget")."""
    return TrainConfig(epochs=10, steps_per_epoch=16, batch_size=4, amp=False)


@dataclass(frozen=True)
class CPSConfig:
    """Settings of CPS.

    Attributes:
        model: Network a (default: 4-level 2D U-Net, 16..128 channels, one residual unit; ``full``: 32..256,
            two). Changing ``model.name`` keeps the default ``kwargs`` unless they are set too.
        model_b: Network b (None: the same architecture as a, initialised with another seed).
        cps_weight: Maximum weight of the cross pseudo supervision loss (0: supervised only).
        rampup: Fraction of the total optimiser steps over which the weight ramps up (T).
        supervised_loss: ``"dice_ce"`` or ``"ce_lovasz"``.
        rater: Train on this rater's labels (None: the majority vote of the raters present).
        classes: Train on these foreground classes only (dataset class names; the others become background).
        train_slices: 3D only: number of labelled slices per case used for training (the k-slice protocol);
            None: every labelled slice.
        slice_mode: How the k slices are chosen: ``"even"`` or seeded ``"random"``.
        pseudo_labels: A pseudo-label dataset folder (``labelwise pseudo-label`` output) whose selected slices
            are added as labelled slices; None: none.
        ct_windows: Stack the FLARE22 CT windows as channels (one-channel HU input).
        patch_size: Training/inference patch (None: from the planner).
        foreground_p: Fraction of labelled patches centred on foreground.
        overlap: Sliding-window overlap at inference.
        tta: Flip test-time augmentation at prediction.
        train: Engine settings (default: 10 x 16 steps of batch 4 in fp32, sized for 2 CPU cores; ``cpu``:
            10 x 40; ``full``: 100 x 250 steps of batch 8).
        augment: Augmentation settings (applied to labelled and unlabelled patches independently).

    """

    model: ModelSpec = field(default_factory=_cpu_model)
    model_b: ModelSpec | None = None
    cps_weight: float = 0.1
    rampup: float = 1.0
    supervised_loss: Literal["dice_ce", "ce_lovasz"] = "dice_ce"
    rater: str | None = None
    classes: tuple[str, ...] | None = None
    train_slices: int | None = None
    slice_mode: Literal["even", "random"] = "even"
    pseudo_labels: str | None = None
    ct_windows: bool = False
    patch_size: tuple[int, ...] | None = None
    foreground_p: float = 0.5
    overlap: float = 0.5
    tta: bool = False
    train: TrainConfig = field(default_factory=_cpu_train)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.cps_weight < 0 or not math.isfinite(self.cps_weight):
            raise ConfigError(f"cps_weight must be >= 0, got {self.cps_weight}")
        if not 0 < self.rampup <= 1:
            raise ConfigError(f"rampup must lie in (0, 1], got {self.rampup}")
        if self.train_slices is not None and self.train_slices < 1:
            raise ConfigError(f"train_slices must be >= 1, got {self.train_slices}")
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"overlap must be in [0, 1), got {self.overlap}")


def cps_weight(step: int, total_steps: int, max_weight: float, rampup: float = 1.0) -> float:
    """``max_weight * exp(-5 (1 - t/T)^2)`` with ``T = rampup * total_steps`` (``max_weight`` once t >= T).

    Example:
        >>> round(cps_weight(0, 100, 0.1), 6), round(cps_weight(50, 100, 0.1), 6), cps_weight(100, 100, 0.1)
        (0.000674, 0.02865, 0.1)

    """
    t_max = max(rampup * total_steps, 1.0)
    t = min(step / t_max, 1.0)
    return float(max_weight * math.exp(-5.0 * (1.0 - t) ** 2))


def lovasz_softmax_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Lovasz-softmax loss (Berman et al., CVPR 2018), averaged over the classes present in each sample.

    Args:
        logits: ``(B, K, *spatial)`` raw scores.
        target: ``(B, K, *spatial)`` one-hot (or soft; argmax is used) targets.

    Returns:
        Scalar loss in [0, 1]; samples are averaged. A sample with only background still scores class 0.

    """
    probs = torch.softmax(logits.float(), 1).flatten(2)  # (B, K, N)
    labels = target.argmax(1).flatten(1)  # (B, N)
    losses = []
    for b in range(probs.shape[0]):
        per_class = []
        for c in range(probs.shape[1]):
            fg = (labels[b] == c).float()
            if fg.sum() == 0:
                continue
            errors = (fg - probs[b, c]).abs()
            errors_sorted, perm = torch.sort(errors, descending=True)
            fg_sorted = fg[perm]
            gts = fg_sorted.sum()
            inter = gts - fg_sorted.cumsum(0)
            union = gts + (1 - fg_sorted).cumsum(0)
            jac = 1.0 - inter / union
            grad = torch.cat([jac[:1], jac[1:] - jac[:-1]])
            per_class.append(torch.dot(errors_sorted, grad))
        losses.append(torch.stack(per_class).mean())
    return torch.stack(losses).mean()


def prepare_image(case: Case, ct_windows: bool) -> Case:
    """The case with its image turned into CT-window channels when ``ct_windows`` (else unchanged)."""
    if not ct_windows:
        return case
    if case.image.shape[0] != 1:
        raise DataError(f"case {case.id}: ct_windows needs a one-channel HU image, got {case.image.shape[0]} channels")
    return replace(case, image=ct_window_channels(case.image[0]))


def case_target(case: Case, cfg: CPSConfig, num_classes: int) -> np.ndarray | None:
    """One-hot target ``(K, *spatial)`` of a case (model classes): ``cfg.rater``'s map or the majority vote."""
    return fused_target(case, "majority" if cfg.rater is None else "rater", num_classes, cfg.rater)


def _supervised(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "ce_lovasz":
        return F.cross_entropy(logits.float(), target.float()) + lovasz_softmax_loss(logits, target)
    return dice_ce_loss(logits, target)


class _PairSource:
    """A labelled patch (image + target) and an unlabelled patch (``u_image``) per sample."""

    def __init__(self, labelled: PatchSource, unlabelled: PatchSource) -> None:
        self.labelled, self.unlabelled = labelled, unlabelled

    def sample(self, epoch: int, index: int, rng: np.random.Generator) -> dict[str, Any]:
        s = self.labelled.sample(epoch, index, rng)
        u = self.unlabelled.sample(epoch, index, rng)
        return {"image": s["image"], "target": s["target"], "u_image": u["image"], "case": s["case"], "aug": s["aug"]}


class CPSTask(TrainTask):
    """Two networks, supervised loss on labelled patches, cross pseudo supervision on all patches."""

    def __init__(self, net_a: torch.nn.Module, net_b: torch.nn.Module, plan: Plan, cfg: CPSConfig) -> None:
        self.modules = {"a": net_a, "b": net_b}
        self.plan = plan
        self.cfg = cfg

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        """Supervised + lambda(t) * CPS loss of one micro-batch."""
        x, y, u = batch["image"], batch["target"], batch["u_image"]
        n = x.shape[0]
        both = torch.cat([x, u], 0)
        la = ctx.module("a")(both)
        lb = ctx.module("b")(both)
        sup = _supervised(la[:n], y, self.cfg.supervised_loss) + _supervised(lb[:n], y, self.cfg.supervised_loss)
        lam = cps_weight(ctx.step, ctx.total_steps, self.cfg.cps_weight, self.cfg.rampup)
        if self.cfg.cps_weight > 0:
            pa, pb = la.detach().argmax(1), lb.detach().argmax(1)
            cps = F.cross_entropy(la.float(), pb) + F.cross_entropy(lb.float(), pa)
        else:
            cps = torch.zeros((), device=x.device)
        return {"loss": sup + lam * cps, "sup": sup.detach(), "cps": cps.detach(), "cps_lambda": torch.tensor(lam)}

    def validation_step(self, case: Case, ctx: StepContext) -> dict[str, float]:
        """Mean foreground Dice of the fused prediction on the case's labelled voxels/slices."""
        mc = self.plan.model_case(case)
        target = case_target(mc, self.cfg, self.plan.num_classes)
        if target is None:
            return {}
        probs = fused_probs(
            self.modules, prepare_image(case, self.cfg.ct_windows), self.plan, self.cfg.overlap, False, ctx.device
        )
        label, pred = np.argmax(target, 0), np.argmax(probs, 0)
        if self.plan.slicewise:
            idx = list(labelled_slice_indices(mc))
            label, pred = label[..., idx], pred[..., idx]
        return {"dice": mean_foreground_dice(pred, label, self.plan.num_classes)}


def fused_probs(
    nets: dict[str, torch.nn.Module], case: Case, plan: Plan, overlap: float, tta: bool, device: torch.device
) -> np.ndarray:
    """Mean of the networks' softmax probabilities ``(K, *spatial)`` for a (prepared) case."""
    image = normalize_image(case.image, plan)
    out = None
    for net in nets.values():
        if plan.slicewise:
            p = predict_slicewise(net, image, plan.patch_size, overlap, tta, device=device)
        else:
            p = predict_probs(net, image, plan.patch_size, overlap, tta, device=device)
        out = p if out is None else out + p
    assert out is not None
    return np.asarray(out / len(nets), dtype=np.float32)


def _pseudo_slices(path: str, plan: Plan) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Case id -> (pseudo-label volume in model classes, kept slices) from a pseudo-label dataset."""
    ds = Dataset(path)
    if PSEUDO_RATER not in ds.rater_ids:
        raise DataError(f"not a pseudo-label dataset (no rater {PSEUDO_RATER!r})", ds.root)
    out = {}
    for case in ds:
        if not case.num_raters:
            continue
        mc = plan.model_case(case) if tuple(ds.class_names) != tuple(plan.class_names) else case
        lab = mc.raters[case.rater_ids.index(PSEUDO_RATER)]
        out[case.id] = (lab, list(labelled_slice_indices(case)))
    return out


def _training_arrays(
    dataset: Dataset, cfg: CPSConfig, plan: Plan
) -> tuple[list[dict[str, np.ndarray]], list[str], list[dict[str, np.ndarray]], list[str]]:
    k = plan.num_classes
    lab, lab_ids, unl, unl_ids = [], [], [], []
    pseudo = _pseudo_slices(cfg.pseudo_labels, plan) if cfg.pseudo_labels else {}
    eye = np.eye(k, dtype=np.float32)
    for case in dataset.cases("train"):
        case = prepare_image(case, cfg.ct_windows)
        img = normalize_image(case.image, plan)
        mc = plan.model_case(case)
        target = case_target(mc, cfg, k)
        if not plan.slicewise:
            if target is not None:
                lab.append({"image": img, "target": target})
                lab_ids.append(case.id)
            else:
                unl.append({"image": img})
                unl_ids.append(case.id)
            continue
        train_z = set(plan.train_slices.get(case.id, []))
        extra: dict[int, np.ndarray] = {}
        if case.id in pseudo:
            plab, pz = pseudo[case.id]
            extra = {z: plab[..., z] for z in pz if z not in train_z}
        for z in range(case.spatial_shape[-1]):
            if z in train_z and target is not None:
                lab.append({"image": img[..., z], "target": target[..., z]})
                lab_ids.append(f"{case.id}:{z}")
            elif z in extra:
                lab.append({"image": img[..., z], "target": np.moveaxis(eye[extra[z].astype(np.int64)], -1, 0)})
                lab_ids.append(f"{case.id}:{z}:pseudo")
            else:
                unl.append({"image": img[..., z]})
                unl_ids.append(f"{case.id}:{z}")
    if not lab:
        raise DataError(f"{dataset.root}: no labelled training images or slices")
    if not unl:
        logger.info("no unlabelled images: cross pseudo supervision uses the labelled images only")
        unl = [{"image": a["image"]} for a in lab]
        unl_ids = list(lab_ids)
    return lab, lab_ids, unl, unl_ids


def _build_nets(cfg: CPSConfig, plan: Plan) -> tuple[torch.nn.Module, torch.nn.Module]:
    seed_everything(cfg.train.seed)
    net_a = build_model(cfg.model, plan.spatial_dims, plan.channels, plan.num_classes)
    seed_everything(cfg.train.seed + 1)
    net_b = build_model(cfg.model_b or cfg.model, plan.spatial_dims, plan.channels, plan.num_classes)
    return net_a, net_b


@dataclass(frozen=True)
class CPSOptions(PredictOptions):
    """Prediction options of ``cps`` (None: the run config's value).

    Attributes:
        tta: Flip test-time augmentation.

    """

    tta: bool | None = None


class CPSPredictor(MethodPredictor[CPSConfig, CPSOptions]):
    """Predicts cases with a trained CPS run: the mean of both networks' softmax ``(K, *spatial)``.

    The Prediction's ``samples`` hold the two networks' label maps ``(2, *spatial)`` (the inputs of
    :mod:`labelwise.uncertainty`) and ``uncertainty`` their voxel disagreement (0 or 1).
    """

    Options = CPSOptions

    def setup(self) -> None:
        """Rebuild both networks from ``config.yaml`` + ``plan.json`` and load ``weights.safetensors``."""
        net_a, net_b = _build_nets(self.config, self.plan)
        self.nets = {"a": net_a, "b": net_b}
        self.run.load(self.nets)

    def predict_case(self, case: Case, options: CPSOptions) -> Prediction:
        """Fused class probabilities, the two networks' label maps and their disagreement."""
        prepared = prepare_image(case, self.config.ct_windows)
        tta = self.config.tta if options.tta is None else options.tta
        parts = [
            fused_probs({n: m}, prepared, self.plan, self.config.overlap, tta, self.device)
            for n, m in self.nets.items()
        ]
        probs = np.asarray((parts[0] + parts[1]) / 2, dtype=np.float32)
        samples = np.stack([np.argmax(p, 0) for p in parts]).astype(np.uint8)
        return Prediction(probs=probs, samples=samples, uncertainty=(samples[0] != samples[1]).astype(np.float32))


@register_method("cps")
class CPSMethod(Method):
    """Two differently initialised networks teaching each other on unlabelled data."""

    Config = CPSConfig
    Predictor = CPSPredictor
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {
            "model": {"name": "unet", "kwargs": {"channels": [32, 64, 128, 256], "num_res_units": 2}},
            "train": {"epochs": 100, "steps_per_epoch": 250, "batch_size": 8, "amp": True},
        },
        "cpu": {  # the default network, 2.5x the default schedule
            "model": {"name": "unet", "kwargs": {"channels": [16, 32, 64, 128], "num_res_units": 1}},
            "train": {"epochs": 10, "steps_per_epoch": 40, "batch_size": 4, "amp": False},
        },
        "smoke": {  # = unet_tiny, spelt as unet so that the default kwargs merge cleanly
            "model": {"name": "unet", "kwargs": {"channels": [4, 8, 16], "num_res_units": 1}},
            "train": {"epochs": 2, "steps_per_epoch": 3, "batch_size": 2},
        },
    }
    citation = "Chen et al., Cross Pseudo Supervision, CVPR 2021; Huynh et al., FLARE22 (MICCAI 2022 challenge)"
    summary = "Cross Pseudo Supervision: two networks, each supervised by the other's argmax on unlabelled data"

    @classmethod
    def plan(cls, dataset: Dataset, config: CPSConfig) -> Plan:
        """Patch size and normalisation (after CT windowing) from the train split; class subset; k slices."""
        train_cases = [prepare_image(c, config.ct_windows) for c in dataset.cases("train")]
        slicewise = dataset.spatial_dims == 3
        plan = make_plan(train_cases, spec_divisor(config.model), slicewise, config.patch_size)
        if config.ct_windows:
            plan = replace(plan, dataset_channels=dataset.manifest.channels)
        plan = plan.select_classes(dataset.class_names, config.classes)
        if slicewise:
            seed = config.train.seed
            chosen = {
                c.id: list(k_slice_split(c, config.train_slices, config.slice_mode, seed).train)
                for c in train_cases
                if c.num_raters
            }
            plan = replace(plan, train_slices=chosen)
        return plan

    @classmethod
    def build(cls, fit: FitContext[CPSConfig]) -> Stage:
        """Networks a and b, labelled + unlabelled patches, validation Dice of the fused prediction."""
        config, plan = fit.config, fit.plan
        net_a, net_b = _build_nets(config, plan)
        lab, lab_ids, unl, unl_ids = _training_arrays(fit.dataset, config, plan)
        fit.meta.update(labelled_units=len(lab), unlabelled_units=len(unl), train_slices=plan.train_slices)
        seed = config.train.seed
        source = _PairSource(
            PatchSource(lab, plan.patch_size, config.augment, "target", config.foreground_p, lab_ids, seed=seed),
            PatchSource(unl, plan.patch_size, config.augment, None, 0.0, unl_ids, seed=seed + 1),
        )
        return Stage(CPSTask(net_a, net_b, plan, config), source, config.train, list(fit.dataset.cases("val")))
