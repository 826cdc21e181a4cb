"""The prediction folder: what ``labelwise predict`` writes and ``labelwise evaluate`` / the viewer read.

Layout (every file in the source image's geometry: same affine, same spatial shape)::

    PRED_DIR/
      predictions.json                 # {"format": "labelwise-predictions", "version": 1, "method": str,
                                       #  "class_names": [...], "rater_ids": [...], "cases": [ids]}
      <case>.nii.gz                    # hard label map (*spatial) uint8 (argmax of probs)
      <case>_probs.nii.gz              # class probabilities (C, *spatial) float32 (optional)
      <case>_samples.nii.gz            # S sampled label maps (S, *spatial) uint8 (optional)
      <case>_raters.nii.gz             # one label map per rater (R, *spatial) uint8 (optional)
      <case>_uncertainty.nii.gz        # voxel uncertainty (*spatial) float32 (optional)

Stacked arrays ``(K, *spatial)`` are stored with K on the last NIfTI axis (as channels). Each file is written
atomically and ``predictions.json`` is rewritten after each case, so an interrupted run lists only complete
cases.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from labelwise.errors import DataError
from labelwise.io.atomic import write_json_atomic
from labelwise.io.image import read_image, read_label, write_image, write_label
from labelwise.io.paths import id_problem, safe_join

__all__ = ["PREDICTIONS_NAME", "Prediction", "PredictionIndex", "read_prediction", "write_prediction"]

PREDICTIONS_NAME = "predictions.json"
_PARTS = ("probs", "samples", "raters", "uncertainty")
PROB_TOLERANCE = 1e-3
"""Probabilities may exceed [0, 1] by this much (float rounding of softmax outputs) before they are refused."""


@dataclass
class Prediction:
    """What a method predicts for one case.

    Attributes:
        probs: ``(C, *spatial)`` float32 class probabilities summing to 1 over C (for binary tasks C = 2).
        samples: ``(S, *spatial)`` integer label maps drawn from a generative model, or None.
        raters: ``(R, *spatial)`` integer label maps, one per rater (personalised heads), or None.
        uncertainty: ``(*spatial)`` float32 voxel uncertainty (e.g. entropy, rater std), or None.
        label: ``(*spatial)`` integer hard label map; derived from ``probs`` by argmax when not given.
        rater_probs: ``(R, C, *spatial)`` per-rater class probabilities (kept in memory, not written), or None.

    """

    probs: np.ndarray
    samples: np.ndarray | None = None
    raters: np.ndarray | None = None
    uncertainty: np.ndarray | None = None
    label: np.ndarray | None = None
    rater_probs: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.label is None:
            self.label = np.argmax(self.probs, axis=0).astype(np.uint8)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Spatial shape of the prediction."""
        return tuple(self.probs.shape[1:])


@dataclass
class PredictionIndex:
    """Contents of ``predictions.json``."""

    method: str
    class_names: tuple[str, ...]
    rater_ids: tuple[str, ...] = ()
    cases: list[str] = field(default_factory=list)

    def save(self, folder: Path) -> None:
        """Write ``predictions.json`` atomically into ``folder``."""
        write_json_atomic(
            folder / PREDICTIONS_NAME,
            {
                "format": "labelwise-predictions",
                "version": 1,
                "method": self.method,
                "class_names": list(self.class_names),
                "rater_ids": list(self.rater_ids),
                "cases": self.cases,
            },
        )

    @classmethod
    def load(cls, folder: str | Path) -> PredictionIndex:
        """Read ``predictions.json`` from ``folder``."""
        path = Path(folder) / PREDICTIONS_NAME
        if not path.is_file():
            raise DataError(f"no {PREDICTIONS_NAME}: not a labelwise prediction folder", Path(folder))
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            index = cls(d["method"], tuple(d["class_names"]), tuple(d.get("rater_ids", [])), list(d["cases"]))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise DataError(f"malformed prediction index ({exc})", path) from None
        problems = [p for c in index.cases if (p := id_problem(c)) is not None]
        problems += [p for r in index.rater_ids if (p := id_problem(r, "rater id")) is not None]
        if problems:
            raise DataError("; ".join(problems[:5]), path)
        return index


