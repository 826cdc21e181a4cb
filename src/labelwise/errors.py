"""Exceptions shared by every layer.

Every error a user can trigger with bad input derives from :class:`LabelwiseError`; the CLI turns it into one
line and a non-zero exit code. Messages name the file (or case) and the problem.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ConfigError", "DataError", "LabelwiseError"]


class LabelwiseError(Exception):
    """Base class for errors caused by user input (files, configs, arguments)."""


class DataError(LabelwiseError):
    """A file, case or dataset is missing, unreadable or inconsistent.

    Args:
        problem: What is wrong, in one sentence.
        path: The offending file or folder, if any; it is put first in the message.

    """

    def __init__(self, problem: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


class ConfigError(LabelwiseError):
    """A configuration value, CLI option or run directory is invalid or incompatible."""
