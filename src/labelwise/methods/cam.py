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
:func:`labelwise.methods.crf.rescale_probability`). There is no validation-based selection: the weights of the
last epoch are kept (selecting on validation masks would use pixel labels).
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
    "build_classifier",
    "finish_probability",
    "random_dihedral",
    "weak_plan",
]

logger = logging.getLogger(__name__)


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
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=8, steps_per_epoch=25, batch_size=16, lr=1e-3, checkpoint_every=25)
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


class CAMTask(TrainTask):
    """Cross-entropy of the lesion/healthy classifier."""

    def __init__(self, net: nn.Module) -> None:
        self.modules = {"net": net}

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
        result = Trainer(CAMTask(net), config.train, rd.path, source, ()).fit()
        if init_distributed().is_main:
            rd.write_meta(
                status="finished",
                steps=result.steps,
                domains=domains.describe(),
                healthy_source=domains.source,
                selection="last epoch (no pixel labels used)",
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

    def activation_map(self, image: np.ndarray) -> np.ndarray:
        """The lesion-class map of a working-size image.

        Args:
            image: ``(C, S, S)`` float32 in [-1, 1] (from :func:`labelwise.data.domains.prepare_image`).

        Returns:
            ``(S, S)`` float32 in [0, 1] (min-max normalised by MONAI; constant maps give zeros).

        """
        from monai.visualize.class_activation_maps import CAM, GradCAM

        x = torch.from_numpy(image)[None].to(self.device)
        if self.config.cam == "gradcam":
            with torch.enable_grad():
                out = GradCAM(nn_module=self.net, target_layers="layer4")(
                    x, class_idx=torch.tensor([1], device=self.device)
                )
        else:
            with torch.no_grad():
                out = CAM(nn_module=self.net, target_layers="layer4", fc_layers="fc")(
                    x, class_idx=torch.tensor([1], device=self.device)
                )
        cam: np.ndarray = np.nan_to_num(out.detach().cpu().numpy()[0, 0].astype(np.float32)).clip(0, 1)
        return cam

    def predict(
        self, case: Case, crf: bool | None = None, postprocess: str | None = None, **options: Any
    ) -> Prediction:
        """Lesion probabilities ``(2, H, W)`` of a 2D case in its own geometry.

        Args:
            case: A 2D case with the plan's channels (grayscale is replicated for RGB models).
            crf: Dense CRF refinement (default: the config's ``crf``).
            postprocess: ``none`` or ``otsu`` (default: the config's).
            **options: Ignored (protocol compatibility, e.g. ``tta``).

        """
        if case.spatial_dims != 2:
            raise DataError(f"case {case.id}: the cam method predicts 2D images, got {case.spatial_dims}D")
        size = self.config.domain.image_size
        img = prepare_image(case.image, self.plan.channels, size, case.id)
        cam = self.activation_map(img)
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
