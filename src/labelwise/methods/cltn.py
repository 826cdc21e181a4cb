"""Consistency label transfer network (CLTN): lesion masks from image-level labels by CAM-guided translation.

Du et al., "Consistency label transfer network for weakly supervised medical image segmentation", 2021
(networks after Kim et al., U-GAT-IT, ICLR 2020). Written from the paper's description; no code was copied.

Domains (:mod:`labelwise.data.domains`, no pixel label is read): A = lesion images, B = healthy images (normal
cases, or healthy-skin corner crops when every image holds a lesion). Two generators, ``G_ab`` (lesion ->
healthy) and ``G_ba`` (healthy -> lesion), each with an attention-mask head; fused image
``x * (1 - mask) + translated * mask``. Four discriminators: global and local for each domain, each with CAM
logits. Losses (batch of one image per domain, LSGAN targets 1 = real, 0 = fake):

* ``adv``: LSGAN on the patch scores and the CAM logits of the global and local discriminators, for the
  translated **and** the fused images (joint discrimination);
* ``cycle``: L1 between ``x`` and the back-translation of the translation (``G_ba(G_ab(a).translated)
  .translated ~ a`` and vice versa);
* ``identity``: L1 between ``x`` and the translated output of the generator *into* ``x``'s own domain
  (``G_ab(b).translated ~ b``): with the mask-mixed decoder (:mod:`labelwise.models.cltn`) this is cheapest with
  a zero mask, which is what keeps the mask off healthy tissue;
* ``cam``: BCE of each generator's CAM logits, 1 on images of its source domain, 0 on the other domain;
* ``recon``: L1 between ``x`` and the generator's reconstruction branch (``reconstructed``), which trains the
  auto-encoder features the decoder uses outside the mask.

Until 2026-11-30 labelwise read "reconstruction" as ``L1(fused, x) = mean(mask * |translated - x|)`` and also
applied identity and cycle to the fused images; those terms penalise the mask itself (weights 10 and 50) and
drove it to 0 everywhere (training-log mean 0.24 at step 500, 0.05 at step 1000 on PH2), so the raw mask never
crossed 0.5. The original code (``mlcb-jlu/MedImgSeg``, read for the loss definitions only) has a separate
reconstruction decoder and mixes the decoder features with the mask; labelwise now follows that.

Weights adv/cycle/identity/cam/recon default to the paper's ISIC values 1/5/50/1400/10 (BraTS: 1/10/10/1000/10);
Adam, lr 1e-4, betas (0.5, 0.999), constant rate, batch 1.

Segmentation: the mask of ``G_ab`` on the (working-size) image, optionally refined by a dense CRF, cleaned up
(Otsu threshold, hole filling, largest component; ``postprocess: otsu``, the default) and resized back.
Image-level gating (``gate``, see :mod:`labelwise.methods.weak`): the mask is emptied when ``G_ab``'s CAM
classifier calls the image healthy (mean sigmoid of its two domain logits < 0.5); ``auto`` = on exactly when the
healthy domain was real normal images.
Selection: ``last`` (default; no pixel label read) or ``val`` (best mean IoU on the val split's masks, checked
after each epoch); shared with ``cam`` (:mod:`labelwise.methods.weak`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
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
from labelwise.models.cltn import CLTNDiscriminator, CLTNGenerator, GeneratorOutput, discriminator_layers
from labelwise.postprocess import CRFConfig

__all__ = [
    "CLTNConfig",
    "CLTNLossWeights",
    "CLTNMethod",
    "CLTNPredictor",
    "CLTNTask",
    "build_cltn",
    "lesion_probability",
]


@dataclass(frozen=True)
class CLTNLossWeights:
    """Loss weights (defaults: the paper's ISIC setting; BraTS used 1/10/10/1000/10)."""

    adv: float = 1.0
    cycle: float = 5.0
    identity: float = 50.0
    cam: float = 1400.0
    recon: float = 10.0


@dataclass(frozen=True)
class CLTNConfig:
    """Settings of CLTN.

    Attributes:
        domain: Lesion/healthy domains and working size (must be divisible by ``2**n_down``).
        ngf: Generator base channels.
        ndf: Discriminator base channels.
        n_down: Generator down-sampling stages.
        n_res: Generator residual blocks (encoder and decoder each).
        global_layers: Layers of the global discriminators (reduced automatically for small images).
        local_layers: Layers of the local discriminators.
        weights: Loss weights.
        beta1: Adam beta1 (beta2 is 0.999).
        threshold: Mask value that becomes probability 0.5.
        postprocess: ``otsu`` (default, shared with ``cam``: Otsu threshold, hole filling, largest component) or
            ``none``.
        crf: Refine the mask with a dense CRF.
        crf_config: Dense CRF settings.
        augment: Random flips / 90-degree rotations of both domains.
        gate: Image-level gating ``auto`` / ``always`` / ``never`` (see the module docstring).
        selection: ``last`` (no pixel label read) or ``val`` (best mean IoU on the val split's masks).
        train: Engine settings; ``batch_size`` pairs (one lesion + one healthy image) per step.

    """

    domain: DomainConfig = field(default_factory=lambda: DomainConfig(image_size=64))
    ngf: int = 16
    ndf: int = 16
    n_down: int = 2
    n_res: int = 2
    global_layers: int = 5
    local_layers: int = 3
    weights: CLTNLossWeights = field(default_factory=CLTNLossWeights)
    beta1: float = 0.5
    threshold: float = 0.5
    postprocess: PostprocessMode = DEFAULT_POSTPROCESS
    crf: bool = False
    crf_config: CRFConfig = field(default_factory=CRFConfig)
    augment: bool = True
    gate: GateMode = "auto"
    selection: SelectionMode = "last"
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=15,
            steps_per_epoch=100,
            batch_size=1,
            lr=1e-4,
            weight_decay=0.0,
            schedule="constant",
            checkpoint_every=50,
            monitor="iou",
        )
    )

    def __post_init__(self) -> None:
        if self.domain.image_size % (2**self.n_down):
            raise ConfigError(
                f"domain.image_size {self.domain.image_size} must be divisible by 2**n_down = {2**self.n_down}"
            )
        if not 0 < self.threshold < 1:
            raise ConfigError(f"threshold must be in (0, 1), got {self.threshold}")


