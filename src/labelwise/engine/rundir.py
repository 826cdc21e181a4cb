"""The run directory: what ``labelwise train`` writes and ``labelwise predict`` reads.

Layout::

    RUN_DIR/
      config.yaml            # {"method": name, "config": {...}}: everything needed to rebuild the model
      plan.json              # data-derived settings (labelwise.engine.planner)
      weights.safetensors    # selected weights (best on validation, or last if there is no val split)
      meta.json              # {"format", "labelwise_version", "method", "dataset", "data_fingerprint",
                             #  "status": "running" | "finished", "best_epoch", "val_metrics", ...}
      checkpoint.safetensors # resume state (weights, optimisers, RNG, counters)
      logs/                  # train.csv, val.csv, TensorBoard events, samples.rank<r>.jsonl

Multi-stage methods keep one such folder per stage under the run dir (``stage1/``, ``stage2/``) next to the
top-level config/plan/meta.

A warm-started run (``labelwise train METHOD --init RUN1``) records where its first weights came from in
``meta.json`` ``init_from`` (:meth:`RunDir.lineage` of RUN1: its path, method, config hash, data fingerprint and the
SHA-256 of each of its ``weights.safetensors``), so a model's ancestry can be traced run by run.

``meta.json`` ``status`` is ``"running"`` from the moment the folder is created until the method has written its
final weights (``"finished"``); :meth:`RunDir.warn_if_unfinished` tells whoever loads weights from a run that was
killed or is still training. A folder that holds no trained state yet (no ``*.safetensors``, e.g. a run that
stopped on a bad option before its first checkpoint) is started again by :meth:`RunDir.prepare` instead of
blocking the corrected command.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import yaml

from labelwise.data import Dataset
from labelwise.errors import ConfigError, DataError
from labelwise.io.atomic import write_json_atomic, write_text_atomic

__all__ = [
    "CONFIG_NAME",
    "FINISHED",
    "INIT_KEY",
    "META_NAME",
    "WEIGHTS_NAME",
    "RunDir",
    "config_hash",
    "data_fingerprint",
    "file_sha256",
]

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.yaml"
META_NAME = "meta.json"
WEIGHTS_NAME = "weights.safetensors"
FINISHED = "finished"
"""``meta.json`` status of a run whose final weights are written."""
INIT_KEY = "init_from"
"""``meta.json`` key of a warm-started run's lineage (see :meth:`RunDir.lineage`)."""
# Config keys that may change between a run and its resume without changing the result.
_RESUME_SAFE = {"progress", "num_workers"}


