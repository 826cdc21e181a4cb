"""One small registry type; each kind of thing (models, methods, losses, fusion rules) owns one instance.

Example:
    >>> models: Registry[type] = Registry("model")
    >>> @models.register("tiny")
    ... class Tiny: ...
    >>> models.get("tiny").__name__
    'Tiny'
    >>> models.available()
    ['tiny']

"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from labelwise.errors import ConfigError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object mapping filled by a decorator; registering a name twice is an error.

    Args:
        kind: What the registry holds ("model", "method", ...), used in error messages.

    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Return a decorator that registers its argument under ``name``."""

        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """Return the object registered as ``name``; unknown names raise :class:`ConfigError`."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise ConfigError(f"unknown {self.kind} {name!r}; available: {known}") from None

    def available(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