def build_cltn(channels: int, cfg: CLTNConfig) -> dict[str, nn.Module]:
    """The six networks: generators ``g_ab``, ``g_ba``; discriminators ``d_{global,local}_{a,b}``."""
    size = cfg.domain.image_size
    gl = discriminator_layers(size, cfg.global_layers)
    ll = discriminator_layers(size, min(cfg.local_layers, max(2, gl - 1)))
    return {
        "g_ab": CLTNGenerator(channels, cfg.ngf, cfg.n_down, cfg.n_res),
        "g_ba": CLTNGenerator(channels, cfg.ngf, cfg.n_down, cfg.n_res),
        "d_global_a": CLTNDiscriminator(channels, cfg.ndf, gl),
        "d_local_a": CLTNDiscriminator(channels, cfg.ndf, ll),
        "d_global_b": CLTNDiscriminator(channels, cfg.ndf, gl),
        "d_local_b": CLTNDiscriminator(channels, cfg.ndf, ll),
    }


def lesion_probability(cam_logit: torch.Tensor) -> float:
    """``G_ab``'s image-level lesion probability: mean sigmoid of its CAM logits ``(1, 2)`` (1 = lesion domain)."""
    return float(torch.sigmoid(cam_logit.float()).mean())


def _lsgan(pred: torch.Tensor, real: bool) -> torch.Tensor:
    return F.mse_loss(pred, torch.ones_like(pred) if real else torch.zeros_like(pred))


