"""What the weakly supervised methods ``cam`` and ``cltn`` share: domains, plan, selection, mask finishing, options.

Both methods learn from image-level labels only: they train on the lesion and healthy domains of
:mod:`labelwise.data.domains` (no pixel label is read) and turn a working-size foreground map into a mask the same
way. Written once here:

* :class:`WeakMethod`: the skeleton hooks common to both (:meth:`~WeakMethod.check` the domains before anything is
  written, the weak ``plan.json``, the training stage on the two domains, checkpoint selection, and what
  ``meta.json`` says about the domains, gating and selection); a weak method fills :meth:`~WeakMethod.task` only;
* :class:`DomainSource`: balanced (or paired) training samples of the two domains with random dihedral flips;
* :func:`mask_probability`: image-level gating, then :func:`finish_probability` (threshold rescaling, optional
  dense CRF, optional Otsu clean-up from :mod:`labelwise.postprocess`, resizing back to the image's own size);
* :class:`WeakPredictor` with :class:`WeakOptions` (``crf``, ``postprocess``, ``gate``); a weak predictor fills
  :meth:`~WeakPredictor.foreground_map` only.

**Image-level gating** (``gate``): the mask is emptied (foreground probability 0 everywhere) when the method's
image-level classifier calls the image healthy (lesion probability < 0.5). ``gate: auto`` (default) turns it on
when the healthy domain was made of real normal images (``healthy_source`` ``normal``, e.g. CT slices without the
organ) and off for a periphery-made healthy domain (PH2: every real image holds a lesion, and the classifier only
learnt to tell images from their border-made healthy versions, so its "healthy" says nothing about a real image).

**Selection** (``selection``): ``last`` (default) keeps the weights of the last epoch, so no pixel label is read;
``val`` keeps the epoch with the best mean Jaccard (IoU) on the ``val`` split's masks (the first rater), the only
place where masks enter training, and only as a checkpoint choice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, TypeVar, get_args

import numpy as np

from labelwise.data import Case, Dataset
from labelwise.data.domains import (
    DomainConfig,
    Domains,
    build_domains,
    check_domains,
    fix_channels,
    prepare_image,
    resize_chw,
    write_example_dataset,
)
from labelwise.engine import ChannelNorm, FitResult, Plan, TrainConfig, TrainTask
from labelwise.errors import ConfigError, DataError
from labelwise.io import Prediction
from labelwise.methods.base import FitContext, Method, MethodPredictor, PredictOptions, Stage, TrainedRun
from labelwise.postprocess import CRFConfig, clean_mask, dense_crf, rescale_probability

__all__ = [
    "DEFAULT_POSTPROCESS",
    "DomainSource",
    "GateMode",
    "PostprocessMode",
    "SelectionMode",
    "WeakMethod",
    "WeakOptions",
    "WeakPredictor",
    "WeakSettings",
    "empty_probability",
    "finish_probability",
    "gate_enabled",
    "mask_iou",
    "mask_probability",
    "random_dihedral",
    "selection_text",
    "val_cases",
    "val_scores",
    "weak_plan",
]

GateMode = Literal["auto", "always", "never"]
SelectionMode = Literal["last", "val"]
PostprocessMode = Literal["none", "otsu"]
#: The mask clean-up both weak methods apply by default (:func:`finish_probability`): Otsu's threshold of the
#: map, hole filling, largest component. One default, so ``cam`` and ``cltn`` are compared like with like.
DEFAULT_POSTPROCESS: PostprocessMode = "otsu"


class WeakSettings(Protocol):
    """The config fields every weak method has (``CAMConfig``, ``CLTNConfig``)."""

    @property
    def domain(self) -> DomainConfig:
        """Lesion/healthy domains and working size."""
        ...

    @property
    def threshold(self) -> float:
        """Map value that becomes probability 0.5."""
        ...

    @property
    def postprocess(self) -> str:
        """``none`` or ``otsu``."""
        ...

    @property
    def crf(self) -> bool:
        """Refine with a dense CRF."""
        ...

    @property
    def crf_config(self) -> CRFConfig:
        """Dense CRF settings."""
        ...

    @property
    def augment(self) -> bool:
        """Random flips / 90-degree rotations during training."""
        ...

    @property
    def gate(self) -> str:
        """``auto``, ``always`` or ``never``."""
        ...

    @property
    def selection(self) -> str:
        """``last`` or ``val``."""
        ...

    @property
    def train(self) -> TrainConfig:
        """Engine settings."""
        ...


WeakConfigT = TypeVar("WeakConfigT", bound=WeakSettings)


# --------------------------------------------------------------------------------------------------- training data
def weak_plan(dataset: Dataset, image_size: int) -> Plan:
    """A ``plan.json`` for weak 2D methods (images are resized to ``image_size``; see labelwise.data.domains)."""
    m = dataset.manifest
    return Plan(
        spatial_dims=2,
        data_spatial_dims=2,
        channels=m.channels,
        class_names=tuple(m.class_names),
        patch_size=(image_size, image_size),
        median_spacing_mm=(1.0, 1.0),
        median_shape=(image_size, image_size),
        normalization=tuple(ChannelNorm() for _ in range(m.channels)),
    )


def random_dihedral(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Apply one of the 8 flips/90-degree rotations to ``(C, H, W)``; returns the image and its code 0..7."""
    code = int(rng.integers(8))
    out = np.rot90(image, k=code % 4, axes=(1, 2))
    if code >= 4:
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out), code


