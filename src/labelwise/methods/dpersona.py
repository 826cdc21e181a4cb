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

Prediction: ``samples`` (``--samples N``, default ``samples``) label maps from the prior, ``probs`` = mean of the
samples' softmax, and (``dpersona``) ``raters`` = one map per rater from the heads. Sampling is seeded
(``seed`` option), so repeated predictions are identical. Missing raters are masked in every loss; cases without
raters are skipped (logged). 3D volumes: ``slicewise: true`` (2D network, slice by slice).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from labelwise.data import Case, Dataset
from labelwise.engine import (
    AugmentConfig,
    PatchSource,
    Plan,
    RunDir,
    StepContext,
    TrainConfig,
    Trainer,
    TrainTask,
    config_from_dict,
    config_to_dict,
    default_device,
    init_distributed,
    load_weights,
    normalize_image,
    save_weights,
    seed_everything,
)
from labelwise.engine.planner import PLAN_NAME
from labelwise.errors import ConfigError, DataError
from labelwise.io import Prediction
from labelwise.methods._multirater import (
    case_rater_stack,
    fg_soft_dice,
    labelled_slices,
    load_rater_ids,
    predict_whole,
    prepare_training,
)
from labelwise.methods.base import Method, register_method
from labelwise.models.multirater_losses import (
    bound_constrained_loss,
    generalised_dice_loss,
    one_hot_raters,
    rater_presence,
    soft_cross_entropy,
)
from labelwise.models.prob_unet import PersonaHeads, ProbUNet, posterior_input

__all__ = ["DPersonaConfig", "DPersonaMethod", "ProbUNetConfig", "ProbUNetMethod", "ProbUNetPredictor"]

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
            about 11 CPU-minutes for both stages on QUBIQ, see docs/results.md).
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


