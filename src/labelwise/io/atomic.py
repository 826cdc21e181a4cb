"""Atomic writes: a file (or a whole folder) is built next to its target and renamed over it when complete.

* :func:`atomic_path` and the ``write_*_atomic`` helpers: write to a temporary file in the same folder, fsync,
  then rename over the target. A crash leaves either the old file or the new one, never a half-written file that
  looks complete. New files get the usual permissions (``0o666`` minus the umask, so a lab group can read a
  shared dataset); a replaced file keeps its mode.
* :class:`StagedDir`: build an output folder in a hidden sibling and swap it in only when it is complete, so
  ``--overwrite`` never deletes the previous output before the new one exists, and a failed run leaves no partial
  folder behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from labelwise.errors import DataError

__all__ = [
    "STALE_MARKER",
    "StagedDir",
    "atomic_path",
    "new_file_mode",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

STALE_MARKER = "INCOMPLETE.txt"
"""Written into an existing result folder while a newer run builds its replacement (see :class:`StagedDir`)."""

_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (``/proc/self/status`` on Linux)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    with _UMASK_LOCK:  # elsewhere: set and restore (briefly 0o022, never more permissive)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def new_file_mode(directory: bool = False) -> int:
    """Permission bits a newly created file (``0o666``) or folder (``0o777``) gets under the current umask."""
    return (0o777 if directory else 0o666) & ~_umask()


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it is renamed to ``target``.

    Args:
        target: Final file path. Its folder is created if missing.
        suffix: Suffix for the temporary file (defaults to the target's full suffix, so writers that pick a
            format from the extension, e.g. ``.nii.gz``, still work).

    On an exception the temporary file is removed and ``target`` is left untouched. The file gets the mode of
    the file it replaces, or ``0o666`` minus the umask for a new file (``mkstemp`` alone would give ``0o600``).

    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(target.suffixes) or ".tmp"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            mode = stat.S_IMODE(target.stat().st_mode)
        except OSError:
            mode = new_file_mode()
        os.chmod(tmp, mode)
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_with(target: str | Path, write: Callable[[Path], object]) -> Path:
    with atomic_path(target) as tmp:
        write(tmp)
    return Path(target)


def write_bytes_atomic(target: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically and return the path."""
    return _write_with(target, lambda p: p.write_bytes(data))


def write_text_atomic(target: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``target`` atomically and return the path."""
    return _write_with(target, lambda p: p.write_text(text, encoding="utf-8"))


def write_json_atomic(target: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``target`` atomically and return the path."""
    return write_text_atomic(target, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: the process exists
        return True
    return True


class StagedDir:
    """An output folder built in a hidden sibling and swapped in only when complete.

    Rules (checked when the object is created, before anything is written):

    * ``dest`` missing or an empty folder: the new output is built, then renamed to ``dest``.
    * ``dest`` holds an output of this kind (a ``marker`` file such as ``dataset.json``): replaced only with
      ``overwrite``, and only by :meth:`commit`, i.e. after the new output is complete. Until then the old output
      is untouched, and if the run fails it is still there.
    * ``dest`` is any other non-empty folder (or a file): refused, so a mistyped ``--out`` never replaces
      unrelated files.

    With ``mark_stale`` (result folders: evaluations, QA tables) an existing ``dest`` gets a
    :data:`STALE_MARKER` file while the new output is built; :meth:`commit` replaces the folder (and so the
    marker), and a run that fails or is killed leaves it, saying that the other files are not the latest results.
    Hidden leftovers of killed runs (``.<name>.partial-<pid>-*``) are removed when their process is gone.

    Args:
        dest: The final folder (a link to a folder: the folder it points to is replaced).
        overwrite: Allow replacing an existing output of this kind.
        marker: File name that identifies an output of this kind (None: any non-empty folder counts as one).
        kind: What the output is called in messages (``"dataset"``, ``"evaluation"``).
        mark_stale: Mark an existing ``dest`` as stale while the new output is built (see above).

    Example:
        >>> with StagedDir(out, overwrite=True, marker="summary.json") as stage:  # doctest: +SKIP
        ...     write_outputs(result, stage.path)      # written to the sibling; swapped in on success

    """

    def __init__(
        self,
        dest: str | Path,
        *,
        overwrite: bool = False,
        marker: str | None = None,
        kind: str = "output",
        mark_stale: bool = False,
    ) -> None:
        self.dest = Path(dest)
        self._final = Path(os.path.realpath(self.dest))
        self.kind = kind
        self.overwrite = overwrite
        self.marker = marker
        self._done = False
        final = self._final
        self.replaces = False
        if final.exists() or final.is_symlink():
            if not final.is_dir():
                raise DataError(f"exists and is not a folder; cannot write the {kind} here", self.dest)
            if any(final.iterdir()):
                if marker is not None and not (final / marker).exists():
                    raise DataError(
                        f"exists and is not a labelwise {kind} (no {marker}); refusing to replace it "
                        "- choose a new or empty folder",
                        self.dest,
                    )
                if not overwrite:
                    raise DataError(f"a {kind} already exists here (pass --overwrite to replace it)", self.dest)
                self.replaces = True
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            self._remove_leftovers()
            self.path = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-{os.getpid()}-", dir=final.parent))
        except OSError as exc:
            raise DataError(f"cannot create the {kind} beside its destination ({exc})", self.dest) from None
        os.chmod(self.path, new_file_mode(directory=True))
        if mark_stale and self.replaces:
            write_text_atomic(
                final / STALE_MARKER,
                f"A newer run writing into {self.dest} started at {time.strftime('%Y-%m-%d %H:%M:%S')} and did not "
                "complete.\nThe other files in this folder are from an earlier run, not the latest one.\n",
            )

    def _remove_leftovers(self) -> None:
        prefix = f".{self._final.name}."
        for p in self._final.parent.glob(f"{prefix}*"):
            kind, _, rest = p.name[len(prefix) :].partition("-")
            pid = rest.split("-", 1)[0]
            if kind in ("partial", "old") and pid.isdigit() and not _pid_alive(int(pid)) and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)

    def commit(self) -> Path:
        """Swap the staged folder in (replacing ``dest``) and return ``dest``."""
        if self._done:
            raise RuntimeError("StagedDir already committed or aborted")
        final = self._final
        if final.is_dir() and not any(final.iterdir()):
            final.rmdir()
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-{os.getpid()}-", dir=final.parent))
            os.rename(final, old / "previous")
            try:
                os.rename(self.path, final)
            except BaseException:
                os.rename(old / "previous", final)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(self.path, final)
        self._done = True
        return self.dest

    def abort(self) -> None:
        """Remove the staged folder; ``dest`` is left as it was (plus the stale marker with ``mark_stale``)."""
        if not self._done:
            shutil.rmtree(self.path, ignore_errors=True)
            self._done = True

    def __enter__(self) -> StagedDir:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
