"""One small logger interface for training metrics, with CSV and TensorBoard back-ends.

``logs/<phase>.csv`` has columns ``step, epoch, <metric>...`` (the header grows if new metrics appear; rows are
rewritten atomically). On resume, :meth:`MetricLogger.truncate` drops rows after the checkpoint's step so a
resumed run's logs equal an uninterrupted run's.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from labelwise.io.atomic import write_text_atomic

__all__ = ["CSVLogger", "MetricLogger", "MultiLogger", "TensorBoardLogger", "read_csv_log"]

logger = logging.getLogger(__name__)


class MetricLogger(Protocol):
    """Receives scalar metrics; ``phase`` is e.g. "train" or "val"."""

    def log(self, phase: str, metrics: Mapping[str, float], step: int, epoch: int) -> None:
        """Record scalars at a global optimiser step."""

    def truncate(self, step: int) -> None:
        """Forget everything logged after ``step`` (used on resume)."""

    def close(self) -> None:
        """Flush and release resources."""


def read_csv_log(path: str | Path) -> list[dict[str, str]]:
    """Rows of a CSV log as dicts (empty list if the file does not exist)."""
    p = Path(path)
    if not p.is_file():
        return []
    with p.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


class CSVLogger:
    """Appends rows to ``folder/<phase>.csv``.

    Args:
        folder: The run's ``logs`` folder.

    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._rows: dict[str, list[dict[str, str]]] = {}

    def _load(self, phase: str) -> list[dict[str, str]]:
        if phase not in self._rows:
            self._rows[phase] = read_csv_log(self.folder / f"{phase}.csv")
        return self._rows[phase]

    def _flush(self, phase: str) -> None:
        rows = self._rows[phase]
        cols: list[str] = ["step", "epoch"]
        for r in rows:
            cols.extend(k for k in r if k not in cols)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, restval="", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        write_text_atomic(self.folder / f"{phase}.csv", buf.getvalue())

    def log(self, phase: str, metrics: Mapping[str, float], step: int, epoch: int) -> None:
        """Append one row (the file is rewritten atomically only when new columns appear)."""
        rows = self._load(phase)
        row = {"step": str(step), "epoch": str(epoch), **{k: f"{float(v):.6g}" for k, v in metrics.items()}}
        known = set().union(*rows) if rows else set()
        rows.append(row)
        path = self.folder / f"{phase}.csv"
        if rows[:-1] and set(row) <= known and path.is_file():
            with path.open(encoding="utf-8", newline="") as fh:
                header = next(csv.reader(fh))
            with path.open("a", encoding="utf-8", newline="") as fh:
                csv.DictWriter(fh, fieldnames=header, restval="", lineterminator="\n").writerow(row)
        else:
            self._flush(phase)

    def truncate(self, step: int) -> None:
        """Drop rows with ``step`` greater than the given step in every phase file."""
        for path in self.folder.glob("*.csv"):
            phase = path.stem
            rows = self._load(phase)
            keep = [r for r in rows if int(r["step"]) <= step]
            if len(keep) != len(rows):
                self._rows[phase] = keep
                self._flush(phase)

    def close(self) -> None:
        """Nothing to release (every row is already on disk)."""


class TensorBoardLogger:
    """Writes scalars as ``<phase>/<metric>`` to a TensorBoard event file in ``folder`` (no-op if unavailable)."""

    def __init__(self, folder: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is a dev extra
            logger.info("tensorboard not installed; TensorBoard logging disabled")
            self._writer = None
            return
        self._writer = SummaryWriter(log_dir=str(folder))

    def log(self, phase: str, metrics: Mapping[str, float], step: int, epoch: int) -> None:
        """Add scalars at ``step``."""
        if self._writer is not None:
            for k, v in metrics.items():
                self._writer.add_scalar(f"{phase}/{k}", float(v), step)

    def truncate(self, step: int) -> None:
        """TensorBoard keeps the latest value per step when a resumed run rewrites it; nothing to do."""

    def close(self) -> None:
        """Flush and close the event file."""
        if self._writer is not None:
            self._writer.close()


class MultiLogger:
    """Fan-out to several loggers."""

    def __init__(self, loggers: Sequence[MetricLogger]) -> None:
        self.loggers = list(loggers)

    def log(self, phase: str, metrics: Mapping[str, float], step: int, epoch: int) -> None:
        """Forward to every logger."""
        for lg in self.loggers:
            lg.log(phase, metrics, step, epoch)

    def truncate(self, step: int) -> None:
        """Forward to every logger."""
        for lg in self.loggers:
            lg.truncate(step)

    def close(self) -> None:
        """Forward to every logger."""
        for lg in self.loggers:
            lg.close()
