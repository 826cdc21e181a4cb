"""Probabilistic U-Net (``prob-unet``) and D-Persona (``dpersona``) for multi-rater segmentation, any R.

``prob-unet`` (Kohl et al., NeurIPS 2018; the baseline): backbone U-Net, prior net (image), posterior net (image +
all R raters), axis-aligned Gaussian latent, Fcomb. Loss ``L_rec(posterior sample, random present rater) +
kl_weight * KL(posterior || prior)``.

``dpersona`` (Wu et al., CVPR 2024) runs two stages from one command in one run directory:

* **Stage I** (``RUN/stage1/``): the probabilistic U-Net above with the generalised Dice reconstruction loss plus
  ``bound_weight`` (0.5) times the bound-constrained loss: ``bound_samples`` (10) prior samples, their pixel-wise
  max and min matched by GDL to the union and intersection of the raters present.
* **Stage II** (``RUN/stage2/``): stage I frozen; R attention-based projection heads query ``head_samples`` prior
  samples; head r is trained with GDL against rater r (missing raters masked).

Each stage resumes independently (a killed run continues where it stopped; a finished stage I is not retrained).
The selected weights of both stages are combined into ``RUN/weights.safetensors``.

Selection (validation split only): stage I on ``-GED`` of the samples vs the raters (``neg_ged``), stage II on the
mean index-aligned Dice of head r vs rater r (``persona_dice``).

Prediction (options :class:`SamplingOptions`: ``samples`` and ``seed``): ``samples`` (``--samples N``, default the
config's ``samples``) label maps from the prior, ``probs`` = mean of the samples' softmax, and (``dpersona``)
``raters`` = one map per rater from the heads. Sampling is seeded (``seed``, default 0), so repeated predictions
are identical. Missing raters are masked in every loss; cases without
raters are skipped (logged). 3D volumes: ``slicewise: true`` (2D network, slice by slice).
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
from labelwise.engine import (
    AugmentConfig,
    FitResult,
    Plan,
    StepContext,
    TrainConfig,
    TrainTask,
    default_device,
    load_weights,
    normalize_image,
    save_weights,
    seed_everything,
)
from labelwise.engine.distributed import barrier
from labelwise.engine.rundir import WEIGHTS_NAME
from labelwise.errors import ConfigError
from labelwise.io import Prediction
from labelwise.methods.base import FitContext, Method, MethodPredictor, PredictOptions, Stage, register_method
from labelwise.methods.multirater import (
    case_rater_stack,
    check_case_raters,
    check_raters,
    load_rater_ids,
    mean_foreground_soft_dice,
    multirater_plan,
    multirater_training,
    predict_whole,
)
from labelwise.metrics import dice, ged
from labelwise.models.blocks import encoder_divisor
from labelwise.models.multirater_losses import (
    bound_constrained_loss,
    generalised_dice_loss,
    one_hot_raters,
    rater_presence,
    soft_cross_entropy,
)
from labelwise.models.prob_unet import PersonaHeads, ProbUNet, posterior_input

__all__ = [
    "DPersonaConfig",
    "DPersonaMethod",
    "DPersonaPredictor",
    "PersonaTask",
    "ProbUNetConfig",
    "ProbUNetMethod",
    "ProbUNetPredictor",
    "ProbUNetTask",
    "SamplingOptions",
]

logger = logging.getLogger(__name__)


def _default_train() -> TrainConfig:
    return TrainConfig(epochs=50, steps_per_epoch=20, batch_size=4, lr=1e-3, weight_decay=1e-5, monitor="neg_ged")


def _default_augment() -> AugmentConfig:
    return AugmentConfig(rot90_p=0.0, rotate_p=0.5, rotate_deg=15.0, gamma_p=0.0)


@dataclass(frozen=True)
class ProbUNetConfig:
    """Settings of the probabilistic U-Net (stage I of D-Persona).

    Attributes:
        latent_dim: Latent code size L (D-Persona: 6).
        channels: Encoder widths (light encoder; stem width for ResNet-34).
        encoder: ``"light"`` (CPU default) or ``"resnet34"`` (the paper's backbone, random init).
        fcomb_layers: 1x1 convolutions in Fcomb.
        rec_loss: Reconstruction loss against a random present rater: ``"gdl"`` (D-Persona) or ``"ce"`` (Kohl).
        kl_weight: Weight of KL(posterior || prior).
        bound_weight: Weight beta of the bound-constrained loss (0: plain probabilistic U-Net).
        bound_samples: Prior samples N for the bound-constrained loss.
        samples: Default number of samples at prediction.
        slicewise: Train a 2D network on slices of a 3D dataset and predict slice by slice.
        patch_size: Training patch (None: the planner's; keep whole images, the latent is image-level).
        foreground_p: Fraction of patches centred on the raters' majority foreground.
        train: Engine settings of stage I (monitor ``neg_ged`` or ``soft_dice``).
        augment: Augmentation.

    """

    latent_dim: int = 6
    channels: tuple[int, ...] = (8, 16, 32, 64)
    encoder: Literal["light", "resnet34"] = "light"
    fcomb_layers: int = 3
    rec_loss: Literal["gdl", "ce"] = "ce"
    kl_weight: float = 1.0
    bound_weight: float = 0.0
    bound_samples: int = 10
    samples: int = 16
    slicewise: bool = False
    patch_size: tuple[int, ...] | None = None
    foreground_p: float = 0.33
    train: TrainConfig = field(default_factory=_default_train)
    augment: AugmentConfig = field(default_factory=_default_augment)

    def __post_init__(self) -> None:
        if self.latent_dim < 1:
            raise ConfigError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if self.samples < 1 or self.bound_samples < 2:
            raise ConfigError(f"need samples >= 1 and bound_samples >= 2, got {self.samples}, {self.bound_samples}")
        if self.bound_weight < 0 or self.kl_weight < 0:
            raise ConfigError("bound_weight and kl_weight must be >= 0")


@dataclass(frozen=True)
class DPersonaConfig(ProbUNetConfig):
    """Settings of D-Persona: stage I (the fields of :class:`ProbUNetConfig`) and stage II.

    Attributes:
        head_hidden: Width of each projection head's conv block.
        head_samples: Prior samples the heads attend over (training and prediction).
        train: Engine settings of stage I (1200 steps: the bound-constrained loss needs them to widen the prior;
            about 11 CPU-minutes for both stages on QUBIQ, see docs/results-log.md).
        stage2: Engine settings of stage II (monitor ``persona_dice``).

    """

    rec_loss: Literal["gdl", "ce"] = "gdl"
    bound_weight: float = 0.5
    head_hidden: int = 16
    head_samples: int = 10
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=60, steps_per_epoch=20, batch_size=4, lr=1e-3, weight_decay=1e-5, monitor="neg_ged"
        )
    )
    stage2: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=20, steps_per_epoch=20, batch_size=4, lr=1e-3, weight_decay=1e-5, monitor="persona_dice"
        )
    )


def _fg_masks(labels: np.ndarray) -> np.ndarray:
    """Binary foreground (any non-background class) of integer label maps."""
    return labels > 0


class ProbUNetTask(TrainTask):
    """Stage I: reconstruction + KL (+ bound-constrained loss)."""

    def __init__(self, net: ProbUNet, plan: Plan, cfg: ProbUNetConfig) -> None:
        self.modules = {"net": net}
        self.plan = plan
        self.cfg = cfg

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        """Loss of one micro-batch."""
        net = self.modules["net"]
        assert isinstance(net, ProbUNet)
        image = batch["image"]
        raters = batch["raters"].long()
        k = self.plan.num_classes
        present = rater_presence(raters)
        valid = present.any(1)
        onehot = one_hot_raters(raters, k)
        feats, prior, post = ctx.module("net")(image, posterior_input(image, onehot, present))  # through DDP
        z = post.rsample()
        logits = net.fcomb(feats, z)
        p = present.float()
        p = torch.where(p.sum(1, keepdim=True) == 0, torch.ones_like(p), p)
        pick = torch.multinomial(p, 1).squeeze(1)
        target = onehot[torch.arange(image.shape[0], device=image.device), pick]
        if self.cfg.rec_loss == "gdl":
            rec = generalised_dice_loss(torch.softmax(logits.float(), 1), target, valid)
        else:
            rec = soft_cross_entropy(logits, target, valid)
        kl = torch.distributions.kl_divergence(post, prior)
        kl = (kl * valid.float()).sum() / valid.float().sum().clamp(min=1.0)
        loss = rec + self.cfg.kl_weight * kl
        out = {"rec": rec.detach(), "kl": kl.detach()}
        if self.cfg.bound_weight > 0:
            zs = prior.rsample((self.cfg.bound_samples,))  # (N, B, L)
            probs = torch.softmax(net.decode_samples(feats, zs).float(), dim=2)
            bound = bound_constrained_loss(probs, onehot, present)
            loss = loss + self.cfg.bound_weight * bound
            out["bound"] = bound.detach()
        return {"loss": loss, **out}

    def validation_step(self, case: Case, ctx: StepContext) -> dict[str, float]:
        """GED (negated: higher is better) and soft Dice of ``samples`` prior samples vs the raters."""
        if case.num_raters == 0:
            return {}
        net = self.modules["net"]
        assert isinstance(net, ProbUNet)
        out = _predict_prob(net, None, case, self.plan, self.cfg.samples, 0, 0, ctx.device)
        probs, samples, raters = out["probs"], out["samples"], case.raters
        if self.plan.slicewise:
            idx = list(labelled_slice_indices(case))
            probs, samples, raters = probs[..., idx], samples[..., idx], raters[..., idx]
        k = self.plan.num_classes
        return {
            "neg_ged": -ged(_fg_masks(samples), _fg_masks(raters)),
            "soft_dice": mean_foreground_soft_dice(probs, raters, k),
        }


class PersonaTask(TrainTask):
    """Stage II: R projection heads over the frozen stage-I model's prior samples."""

    def __init__(
        self,
        net: ProbUNet,
        heads: PersonaHeads,
        plan: Plan,
        cfg: DPersonaConfig,
        device: torch.device,
        rater_ids: Sequence[str] = (),
    ) -> None:
        self.frozen = net.to(device).eval().requires_grad_(False)
        self.rater_ids = tuple(rater_ids)
        self.modules = {"heads": heads}
        self.plan = plan
        self.cfg = cfg

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        """GDL of each head against its rater (missing raters masked)."""
        image = batch["image"]
        raters = batch["raters"].long()
        k = self.plan.num_classes
        present = rater_presence(raters)
        onehot = one_hot_raters(raters, k)
        with torch.no_grad():
            feats = self.frozen.backbone(image)
            zs = self.frozen.draw_prior(image, self.cfg.head_samples)
        codes, _ = ctx.module("heads")(feats, zs)  # (B, R, L)
        b, r = codes.shape[:2]
        logits = self.frozen.decode_samples(feats, codes.transpose(0, 1))  # (R, B, K, *s)
        probs = torch.softmax(logits.float(), dim=2).transpose(0, 1).reshape(b * r, k, *logits.shape[3:])
        loss = generalised_dice_loss(probs, onehot.reshape(b * r, k, *onehot.shape[3:]), present.reshape(-1))
        return {"loss": loss}

    def validation_step(self, case: Case, ctx: StepContext) -> dict[str, float]:
        """Mean Dice of head r vs rater r over the raters present."""
        if case.num_raters == 0:
            return {}
        heads = self.modules["heads"]
        assert isinstance(heads, PersonaHeads)
        out = _predict_prob(self.frozen, heads, case, self.plan, 1, self.cfg.head_samples, 0, ctx.device)
        rater_ids = self.rater_ids
        stack = case_rater_stack(case, rater_ids)
        maps = out["raters"]
        if self.plan.slicewise:
            idx = list(labelled_slice_indices(case))
            stack, maps = stack[..., idx], maps[..., idx]
        scores = [dice(maps[i] > 0, stack[i] > 0) for i in range(len(rater_ids)) if stack[i].min() >= 0]
        return {"persona_dice": float(np.mean(scores))}


def _predict_prob(
    net: ProbUNet,
    heads: PersonaHeads | None,
    case: Case,
    plan: Plan,
    samples: int,
    head_samples: int,
    seed: int,
    device: torch.device,
) -> dict[str, np.ndarray]:
    image = normalize_image(case.image, plan)
    gen = torch.Generator().manual_seed(int(seed))

    def fn(x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = net.backbone(x)
        z = net.draw_prior(x, samples, gen)
        probs = torch.softmax(net.decode_samples(feats, z).float(), dim=2)  # (N, B, K, *s)
        out = {"probs": probs.mean(0), "samples": probs.argmax(2).transpose(0, 1).float()}
        if heads is not None:
            zh = net.draw_prior(x, head_samples, gen)
            codes, _ = heads(feats, zh)
            hl = net.decode_samples(feats, codes.transpose(0, 1))  # (R, B, K, *s)
            out["raters"] = hl.argmax(2).transpose(0, 1).float()
        return out

    net.eval()
    if heads is not None:
        heads.eval()
    return predict_whole(fn, image, net.divisor, plan.slicewise, device)


def _build(cfg: ProbUNetConfig, plan: Plan, num_raters: int) -> ProbUNet:
    return ProbUNet(
        plan.spatial_dims,
        plan.channels,
        plan.num_classes,
        num_raters,
        cfg.latent_dim,
        cfg.channels,
        cfg.encoder,
        cfg.fcomb_layers,
    )


def _build_heads(cfg: DPersonaConfig, net: ProbUNet, plan: Plan, num_raters: int) -> PersonaHeads:
    return PersonaHeads(plan.spatial_dims, net.backbone.out_channels, num_raters, cfg.latent_dim, cfg.head_hidden)


def _prob_unet_stage(fit: FitContext[Any]) -> tuple[Stage, ProbUNet, tuple[str, ...]]:
    """Stage I (the probabilistic U-Net over the run's raters) with its network and the rater order."""
    config: ProbUNetConfig = fit.config
    rater_ids, source, val_cases = multirater_training(fit)
    net = _build(config, fit.plan, len(rater_ids))
    return Stage(ProbUNetTask(net, fit.plan, config), source, config.train, val_cases), net, rater_ids


@dataclass(frozen=True)
class SamplingOptions(PredictOptions):
    """Prediction options of ``prob-unet`` and ``dpersona`` (None: the default).

    Attributes:
        samples: Number of prior samples N >= 1 (None: the config's ``samples``).
        seed: Seed of the sampling; the same seed gives the same samples (None: 0).

    """

    samples: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("samples", "seed"):
            value: Any = getattr(self, name)
            try:
                object.__setattr__(self, name, None if value is None else int(value))
            except (TypeError, ValueError):
                raise ConfigError(f"{name} must be an integer, got {value!r}") from None
        if self.samples is not None and self.samples < 1:
            raise ConfigError(f"samples must be >= 1, got {self.samples}")


class ProbUNetPredictor(MethodPredictor[ProbUNetConfig, SamplingOptions]):
    """Predicts cases with a trained ``prob-unet`` run: N prior samples and their mean."""

    Options = SamplingOptions

    def setup(self) -> None:
        """Read the rater order, rebuild the network (and D-Persona's heads) and load the weights."""
        self.rater_ids = load_rater_ids(self.run.rundir.path)
        self.net = _build(self.config, self.plan, len(self.rater_ids))
        modules: dict[str, torch.nn.Module] = {"net": self.net}
        self.heads: PersonaHeads | None = None
        if isinstance(self.config, DPersonaConfig):
            self.heads = modules["heads"] = _build_heads(self.config, self.net, self.plan, len(self.rater_ids))
        self.run.load(modules)

    def predict_case(self, case: Case, options: SamplingOptions) -> Prediction:
        """N samples, their mean as the soft map, and (D-Persona) one map per rater.

        Returns:
            ``probs`` ``(K, *spatial)`` mean of the samples' softmax; ``samples`` ``(N, *spatial)`` uint8;
            ``raters`` ``(R, *spatial)`` uint8 for ``dpersona`` (None for ``prob-unet``); ``uncertainty`` the
            per-voxel entropy of ``probs`` (nats).

        Raises:
            ConfigError: the case has raters the model was not trained with.

        """
        n = self.config.samples if options.samples is None else options.samples
        seed = 0 if options.seed is None else options.seed
        check_case_raters(case, self.rater_ids)
        head_samples = self.config.head_samples if isinstance(self.config, DPersonaConfig) else 0
        out = _predict_prob(self.net, self.heads, case, self.plan, n, head_samples, seed, self.device)
        probs = out["probs"].astype(np.float32)
        entropy = -(probs * np.log(np.clip(probs, 1e-8, 1.0))).sum(0)
        return Prediction(
            probs=probs,
            samples=np.rint(out["samples"]).astype(np.uint8),
            raters=None if "raters" not in out else np.rint(out["raters"]).astype(np.uint8),
            uncertainty=entropy.astype(np.float32),
        )


class DPersonaPredictor(ProbUNetPredictor):
    """Predicts cases with a trained ``dpersona`` run: N prior samples, their mean and one map per rater."""


@register_method("prob-unet")
class ProbUNetMethod(Method):
    """Probabilistic U-Net with a posterior over all raters (the diversity baseline)."""

    Config: ClassVar[type] = ProbUNetConfig
    Predictor = ProbUNetPredictor
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {
            "encoder": "resnet34",
            "train": {"epochs": 100, "steps_per_epoch": 250, "batch_size": 12, "lr": 1e-4, "schedule": "cosine"},
        },
        "smoke": {"channels": [4, 8], "samples": 4, "train": {"epochs": 2, "steps_per_epoch": 3, "batch_size": 2}},
    }
    citation = "Kohl et al., A Probabilistic U-Net for Segmentation of Ambiguous Images, NeurIPS 2018"
    summary = "probabilistic U-Net: N diverse samples from a learned prior (posterior sees all raters)"

    @classmethod
    def check(cls, dataset: Dataset, config: ProbUNetConfig) -> None:
        """The dataset must have raters."""
        check_raters(dataset, cls.name)

    @classmethod
    def plan(cls, dataset: Dataset, config: ProbUNetConfig) -> Plan:
        """Patch size and normalisation from the train split (multiples of the encoder's down-sampling)."""
        return multirater_plan(dataset, config, encoder_divisor(config.channels, config.encoder))

    @classmethod
    def build(cls, fit: FitContext[ProbUNetConfig]) -> Stage:
        """The probabilistic U-Net over the run's raters, rater-stack patches, validation GED."""
        return _prob_unet_stage(fit)[0]


@register_method("dpersona")
class DPersonaMethod(ProbUNetMethod):
    """D-Persona: diversified (stage I, bound-constrained prob. U-Net) then personalised (stage II heads)."""

    Config: ClassVar[type] = DPersonaConfig
    Predictor = DPersonaPredictor
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {
            "encoder": "resnet34",
            "train": {"epochs": 100, "steps_per_epoch": 250, "batch_size": 12, "lr": 1e-4, "schedule": "cosine"},
            "stage2": {
                "epochs": 100,
                "steps_per_epoch": 250,
                "batch_size": 12,
                "lr": 1e-4,
                "schedule": "cosine",
                "monitor": "persona_dice",
            },
        },
        "smoke": {
            "channels": [4, 8],
            "samples": 4,
            "head_samples": 4,
            "bound_samples": 3,
            "train": {"epochs": 2, "steps_per_epoch": 3, "batch_size": 2},
            "stage2": {"epochs": 2, "steps_per_epoch": 3, "batch_size": 2, "monitor": "persona_dice"},
        },
    }
    citation = "Wu et al., Diversified and Personalized Multi-Rater Medical Image Segmentation, CVPR 2024"
    summary = "diverse samples (bound-constrained prob. U-Net) + one personalised map per rater"

    @classmethod
    def train(cls, fit: FitContext[DPersonaConfig]) -> FitResult:
        """Stage I in ``RUN/stage1``, stage II in ``RUN/stage2`` (each resumes), combined weights in ``RUN``.

        Stage II starts from the stage-I weights selected on validation, seeded with ``stage2.seed + 1``, and
        samples the same patches as stage I. Rank 0 writes the combined ``weights.safetensors``.
        """
        config, plan = fit.config, fit.plan
        stage1, net, rater_ids = _prob_unet_stage(fit)
        r1 = fit.run_stage(stage1, "stage1")
        load_weights(fit.path / "stage1" / WEIGHTS_NAME, {"net": net})
        seed_everything(config.stage2.seed + 1)
        heads = _build_heads(config, net, plan, len(rater_ids))
        device = default_device()
        task = PersonaTask(net, heads, plan, config, device, rater_ids)
        r2 = fit.run_stage(Stage(task, stage1.source, config.stage2, stage1.val_cases, device=device), "stage2")
        if fit.dist.is_main:
            load_weights(fit.path / "stage2" / WEIGHTS_NAME, {"heads": heads})
            save_weights(
                fit.rundir.weights_path,
                {"net": net, "heads": heads},
                {"stage1_epoch": r1.best_epoch, "stage2_epoch": r2.best_epoch},
            )
        barrier()
        fit.meta["stage1"] = {"best_epoch": r1.best_epoch, "val_metrics": r1.best_metrics, "steps": r1.steps}
        return r2
