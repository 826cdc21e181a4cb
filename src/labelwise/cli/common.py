"""Helpers shared by CLI commands: logging set-up, progress bars, one-line failures."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import TypeVar

import typer

__all__ = ["fail", "progress", "setup_logging"]

T = TypeVar("T")


def setup_logging(verbose: bool) -> None:
    """Send library logs to stderr through rich (INFO with ``--verbose``, WARNING otherwise)."""
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, show_time=False)],
        force=True,
    )
    logging.getLogger("labelwise.plan").setLevel(logging.INFO)  # planned schedule and wall time, always shown


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` on stderr and return an Exit to raise."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a rich progress bar (bar, count, elapsed and remaining time) on stderr."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    cols = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*cols, console=Console(stderr=True), transient=False) as bar:
        yield from bar.track(items, total=total, description=description)