def write_prediction(
    folder: str | Path,
    case_id: str,
    prediction: Prediction,
    spacing_mm: tuple[float, ...],
    affine: np.ndarray,
) -> list[Path]:
    """Write one case's prediction files atomically in the source geometry; returns the paths written.

    Optional parts the prediction does not have (e.g. ``<case>_samples.nii.gz`` left by an earlier method in the
    same folder) are removed, so a reader never mixes two predictions. ``case_id`` must be a valid id
    (:func:`labelwise.io.paths.id_problem`); the files never leave ``folder``.
    """
    folder = Path(folder)
    assert prediction.label is not None
    if (problem := id_problem(case_id)) is not None:
        raise DataError(problem, folder)
    written = [write_label(safe_join(folder, f"{case_id}.nii.gz"), prediction.label, spacing_mm, affine)]
    parts: dict[str, np.ndarray | None] = {
        "probs": prediction.probs,
        "samples": prediction.samples,
        "raters": prediction.raters,
        "uncertainty": None if prediction.uncertainty is None else prediction.uncertainty[None],
    }
    for part, arr in parts.items():
        path = safe_join(folder, f"{case_id}_{part}.nii.gz")
        if arr is None:
            path.unlink(missing_ok=True)
        else:
            written.append(write_image(path, np.asarray(arr).astype(np.float32), spacing_mm, affine))
    return written


def _check_probabilities(probs: np.ndarray, path: Path) -> None:
    """Refuse class probabilities that are NaN/inf or outside [0, 1] (beyond :data:`PROB_TOLERANCE`)."""
    if not probs.size:
        return
    if not np.isfinite(probs).all():
        raise DataError("class probabilities hold NaN or infinite values", path)
    lo, hi = float(probs.min()), float(probs.max())
    if lo < -PROB_TOLERANCE or hi > 1 + PROB_TOLERANCE:
        raise DataError(f"class probabilities span {lo:.4g}..{hi:.4g}, outside [0, 1]", path)


def _to_int(a: np.ndarray | None) -> np.ndarray | None:
    return None if a is None else np.rint(a).astype(np.int16)


def read_prediction(folder: str | Path, case_id: str, spatial_dims: int) -> Prediction:
    """Read one case's prediction; a missing label map file raises :class:`DataError` naming it.

    A folder holding only ``<case>.nii.gz`` (e.g. predictions from another tool) is read as a hard prediction:
    ``probs`` becomes the one-hot encoding of the label map.
    """
    folder = Path(folder)
    if (problem := id_problem(case_id)) is not None:
        raise DataError(problem, folder)
    label = read_label(safe_join(folder, f"{case_id}.nii.gz"), spatial_dims).array
    parts: dict[str, np.ndarray] = {}
    for part in _PARTS:
        path = safe_join(folder, f"{case_id}_{part}.nii.gz")
        if path.exists():
            arr = read_image(path, spatial_dims).array
            if arr.shape[1:] != label.shape:
                raise DataError(f"shape {arr.shape[1:]} differs from the label map's {label.shape}", path)
            if part == "probs":
                _check_probabilities(arr, path)
            parts[part] = arr
    if "probs" in parts:
        probs = parts["probs"]
    else:
        num = max(int(label.max()) + 1, 2)
        probs = (np.arange(num).reshape(-1, *([1] * label.ndim)) == label[None]).astype(np.float32)
    unc = parts.get("uncertainty")
    return Prediction(
        probs=probs,
        samples=_to_int(parts.get("samples")),
        raters=_to_int(parts.get("raters")),
        uncertainty=None if unc is None else unc[0],
        label=label,
    )
