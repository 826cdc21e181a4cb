"""The ``labelwise`` command. Subcommands live in sibling modules and import heavy packages lazily."""

from __future__ import annotations

import sys

import typer

from labelwise.cli import data as data_cmd
from labelwise.cli import methods as methods_cmd
from labelwise.cli import predict as predict_cmd
from labelwise.cli import train as train_cmd
from labelwise.cli import view as view_cmd
from labelwise.cli.common import setup_logging

__all__ = ["app", "run"]

app = typer.Typer(
    name="labelwise",
    help="Medical image segmentation learned from imperfect labels.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data_cmd.app, name="data")
app.command("train")(train_cmd.train)
app.command("predict")(predict_cmd.predict)
app.command("methods")(methods_cmd.methods)
app.command("view")(view_cmd.view)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details.")) -> None:
    setup_logging(verbose)


def run() -> None:
    """Console entry point: user errors become one line on stderr and exit code 1."""
    from labelwise.errors import LabelwiseError

    try:
        app()
    except LabelwiseError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.secho("interrupted", fg=typer.colors.RED, err=True)
        sys.exit(130)