def data_fingerprint(dataset: Dataset) -> str:
    """SHA-256 over the manifest's content and the size of every referenced file (first 16 hex digits)."""
    h = hashlib.sha256()
    m = dataset.manifest
    h.update(json.dumps(m.to_json(), sort_keys=True).encode())
    for rec in m.cases:
        for rel in (rec.image, *rec.labels.values()):
            p = dataset.root / rel
            h.update(f"{rel}:{p.stat().st_size if p.exists() else -1}".encode())
    return h.hexdigest()[:16]


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (64 hex digits), read in 1 MiB blocks.

    Raises:
        DataError: the file cannot be read (naming it).

    """
    h = hashlib.sha256()
    try:
        with Path(path).open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise DataError(f"cannot read ({exc.strerror or exc})", path) from None
    return h.hexdigest()


def config_hash(method: str, config: dict[str, Any]) -> str:
    """SHA-256 (first 16 hex digits) of a run's method and config, as canonical JSON (key order does not matter).

    Example:
        >>> config_hash("m", {"a": 1, "b": 2}) == config_hash("m", {"b": 2, "a": 1})
        True

    """
    text = json.dumps({"method": method, "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _strip(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _strip(v) for k, v in d.items() if k not in _RESUME_SAFE}
    return d


class RunDir:
    """Helper around a run folder.

    Args:
        path: The run directory.

    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        """``config.yaml``."""
        return self.path / CONFIG_NAME

    @property
    def weights_path(self) -> Path:
        """``weights.safetensors``."""
        return self.path / WEIGHTS_NAME

    @property
    def meta_path(self) -> Path:
        """``meta.json``."""
        return self.path / META_NAME

    def read_config(self) -> tuple[str, dict[str, Any]]:
        """Return ``(method name, config mapping)`` from ``config.yaml``."""
        p = self.config_path
        if not p.is_file():
            raise DataError("no config.yaml: not a labelwise run directory", self.path)
        try:
            d = yaml.safe_load(p.read_text(encoding="utf-8"))
            return str(d["method"]), dict(d["config"])
        except (yaml.YAMLError, KeyError, TypeError) as exc:
            raise DataError(f"malformed run config ({exc})", p) from None

    def read_meta(self) -> dict[str, Any]:
        """``meta.json`` contents ({} if absent)."""
        if not self.meta_path.is_file():
            return {}
        try:
            return dict(json.loads(self.meta_path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as exc:
            raise DataError(f"malformed meta.json ({exc})", self.meta_path) from None

    @property
    def status(self) -> str | None:
        """``meta.json`` ``status``: ``"running"`` or ``"finished"`` (None without a meta.json)."""
        status = self.read_meta().get("status")
        return None if status is None else str(status)

    def warn_if_unfinished(self) -> bool:
        """Log a warning when the run did not finish (killed, failed or still training); True if finished."""
        status = self.status
        if status == FINISHED:
            return True
        epoch = self.read_meta().get("best_epoch")
        logger.warning(
            "%s: training did not finish (meta.json status %r): the weights are %s, not the final ones",
            self.path,
            status,
            f"from epoch {epoch}" if epoch is not None else "the last ones saved before it stopped",
        )
        return False

    def stage_weights_path(self, stage: str | None = None) -> Path:
        """The selected weights of one stage: ``RUN/weights.safetensors`` (None) or ``RUN/<stage>/weights...``."""
        return self.weights_path if stage is None else self.path / stage / WEIGHTS_NAME

    def lineage(self) -> dict[str, Any]:
        """What a run warm-started from this one records as ``init_from`` in its ``meta.json``.

        Returns:
            ``{"path": absolute path, "method", "config_hash" (:func:`config_hash`), "data_fingerprint",
            "status", "weights": {path relative to the run: SHA-256}}`` over every ``weights.safetensors`` of
            the run and of its stages.

        Raises:
            DataError: not a run directory (no ``config.yaml``), or no ``weights.safetensors`` at all.

        """
        method, config = self.read_config()
        weights = {p.relative_to(self.path).as_posix(): file_sha256(p) for p in sorted(self.path.rglob(WEIGHTS_NAME))}
        if not weights:
            raise DataError("no weights.safetensors: the run has not finished an epoch", self.path)
        meta = self.read_meta()
        return {
            "path": str(self.path.resolve()),
            "method": method,
            "config_hash": config_hash(method, config),
            "data_fingerprint": meta.get("data_fingerprint"),
            "status": meta.get("status"),
            "weights": weights,
        }

    def discard_untrained(self) -> None:
        """Remove what :meth:`prepare` wrote into a run that holds no trained state (and the folder if then empty).

        Used when a new run is refused after :meth:`prepare` (e.g. a warm start whose plan does not fit), so the
        refusal leaves nothing behind. A folder with trained state is never touched.
        """
        if self.has_trained_state():
            return
        self._remove_untrained()
        for name in ("schedule.json",):
            (self.path / name).unlink(missing_ok=True)
        if self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()

    def has_trained_state(self) -> bool:
        """True when the folder holds weights or a checkpoint (``*.safetensors``, any stage)."""
        return self.path.is_dir() and any(self.path.rglob("*.safetensors"))

    def _remove_untrained(self) -> None:
        """Remove what :meth:`prepare` and the methods write before the first checkpoint."""
        from labelwise.engine.planner import PLAN_NAME

        for name in (CONFIG_NAME, META_NAME, PLAN_NAME):
            (self.path / name).unlink(missing_ok=True)
        for logs in self.path.glob("**/logs"):
            shutil.rmtree(logs, ignore_errors=True)

    def write_meta(self, **fields: Any) -> None:
        """Merge ``fields`` into ``meta.json`` (atomic)."""
        meta = self.read_meta()
        meta.update(fields)
        write_json_atomic(self.meta_path, meta)

    def prepare(self, method: str, config: dict[str, Any], dataset: Dataset) -> bool:
        """Create the run dir or check that it holds the same run (for resume).

        Returns:
            True if the folder already held this run (resume), False if it was created.

        Raises:
            ConfigError: the folder holds trained state of another method/config, or was trained on other data;
                nothing is written in that case. (A folder of another config without trained state is started
                again, with a warning.)

        Under DDP only rank 0 checks and writes; the other ranks wait for it.

        """
        from labelwise.engine.distributed import barrier, init_distributed

        if not init_distributed().is_main:
            barrier()
            return True
        resumed = self._prepare(method, config, dataset)
        barrier()
        return resumed

    def _prepare(self, method: str, config: dict[str, Any], dataset: Dataset) -> bool:
        fp = data_fingerprint(dataset)
        if self.config_path.exists():
            old_method, old_cfg = self.read_config()
            problem = None
            if old_method != method or _strip(old_cfg) != _strip(config):
                diff = sorted(k for k in set(old_cfg) | set(config) if _strip(old_cfg.get(k)) != _strip(config.get(k)))
                problem = (
                    f"{self.path} holds a {old_method!r} run with a different config "
                    f"(differs in {diff or ['method']}); use a new --out folder"
                )
            else:
                old_fp = self.read_meta().get("data_fingerprint")
                if old_fp is not None and old_fp != fp:
                    problem = (
                        f"{self.path} was trained on different data (fingerprint {old_fp} != {fp}); use a new --out"
                    )
            if problem is None:
                return True
            if self.has_trained_state():
                raise ConfigError(problem)
            logger.warning("%s; it holds no trained weights yet, so the run is started again", problem.split(";")[0])
            self._remove_untrained()
        elif self.path.exists() and any(self.path.iterdir()):
            raise ConfigError(f"{self.path} exists and is not a labelwise run directory; use a new --out folder")
        from labelwise import __version__

        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.config_path, yaml.safe_dump({"method": method, "config": config}, sort_keys=False))
        write_json_atomic(
            self.meta_path,
            {
                "format": "labelwise-run",
                "labelwise_version": __version__,
                "method": method,
                "dataset": dataset.name,
                "dataset_path": str(dataset.root),
                "data_fingerprint": fp,
                "status": "running",
            },
        )
        return False
