"""Evaluation: a prediction folder scored against a dataset (per-case table, summary, failures); dataset statistics.

The package sits above the pure metrics (:mod:`labelwise.metrics`, arrays in, numbers out) and may import io,
data, labels and metrics. ``runner`` reads the dataset and the predictions and runs the worker processes;
``scoring`` scores one case from a metric name -> function table; ``summary`` computes the statistics over cases;
``outputs`` writes CSV, JSON and Markdown; ``slices`` parses and applies slice selections; ``rater_stats`` adds
inter-rater agreement to the data layer's dataset counts (``labelwise data stats``).

References (also in ``docs/metrics.md``):

* Hard metrics (overlap, surface) are computed against **each rater** (reference = the rater id) and against the
  **majority** vote of the raters present (reference ``"majority"``: a voxel takes class c when more than half of
  the raters say c; otherwise background: :func:`labelwise.labels.strict_majority`, stricter than the plurality
  vote :func:`labelwise.labels.majority_vote` with three or more classes). With one rater the two coincide.
  Summaries headline ``"majority"``.
* Soft metrics (soft Dice, calibration) and multi-rater metrics (GED, Dice_max, Dice_match, sample diversity)
  use the set of raters; the soft reference is the **mean of the raters' masks** (reference
  ``"mean_of_raters"``). GED / Dice_max / Dice_match use the prediction's samples, or its per-rater maps when it
  has no samples. ``personal_dice`` is the index-aligned Dice of the predicted map for rater r (matched by
  rater id) against rater r, reported on rater r's row.
* Classes are scored one-vs-rest for every foreground class of the dataset.
* Partially labelled volumes (``Case.labelled_slices``) are scored on their labelled slices only.
* A :class:`SliceSelection` (``labelwise evaluate --slices``) scores a subset of the slices of 3D cases along one
  axis. Every metric stays per 3D case (FLARE's DSC and NSD): overlap and soft metrics pool the voxels of the
  selected slices; surface metrics are computed in 3D with the case's spacing on the selected slices placed at
  their true positions (slices between them blank), the same rule as for partially labelled volumes. The 2D
  per-slice mean (the k-labelled-slice protocol of ``docs/semisupervised.md``) is the explicit
  ``dice_per_slice`` / ``nsd_per_slice`` / ... metrics.
* Calibration: ``ece`` bins the confidence ``max(p, 1-p)`` of every voxel (Guo et al.), ``ece_fg`` the
  foreground probability ``p`` (binary reliability of P(foreground)); both with equal-width bins, empty bins
  skipped.
* ``dice_max`` / ``dice_match`` let the first ``min(S, R)`` samples compete for the R raters (the number is the
  ``dice_candidates`` column); ``dice_max_all`` / ``dice_match_all`` let all S samples compete.
* A prediction with a class subset (``predictions.json`` ``class_names``, e.g. a model trained with ``classes``)
  is scored on its own classes, matched to the dataset's by name; the other dataset classes count as background.

The runner is a library function (:func:`evaluate_folder`); ``labelwise evaluate`` is a thin CLI around it.
"""

from __future__ import annotations

from labelwise.evaluation.outputs import write_outputs
from labelwise.evaluation.rater_stats import DatasetStats, dataset_stats, format_stats
from labelwise.evaluation.runner import EvaluationResult, build_result, evaluate_case, evaluate_folder, merge_parts
from labelwise.evaluation.scoring import (
    ALL_METRICS,
    CANDIDATES_COLUMN,
    DEFAULT_METRICS,
    MAJORITY,
    MEAN_OF_RATERS,
    CaseArrays,
    CaseResult,
    EvaluationConfig,
    score_case,
)
from labelwise.evaluation.slices import SliceSelection, format_slices, parse_slice_indices, select_slices
from labelwise.evaluation.summary import bootstrap_ci, summarise

__all__ = [
    "ALL_METRICS",
    "CANDIDATES_COLUMN",
    "DEFAULT_METRICS",
    "MAJORITY",
    "MEAN_OF_RATERS",
    "CaseArrays",
    "CaseResult",
    "DatasetStats",
    "EvaluationConfig",
    "EvaluationResult",
    "SliceSelection",
    "bootstrap_ci",
    "build_result",
    "dataset_stats",
    "evaluate_case",
    "evaluate_folder",
    "format_slices",
    "format_stats",
    "merge_parts",
    "parse_slice_indices",
    "score_case",
    "select_slices",
    "summarise",
    "write_outputs",
]
