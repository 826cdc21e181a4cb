"""Run ``labelwise`` in-process the way the console script does: through :func:`labelwise.cli.main.main`.

Unlike ``CliRunner().invoke(app, ...)``, which hands a :class:`~labelwise.errors.LabelwiseError` back as an
exception, this goes through the one error path: the ``error:`` line on stderr and the exit code (2 usage, 1 data).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from typer.testing import CliRunner

from labelwise.cli.main import main


@dataclass(frozen=True)
class Outcome:
    """What the user sees: exit code, stdout and stderr."""

    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """stdout then stderr."""
        return self.stdout + self.stderr

    @property
    def errors(self) -> list[str]:
        """The ``error:`` lines on stderr."""
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]

    @property
    def warnings(self) -> list[str]:
        """The ``warning:`` lines on stderr (deprecated spellings)."""
        return [line for line in self.stderr.splitlines() if line.startswith("warning:")]


def labelwise(*args: object) -> Outcome:
    """Run ``labelwise ARGS...`` in this process with captured streams and return what the user would see."""
    runner = CliRunner()
    with runner.isolation() as (stdout, stderr, _output):
        code = main([str(a) for a in args])
        sys.stdout.flush()
        sys.stderr.flush()
        return Outcome(code, stdout.getvalue().decode(), stderr.getvalue().decode())