class CLTNTask(TrainTask):
    """Alternating discriminator / generator updates (manual optimisation)."""

    manual_optimization = True

    def __init__(
        self, nets: dict[str, nn.Module], cfg: CLTNConfig, healthy_source: str | None = None, channels: int = 3
    ) -> None:
        self.modules = nets
        self.cfg = cfg
        self.gate = gate_enabled(cfg.gate, healthy_source)
        self.channels = channels

    def validation_step(self, case: Case, ctx: StepContext) -> dict[str, float]:
        """IoU/Dice of the predicted mask (prediction pipeline, gating included) with the val mask."""
        img = prepare_image(case.image, self.channels, self.cfg.domain.image_size, case.id)
        out = self.modules["g_ab"](torch.from_numpy(img)[None].to(ctx.device))
        mask = out.mask[0, 0].float().cpu().numpy()
        probs = mask_probability(mask, lesion_probability(out.cam_logit), img, case.spatial_shape, self.cfg, self.gate)
        scores = val_scores(probs, case)
        scores["raw_max"] = float(mask.max())
        return scores

    def configure_optimizers(self, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        """Adam(lr, betas (beta1, 0.999)) for the generators and for the discriminators."""
        betas = (self.cfg.beta1, 0.999)
        gen = [p for k in ("g_ab", "g_ba") for p in self.modules[k].parameters()]
        disc = [p for k, m in self.modules.items() if k.startswith("d_") for p in m.parameters()]
        return {
            "gen": torch.optim.Adam(gen, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay),
            "disc": torch.optim.Adam(disc, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay),
        }

    def _adv(self, ctx: StepContext, domain: str, images: list[torch.Tensor], real: bool) -> torch.Tensor:
        loss = torch.zeros((), device=ctx.device)
        for kind in ("global", "local"):
            d = ctx.module(f"d_{kind}_{domain}")
            for x in images:
                out = d(x)
                loss = loss + _lsgan(out.scores, real) + _lsgan(out.cam_logit, real)
        return loss

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        """One discriminator step then one generator step on a (lesion, healthy) pair."""
        w = self.cfg.weights
        a, b = batch["a"], batch["b"]
        g_ab, g_ba = ctx.module("g_ab"), ctx.module("g_ba")
        ab: GeneratorOutput = g_ab(a)  # lesion -> healthy
        ba: GeneratorOutput = g_ba(b)  # healthy -> lesion

        # ---- discriminators: real vs translated and fused (joint discrimination)
        ctx.zero_grad("disc")
        d_loss = (
            self._adv(ctx, "b", [b], True)
            + self._adv(ctx, "b", [ab.translated.detach(), ab.fused.detach()], False)
            + self._adv(ctx, "a", [a], True)
            + self._adv(ctx, "a", [ba.translated.detach(), ba.fused.detach()], False)
        )
        ctx.backward(d_loss)
        ctx.optimizer_step("disc")

        # ---- generators
        ctx.zero_grad("gen")
        for k, m in self.modules.items():
            if k.startswith("d_"):
                m.requires_grad_(False)
        adv = self._adv(ctx, "b", [ab.translated, ab.fused], True) + self._adv(
            ctx, "a", [ba.translated, ba.fused], True
        )
        cyc_a, cyc_b = g_ba(ab.translated), g_ab(ba.translated)
        cycle = F.l1_loss(cyc_a.translated, a) + F.l1_loss(cyc_b.translated, b)
        id_b, id_a = g_ab(b), g_ba(a)
        identity = F.l1_loss(id_b.translated, b) + F.l1_loss(id_a.translated, a)
        bce = F.binary_cross_entropy_with_logits
        cam = (
            bce(ab.cam_logit, torch.ones_like(ab.cam_logit))
            + bce(id_b.cam_logit, torch.zeros_like(id_b.cam_logit))
            + bce(ba.cam_logit, torch.ones_like(ba.cam_logit))
            + bce(id_a.cam_logit, torch.zeros_like(id_a.cam_logit))
        )
        recon = F.l1_loss(ab.reconstructed, a) + F.l1_loss(ba.reconstructed, b)
        g_loss = w.adv * adv + w.cycle * cycle + w.identity * identity + w.cam * cam + w.recon * recon
        ctx.backward(g_loss)
        ctx.optimizer_step("gen")
        for k, m in self.modules.items():
            if k.startswith("d_"):
                m.requires_grad_(True)
        return {
            "loss": g_loss.detach(),
            "d_loss": d_loss.detach(),
            "adv": adv.detach(),
            "cycle": cycle.detach(),
            "identity": identity.detach(),
            "cam": cam.detach(),
            "recon": recon.detach(),
            "mask_a": ab.mask.detach().mean(),
            "mask_b": id_b.mask.detach().mean(),
            "mask_a_max": ab.mask.detach().amax(),
            "mask_a_gt05": (ab.mask.detach() > 0.5).float().mean(),
            "mask_b_max": id_b.mask.detach().amax(),
        }


class CLTNPredictor(WeakPredictor[CLTNConfig]):
    """Predicts lesion masks (the attention mask of ``G_ab``) with a trained CLTN run.

    Options: :class:`~labelwise.methods.weak.WeakOptions`; the lesion probability of the gate is the mean sigmoid
    of ``G_ab``'s CAM logits.
    """

    def setup(self) -> None:
        """Rebuild the six networks and load their weights; ``G_ab`` predicts."""
        self.nets = build_cltn(self.plan.channels, self.config)
        self.run.load(self.nets)
        self.generator = self.nets["g_ab"]

    def translate(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run ``G_ab`` on a working-size image.

        Args:
            image: ``(C, S, S)`` float32 in [-1, 1].

        Returns:
            ``(mask (S, S) in [0, 1], translated (C, S, S), fused (C, S, S))`` as float32 numpy arrays.

        """
        with torch.no_grad():
            out = self.generator(torch.from_numpy(image)[None].to(self.device))
        return (
            out.mask[0, 0].cpu().numpy().astype(np.float32),
            out.translated[0].cpu().numpy().astype(np.float32),
            out.fused[0].cpu().numpy().astype(np.float32),
        )

    def lesion_probability(self, image: np.ndarray) -> float:
        """``G_ab``'s image-level lesion probability of a working-size image ``(C, S, S)`` in [-1, 1]."""
        with torch.no_grad():
            out = self.generator(torch.from_numpy(image)[None].to(self.device))
        return lesion_probability(out.cam_logit)

    def foreground_map(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """``G_ab``'s attention mask and its image-level lesion probability."""
        return self.translate(image)[0], self.lesion_probability(image)


@register_method("cltn")
class CLTNMethod(WeakMethod):
    """CAM-guided cycle-consistent lesion -> healthy translation; the attention mask is the segmentation."""

    Config = CLTNConfig
    Predictor = CLTNPredictor
    paired = True
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {
            "domain": {"image_size": 256},
            "ngf": 64,
            "ndf": 64,
            "n_res": 4,
            "global_layers": 7,
            "local_layers": 5,
            "train": {"epochs": 100, "steps_per_epoch": 1000, "batch_size": 1},
        },
        "smoke": {
            "domain": {"image_size": 32},
            "ngf": 4,
            "ndf": 4,
            "n_res": 1,
            "train": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 1, "progress": False},
        },
    }
    citation = "Du et al., Consistency label transfer network for weakly supervised medical image segmentation, 2021"
    summary = "CAM-guided cycle-consistent lesion-to-healthy translation; the attention mask is the segmentation"

    @classmethod
    def task(cls, channels: int, config: CLTNConfig, healthy_source: str) -> CLTNTask:
        """The six networks, trained on (lesion, healthy) pairs."""
        return CLTNTask(build_cltn(channels, config), config, healthy_source, channels)
