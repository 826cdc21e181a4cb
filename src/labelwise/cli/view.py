"""``labelwise view --data DATASET [--pred PRED_DIR] [--qa quality.csv] [--run RUN]``: serve the local web viewer."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

__all__ = ["view"]

logger = logging.getLogger(__name__)


def view(
    data: Path | None = typer.Option(None, "--data", help="Dataset folder (with dataset.json) (required)."),
    pred: Path | None = typer.Option(None, "--pred", help="Prediction folder from `labelwise predict`."),
    qa: Path | None = typer.Option(None, "--qa", help="quality.csv from `labelwise qa` (enables the review queue)."),
    run: Path | None = typer.Option(
        None,
        "--run",
        help="Run folder of the last model trained on this dataset: 'changed since training' lists the corrections "
        "made after it.",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    port: int = typer.Option(8765, "--port", min=1, max=65535),
    allow_remote: bool = typer.Option(
        False, "--allow-remote", help="Required to bind anything but loopback (the viewer has no authentication)."
    ),
    allowed_host: list[str] | None = typer.Option(
        None,
        "--allowed-host",
        help="Another name (or name:port) the browser may reach the viewer by, e.g. a machine name with "
        "--host 0.0.0.0; requests naming any other Host are refused. Repeatable.",
    ),
    old_dataset: Path | None = typer.Argument(None, hidden=True, help="Deprecated: use --data."),
) -> None:
    """Open a dataset (and predictions, QA scores) in a local web viewer."""
    from labelwise.cli.common import moved
    from labelwise.errors import LabelwiseError, require_extra

    require_extra("starlette", "viewer", feature="labelwise view")
    uvicorn = require_extra("uvicorn", "viewer", feature="labelwise view")
    old, new = "labelwise view DATASET", "labelwise view --data DATASET"
    dataset = moved(data, old_dataset, option="--data", old=old, new=new)

    from labelwise.viewer import ViewerState, create_app
    from labelwise.viewer.app import is_loopback

    if not is_loopback(host):
        if not allow_remote:
            # A safety refusal rather than a malformed command line: exit code 1.
            raise LabelwiseError(
                f"refusing to bind {host}: the viewer has no authentication; pass --allow-remote to do it anyway"
            )
        typer.secho(
            f"warning: serving on {host} over plain HTTP: anyone who can reach it can open the page, read and edit "
            "labels",
            fg="yellow",
            err=True,
        )
    app = create_app(ViewerState(dataset, pred, qa, run_dir=run), host=host, port=port, extra_hosts=allowed_host or ())
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"labelwise viewer on http://{shown}:{port}/  (Ctrl+C to stop)")
    uvicorn.run(app, host=host, port=port, log_level="warning", proxy_headers=False, server_header=False)
