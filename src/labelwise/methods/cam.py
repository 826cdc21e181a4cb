"""CAM baseline: a lesion/healthy classifier trained on image-level labels; its class activation map is the mask.

Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016 (CAM); Selvaraju et al.,
ICCV 2017 (Grad-CAM); Kraehenbuehl & Koltun, NeurIPS 2011 (dense CRF refinement, ``crf: true``).

What the method sees: the lesion and healthy domains of :mod:`labelwise.data.domains` (image-level labels only;
no pixel label is ever read during training). Classifier: MONAI's ``ResNet`` (basic blocks, widths
``widths``, stem stride 1 and no max-pool so the last stage is at 1/8 of the working size), trained with
cross-entropy on balanced lesion/healthy batches with random flips and 90-degree rotations. Maps
(:func:`log_odds_map`): the CAM (or Grad-CAM) of the classifier's log-odds, lesion logit minus healthy logit, on
``layer4``, upsampled bilinearly and min-max normalised per image to [0, 1] with the minimum at 0.

Until 2026-12-03 the map was MONAI's ``monai.visualize.CAM`` of the lesion logit alone, whose default
post-processing (``default_normalizer``) maps the minimum to 1 and the maximum to 0: the mask was the inverse of
the lesion's evidence (PH2 JA 25.4, below a whole-image mask). The lesion logit alone also carries a part the
training never sets (see :func:`log_odds_map`); both are fixed here, and ``tests/methods/test_cam.py`` has a
known-answer test (the map must be higher inside a dark disc than outside it).

Prediction: the normalised map at the working size, optionally refined by a dense CRF, cleaned up exactly as
``cltn``'s mask (``postprocess: otsu``, the default of both: :func:`labelwise.methods.weak.finish_probability`,
Otsu's threshold, hole filling, largest component), resized back to the image's own size, and returned as
probabilities ``[1 - p, p]`` (``p >= 0.5`` is the mask; with ``postprocess: none`` exactly where the map is at
least ``threshold``, see :func:`labelwise.postprocess.rescale_probability`). Image-level gating (the classifier's
lesion probability, ``gate``) and checkpoint selection (``selection``) are shared with ``cltn``:
:mod:`labelwise.methods.weak`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from labelwise.data import Case
from labelwise.data.domains import DomainConfig, prepare_image
from labelwise.engine import StepContext, TrainConfig, TrainTask
from labelwise.errors import ConfigError
from labelwise.methods.base import register_method
from labelwise.methods.weak import (
    DEFAULT_POSTPROCESS,
    GateMode,
    PostprocessMode,
    SelectionMode,
    WeakMethod,
    WeakPredictor,
    gate_enabled,
    mask_probability,
    val_scores,
)
from labelwise.postprocess import CRFConfig

__all__ = [
    "CAMConfig",
    "CAMMethod",
    "CAMPredictor",
    "CAMTask",
    "build_classifier",
    "lesion_map",
    "log_odds_map",
    "unit_range",
]


@dataclass(frozen=True)
class CAMConfig:
    """Settings of the CAM baseline.

    Attributes:
        domain: Where the lesion and healthy images come from, working size.
        widths: Channels of the four ResNet stages.
        layers: Basic blocks per stage.
        cam: ``cam`` (Zhou et al.) or ``gradcam`` (Selvaraju et al.), of the log-odds (:func:`log_odds_map`).
        threshold: Threshold on the [0, 1] normalised map (mapped to probability 0.5).
        postprocess: ``otsu`` (default, as ``cltn``: Otsu threshold, hole filling, largest component) or ``none``
            (the raw map at ``threshold``).
        crf: Refine with a dense CRF (``crf_config``).
        crf_config: Dense CRF settings (the original's defaults).
        augment: Random flips and 90-degree rotations during training.
        gate: Image-level gating: ``always`` empties the mask of images the classifier calls healthy, ``never`` not,
            ``auto`` on exactly when the healthy domain was real normal images (:mod:`labelwise.methods.weak`).
        selection: ``last`` (no pixel label read) or ``val`` (best mean IoU on the val split's masks).
        train: Engine settings (``batch_size`` images per step, half lesion, half healthy).

    """

    domain: DomainConfig = field(default_factory=DomainConfig)
    widths: tuple[int, ...] = (16, 32, 64, 128)
    layers: tuple[int, ...] = (1, 1, 1, 1)
    cam: Literal["cam", "gradcam"] = "cam"
    threshold: float = 0.5
    postprocess: PostprocessMode = DEFAULT_POSTPROCESS
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


def unit_range(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each map of ``(B, 1, *spatial)`` to [0, 1]: its minimum to 0, its maximum to 1.

    A constant map becomes zeros. (MONAI's ``default_normalizer`` of ``monai.visualize`` maps the minimum to 1 and
    the maximum to 0, which is what turned the ``cam`` mask into the inverse of the lesion before 2026-12-03.)

    Example:
        >>> unit_range(torch.tensor([[[1.0, 3.0, 2.0]]])).tolist(), unit_range(torch.ones(1, 1, 2)).tolist()
        ([[[0.0, 1.0, 0.5]]], [[[0.0, 0.0]]])

    """
    flat = maps.reshape(maps.shape[0], -1)
    lo = flat.min(1).values.reshape(-1, *[1] * (maps.dim() - 1))
    span = flat.max(1).values.reshape(-1, *[1] * (maps.dim() - 1)) - lo
    return torch.where(span > 0, (maps - lo) / span.clamp_min(1e-12), torch.zeros_like(maps))


def log_odds_map(net: nn.Module, x: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The lesion-vs-healthy evidence map of ``layer4`` and the two-class logits of a batch.

    The classifier is a two-way softmax, so only the difference of its two logits (the log-odds of "lesion")
    is defined by training: adding the same vector to both rows of ``fc`` changes no probability, and the
    cross-entropy gradients of the two rows are opposite, so their sum stays at its random initial value. The
    map of the lesion row alone (MONAI's ``CAM(class_idx=1)``) therefore carries, besides half the evidence, that
    untrained common part applied to the features. Both maps here are of the log-odds instead:

    * ``cam``: ``(w_lesion - w_healthy) . f(x, y)`` (Zhou et al.; the classifier is global average pooling +
      ``fc``, so the mean of this map plus the bias difference is the image's log-odds);
    * ``gradcam``: ``relu(sum_k a_k f_k(x, y))`` with ``a_k`` the spatial mean of the log-odds' gradient with
      respect to ``f_k`` (Selvaraju et al.).

    Args:
        net: The classifier (MONAI ``ResNet``: ``layer4`` then average pooling and ``fc``; outputs healthy, lesion).
        x: ``(B, C, S, S)`` images.
        kind: ``cam`` or ``gradcam``.

    Returns:
        ``(B, 1, h, w)`` raw maps at the resolution of ``layer4`` and the ``(B, 2)`` logits.

    """
    layer4, fc = net.get_submodule("layer4"), net.get_submodule("fc")
    feats: list[torch.Tensor] = []
    handle = layer4.register_forward_hook(lambda _m, _i, out: feats.append(out))
    try:
        logits = net(x)
    finally:
        handle.remove()
    f = feats[0]
    if kind == "gradcam":
        grad = torch.autograd.grad((logits[:, 1] - logits[:, 0]).sum(), f)[0]
        weights = grad.mean(dim=(2, 3), keepdim=True)
        return torch.relu((weights * f).sum(1, keepdim=True)), logits
    weight = fc.get_parameter("weight")  # (2, C): healthy, lesion
    w = weight[1] - weight[0]
    return torch.einsum("c,bchw->bhw", w, f)[:, None], logits


def lesion_map(net: nn.Module, image: np.ndarray, kind: str, device: torch.device) -> tuple[np.ndarray, float]:
    """The lesion activation map and the classifier's lesion probability of one working-size image.

    Args:
        net: The classifier (2 outputs: healthy, lesion).
        image: ``(C, S, S)`` float32 in [-1, 1].
        kind: ``cam`` or ``gradcam`` (:func:`log_odds_map`).
        device: Device of ``net``.

    Returns:
        ``(S, S)`` float32 map in [0, 1], high where the evidence for "lesion" is (bilinear upsampling of
        :func:`log_odds_map`, then :func:`unit_range`; constant maps give zeros), and the softmax probability
        of the lesion class.

    """
    x = torch.from_numpy(image)[None].to(device)
    if kind == "gradcam":
        # inference_mode(False): validation runs under inference mode, Grad-CAM needs gradients
        with torch.inference_mode(False), torch.enable_grad():
            raw, logits = log_odds_map(net, x.clone().requires_grad_(True), kind)
    else:
        with torch.no_grad():
            raw, logits = log_odds_map(net, x, kind)
    with torch.no_grad():
        p_lesion = float(torch.softmax(logits.detach(), dim=1)[0, 1])
        up = nn.functional.interpolate(raw.detach(), size=image.shape[-2:], mode="bilinear", align_corners=False)
        out = unit_range(up)
    cam: np.ndarray = np.nan_to_num(out.cpu().numpy()[0, 0].astype(np.float32)).clip(0, 1)
    return cam, p_lesion


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
        img = prepare_image(case.image, self.channels, self.cfg.domain.image_size, case.id)
        cam, p_lesion = lesion_map(self.modules["net"], img, self.cfg.cam, ctx.device)
        return val_scores(mask_probability(cam, p_lesion, img, case.spatial_shape, self.cfg, self.gate), case)

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


class CAMPredictor(WeakPredictor[CAMConfig]):
    """Predicts lesion masks with a trained CAM run (options: :class:`~labelwise.methods.weak.WeakOptions`)."""

    def setup(self) -> None:
        """Rebuild the classifier from ``config.yaml`` and load ``weights.safetensors``."""
        self.net = build_classifier(self.plan.channels, self.config.widths, self.config.layers)
        self.run.load({"net": self.net})

    def foreground_map(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """The lesion-class activation map and the classifier's lesion probability (:func:`lesion_map`)."""
        return lesion_map(self.net, image, self.config.cam, self.device)

    def activation_map(self, image: np.ndarray) -> np.ndarray:
        """The lesion-class map of a working-size image.

        Args:
            image: ``(C, S, S)`` float32 in [-1, 1] (from :func:`labelwise.data.domains.prepare_image`).

        Returns:
            ``(S, S)`` float32 in [0, 1]: the log-odds map, min-max normalised with the minimum at 0 (constant maps
            give zeros).

        """
        return self.foreground_map(image)[0]


@register_method("cam")
class CAMMethod(WeakMethod):
    """Classifier on image-level labels; CAM / Grad-CAM masks of its log-odds, Otsu clean-up, optional dense CRF."""

    Config = CAMConfig
    Predictor = CAMPredictor
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
    def task(cls, channels: int, config: CAMConfig, healthy_source: str) -> CAMTask:
        """The classifier, trained on balanced lesion/healthy batches."""
        return CAMTask(build_classifier(channels, config.widths, config.layers), config, healthy_source, channels)
