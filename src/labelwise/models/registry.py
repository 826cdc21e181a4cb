"""The model registry: every network registers a factory ``(spatial_dims, in_channels, out_channels, **kw)``.

A model is described by a :class:`ModelSpec` (name + keyword arguments), which is plain data: it is saved in a
run's ``config.yaml`` and :func:`build_model` rebuilds the same network from it.

Example:
    >>> net = build_model(ModelSpec("unet_tiny"), spatial_dims=2, in_channels=1, out_channels=2)
    >>> import torch
    >>> net(torch.zeros(1, 1, 16, 16)).shape
    torch.Size([1, 2, 16, 16])

"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from labelwise.errors import ConfigError
from labelwise.registry import Registry

__all__ = ["MODELS", "ModelFactory", "ModelSpec", "available", "build_model", "register_model"]

ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering a factory ``f(spatial_dims, in_channels, out_channels, **kwargs) -> nn.Module``."""
    return MODELS.register(name)


def available() -> list[str]:
    """Sorted names of the registered models."""
    return MODELS.available()


@dataclass(frozen=True)
class ModelSpec:
    """A network by name plus its keyword arguments (everything except the data-derived channel counts).

    Attributes:
        name: Registered model name (see :func:`available`).
        kwargs: Extra keyword arguments of the factory, e.g. ``{"channels": [16, 32, 64]}``.

    """

    name: str = "unet"
    kwargs: dict[str, Any] = field(default_factory=dict)


def build_model(spec: ModelSpec, spatial_dims: int, in_channels: int, out_channels: int) -> nn.Module:
    """Build the network described by ``spec``.

    Args:
        spec: Model name and keyword arguments.
        spatial_dims: 2 or 3.
        in_channels: Image channels.
        out_channels: Output channels (number of classes for segmentation heads).

    Raises:
        ConfigError: unknown model name or a keyword the factory does not accept.

    """
    factory = MODELS.get(spec.name)
    params = inspect.signature(factory).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(spec.kwargs) - set(params))
        if unknown:
            raise ConfigError(f"model {spec.name!r} does not accept {unknown}; it accepts {sorted(params)}")
    if spatial_dims not in (2, 3):
        raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    return factory(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **spec.kwargs)


def spec_divisor(spec: ModelSpec) -> int:
    """Down-sampling factor of a U-Net-like model: ``2 ** (levels - 1)`` from its ``channels`` argument.

    Uses ``spec.kwargs["channels"]``, else the factory's default ``channels``; a factory without one is
    taken as not down-sampling (1). Patch sizes of the planner are multiples of it.
    """
    channels = spec.kwargs.get("channels")
    if channels is None:
        param = inspect.signature(MODELS.get(spec.name)).parameters.get("channels")
        channels = param.default if param is not None and param.default is not inspect.Parameter.empty else (1,)
    return int(2 ** (len(channels) - 1))
