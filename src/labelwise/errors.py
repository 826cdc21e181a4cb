"""Exceptions shared by every layer.

Every error a user can trigger with bad input derives from :class:`LabelwiseError`; the CLI's entry point
(``labelwise.cli.main.run``) prints it as one ``error: ...`` line and exits with the error's :attr:`exit_code`:
2 for a usage problem (:class:`ConfigError`, :class:`UsageError`: a bad option value, an unknown split, method or
prediction option), 1 for a data problem (:class:`DataError`, :class:`MissingExtraError`, failed cases). Messages
name the file (or case) and the problem.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import ClassVar

__all__ = ["ConfigError", "DataError", "LabelwiseError", "MissingExtraError", "UsageError", "require_extra"]


class LabelwiseError(Exception):
    """Base class for errors caused by user input (files, configs, arguments).

    Attributes:
        exit_code: The command line's exit status for this error (1: a data problem; 2: a usage problem).

    """

    exit_code: ClassVar[int] = 1


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
    """A configuration value, CLI option or run directory is invalid or incompatible (exit code 2)."""

    exit_code: ClassVar[int] = 2


class UsageError(ConfigError):
    """A command line is wrong: an unknown split, conflicting or missing options, an old and a new spelling at once.

    Example:
        >>> UsageError("unknown split 'tset'").exit_code
        2

    """


class MissingExtraError(LabelwiseError):
    """An optional dependency is not installed; the message names the extra that brings it.

    Args:
        extra: The ``labelwise`` extra that installs the missing package (``viewer``, ``dicom``, ...).
        feature: What needs it, as the user would name it (``labelwise view``); None names the module instead.
        module: The module that failed to import.

    """

    def __init__(self, extra: str, feature: str | None = None, module: str | None = None) -> None:
        self.extra = extra
        self.module = module
        install = f"pip install 'labelwise[{extra}]'"
        if feature is not None:
            message = f"{feature} needs the [{extra}] extra: {install}"
        else:
            message = f"module {module!r} is missing; it comes with the [{extra}] extra: {install}"
        super().__init__(message)


def require_extra(module: str, extra: str, feature: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra that installs it.

    Args:
        module: Dotted module name, e.g. ``"uvicorn"``.
        extra: The ``labelwise`` extra that provides it, e.g. ``"viewer"``.
        feature: What needs it, for the message (``"labelwise view"``).

    Returns:
        The imported module.

    Raises:
        MissingExtraError: If the import fails.

    Example:
        >>> require_extra("json", "none").__name__
        'json'
        >>> try:
        ...     require_extra("labelwise_no_such_module", "viewer", feature="labelwise view")
        ... except MissingExtraError as exc:
        ...     print(exc)
        labelwise view needs the [viewer] extra: pip install 'labelwise[viewer]'

    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(extra, feature, module) from None
