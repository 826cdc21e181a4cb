"""The trainable ``propagation`` method: a reference model (CPS) + an STCN trained to propagate masks.

FLARE22's two-stage pipeline (Huynh et al.): :meth:`PropagationMethod.fit` trains the reference model, a
``cps`` stage built by :meth:`labelwise.methods.cps.CPSMethod.build` (in ``RUN/reference``; skipped with
``anchors: labelled``), then the STCN of :mod:`labelwise.models.stcn` on sequences of labelled slices (in
``RUN``). Both stages share the run's one ``plan.json`` (the reference config's classes, k training slices and
CT windows). At prediction the reference model labels the volume, its largest-area slice per class becomes the
anchor, and :func:`~labelwise.methods.propagation.algorithm.propagate` (the trained STCN, or the training-free
read-out) fills the volume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from labelwise.data import Case, Dataset
from labelwise.data.slices import ct_window_channels, labelled_slice_indices
from labelwise.engine import (
    FitResult,
    Plan,
    RunDir,
    StepContext,
    TrainConfig,
    TrainTask,
    crop_or_pad,
    normalize_image,
    seed_everything,
)
from labelwise.errors import ConfigError, DataError
from labelwise.io import Prediction
from labelwise.methods.base import (
    FitContext,
    Method,
    MethodPredictor,
    PredictOptions,
    Stage,
    TrainedRun,
    open_run,
    register_method,
)
from labelwise.methods.cps import CPSConfig, CPSMethod, CPSPredictor, case_target, prepare_image
from labelwise.methods.propagation.algorithm import PropagationModel, propagate, propagate_from_reference
from labelwise.models.stcn import STCN, STCNConfig

__all__ = [
    "REFERENCE",
    "PropagationConfig",
    "PropagationMethod",
    "PropagationOptions",
    "PropagationPredictor",
    "STCNTask",
    "load_propagation_model",
    "max_jump_at",
    "stcn_model",
]

#: Sub-folder of a ``propagation`` run holding the reference model's stage.
REFERENCE = "reference"


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


def stcn_model(run: TrainedRun) -> PropagationModel:
    """The trained STCN of an opened ``propagation`` run, with the normalisation it was trained with."""
    config: PropagationConfig = run.config
    plan = run.plan
    net = STCN(plan.channels, config.stcn)
    run.load({"stcn": net})
    ct = config.reference.ct_windows

    def normalize(volume: np.ndarray) -> np.ndarray:
        vol = ct_window_channels(volume[0]) if ct else volume
        return normalize_image(vol, plan)

    return PropagationModel(net, normalize, run.device)


def load_propagation_model(run_dir: str | Path, device: torch.device | str | None = None) -> PropagationModel:
    """Load the STCN of a ``propagation`` run directory (``config.yaml``, ``plan.json``, ``weights.safetensors``).

    Raises:
        ConfigError: the run is not a ``propagation`` run.
        DataError: not a run directory, or no weights yet.

    """
    name, _ = RunDir(run_dir).read_config()
    if name != "propagation":
        raise ConfigError(f"{run_dir}: a {name!r} run, not a propagation run")
    return stcn_model(open_run(run_dir, PropagationConfig, device))


@dataclass(frozen=True)
class PropagationOptions(PredictOptions):
    """Prediction options of ``propagation`` (None: the run config's value).

    Attributes:
        training_free: Use the training-free read-out instead of the trained STCN.
        tta: Flip test-time augmentation of the reference model (``anchors: reference`` and 2D cases).

    """

    training_free: bool | None = None
    tta: bool | None = None


class PropagationPredictor(MethodPredictor[PropagationConfig, PropagationOptions]):
    """Predicts cases with a trained ``propagation`` run: class probabilities ``(K, *spatial)``.

    3D cases are filled by propagation (from the reference model's slices or the case's labelled training
    slices); a 2D case gets the reference model's prediction.
    """

    Options = PropagationOptions

    def setup(self) -> None:
        """Load the STCN and, with ``anchors: reference``, the reference stage (``RUN/reference``)."""
        self.model = stcn_model(self.run)
        self.reference: CPSPredictor | None = None
        if self.config.anchors == "reference":
            stage = TrainedRun(RunDir(self.run.rundir.path / REFERENCE), self.config.reference, self.plan, self.device)
            self.reference = CPSPredictor(stage)

    def predict_case(self, case: Case, options: PropagationOptions) -> Prediction:
        """Class probabilities: propagated through a 3D case, the reference model's for a 2D one."""
        free = self.config.training_free if options.training_free is None else options.training_free
        model = None if free else self.model
        k = self.plan.num_classes
        if case.spatial_dims == 2:
            if self.reference is None:
                raise ConfigError("a 2D case needs the reference model (anchors: reference)")
            return self.reference.predict(case, tta=options.tta)
        if self.reference is not None:
            ref = self.reference.predict(case, tta=options.tta)
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


@register_method("propagation")
class PropagationMethod(Method):
    """Reference model (CPS) + STCN mask propagation from reference (or user-annotated) slices."""

    Config = PropagationConfig
    Predictor = PropagationPredictor
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
    def check(cls, dataset: Dataset, config: PropagationConfig) -> None:
        """``anchors: labelled`` needs slices to propagate along (a 3D dataset)."""
        if config.anchors == "labelled" and dataset.spatial_dims != 3:
            raise ConfigError("anchors: labelled needs a 3D dataset (slices to propagate along)")

    @classmethod
    def plan(cls, dataset: Dataset, config: PropagationConfig) -> Plan:
        """The reference model's plan: the STCN trains and predicts on the same classes, slices and channels."""
        return CPSMethod.plan(dataset, config.reference)

    @classmethod
    def train(cls, fit: FitContext[PropagationConfig]) -> FitResult:
        """The reference stage (``RUN/reference``, unless ``anchors: labelled``), then the STCN (``RUN``)."""
        config = fit.config
        if config.anchors == "reference":
            reference = FitContext(
                fit.dataset, config.reference, RunDir(fit.path / REFERENCE), fit.plan, fit.resumed, fit.dist
            )
            fit.run_stage(CPSMethod.build(reference), REFERENCE)
        seed_everything(config.train.seed)
        net = STCN(fit.plan.channels, config.stcn)
        source = _SequenceSource(_stcn_volumes(fit.dataset, config, fit.plan), config)
        fit.meta.update(units=len(source.units), train_slices=fit.plan.train_slices)
        return fit.run_stage(Stage(STCNTask(net, source), source, config.train))
