"""Settings of Quality Sentinel (:class:`SentinelConfig`) and the names of the files its runs hold."""

from __future__ import annotations

from dataclasses import dataclass, field

from labelwise.engine import TrainConfig
from labelwise.errors import ConfigError
from labelwise.models import ModelSpec
from labelwise.models.text import TextBackend

__all__ = ["SEGMENTER_DIR", "SENTINEL_META", "TEXT_CACHE", "SentinelConfig"]

SENTINEL_META = "sentinel.json"
"""Run file: training structure names, resolved text backend, embedding size, whether a segmenter exists."""
TEXT_CACHE = "text_embeddings.safetensors"
"""Run file: cached structure-name embeddings (scoring known structures does not load the text encoder)."""
SEGMENTER_DIR = "segmenter"
"""Run sub-folder of the segmenter stage (its checkpoint, logs, final weights and the step snapshots)."""


@dataclass(frozen=True)
class SentinelConfig:
    """Settings of Quality Sentinel.

    Attributes:
        crop_size: Side of the square model input in pixels (the paper: 256, preset ``full``).
        crop_margin: Context around the candidate's bounding box, as a fraction of its larger side per side.
        ct_clip: Clip intensities to this HU window and scale to [0, 1] (the paper: (-200, 200)); None: scale
            each case by its 0.5 and 99.5 percentiles.
        reference_rater: Rater used as ground truth for training; None: majority vote of the raters present.
        structures: Train on these structure names only (default: every foreground class present).
        slices_per_structure: Slices per structure and case (evenly spaced over the structure's extent), for
            training candidates and for 3D scoring.
        perturbations_per_slice: Perturbed candidates drawn per (slice, structure).
        rater_candidates: Use the non-reference raters' masks as candidates too.
        checkpoint_steps: Optimiser steps after which the segmentation model's predictions become candidates;
            the segmenter trains ``max(checkpoint_steps)`` steps as the run's ``segmenter`` stage (empty: no
            segmentation model is trained and no baselines are available).
        segmenter: Segmentation network (2D, slice-wise for 3D data).
        segmenter_batch: Batch size of the segmentation model.
        segmenter_lr: Learning rate of the segmentation model (Adam).
        dice_bins: Balance the candidates over this many equal-width bins of true Dice (0: no balancing).
        slice_holdout: For 3D cases, group the labelled slices in blocks of this many and keep every second
            block out of training (recorded in ``meta.json``; 0: use every slice).
        text_backend: Structure-name embedding backend (``auto``, ``minilm`` or ``hashed``).
        learn_embeddings: Learn per-class corrections of the training structures' embeddings.
        text_conditioning: Use the gated text condition (False: image-only ablation).
        widths: Backbone stage widths.
        hidden_dim: Width of the gated head.
        mse_edges: Upper edges of the true-Dice bins of the MSE weights.
        mse_weights: Weights of those bins (the paper: 7, 5, 3, 2, 1).
        rank_weight: Weight of the pairwise ranking loss.
        rank_margin: Margin of the ranking loss.
        seed: Seed of candidate generation and of the segmenter's training samples.
        train: Engine settings (Adam = AdamW with weight decay 0; cosine schedule; monitor ``pearson``).

    """

    crop_size: int = 64
    crop_margin: float = 0.25
    ct_clip: tuple[float, float] | None = None
    reference_rater: str | None = None
    structures: tuple[str, ...] | None = None
    slices_per_structure: int = 10
    perturbations_per_slice: int = 8
    rater_candidates: bool = True
    checkpoint_steps: tuple[int, ...] = (15, 40, 100)
    segmenter: ModelSpec = field(default_factory=lambda: ModelSpec("unet_tiny", {"channels": [16, 32, 64]}))
    segmenter_batch: int = 4
    segmenter_lr: float = 3e-3
    dice_bins: int = 10
    slice_holdout: int = 0
    text_backend: TextBackend = "auto"
    learn_embeddings: bool = True
    text_conditioning: bool = True
    widths: tuple[int, ...] = (16, 32, 64, 128)
    hidden_dim: int = 50
    mse_edges: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9, 1.0)
    mse_weights: tuple[float, ...] = (7.0, 5.0, 3.0, 2.0, 1.0)
    rank_weight: float = 1.0
    rank_margin: float = 0.0
    seed: int = 0
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=8,
            steps_per_epoch=40,
            batch_size=64,
            lr=1e-3,
            weight_decay=0.0,
            schedule="cosine",
            monitor="pearson",
            amp=False,
        )
    )

    def __post_init__(self) -> None:
        if self.crop_size < 16:
            raise ConfigError(f"crop_size must be >= 16, got {self.crop_size}")
        if len(self.mse_edges) != len(self.mse_weights):
            raise ConfigError("mse_edges and mse_weights must have the same length")
        if self.ct_clip is not None and not self.ct_clip[0] < self.ct_clip[1]:
            raise ConfigError(f"ct_clip must be (low, high) with low < high, got {self.ct_clip}")
        if self.slices_per_structure < 1:
            raise ConfigError("slices_per_structure must be >= 1")
        if list(self.checkpoint_steps) != sorted(set(self.checkpoint_steps)) or any(
            s < 1 for s in self.checkpoint_steps
        ):
            raise ConfigError(f"checkpoint_steps must be increasing positive steps, got {self.checkpoint_steps}")