def _unwrap(m: torch.nn.Module) -> torch.nn.Module:
    return m.module if isinstance(m, torch.nn.parallel.DistributedDataParallel) else m


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
        net = _unwrap(ctx.module("net"))
        assert isinstance(net, ProbUNet)
        image = batch["image"]
        raters = batch["raters"].long()
        k = self.plan.num_classes
        present = rater_presence(raters)
        valid = present.any(1)
        onehot = one_hot_raters(raters, k)
        feats = net.backbone(image)
        prior = net.prior(image)
        post = net.posterior(posterior_input(image, onehot, present))
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
        from labelwise.metrics import ged

        net = self.modules["net"]
        assert isinstance(net, ProbUNet)
        out = _predict_prob(net, None, case, self.plan, self.cfg.samples, 0, 0, ctx.device)
        probs, samples, raters = out["probs"], out["samples"], case.raters
        if self.plan.slicewise:
            idx = labelled_slices(case)
            probs, samples, raters = probs[..., idx], samples[..., idx], raters[..., idx]
        k = self.plan.num_classes
        return {
            "neg_ged": -ged(_fg_masks(samples), _fg_masks(raters)),
            "soft_dice": fg_soft_dice(probs, raters, k),
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
        from labelwise.metrics import dice

        heads = self.modules["heads"]
        assert isinstance(heads, PersonaHeads)
        out = _predict_prob(self.frozen, heads, case, self.plan, 1, self.cfg.head_samples, 0, ctx.device)
        rater_ids = self.rater_ids
        stack = case_rater_stack(case, rater_ids)
        maps = out["raters"]
        if self.plan.slicewise:
            idx = labelled_slices(case)
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


def _fit_stage1(
    dataset: Dataset, config: ProbUNetConfig, rd: RunDir, resumed: bool, work_dir: Path
) -> tuple[ProbUNet, Plan, tuple[str, ...], Any, PatchSource]:
    divisor = ProbUNet(2, 1, 2, 1, 1, config.channels, config.encoder).divisor
    rater_ids, plan, source, val_cases = prepare_training(dataset, rd.path, resumed, divisor, config, "this method")
    net = _build(config, plan, len(rater_ids))
    result = Trainer(ProbUNetTask(net, plan, config), config.train, work_dir, source, val_cases).fit()
    return net, plan, rater_ids, result, source


@register_method("prob-unet")
class ProbUNetMethod(Method):
    """Probabilistic U-Net with a posterior over all raters (the diversity baseline)."""

    Config: ClassVar[type] = ProbUNetConfig
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
    def fit(cls, dataset: Dataset, config: ProbUNetConfig, run_dir: str | Path) -> None:
        """Train and write the run directory (resumes)."""
        rd = RunDir(run_dir)
        resumed = rd.prepare(cls.name, config_to_dict(config), dataset)
        _, _, rater_ids, result, _ = _fit_stage1(dataset, config, rd, resumed, rd.path)
        if init_distributed().is_main:
            rd.write_meta(
                status="finished",
                best_epoch=result.best_epoch,
                val_metrics=result.best_metrics,
                steps=result.steps,
                rater_ids=list(rater_ids),
            )

    @classmethod
    def load_predictor(cls, run_dir: str | Path, device: torch.device | str | None = None) -> ProbUNetPredictor:
        """Rebuild the model from the run directory."""
        return ProbUNetPredictor(run_dir, device, cls.Config)


@register_method("dpersona")
class DPersonaMethod(Method):
    """D-Persona: diversified (stage I, bound-constrained prob. U-Net) then personalised (stage II heads)."""

    Config: ClassVar[type] = DPersonaConfig
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
    def fit(cls, dataset: Dataset, config: DPersonaConfig, run_dir: str | Path) -> None:
        """Stage I in ``RUN/stage1``, stage II in ``RUN/stage2``, combined weights in ``RUN`` (each resumes)."""
        rd = RunDir(run_dir)
        resumed = rd.prepare(cls.name, config_to_dict(config), dataset)
        s1 = rd.path / "stage1"
        net, plan, rater_ids, r1, source = _fit_stage1(dataset, config, rd, resumed, s1)
        load_weights(s1 / "weights.safetensors", {"net": net})  # the stage-I model selected on validation
        seed_everything(config.stage2.seed + 1)
        heads = _build_heads(config, net, plan, len(rater_ids))
        device = default_device()
        task = PersonaTask(net, heads, plan, config, device, rater_ids)
        val_cases = list(dataset.cases("val"))
        r2 = Trainer(task, config.stage2, rd.path / "stage2", source, val_cases, device=device).fit()
        if init_distributed().is_main:
            load_weights(rd.path / "stage2" / "weights.safetensors", {"heads": heads})
            save_weights(
                rd.weights_path,
                {"net": net, "heads": heads},
                {"stage1_epoch": r1.best_epoch, "stage2_epoch": r2.best_epoch},
            )
            rd.write_meta(
                status="finished",
                best_epoch=r2.best_epoch,
                stage1={"best_epoch": r1.best_epoch, "val_metrics": r1.best_metrics, "steps": r1.steps},
                val_metrics=r2.best_metrics,
                steps=r1.steps + r2.steps,
                rater_ids=list(rater_ids),
            )

    @classmethod
    def load_predictor(cls, run_dir: str | Path, device: torch.device | str | None = None) -> ProbUNetPredictor:
        """Rebuild stage I + heads from the run directory."""
        return ProbUNetPredictor(run_dir, device, cls.Config)


class ProbUNetPredictor:
    """Predicts cases with a trained ``prob-unet`` or ``dpersona`` run.

    Args:
        run_dir: The run directory.
        device: Device (default: CUDA if available).
        config_cls: :class:`ProbUNetConfig` or :class:`DPersonaConfig` (heads are loaded for the latter).

    """

    def __init__(self, run_dir: str | Path, device: torch.device | str | None, config_cls: type) -> None:
        rd = RunDir(run_dir)
        _, cfg_map = rd.read_config()
        self.config: ProbUNetConfig = config_from_dict(config_cls, cfg_map)
        self.plan = Plan.load(rd.path / PLAN_NAME)
        self.rater_ids = load_rater_ids(rd.path)
        self.device = torch.device(device) if device is not None else default_device()
        self.net = _build(self.config, self.plan, len(self.rater_ids))
        modules: dict[str, torch.nn.Module] = {"net": self.net}
        self.heads: PersonaHeads | None = None
        if isinstance(self.config, DPersonaConfig):
            self.heads = _build_heads(self.config, self.net, self.plan, len(self.rater_ids))
            modules["heads"] = self.heads
        if not rd.weights_path.exists():
            raise DataError("no weights.safetensors (training did not finish)", rd.path)
        load_weights(rd.weights_path, modules)
        for m in modules.values():
            m.to(self.device).eval()

    def check_options(self, samples: int | str | None = None, **options: Any) -> None:
        """Validate prediction options once before predicting many cases (raises :class:`ConfigError`)."""
        if samples is not None and int(samples) < 1:
            raise ConfigError(f"samples must be >= 1, got {samples}")

    def predict(self, case: Case, samples: int | str | None = None, seed: int = 0, **options: Any) -> Prediction:
        """N samples, their mean as the soft map, and (D-Persona) one map per rater.

        Args:
            case: Any case with the plan's channels and dims; its raters (if any) must be among the training raters.
            samples: Number of prior samples N (default: the config's ``samples``).
            seed: Seed of the sampling (same seed, same samples).
            **options: Ignored (e.g. ``tta``, ``rater_weights``).

        Returns:
            ``probs`` ``(K, *spatial)`` mean of the samples' softmax; ``samples`` ``(N, *spatial)`` uint8;
            ``raters`` ``(R, *spatial)`` uint8 for ``dpersona`` (None for ``prob-unet``); ``uncertainty`` the
            per-voxel entropy of ``probs`` (nats).

        """
        n = self.config.samples if samples is None else int(samples)
        if n < 1:
            raise ConfigError(f"samples must be >= 1, got {n}")
        if case.image.shape[0] != self.plan.channels or case.spatial_dims != self.plan.data_spatial_dims:
            raise DataError(
                f"case {case.id}: image {case.image.shape} does not fit the model "
                f"({self.plan.channels} channel(s), {self.plan.data_spatial_dims}D)"
            )
        if case.num_raters:
            case_rater_stack(case, self.rater_ids)
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
