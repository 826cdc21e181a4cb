"""The ``labelwise`` command and its one error path; subcommands live in sibling modules and import lazily.

Run it as ``labelwise ...`` (the console script, :func:`run`), ``python -m labelwise.cli ...`` or, for DDP training,
``torchrun --nproc-per-node N -m labelwise.cli train ...``. Tests call :func:`main`, which takes the same path.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

from labelwise.cli import data as data_cmd
from labelwise.cli import demo as demo_cmd
from labelwise.cli import evaluate as evaluate_cmd
from labelwise.cli import export as export_cmd
from labelwise.cli import fuse as fuse_cmd
from labelwise.cli import loop as loop_cmd
from labelwise.cli import methods as methods_cmd
from labelwise.cli import next as next_cmd
from labelwise.cli import predict as predict_cmd
from labelwise.cli import propagate as propagate_cmd
from labelwise.cli import pseudo_label as pseudo_label_cmd
from labelwise.cli import qa as qa_cmd
from labelwise.cli import report as report_cmd
from labelwise.cli import train as train_cmd
from labelwise.cli import view as view_cmd
from labelwise.cli.common import Command, setup_logging, with_merge

__all__ = ["app", "main", "run"]

app = typer.Typer(
    name="labelwise",
    help="Medical image segmentation learned from imperfect labels.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data_cmd.app, name="data")
app.add_typer(export_cmd.app, name="export")
app.command("train", cls=Command)(train_cmd.train)
app.command("predict", cls=with_merge(predict_cmd.predict_merge))(predict_cmd.predict)
app.command("methods", cls=Command)(methods_cmd.methods)
app.command("view", cls=Command)(view_cmd.view)
app.command("evaluate", cls=with_merge(evaluate_cmd.evaluate_merge))(evaluate_cmd.evaluate)
app.command("fuse", cls=Command)(fuse_cmd.fuse)
app.command("qa", cls=with_merge(qa_cmd.qa_merge))(qa_cmd.qa)
app.command("report", cls=Command)(report_cmd.report)
app.command("demo", cls=Command)(demo_cmd.demo)
app.command("propagate", cls=Command)(propagate_cmd.propagate)
app.command("pseudo-label", cls=Command)(pseudo_label_cmd.pseudo_label)
app.command("next", cls=Command)(next_cmd.next_cases)
app.command("loop", cls=Command)(loop_cmd.loop)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details.")) -> None:
    setup_logging(verbose)
    from labelwise.engine.allocator import tune_allocator

    tune_allocator()


def main(args: Sequence[str] | None = None) -> int:
    """Run the ``labelwise`` command line and return its exit status (the one error path).

    A :class:`~labelwise.errors.LabelwiseError` is printed once, as ``error: <message>`` on stderr, and exits with
    its ``exit_code``: 2 for a usage problem (a bad option value, an unknown split, method or prediction option:
    :class:`~labelwise.errors.ConfigError`), 1 for a data problem (:class:`~labelwise.errors.DataError`, a missing
    extra, failed cases). Typer's own usage errors (an unknown option, a value outside an option's choices) exit 2;
    Ctrl+C exits 130. Anything else is a bug and keeps its traceback.

    Args:
        args: The arguments after ``labelwise`` (default: ``sys.argv[1:]``).

    Returns:
        The exit status.

    """
    from labelwise.errors import LabelwiseError

    command = typer.main.get_command(app)
    try:
        command.main(args=None if args is None else list(args), prog_name="labelwise", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except LabelwiseError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        typer.secho("interrupted", fg=typer.colors.RED, err=True)
        return 130
    return 0


def run() -> None:
    """Console entry point: :func:`main` on ``sys.argv``, then exit with its status."""
    import signal

    def _terminate(signum: int, frame: object) -> None:  # kill: unwind like Ctrl+C, so staged outputs are aborted
        raise KeyboardInterrupt

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    sys.exit(main())


if __name__ == "__main__":  # python -m labelwise.cli.main (python -m labelwise.cli is the documented spelling)
    run()
