"""``labelwise view``: serve the local web viewer."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

__all__ = ["view"]

logger = logging.getLogger(__name__)


def view(
    dataset: Path = typer.Argument(..., help="Dataset folder (with dataset.json).", exists=True, file_okay=False),
    pred: Path | None = typer.Option(None, "--pred", help="Prediction folder from `labelwise predict`."),
    qa: Path | None = typer.Option(None, "--qa", help="quality.csv from `labelwise qa` (enables the review queue)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    port: int = typer.Option(8765, "--port", min=1, max=65535),
    allow_remote: bool = typer.Option(
        False, "--allow-remote", help="Required to bind anything but loopback (the viewer has no authentication)."
    ),
) -> None:
    """Open a dataset (and predictions, QA scores) in a local web viewer."""
    import uvicorn

    from labelwise.cli.common import fail
    from labelwise.viewer import ViewerState, create_app

    if host not in ("127.0.0.1", "localhost", "::1") and not allow_remote:
        raise fail(f"refusing to bind {host}: the viewer has no authentication; pass --allow-remote to do it anyway")
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.secho(
            f"warning: serving on {host}: anyone who can reach it can read and edit labels", fg="yellow", err=True
        )
    app = create_app(ViewerState(dataset, pred, qa))
    typer.echo(f"labelwise viewer on http://{host}:{port}/  (Ctrl+C to stop)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
