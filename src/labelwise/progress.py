"""One progress bar for every long loop: rich on stderr, imported lazily, a no-op when disabled.

:class:`ProgressBar` is the bar (the training loop's, with a loss column; the CLI's, with a count); :func:`track`
wraps an iterable in one. This module sits on the lowest floor: it imports nothing from labelwise, and rich only
when a bar is actually shown, so ``import labelwise`` stays fast.

Example:
    >>> with ProgressBar("work", total=3, enabled=False) as bar:
    ...     for _ in range(3):
    ...         bar.advance()
    >>> list(track(range(3), "count", enabled=False))
    [0, 1, 2]

"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["ProgressBar", "track"]

T = TypeVar("T")


class ProgressBar:
    """A rich progress bar on stderr: description, bar, done/total, elapsed and remaining time.

    Args:
        description: Text left of the bar (change it with :meth:`update`).
        total: Number of steps; None for an unknown length.
        enabled: False makes every method a no-op (e.g. on non-zero ranks, or ``train.progress=false``).
        fields: Extra columns, field name -> rich format string, e.g. ``{"loss": "loss {task.fields[loss]:.4f}"}``;
            set a field with :meth:`update` (initial value NaN).
        transient: Remove the bar from the terminal when it stops.

    """

    def __init__(
        self,
        description: str,
        total: int | None = None,
        *,
        enabled: bool = True,
        fields: dict[str, str] | None = None,
        transient: bool = False,
    ) -> None:
        self._bar: Any = None
        self._task: Any = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        fields = fields or {}
        columns = (
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            *(TextColumn(fmt) for fmt in fields.values()),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        self._bar = Progress(*columns, console=Console(stderr=True), transient=transient)
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, **dict.fromkeys(fields, float("nan")))

    def advance(self, steps: int = 1) -> None:
        """Move the bar ``steps`` forward."""
        if self._bar is not None:
            self._bar.advance(self._task, steps)

    def update(self, completed: int | None = None, description: str | None = None, **fields: Any) -> None:
        """Set the number of steps done, the description and/or extra fields (e.g. ``loss=0.3``)."""
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, description=description, **fields)

    def print(self, message: str) -> None:
        """Print one line on stderr above the bar (markup off)."""
        if self._bar is not None:
            self._bar.console.print(message, highlight=False, markup=False)

    def close(self) -> None:
        """Stop the bar (leaves the last state on the terminal unless ``transient``)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def track(items: Iterable[T], description: str, total: int | None = None, *, enabled: bool = True) -> Iterator[T]:
    """Iterate over ``items`` with a :class:`ProgressBar` (``total`` defaults to ``len(items)`` when it has one).

    Args:
        items: What to iterate over.
        description: Text left of the bar.
        total: Number of items, if ``items`` has no length.
        enabled: False iterates without a bar.

    Yields:
        The items, in order.

    """
    if total is None and isinstance(items, Sized):
        total = len(items)
    with ProgressBar(description, total, enabled=enabled) as bar:
        for item in items:
            yield item
            bar.advance()
