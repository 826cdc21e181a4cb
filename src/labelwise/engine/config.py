"""Frozen dataclass configs: build from dicts / YAML, apply presets and ``--set key=value`` overrides, dump.

Merge order (later wins): dataclass defaults < ``preset`` < YAML file < ``--set`` overrides. Nested dataclasses
are addressed with dotted keys (``--set train.epochs=5``); values are parsed as YAML scalars/lists
(``--set model.kwargs.channels=[8,16,32]``). Unknown keys and wrong types raise :class:`ConfigError`, and so
does any float field of any config that is NaN or infinite (``--set train.lr=.inf``): configs are checked before
a run folder is created.

Example:
    >>> cfg = load_config(TrainConfig, overrides=["epochs=3", "lr=0.01"])
    >>> (cfg.epochs, cfg.lr)
    (3, 0.01)

"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import yaml

from labelwise.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = [
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "deep_merge",
    "load_config",
    "parse_overrides",
    "resolve_device",
]

C = TypeVar("C")


@dataclass(frozen=True)
class TrainConfig:
    """Engine settings shared by every method (methods embed it as their ``train`` field).

    Attributes:
        epochs: Training epochs.
        steps_per_epoch: Optimiser steps per epoch (samples per epoch = steps * batch_size * grad_accum).
        batch_size: Global batch size per optimiser micro-step (split across DDP ranks).
        grad_accum: Micro-batches accumulated per optimiser step.
        lr: Peak learning rate.
        weight_decay: Decoupled weight decay (AdamW) or L2 (SGD).
        optimizer: "adamw" or "sgd" (Nesterov, momentum 0.99 as in nnU-Net).
        schedule: "poly" (power 0.9), "cosine", or "constant"; stepped once per optimiser step.
        warmup_steps: Linear warm-up steps.
        amp: Mixed precision (bfloat16 autocast, only used on CUDA).
        val_every: Validate every this many epochs (on the ``val`` split only).
        monitor: Validation metric for best checkpoint / early stopping (higher is better).
        patience: Stop after this many validations without improvement (0: never stop early).
        checkpoint_every: Write the resume checkpoint every this many optimiser steps (and at each epoch end).
        num_workers: DataLoader worker processes.
        seed: Seed for weights, data order and augmentation.
        grad_clip: Clip gradient norm to this value (0: off).
        progress: Show a rich progress bar.
        time_budget_s: Wall-clock budget of this stage in seconds (0: train the full schedule). The step count
            that fits is measured and fixed once, on the first start (see :mod:`labelwise.engine.budget`).

    """

    epochs: int = 50
    steps_per_epoch: int = 100
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: Literal["adamw", "sgd"] = "adamw"
    schedule: Literal["poly", "cosine", "constant"] = "poly"
    warmup_steps: int = 0
    amp: bool = True
    val_every: int = 1
    monitor: str = "dice"
    patience: int = 0
    checkpoint_every: int = 50
    num_workers: int = 0
    seed: int = 0
    grad_clip: float = 0.0
    progress: bool = True
    time_budget_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("epochs", "steps_per_epoch", "batch_size", "grad_accum", "val_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "patience", "num_workers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"train.lr must be > 0 and finite, got {self.lr}")
        for name in ("weight_decay", "grad_clip", "time_budget_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"train.{name} must be a finite number >= 0, got {value}")


# ---------------------------------------------------------------------------------------------- conversions
def _convert(tp: Any, value: Any, key: str) -> Any:
    """Check/convert ``value`` against the annotation ``tp``; ``key`` names it in errors."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors: list[ConfigError] = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, key)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:  # Optional[X]: X's own message says more
            raise errors[0]
        raise ConfigError(f"{key}: {value!r} matches none of {tp}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if is_dataclass(tp) and isinstance(tp, type):
        if is_dataclass(value) and isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return config_from_dict(tp, value, prefix=f"{key}.")
    if origin in (tuple, list, Sequence) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, key) for v in value)
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
            return tuple(_convert(a, v, key) for a, v in zip(args, value, strict=True))
        inner = args[0] if args else Any
        items = [_convert(inner, v, key) for v in value]
        return items if origin is list else tuple(items)
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def config_from_dict(cls: type[C], data: Mapping[str, Any], prefix: str = "") -> C:
    """Build the frozen dataclass ``cls`` from a (nested) mapping, validating keys and types.

    Raises:
        ConfigError: unknown keys, wrong types, or values rejected by the dataclass itself.

    """
    if not is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {[prefix + k for k in unknown]}; known: {sorted(names)}")
    kwargs = {k: _convert(hints[k], v, prefix + k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"invalid config for {cls.__name__}: {exc}") from None


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A YAML-safe nested dict of a dataclass config (tuples become lists)."""

    def plain(v: Any) -> Any:
        if is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, Mapping):
            return {str(k): plain(x) for k, x in v.items()}
        return v

    out = plain(cfg)
    assert isinstance(out, dict)
    return out


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``update`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """Turn ``["train.epochs=5", "target=mean"]`` into a nested dict; values parsed as YAML."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: cannot parse {raw!r} ({exc})") from None
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {part!r} is set both as a value and as a section")
        node[parts[-1]] = value
    return out


def load_config(
    cls: type[C],
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    preset: Mapping[str, Any] | None = None,
) -> C:
    """Load a config: defaults < ``preset`` < YAML file at ``path`` < ``overrides``.

    Args:
        cls: The frozen dataclass type.
        path: Optional YAML file with a (partial) mapping of the config.
        overrides: ``key=value`` strings (dotted keys for nested sections).
        preset: A partial mapping applied on top of the defaults (e.g. a method's ``full`` preset).

    Raises:
        ConfigError: unreadable YAML, unknown keys, wrong types.

    """
    data: dict[str, Any] = config_to_dict(cls()) if _has_defaults(cls) else {}
    if preset:
        data = deep_merge(data, preset)
    if path is not None:
        p = Path(path)
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{p}: cannot read config ({exc})") from None
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{p}: config must be a mapping, got {type(loaded).__name__}")
        data = deep_merge(data, loaded)
    data = deep_merge(data, parse_overrides(overrides))
    return config_from_dict(cls, data)


def _has_defaults(cls: type) -> bool:
    return all(
        f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        for f in fields(cls)
        if f.init
    )


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Turn a ``--device`` option into a usable torch device, or raise :class:`ConfigError` saying why not.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, a ``torch.device``, or None for the default
            (this rank's GPU if CUDA is available, else the CPU).

    Raises:
        ConfigError: an unknown device string, CUDA/MPS asked for where this torch cannot use it, or a GPU index
            beyond the GPUs present.

    """
    import torch

    if device is None:
        from labelwise.engine.distributed import default_device

        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ConfigError(f"--device {device!r} is not a torch device ({exc})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available to this torch build; use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"--device {device}: only {count} GPU(s) present (cuda:0..cuda:{count - 1})")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {device}: MPS is not available on this machine; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device {device}: unsupported device type {dev.type!r} (use cpu, cuda or mps)")
    return dev
