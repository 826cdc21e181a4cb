"""Training loop, checkpoints, distributed set-up, logging, planning and inference shared by every method.

The names below are loaded on first use (PEP 562), so that a module of this floor that needs no torch (e.g.
``labelwise.engine.cohort``, which ``labelwise evaluate`` and every Dask worker import) does not pay torch's
import through this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_LAZY: dict[str, str] = {
    "tune_allocator": "labelwise.engine.allocator",
    "AugmentConfig": "labelwise.engine.augment",
    "apply_augment": "labelwise.engine.augment",
    "draw_augment": "labelwise.engine.augment",
    "load_checkpoint": "labelwise.engine.checkpoint",
    "load_weights": "labelwise.engine.checkpoint",
    "save_checkpoint": "labelwise.engine.checkpoint",
    "save_weights": "labelwise.engine.checkpoint",
    "TrainConfig": "labelwise.engine.config",
    "config_from_dict": "labelwise.engine.config",
    "config_to_dict": "labelwise.engine.config",
    "load_config": "labelwise.engine.config",
    "parse_overrides": "labelwise.engine.config",
    "PatchSource": "labelwise.engine.data",
    "SampleSource": "labelwise.engine.data",
    "crop_or_pad": "labelwise.engine.data",
    "epoch_loader": "labelwise.engine.data",
    "DistInfo": "labelwise.engine.distributed",
    "default_device": "labelwise.engine.distributed",
    "init_distributed": "labelwise.engine.distributed",
    "gaussian_importance": "labelwise.engine.inference",
    "predict_probs": "labelwise.engine.inference",
    "predict_slicewise": "labelwise.engine.inference",
    "sliding_window": "labelwise.engine.inference",
    "window_starts": "labelwise.engine.inference",
    "CSVLogger": "labelwise.engine.logger",
    "MetricLogger": "labelwise.engine.logger",
    "MultiLogger": "labelwise.engine.logger",
    "TensorBoardLogger": "labelwise.engine.logger",
    "read_csv_log": "labelwise.engine.logger",
    "PLAN_NAME": "labelwise.engine.planner",
    "ChannelNorm": "labelwise.engine.planner",
    "Plan": "labelwise.engine.planner",
    "make_plan": "labelwise.engine.planner",
    "normalize_image": "labelwise.engine.planner",
    "RunDir": "labelwise.engine.rundir",
    "data_fingerprint": "labelwise.engine.rundir",
    "get_rng_state": "labelwise.engine.seed",
    "sample_rng": "labelwise.engine.seed",
    "seed_everything": "labelwise.engine.seed",
    "set_rng_state": "labelwise.engine.seed",
    "FitResult": "labelwise.engine.trainer",
    "StepContext": "labelwise.engine.trainer",
    "Trainer": "labelwise.engine.trainer",
    "TrainTask": "labelwise.engine.trainer",
    "make_optimizer": "labelwise.engine.trainer",
}

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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
