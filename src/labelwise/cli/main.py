"""The ``labelwise`` command. Subcommands live in sibling modules and import heavy packages lazily."""

from __future__ import annotations

import sys

import typer

from labelwise.cli import data as data_cmd
from labelwise.cli import demo as demo_cmd
from labelwise.cli import evaluate as evaluate_cmd
from labelwise.cli import export as export_cmd
from labelwise.cli import fuse as fuse_cmd
from labelwise.cli import methods as methods_cmd
from labelwise.cli import predict as predict_cmd
from labelwise.cli import propagate as propagate_cmd
from labelwise.cli import pseudo_label as pseudo_label_cmd
from labelwise.cli import qa as qa_cmd
from labelwise.cli import report as report_cmd
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
app.add_typer(export_cmd.app, name="export")
app.command("train")(train_cmd.train)
app.command("predict")(predict_cmd.predict)
app.command("methods")(methods_cmd.methods)
app.command("view")(view_cmd.view)
app.command("evaluate")(evaluate_cmd.evaluate)
app.command("fuse")(fuse_cmd.fuse)
app.command("qa")(qa_cmd.qa)
app.command("report")(report_cmd.report)
app.command("demo")(demo_cmd.demo)
app.command("propagate")(propagate_cmd.propagate)
app.command("pseudo-label")(pseudo_label_cmd.pseudo_label)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details.")) -> None:
    setup_logging(verbose)
    from labelwise.engine.allocator import tune_allocator

    tune_allocator()


def run() -> None:
    """Console entry point: user errors become one line on stderr and exit code 1."""
    import signal

    from labelwise.errors import LabelwiseError

    def _terminate(signum: int, frame: object) -> None:  # kill: unwind like Ctrl+C, so staged outputs are aborted
        raise KeyboardInterrupt

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        app()
    except LabelwiseError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.secho("interrupted", fg=typer.colors.RED, err=True)
        sys.exit(130)


if __name__ == "__main__":  # python -m labelwise.cli.main (python -m labelwise.cli is the documented spelling)
    run()
