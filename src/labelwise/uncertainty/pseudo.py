"""Write selected pseudo-labels as a new dataset version (the original dataset is never modified).

The new dataset folder holds, for every case with at least one kept unit, a copy of the image and one rater
``pseudo``: the plurality vote of the predictions, valid on the kept slices only (``labelled_slices``; 2D
cases are kept or dropped whole). Slices that already carry a human label in the source dataset are skipped by
default, so pseudo-labels never override (or leak into) real labels. ``pseudo_report.json`` next to the
manifest lists every unit with its score and whether it was kept. A method uses the result through its
``pseudo_labels`` setting (e.g. ``cps``), next to the original dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labelwise.data import Dataset, DatasetWriter
from labelwise.data.slices import labelled_slice_indices
from labelwise.errors import DataError
from labelwise.io import write_json_atomic
from labelwise.uncertainty.agreement import chunk_certainty, plurality_vote
from labelwise.uncertainty.selection import DEFAULT_THRESHOLD, Decision, kept_slices, select_by_scores, select_chunks

__all__ = ["PSEUDO_RATER", "REPORT_NAME", "PseudoLabelReport", "write_pseudo_labels"]

logger = logging.getLogger(__name__)

PSEUDO_RATER = "pseudo"
REPORT_NAME = "pseudo_report.json"


@dataclass
class PseudoLabelReport:
    """What :func:`write_pseudo_labels` kept.

    Attributes:
        decisions: One entry per unit (case or chunk) with its score and outcome.
        cases_written: Ids of the cases in the new dataset.
        kept_slices: Case id -> slices labelled by ``pseudo`` (3D cases).
        threshold: Selection threshold.
        signal: ``"certainty"`` or ``"external"``.
        chunk_size: Slices per chunk (None: whole cases).

    """

    decisions: list[Decision] = field(default_factory=list)
    cases_written: list[str] = field(default_factory=list)
    kept_slices: dict[str, list[int]] = field(default_factory=dict)
    threshold: float = DEFAULT_THRESHOLD
    signal: str = "certainty"
    chunk_size: int | None = None

    @property
    def kept_units(self) -> int:
        """Number of kept units."""
        return sum(d.kept for d in self.decisions)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "format": "labelwise-pseudo-report",
            "threshold": self.threshold,
            "signal": self.signal,
            "chunk_size": self.chunk_size,
            "kept_units": self.kept_units,
            "total_units": len(self.decisions),
            "cases_written": self.cases_written,
            "kept_slices": self.kept_slices,
            "units": [
                {**asdict(d), "score": None if not np.isfinite(d.score) else round(d.score, 6)} for d in self.decisions
            ],
        }


def write_pseudo_labels(
    dataset: Dataset,
    predictions: Mapping[str, Sequence[np.ndarray]],
    dest: str | Path,
    class_names: Sequence[str],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    chunk_size: int | None = None,
    scores: Mapping[str, float] | None = None,
    skip_labelled: bool = True,
    overwrite: bool = False,
) -> PseudoLabelReport:
    """Select pseudo-labels and write them as a new dataset at ``dest``.

    Args:
        dataset: The source dataset (images are copied from it; it is not modified).
        predictions: Case id -> N >= 1 label maps ``(*spatial)`` of that case (e.g. two CPS networks and a
            propagation run); N = 1 gives certainty 1 (use external ``scores`` then).
        dest: New dataset folder.
        class_names: Class names of the predictions' label values (index 0 background).
        threshold: Keep units with score >= threshold.
        chunk_size: 3D: slices per certainty chunk along the last axis (None: whole volumes).
        scores: External per-case scores (e.g. predicted Dice of a quality estimator) used instead of the
            certainty; cases without a score are dropped.
        skip_labelled: Do not pseudo-label slices (3D) or cases (2D) that carry a label in ``dataset``.
        overwrite: Replace an existing dataset at ``dest``.

    Returns:
        The :class:`PseudoLabelReport` (also written to ``dest/pseudo_report.json``).

    Raises:
        DataError: a case id not in the dataset, predictions of the wrong shape, or ``dest`` is the source.

    """
    dest = Path(dest)
    if dest.resolve() == dataset.root.resolve():
        raise DataError("the pseudo-label dataset must be a new folder, not the source dataset", dest)
    k = len(class_names)
    report = PseudoLabelReport(
        threshold=threshold, signal="external" if scores is not None else "certainty", chunk_size=chunk_size
    )
    writer = DatasetWriter(
        dest,
        name=f"{dataset.name}-pseudo",
        spatial_dims=dataset.spatial_dims,
        class_names=tuple(class_names),
        rater_ids=(PSEUDO_RATER,),
        description=f"pseudo-labels for {dataset.root} (see {REPORT_NAME})",
        source=str(dataset.root),
        overwrite=overwrite,
    )
    for case_id, preds in predictions.items():
        case = dataset.load(case_id)
        maps = [np.asarray(p) for p in preds]
        for m in maps:
            if m.shape != case.spatial_shape:
                raise DataError(f"case {case_id}: prediction shape {m.shape} != image {case.spatial_shape}")
        vote = plurality_vote(maps, k)
        if scores is not None:
            decisions = select_by_scores({case_id: scores.get(case_id, float("nan"))}, threshold)
        elif case.spatial_dims == 3:
            decisions = select_chunks(case_id, chunk_certainty(maps, k, chunk_size), threshold)
        else:
            decisions = select_chunks(case_id, chunk_certainty(maps, k, None, axis=0), threshold)
        report.decisions.extend(decisions)
        if case.spatial_dims == 3:
            depth = case.spatial_shape[-1]
            keep = set(kept_slices(decisions, case_id, depth))
            if skip_labelled:
                keep -= set(labelled_slice_indices(case))
            if not keep:
                continue
            zs = tuple(sorted(keep))
            label = np.zeros_like(vote)
            label[..., list(zs)] = vote[..., list(zs)]
            writer.add_case(
                case_id,
                case.image,
                {PSEUDO_RATER: label},
                case.spacing_mm,
                case.affine,
                split=case.split,
                labelled_slices=zs,
            )
            report.kept_slices[case_id] = list(zs)
        else:
            if not any(d.kept for d in decisions) or (skip_labelled and case.num_raters):
                continue
            writer.add_case(case_id, case.image, {PSEUDO_RATER: vote}, case.spacing_mm, case.affine, split=case.split)
        report.cases_written.append(case_id)
    writer.finish()
    write_json_atomic(dest / REPORT_NAME, report.to_json())
    logger.info(
        "kept %d of %d units; wrote %d case(s) to %s",
        report.kept_units,
        len(report.decisions),
        len(report.cases_written),
        dest,
    )
    return report
