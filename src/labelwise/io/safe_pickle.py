"""A restricted unpickler for data pickles that should hold numpy arrays, dicts, lists and scalars only.

Plain :func:`pickle.load` runs arbitrary code named by the file; public dataset pickles (Medical Matting,
Probabilistic U-Net LIDC) are read with :func:`load_pickle` instead, which resolves only the handful of globals
numpy needs to rebuild arrays and refuses everything else with a :class:`~labelwise.errors.DataError` that names
the file and the refused global.

Example:
    >>> import io, pickle, numpy as np
    >>> blob = pickle.dumps({"image": np.arange(4, dtype=np.uint8)})
    >>> loads_pickle(blob, source="example")["image"].tolist()
    [0, 1, 2, 3]
    >>> try:
    ...     loads_pickle(pickle.dumps(print), source="evil.pkl")
    ... except DataError as exc:
    ...     print(exc.problem.split(":")[0])
    refused to unpickle builtins.print

"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from labelwise.errors import DataError

__all__ = ["ALLOWED_GLOBALS", "load_pickle", "loads_pickle"]

# (module, name) pairs numpy's pickles reference; everything else is refused.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),  # protocol-2 pickles store bytes as latin-1 text decoded by this
    }
)
_NUMPY2 = int(np.__version__.split(".")[0]) >= 2


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def __init__(self, stream: io.BytesIO, source: str) -> None:
        super().__init__(stream)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise DataError(
                f"refused to unpickle {module}.{name}: only numpy arrays, dicts, lists, tuples, strings and "
                "numbers are allowed",
                self._source,
            )
        if _NUMPY2 and module.startswith("numpy.core."):
            module = "numpy._core." + module[len("numpy.core.") :]  # avoids numpy 2's deprecation warning
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise DataError("refused to unpickle a persistent reference", self._source)


def loads_pickle(data: bytes, source: str | Path = "<bytes>") -> Any:
    """Unpickle ``data`` allowing only numpy arrays, numpy scalars/dtypes and builtin containers.

    Args:
        data: The pickle bytes.
        source: File name (or zip member) used in error messages.

    Returns:
        The unpickled object (dicts, lists, tuples, str, numbers, ``np.ndarray``).

    Raises:
        DataError: a refused global (code execution attempt or an unsupported class), or a truncated/corrupt
            pickle.

    """
    src = str(source)
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(data), src).load()
    except DataError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise DataError(f"truncated or corrupt pickle ({type(exc).__name__}: {exc})", src) from None


def load_pickle(path: str | Path) -> Any:
    """Read a pickle file with the numpy-only unpickler (see :func:`loads_pickle`)."""
    p = Path(path)
    if not p.is_file():
        raise DataError("file not found", p)
    return loads_pickle(p.read_bytes(), p)
