"""CAM baseline: a lesion/healthy classifier trained on image-level labels; its class activation map is the mask.

Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016 (CAM); Selvaraju et al.,
ICCV 2017 (Grad-CAM); Kraehenbuehl & Koltun, NeurIPS 2011 (dense CRF refinement, ``crf: true``).

What the method sees: the lesion and healthy domains of :mod:`labelwise.data.domains` (image-level labels only;
no pixel label is ever read during training). Classifier: MONAI's ``ResNet`` (basic blocks, widths
``widths``, stem stride 1 and no max-pool so the last stage is at 1/8 of the working size), trained with
cross-entropy on balanced lesion/healthy batches with random flips and 90-degree rotations. Maps: MONAI's
``monai.visualize.CAM`` (or ``GradCAM``) for the lesion class on ``layer4``, upsampled and min-max normalised
per image to [0, 1].

Prediction: the normalised map at the working size, optionally refined by a dense CRF and cleaned up (Otsu /
largest component), resized back to the image's own size, and returned as probabilities
``[1 - p, p]`` where ``p >= 0.5`` exactly where the map is at least ``threshold`` (see
:func:`labelwise.methods.crf.rescale_probability`).

**Image-level gating** (``gate``): the mask is emptied (foreground probability 0 everywhere) when the classifier
calls the image healthy (softmax probability of the lesion class < 0.5). ``gate: auto`` (default) turns it on
when the healthy domain was made of real normal images (``healthy_source`` ``normal``, e.g. CT slices without
the organ) and off for a periphery-made healthy domain (PH2: every real image holds a lesion, and the classifier
only learnt to tell images from their border-made healthy versions, so its "healthy" says nothing about a real
image).

Selection (``selection``): ``last`` (default) keeps the weights of the last epoch, so no pixel label is read;
``val`` keeps the epoch with the best mean Jaccard (IoU) on the ``val`` split's masks (the first rater), the
only place where masks enter training, and only as a checkpoint choice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from labelwise.data import Case, Dataset
from labelwise.data.domains import (
    DomainConfig,
    Domains,
    build_domains,
    prepare_image,
    resize_chw,
    write_example_dataset,
)
from labelwise.engine import (
    ChannelNorm,
    Plan,
    RunDir,
    StepContext,
    TrainConfig,
    Trainer,
    TrainTask,
    config_to_dict,
    init_distributed,
    seed_everything,
)
from labelwise.engine.planner import PLAN_NAME
from labelwise.errors import ConfigError, DataError
from labelwise.io import Prediction
from labelwise.methods.base import Method, open_run, register_method
from labelwise.methods.crf import CRFConfig, clean_mask, dense_crf, rescale_probability

__all__ = [
    "CAMConfig",
    "CAMMethod",
    "CAMPredictor",
    "DomainSource",
    "GateMode",
    "SelectionMode",
    "build_classifier",
    "finish_probability",
    "gate_enabled",
    "mask_iou",
    "random_dihedral",
    "selection_text",
    "val_cases",
    "val_scores",
    "weak_plan",
]

logger = logging.getLogger(__name__)

GateMode = Literal["auto", "always", "never"]
SelectionMode = Literal["last", "val"]


@dataclass(frozen=True)
class CAMConfig:
    """Settings of the CAM baseline.

    Attributes:
        domain: Where the lesion and healthy images come from, working size.
        widths: Channels of the four ResNet stages.
        layers: Basic blocks per stage.
        cam: ``cam`` (Zhou et al.) or ``gradcam`` (Selvaraju et al.), both from ``monai.visualize``.
        threshold: Threshold on the [0, 1] normalised map (mapped to probability 0.5).
        postprocess: ``none`` or ``otsu`` (Otsu threshold, hole filling, largest component).
        crf: Refine with a dense CRF (``crf_config``).
        crf_config: Dense CRF settings (the original's defaults).
        augment: Random flips and 90-degree rotations during training.
        gate: Image-level gating: ``always`` empties the mask of images the classifier calls healthy, ``never`` not,
            ``auto`` on exactly when the healthy domain was real normal images (see the module docstring).
        selection: ``last`` (no pixel label read) or ``val`` (best mean IoU on the val split's masks).
        train: Engine settings (``batch_size`` images per step, half lesion, half healthy).

    """

    domain: DomainConfig = field(default_factory=DomainConfig)
    widths: tuple[int, ...] = (16, 32, 64, 128)
    layers: tuple[int, ...] = (1, 1, 1, 1)
    cam: Literal["cam", "gradcam"] = "cam"
    threshold: float = 0.5
    postprocess: Literal["none", "otsu"] = "none"
    crf: bool = False
    crf_config: CRFConfig = field(default_factory=CRFConfig)
    augment: bool = True
    gate: GateMode = "auto"
    selection: SelectionMode = "last"
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=8, steps_per_epoch=25, batch_size=16, lr=1e-3, checkpoint_every=25, monitor="iou"
        )
    )

    def __post_init__(self) -> None:
        if len(self.widths) != 4 or len(self.layers) != 4:
            raise ConfigError("cam.widths and cam.layers need 4 entries (ResNet stages)")
        if not 0 < self.threshold < 1:
            raise ConfigError(f"threshold must be in (0, 1), got {self.threshold}")


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


def build_classifier(in_channels: int, widths: tuple[int, ...], layers: tuple[int, ...]) -> nn.Module:
    """MONAI 2D ResNet with basic blocks, stem stride 1, no max-pool, 2 outputs (healthy, lesion)."""
    from monai.networks.nets.resnet import ResNet

    return ResNet(
        block="basic",
        layers=list(layers),
        block_inplanes=list(widths),
        spatial_dims=2,
        n_input_channels=in_channels,
        conv1_t_size=3,
        conv1_t_stride=1,
        no_max_pool=True,
        num_classes=2,
    )


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


def gate_enabled(mode: str, healthy_source: str | None) -> bool:
    """Resolve a ``gate`` setting: ``auto`` is on only when the healthy domain was real normal images.

    Args:
        mode: ``auto``, ``always`` or ``never`` (not on/off, which YAML reads as booleans).
        healthy_source: The run's healthy domain (``normal`` or ``periphery``; None if unknown: off for auto).

    Example:
        >>> gate_enabled("auto", "normal"), gate_enabled("auto", "periphery"), gate_enabled("always", "periphery")
        (True, False, True)

    """
    if mode not in ("auto", "always", "never"):
        raise ConfigError(f"gate must be auto, always or never, got {mode!r}")
    return mode == "always" or (mode == "auto" and healthy_source == "normal")


def empty_probability(out_shape: tuple[int, ...]) -> np.ndarray:
    """``(2, H, W)`` float32 probabilities of an image gated as healthy: background 1, foreground 0."""
    return np.stack([np.ones(out_shape, np.float32), np.zeros(out_shape, np.float32)])


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


def lesion_map(net: nn.Module, image: np.ndarray, kind: str, device: torch.device) -> tuple[np.ndarray, float]:
    """The lesion-class activation map and the classifier's lesion probability of one working-size image.

    Args:
        net: The classifier (2 outputs: healthy, lesion).
        image: ``(C, S, S)`` float32 in [-1, 1].
        kind: ``cam`` or ``gradcam``.
        device: Device of ``net``.

    Returns:
        ``(S, S)`` float32 map in [0, 1] (min-max normalised by MONAI; constant maps give zeros) and the softmax
        probability of the lesion class.

    """
    from monai.visualize.class_activation_maps import CAM, GradCAM

    x = torch.from_numpy(image)[None].to(device)
    with torch.no_grad():
        p_lesion = float(torch.softmax(net(x), dim=1)[0, 1])
    if kind == "gradcam":
        # inference_mode(False): validation runs under inference mode, Grad-CAM needs gradients
        with torch.inference_mode(False), torch.enable_grad():
            xg = torch.from_numpy(image)[None].to(device)
            out = GradCAM(nn_module=net, target_layers="layer4")(xg, class_idx=torch.tensor([1], device=device))
    else:
        with torch.no_grad():
            out = CAM(nn_module=net, target_layers="layer4", fc_layers="fc")(
                x, class_idx=torch.tensor([1], device=device)
            )
    cam: np.ndarray = np.nan_to_num(out.detach().cpu().numpy()[0, 0].astype(np.float32)).clip(0, 1)
    return cam, p_lesion


def val_cases(dataset: Dataset, selection: str) -> list[Case]:
    """The val split's cases for ``selection: val`` (masks read for checkpoint choice only), else none."""
    if selection != "val":
        return []
    cases = list(dataset.cases("val"))
    if not cases:
        raise DataError("selection=val needs cases in the val split", dataset.root)
    return cases


def selection_text(selection: str, best_epoch: int, metrics: dict[str, float]) -> str:
    """What ``meta.json`` says about checkpoint selection."""
    if selection != "val":
        return "last epoch (no pixel labels used)"
    shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
    return f"best val IoU: epoch {best_epoch + 1} ({shown}); val masks used for this choice only"


class CAMTask(TrainTask):
    """Cross-entropy of the lesion/healthy classifier; optional val-split IoU for checkpoint selection."""

    def __init__(
        self, net: nn.Module, cfg: CAMConfig | None = None, healthy_source: str | None = None, channels: int = 3
    ) -> None:
        self.modules = {"net": net}
        self.cfg = cfg or CAMConfig()
        self.gate = gate_enabled(self.cfg.gate, healthy_source)
        self.channels = channels

    def validation_step(self, case: Case, ctx: StepContext) -> dict[str, float]:
        """IoU/Dice of the predicted mask (same pipeline as prediction, gating included) with the val mask."""
        net = self.modules["net"]
        img = prepare_image(case.image, self.channels, self.cfg.domain.image_size, case.id)
        cam, p_lesion = lesion_map(net, img, self.cfg.cam, ctx.device)
        if self.gate and p_lesion < 0.5:
            probs = empty_probability(case.spatial_shape)
        else:
            probs = finish_probability(
                cam,
                img,
                case.spatial_shape,
                self.cfg.threshold,
                self.cfg.postprocess,
                self.cfg.crf_config if self.cfg.crf else None,
            )
        return val_scores(probs, case)

    def configure_optimizers(self, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        """Adam at ``train.lr``."""
        return {"main": torch.optim.Adam(self.modules["net"].parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)}

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        """Loss and accuracy of one batch."""
        logits = ctx.module("net")(batch["image"])
        target = batch["domain"].long()
        loss = nn.functional.cross_entropy(logits, target)
        acc = (logits.argmax(1) == target).float().mean()
        return {"loss": loss, "acc": acc}


@register_method("cam")
class CAMMethod(Method):
    """Classifier on image-level labels; CAM / Grad-CAM masks, optional dense CRF."""

    Config = CAMConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {
            "domain": {"image_size": 256},
            "widths": [64, 128, 256, 512],
            "layers": [2, 2, 2, 2],
            "train": {"epochs": 50, "steps_per_epoch": 100, "batch_size": 16, "lr": 1e-4},
        },
        "smoke": {
            "domain": {"image_size": 32},
            "widths": [4, 8, 8, 8],
            "train": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 4, "progress": False},
        },
    }
    citation = (
        "Zhou et al., CVPR 2016 (CAM); Selvaraju et al., ICCV 2017 (Grad-CAM); Kraehenbuehl & Koltun, NeurIPS 2011"
    )
    summary = "CAM / Grad-CAM of a lesion-vs-healthy classifier (image-level labels only), optional dense CRF"

    @classmethod
    def fit(cls, dataset: Dataset, config: CAMConfig, run_dir: str | Path) -> None:
        """Train the classifier on the two domains (no masks read) and write the run directory."""
        rd = RunDir(run_dir)
        rd.prepare(cls.name, config_to_dict(config), dataset)
        domains = build_domains(dataset, config.domain, "train")
        weak_plan(dataset, config.domain.image_size).save(rd.path / PLAN_NAME)
        seed_everything(config.train.seed)
        net = build_classifier(dataset.manifest.channels, config.widths, config.layers)
        source = DomainSource(domains, config.augment)
        val = val_cases(dataset, config.selection)
        result = Trainer(
            CAMTask(net, config, domains.source, dataset.manifest.channels), config.train, rd.path, source, val
        ).fit()
        if init_distributed().is_main:
            rd.write_meta(
                status="finished",
                steps=result.steps,
                domains=domains.describe(),
                healthy_source=domains.source,
                gate=gate_enabled(config.gate, domains.source),
                selection=selection_text(config.selection, result.best_epoch, result.best_metrics),
            )

    @classmethod
    def example_dataset(cls, dest: Path) -> Dataset:
        """A tiny weakly labelled dataset (image label ``lesion``) for the contract test."""
        return write_example_dataset(dest)

    @classmethod
    def load_predictor(cls, run_dir: str | Path, device: torch.device | str | None = None) -> CAMPredictor:
        """Rebuild the classifier from ``config.yaml`` and load ``weights.safetensors``."""
        return CAMPredictor(run_dir, device)


class CAMPredictor:
    """Predicts lesion masks with a trained CAM run.

    Args:
        run_dir: The run directory.
        device: Device (default: CUDA if available).

    """

    def __init__(self, run_dir: str | Path, device: torch.device | str | None = None) -> None:
        run = open_run(run_dir, CAMConfig, device)
        self.config: CAMConfig = run.config
        self.plan, self.device = run.plan, run.device
        self.net = build_classifier(self.plan.channels, self.config.widths, self.config.layers)
        run.load({"net": self.net})
        self.net.eval()
        self.healthy_source: str | None = run.rundir.read_meta().get("healthy_source")

    def activation_map(self, image: np.ndarray) -> np.ndarray:
        """The lesion-class map of a working-size image.

        Args:
            image: ``(C, S, S)`` float32 in [-1, 1] (from :func:`labelwise.data.domains.prepare_image`).

        Returns:
            ``(S, S)`` float32 in [0, 1] (min-max normalised by MONAI; constant maps give zeros).

        """
        return lesion_map(self.net, image, self.config.cam, self.device)[0]

    def predict(
        self,
        case: Case,
        crf: bool | None = None,
        postprocess: str | None = None,
        gate: str | None = None,
        **options: Any,
    ) -> Prediction:
        """Lesion probabilities ``(2, H, W)`` of a 2D case in its own geometry.

        Args:
            case: A 2D case with the plan's channels (grayscale is replicated for RGB models).
            crf: Dense CRF refinement (default: the config's ``crf``).
            postprocess: ``none`` or ``otsu`` (default: the config's).
            gate: ``auto``, ``always`` or ``never`` (default: the config's ``gate``). When enabled and the
                classifier's lesion probability is below 0.5, the foreground probability is 0 everywhere (an empty
                mask).
            **options: Ignored (protocol compatibility, e.g. ``tta``).

        """
        if case.spatial_dims != 2:
            raise DataError(f"case {case.id}: the cam method predicts 2D images, got {case.spatial_dims}D")
        size = self.config.domain.image_size
        img = prepare_image(case.image, self.plan.channels, size, case.id)
        cam, p_lesion = lesion_map(self.net, img, self.config.cam, self.device)
        if gate_enabled(gate or self.config.gate, self.healthy_source) and p_lesion < 0.5:
            return Prediction(probs=empty_probability(case.spatial_shape))
        use_crf = self.config.crf if crf is None else crf
        probs = finish_probability(
            cam,
            img,
            case.spatial_shape,
            self.config.threshold,
            self.config.postprocess if postprocess is None else postprocess,
            self.config.crf_config if use_crf else None,
        )
        return Prediction(probs=probs)
