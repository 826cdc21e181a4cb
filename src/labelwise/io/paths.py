"""Path rules every writer follows: outputs never touch inputs, ids are safe file-name parts, joins stay inside.

* :func:`check_output_not_input`: an output (folder or file) may never be an input, contain an input, or lie
  inside an input folder. Paths are compared after resolving links, so ``out -> data`` is caught too.
* :func:`id_problem` / :func:`check_id`: case and rater ids become file names (``images/<case>.nii.gz``,
  ``labels/<case>_<rater>.nii.gz``, ``<pred>/<case>_probs.nii.gz``) and appear in HTML pages, so they are limited
  to :data:`ID_PATTERN`: ASCII letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit, without
  ``..``, at most :data:`ID_MAX_LENGTH` characters.
* :func:`safe_join`: join relative parts under a root and refuse a result that leaves it (absolute parts, ``..``,
  links pointing elsewhere).

Example:
    >>> id_problem("case_01") is None
    True
    >>> id_problem("../../etc")
    "case id '../../etc' must match [A-Za-z0-9][A-Za-z0-9._-]* without '..'"
    >>> safe_join("/data/ds", "images", "case_01.nii.gz").as_posix()
    '/data/ds/images/case_01.nii.gz'

"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from labelwise.errors import DataError

__all__ = ["ID_MAX_LENGTH", "ID_PATTERN", "check_id", "check_output_not_input", "id_problem", "safe_join"]

ID_PATTERN = "[A-Za-z0-9][A-Za-z0-9._-]*"
ID_MAX_LENGTH = 200
_ID_RE = re.compile(rf"^{ID_PATTERN}$")


def id_problem(value: object, what: str = "case id") -> str | None:
    """Why ``value`` is not a valid case/rater id, or None when it is (rules in the module docstring).

    Args:
        value: The id to check (anything; non-strings are refused).
        what: How the id is named in the message (``"case id"``, ``"rater id"``).

    """
    if not isinstance(value, str):
        return f"{what} {value!r} is not a string"
    if not _ID_RE.match(value) or ".." in value:
        return f"{what} {value!r} must match {ID_PATTERN} without '..'"
    if len(value) > ID_MAX_LENGTH:
        return f"{what} {value[:20]!r}... is longer than {ID_MAX_LENGTH} characters"
    return None


def check_id(value: object, what: str = "case id", path: str | Path | None = None) -> str:
    """Return ``value`` if it is a valid id, else raise :class:`DataError` naming ``path``."""
    problem = id_problem(value, what)
    if problem is not None:
        raise DataError(problem, path)
    assert isinstance(value, str)
    return value


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def check_output_not_input(out: str | Path, inputs: Iterable[str | Path | None], option: str = "--out") -> None:
    """Refuse an output that is, contains, or lies inside one of ``inputs`` (links followed).

    Args:
        out: Output folder or file (need not exist yet).
        inputs: Input files and folders; None entries (options not given) are skipped.
        option: How the output is named in the message (e.g. ``"--out"``, ``"DEST"``).

    Raises:
        DataError: naming the output, the input and how they overlap; raised before anything is written.

    """
    target = _resolved(out)
    for item in inputs:
        if item is None:
            continue
        source = _resolved(item)
        if target == source:
            relation = "is the input"
        elif source in target.parents:
            relation = "lies inside the input"
        elif target in source.parents:
            relation = "contains the input"
        else:
            continue
        raise DataError(f"{option} {relation} {item} ({source}); write to a separate folder", out)


def safe_join(root: str | Path, *parts: str) -> Path:
    """``root / parts...``, refusing a result outside ``root`` (absolute parts, ``..``, links leading out).

    Args:
        root: The folder the result must stay in.
        *parts: Relative path parts (each may hold ``/``).

    Returns:
        The joined path (not resolved, so messages show what the user gave).

    Raises:
        DataError: A part is empty, absolute, uses ``..``, or the result resolves outside ``root``.

    """
    base = Path(root)
    path = base
    for part in parts:
        p = Path(part)
        if not part or p.is_absolute() or ".." in p.parts:
            raise DataError(f"path part {part!r} must be relative and stay inside the folder", base)
        path = path / p
    top = _resolved(base)
    full = _resolved(path)
    if full != top and top not in full.parents:
        raise DataError(f"{path} resolves outside the folder ({full})", base)
    return path
