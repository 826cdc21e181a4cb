"""Quality Sentinel: estimate a mask's Dice with the unseen ground truth, and rank masks for review.

Wang et al., "Quality Sentinel: Estimating Label Quality and Errors in Medical Segmentation Datasets", 2024.

Pipeline (every step a plain function; the method class only wires them):

1. **Reference** (:func:`reference_map`). Each training case's ground truth is one rater (``reference_rater``)
   or the majority vote (:func:`labelwise.labels.majority_vote`, ties to the lower class index).
2. **Candidates** of varied quality for every (slice, structure) of the ``train`` split
   (:func:`build_candidates`, module :mod:`~labelwise.methods.sentinel.candidates`):

   * seeded, recorded **perturbations** of the reference (:func:`perturb_mask`, built on
     :mod:`labelwise.labels.perturb`: erosion/dilation by k mm, shifts, truncation (missed part), holes,
     dropped components, boundary noise, added blobs (over-segmentation), class swaps with a neighbour);
   * **segmentation-model checkpoints**: a small 2D U-Net is trained on the same slices as the run's
     ``segmenter`` stage (:mod:`~labelwise.methods.sentinel.segmenter`), and its predictions after
     ``checkpoint_steps`` optimiser steps are candidates (as the original uses STU-Net checkpoints);
   * optionally the **other raters'** masks.

   The candidates are balanced over ``dice_bins`` bins of their true Dice, so Dice 0..1 is covered evenly.
3. **Input** (:mod:`~labelwise.methods.sentinel.inputs`): the slice of the image (CT clipped to ``ct_clip`` if
   set, else scaled by its 0.5/99.5 percentiles; channels averaged) and the candidate mask, cropped to a square
   around the *candidate* mask (side ``(1 + 2 * crop_margin) * max(h, w)``), resized to ``crop_size``;
   normalised as in the original (image ``(x - 0.5) / 0.25``, mask ``(m - 0.5) / 0.5``).
4. **Model**: :class:`labelwise.models.sentinel.SentinelNet` with structure embeddings
   (:mod:`labelwise.models.text`, learned per-class corrections for the training structures).
5. **Loss** (:func:`labelwise.models.sentinel_losses.sentinel_loss`): weighted MSE (weights 7/5/3/2/1 for true
   Dice <= 0.3/0.5/0.7/0.9/1) plus a pairwise ranking loss ``mean_{i<j} relu(-(p_i - p_j)(y_i - y_j) + margin)``;
   Adam 1e-3, cosine schedule (:mod:`~labelwise.methods.sentinel.method`).
6. **3D** (:func:`score_label_map`, :mod:`~labelwise.methods.sentinel.scoring`): up to
   ``slices_per_structure`` evenly spaced slices where the candidate is non-empty, predicted Dice averaged per
   structure; per case the mean over structures.

Conventions: true Dice is :func:`labelwise.metrics.dice` (two empty masks: 1). The predicted Dice of an **empty
candidate** is defined as 0.0 (a structure claimed absent; the model only sees non-empty masks) and flagged
``empty``.

The run also keeps the segmentation model (``segmenter`` in ``weights.safetensors``); ``predict(case)`` returns
its class probabilities, and :func:`uncertainty_scores` derives the baselines from them (mean class
probability and mean entropy inside the candidate, Dice with its flip-TTA prediction).
"""

from __future__ import annotations

from labelwise.methods.sentinel.candidates import CandidateSet, build_candidates, perturb_mask, reference_map
from labelwise.methods.sentinel.config import SentinelConfig
from labelwise.methods.sentinel.inputs import (
    as_binary,
    case_slices,
    crop_input,
    heldout_slices,
    intensity_unit,
    slice_indices,
    structure_names,
    take_slice,
)
from labelwise.methods.sentinel.method import SentinelMethod, SentinelTask
from labelwise.methods.sentinel.scoring import (
    SentinelOptions,
    SentinelPredictor,
    StructureScore,
    score_label_map,
    uncertainty_scores,
)
from labelwise.methods.sentinel.segmenter import SegProbs, predict_segmenter, seg_slice

__all__ = [
    "CandidateSet",
    "SegProbs",
    "SentinelConfig",
    "SentinelMethod",
    "SentinelOptions",
    "SentinelPredictor",
    "SentinelTask",
    "StructureScore",
    "as_binary",
    "build_candidates",
    "case_slices",
    "crop_input",
    "heldout_slices",
    "intensity_unit",
    "perturb_mask",
    "predict_segmenter",
    "reference_map",
    "score_label_map",
    "seg_slice",
    "slice_indices",
    "structure_names",
    "take_slice",
    "uncertainty_scores",
]
