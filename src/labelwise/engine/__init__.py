"""Training loop, checkpoints, distributed set-up, logging, planning and inference shared by every method."""

from __future__ import annotations

from labelwise.engine.allocator import tune_allocator
from labelwise.engine.augment import AugmentConfig, apply_augment, draw_augment
from labelwise.engine.checkpoint import load_checkpoint, load_weights, save_checkpoint, save_weights
from labelwise.engine.config import TrainConfig, config_from_dict, config_to_dict, load_config, parse_overrides
from labelwise.engine.data import PatchSource, SampleSource, crop_or_pad, epoch_loader
from labelwise.engine.distributed import DistInfo, default_device, init_distributed
from labelwise.engine.inference import (
    gaussian_importance,
    predict_probs,
    predict_slicewise,
    sliding_window,
    window_starts,
)
from labelwise.engine.logger import CSVLogger, MetricLogger, MultiLogger, TensorBoardLogger, read_csv_log
from labelwise.engine.planner import PLAN_NAME, ChannelNorm, Plan, make_plan, normalize_image
from labelwise.engine.rundir import RunDir, data_fingerprint
from labelwise.engine.seed import get_rng_state, sample_rng, seed_everything, set_rng_state
from labelwise.engine.trainer import FitResult, StepContext, Trainer, TrainTask, make_optimizer

__all__ = [
    "PLAN_NAME",
    "AugmentConfig",
    "CSVLogger",
    "ChannelNorm",
    "DistInfo",
    "FitResult",
    "MetricLogger",
    "MultiLogger",
    "PatchSource",
    "Plan",
    "RunDir",
    "SampleSource",
    "StepContext",
    "TensorBoardLogger",
    "TrainConfig",
    "TrainTask",
    "Trainer",
    "apply_augment",
    "config_from_dict",
    "config_to_dict",
    "crop_or_pad",
    "data_fingerprint",
    "default_device",
    "draw_augment",
    "epoch_loader",
    "gaussian_importance",
    "get_rng_state",
    "init_distributed",
    "load_checkpoint",
    "load_config",
    "load_weights",
    "make_optimizer",
    "make_plan",
    "normalize_image",
    "parse_overrides",
    "predict_probs",
    "predict_slicewise",
    "read_csv_log",
    "sample_rng",
    "save_checkpoint",
    "save_weights",
    "seed_everything",
    "set_rng_state",
    "sliding_window",
    "tune_allocator",
    "window_starts",
]
