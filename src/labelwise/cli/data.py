"""``labelwise data import|check|stats``."""

from __future__ import annotations

import typer

__all__ = ["app"]

app = typer.Typer(help="Import, check and summarise datasets.", no_args_is_help=True)
