"""``labelwise methods``: list the registered methods with their presets and references."""

from __future__ import annotations

import typer

__all__ = ["methods"]


def methods() -> None:
    """List the registered methods."""
    from labelwise.methods import available, get_method

    for name in available():
        m = get_method(name)
        presets = ", ".join(sorted(m.presets)) or "-"
        typer.echo(f"{name:14s} {m.summary}  [presets: {presets}]  ({m.citation})")