class DomainSource:
    """Balanced samples of the two domains: even indices lesion, odd indices healthy (drawn uniformly).

    Samples are ``{"image": (C, S, S) float32, "domain": 1 (lesion) or 0 (healthy), "aug": code}``; with
    ``paired=True`` each sample holds one image of each domain: ``{"a": lesion, "b": healthy}``.
    """

    def __init__(self, domains: Domains, augment: bool = True, paired: bool = False) -> None:
        self.domains = domains
        self.augment = augment
        self.paired = paired

    def _draw(self, pool: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        img = pool[int(rng.integers(len(pool)))]
        return random_dihedral(img, rng) if self.augment else (img, 0)

    def sample(self, epoch: int, index: int, rng: np.random.Generator) -> dict[str, Any]:
        """One sample (see the class docstring)."""
        if self.paired:
            a, ca = self._draw(self.domains.lesion, rng)
            b, cb = self._draw(self.domains.healthy, rng)
            return {"a": a, "b": b, "aug": ca * 8 + cb}
        lesion = index % 2 == 0
        img, code = self._draw(self.domains.lesion if lesion else self.domains.healthy, rng)
        return {"image": img, "domain": int(lesion), "aug": code}


# --------------------------------------------------------------------------------------------------- masks
def finish_probability(
    prob: np.ndarray,
    image: np.ndarray,
    out_shape: tuple[int, ...],
    threshold: float,
    postprocess: str,
    crf: CRFConfig | None,
) -> np.ndarray:
    """Turn a working-size map into class probabilities in the image's geometry.

    Args:
        prob: ``(S, S)`` foreground map in [0, 1].
        image: ``(C, S, S)`` working-size image (for the CRF's bilateral kernel).
        out_shape: ``(H, W)`` of the original image.
        threshold: Map value that becomes probability 0.5.
        postprocess: ``none`` or ``otsu``.
        crf: CRF settings, or None for no CRF.

    Returns:
        ``(2, H, W)`` float32 probabilities (background, foreground); foreground ``>= 0.5`` is the mask.

    """
    p = rescale_probability(prob, threshold)
    if crf is not None:
        p = dense_crf(image, p, crf)
    if postprocess == "otsu":
        mask = clean_mask(p, "otsu")
        p = np.where(mask, 0.5 + 0.5 * p, 0.499 * p).astype(np.float32)
    fg = resize_chw(p[None], out_shape)[0].clip(0, 1)
    return np.stack([1 - fg, fg]).astype(np.float32)


def empty_probability(out_shape: tuple[int, ...]) -> np.ndarray:
    """``(2, H, W)`` float32 probabilities of an image gated as healthy: background 1, foreground 0."""
    return np.stack([np.ones(out_shape, np.float32), np.zeros(out_shape, np.float32)])


def gate_enabled(mode: str, healthy_source: str | None) -> bool:
    """Resolve a ``gate`` setting: ``auto`` is on only when the healthy domain was real normal images.

    Args:
        mode: ``auto``, ``always`` or ``never`` (not on/off, which YAML reads as booleans).
        healthy_source: The run's healthy domain (``normal`` or ``periphery``; None if unknown: off for auto).

    Example:
        >>> gate_enabled("auto", "normal"), gate_enabled("auto", "periphery"), gate_enabled("always", "periphery")
        (True, False, True)

    """
    if mode not in get_args(GateMode):
        raise ConfigError(f"gate must be auto, always or never, got {mode!r}")
    return mode == "always" or (mode == "auto" and healthy_source == "normal")


def mask_probability(
    fmap: np.ndarray,
    p_lesion: float,
    image: np.ndarray,
    out_shape: tuple[int, ...],
    cfg: WeakSettings,
    gate: bool,
    crf: bool | None = None,
    postprocess: str | None = None,
) -> np.ndarray:
    """The prediction of one image: empty when gated and called healthy, else :func:`finish_probability`.

    Args:
        fmap: ``(S, S)`` working-size foreground map in [0, 1].
        p_lesion: The image-level lesion probability.
        image: ``(C, S, S)`` working-size image.
        out_shape: ``(H, W)`` of the original image.
        cfg: The method's config (threshold, post-processing, CRF).
        gate: Gating is on (:func:`gate_enabled`).
        crf: Dense CRF refinement (None: ``cfg.crf``).
        postprocess: ``none`` or ``otsu`` (None: ``cfg.postprocess``).

    Returns:
        ``(2, H, W)`` float32 probabilities (background, foreground).

    """
    if gate and p_lesion < 0.5:
        return empty_probability(out_shape)
    use_crf = cfg.crf if crf is None else crf
    return finish_probability(
        fmap,
        image,
        out_shape,
        cfg.threshold,
        cfg.postprocess if postprocess is None else postprocess,
        cfg.crf_config if use_crf else None,
    )


# --------------------------------------------------------------------------------------------------- selection
def mask_iou(probs: np.ndarray, target: np.ndarray) -> float:
    """Jaccard index of ``probs[1] >= 0.5`` with ``target > 0``; 1.0 when both are empty.

    Args:
        probs: ``(2, H, W)`` class probabilities.
        target: ``(H, W)`` label map (foreground > 0).

    Example:
        >>> p = np.zeros((2, 2, 2), np.float32); p[1, 0] = 1
        >>> mask_iou(p, np.array([[1, 0], [0, 0]])), mask_iou(np.zeros((2, 2, 2)), np.zeros((2, 2)))
        (0.5, 1.0)

    """
    from labelwise.metrics import iou

    return float(iou(probs[1] >= 0.5, np.asarray(target) > 0))


def val_scores(probs: np.ndarray, case: Case) -> dict[str, float]:
    """IoU and Dice of ``probs`` ``(2, H, W)`` with the case's first rater mask (selection on the val split)."""
    if case.num_raters == 0:
        raise DataError(f"case {case.id}: selection=val needs a mask on every val case")
    ref = case.raters[0]
    iou = mask_iou(probs, ref)
    return {"iou": iou, "dice": 2 * iou / (1 + iou)}


def _check_selection(dataset: Dataset, selection: str) -> None:
    if selection == "val" and not dataset.split_ids("val"):
        raise DataError("selection=val needs cases in the val split", dataset.root)


def val_cases(dataset: Dataset, selection: str) -> list[Case]:
    """The val split's cases for ``selection: val`` (masks read for checkpoint choice only), else none."""
    _check_selection(dataset, selection)
    return list(dataset.cases("val")) if selection == "val" else []


def selection_text(selection: str, best_epoch: int, metrics: dict[str, float]) -> str:
    """What ``meta.json`` says about checkpoint selection."""
    if selection != "val":
        return "last epoch (no pixel labels used)"
    shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
    return f"best val IoU: epoch {best_epoch + 1} ({shown}); val masks used for this choice only"


# --------------------------------------------------------------------------------------------------- the method
class WeakMethod(Method):
    """Skeleton hooks shared by the weak methods; a subclass sets ``Config``/``Predictor`` and fills :meth:`task`.

    :meth:`build` trains the subclass's task on samples of the two domains (:class:`DomainSource`, one image per
    sample, or a (lesion, healthy) pair when ``paired``); ``meta.json`` says what the domains were (``domains``,
    ``healthy_source``), whether gating is on (``gate``) and how the weights were chosen (``selection``).
    """

    paired: ClassVar[bool] = False

    @classmethod
    def check(cls, dataset: Dataset, config: WeakSettings) -> None:
        """Before anything is written: both domains can be built from the train split; val cases for selection."""
        check_domains(dataset, config.domain, "train")
        _check_selection(dataset, config.selection)

    @classmethod
    def plan(cls, dataset: Dataset, config: WeakSettings) -> Plan:
        """The weak plan at the working size (:func:`weak_plan`)."""
        return weak_plan(dataset, config.domain.image_size)

    @classmethod
    def task(cls, channels: int, config: Any, healthy_source: str) -> TrainTask:
        """The method's networks and training task (``healthy_source``: what domain B is, for the gate)."""
        raise NotImplementedError(f"method {cls.name!r} does not define task()")

    @classmethod
    def build(cls, fit: FitContext[Any]) -> Stage:
        """:meth:`task` on samples of the training domains (images only, never masks); val cases for selection."""
        config = fit.config
        domains = build_domains(fit.dataset, config.domain, "train")
        fit.meta.update(
            domains=domains.describe(),
            healthy_source=domains.source,
            gate=gate_enabled(config.gate, domains.source),
        )
        task = cls.task(fit.dataset.manifest.channels, config, domains.source)
        source = DomainSource(domains, config.augment, paired=cls.paired)
        return Stage(task, source, config.train, val_cases(fit.dataset, config.selection))

    @classmethod
    def train(cls, fit: FitContext[Any]) -> FitResult:
        """One stage (:meth:`build`); ``meta.json`` says how the weights were selected."""
        result = fit.run_stage(cls.build(fit))
        fit.meta["selection"] = selection_text(fit.config.selection, result.best_epoch, result.best_metrics)
        return result

    @classmethod
    def example_dataset(cls, dest: Path) -> Dataset:
        """A tiny weakly labelled dataset (image label ``lesion``) for the contract test."""
        return write_example_dataset(dest)


# --------------------------------------------------------------------------------------------------- prediction
@dataclass(frozen=True)
class WeakOptions(PredictOptions):
    """Prediction options of the weak methods (None: the run config's value). No ``tta``: the maps have none.

    Attributes:
        crf: Dense CRF refinement.
        postprocess: ``none`` or ``otsu`` (Otsu threshold, hole filling, largest component).
        gate: ``auto``, ``always`` or ``never``: empty the mask of images the classifier calls healthy.

    """

    crf: bool | None = None
    postprocess: PostprocessMode | None = None
    gate: GateMode | None = None

    def __post_init__(self) -> None:
        if self.crf is not None and not isinstance(self.crf, bool | np.bool_):
            raise ConfigError(f"crf must be true or false, got {self.crf!r}")
        if self.postprocess is not None and self.postprocess not in get_args(PostprocessMode):
            raise ConfigError(f"postprocess must be none or otsu, got {self.postprocess!r}")
        if self.gate is not None:
            gate_enabled(self.gate, None)


class WeakPredictor(MethodPredictor[WeakConfigT, WeakOptions]):
    """Base of the weak predictors: lesion probabilities ``(2, H, W)`` of 2D images in their own geometry.

    Subclasses build their networks in :meth:`setup` and implement :meth:`foreground_map`. A grayscale image
    given to an RGB model is replicated to 3 channels (as in :mod:`labelwise.data.domains`).

    Args:
        run: The opened run; its ``meta.json`` says what the healthy domain was (for ``gate: auto``).

    """

    Options = WeakOptions

    def __init__(self, run: TrainedRun) -> None:
        self.healthy_source: str | None = run.rundir.read_meta().get("healthy_source")
        super().__init__(run)

    def predict(self, case: Case, **options: Any) -> Prediction:
        """Lesion probabilities ``(2, H, W)`` of a 2D case (options: :class:`WeakOptions`)."""
        if case.image.shape[0] != self.plan.channels:
            case = replace(case, image=fix_channels(case.image, self.plan.channels, case.id))
        return super().predict(case, **options)

    def working_image(self, case: Case) -> np.ndarray:
        """``(C, S, S)`` float32 in [-1, 1]: the case's image at the working size (:func:`prepare_image`)."""
        return prepare_image(case.image, self.plan.channels, self.config.domain.image_size, case.id)

    def foreground_map(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """The ``(S, S)`` foreground map in [0, 1] and the image-level lesion probability of a working image."""
        raise NotImplementedError

    def predict_case(self, case: Case, options: WeakOptions) -> Prediction:
        """Gate, finish and resize the foreground map of ``case``."""
        img = self.working_image(case)
        fmap, p_lesion = self.foreground_map(img)
        gate = gate_enabled(options.gate or self.config.gate, self.healthy_source)
        probs = mask_probability(
            fmap, p_lesion, img, case.spatial_shape, self.config, gate, options.crf, options.postprocess
        )
        return Prediction(probs=probs)
