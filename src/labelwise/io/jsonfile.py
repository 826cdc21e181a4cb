"""Reading the JSON files labelwise and the layouts it imports use: one error path for every reader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from labelwise.errors import DataError

__all__ = ["read_json_object"]


def read_json_object(path: str | Path, what: str, missing: str | None = None, fmt: str | None = None) -> dict[str, Any]:
    """Read a JSON object from ``path``; every problem is one :class:`DataError` naming the file.

    Args:
        path: The JSON file.
        what: What the file is, for messages (``"manifest"``, ``"dataset.json"``).
        missing: The message when the file does not exist (default ``"no <file name>"``), reported against the
            folder that should hold it.
        fmt: If given, the object's ``"format"`` entry must equal it.

    Returns:
        The object.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x.json"
        >>> _ = p.write_text('{"format": "a", "n": 1}')
        >>> read_json_object(p, "x file", fmt="a")["n"]
        1
        >>> _ = p.write_text("[1]")
        >>> try:
        ...     read_json_object(p, "x file")
        ... except DataError as exc:
        ...     print(exc.problem)
        x file: expected a JSON object

    """
    p = Path(path)
    if not p.is_file():
        raise DataError(missing or f"no {p.name}", p.parent)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{what} is not valid JSON ({exc})", p) from None
    if not isinstance(data, dict):
        raise DataError(f"{what}: expected a JSON object", p)
    if fmt is not None and data.get("format") != fmt:
        raise DataError(f'not a {what} (missing "format": "{fmt}")', p)
    return data
