"""Candidate masks of known quality: the reference, its perturbations, other raters, segmenter snapshots.

Every candidate is a (slice, structure) mask with its true Dice against the reference on that slice, turned
into a model input (:func:`labelwise.methods.sentinel.inputs.crop_input`); a :class:`CandidateSet` holds them,
balanced over bins of true Dice so that 0..1 is covered evenly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from labelwise.data import Case
from labelwise.errors import DataError
from labelwise.labels import class_swap, majority_vote, sample_candidates
from labelwise.methods.sentinel.config import SentinelConfig
from labelwise.methods.sentinel.inputs import (
    case_slices,
    crop_input,
    intensity_unit,
    slice_indices,
    structure_names,
    take_slice,
)
from labelwise.metrics import dice

__all__ = ["CandidateSet", "build_candidates", "perturb_mask", "reference_map"]


def reference_map(case: Case, rater: str | None = None) -> np.ndarray | None:
    """The ground-truth label map ``(*spatial)`` int16 of a case: one rater, or the per-voxel majority vote.

    The vote is :func:`labelwise.labels.majority_vote` with ``tie="lowest"`` (ties go to the lower class
    index). Returns None when the case has no (such) rater.
    """
    if case.num_raters == 0:
        return None
    if rater is not None:
        if rater not in case.rater_ids:
            return None
        return np.asarray(case.raters[case.rater_ids.index(rater)], dtype=np.int16)
    if case.num_raters == 1:
        return np.asarray(case.raters[0], dtype=np.int16)
    return np.asarray(majority_vote(case.raters, tie="lowest"), dtype=np.int16)


def perturb_mask(
    ref_slice: np.ndarray,
    k: int,
    n: int,
    rng: np.random.Generator,
    spacing_mm: Sequence[float] = (1.0, 1.0),
    swap_p: float = 0.1,
) -> list[tuple[np.ndarray, list[dict[str, Any]], float]]:
    """``n`` seeded, recorded perturbations of structure ``k`` of a 2D reference map, Dice 0..1 covered evenly.

    Uses :func:`labelwise.labels.perturb.sample_candidates` (erosion/dilation by mm, shifts, truncation,
    boundary noise, holes, added blobs, dropped components; each candidate aims at a target Dice drawn from
    its own bin of [0, 1]). With probability ``swap_p`` per candidate, if the slice holds another structure,
    a class swap (:func:`labelwise.labels.perturb.class_swap`) replaces it: the mask of a neighbouring
    structure claimed as ``k``.

    Args:
        ref_slice: ``(H, W)`` integer reference label map.
        k: The structure's class index (must be present).
        n: Number of candidates.
        rng: Generator (the only source of randomness).
        spacing_mm: In-plane pixel size, mm.
        swap_p: Probability of a class swap per candidate.

    Returns:
        ``[(mask (H, W) bool, records (JSON-ready, replayable on ref_slice == k), true Dice)]``.

    """
    gt = np.asarray(ref_slice) == k
    if not gt.any():
        raise DataError(f"structure {k} is absent from this slice: nothing to perturb")
    out: list[tuple[np.ndarray, list[dict[str, Any]], float]] = []
    for c in sample_candidates(gt, n, spacing_mm=tuple(spacing_mm), seed=rng):
        out.append((np.asarray(c.mask, dtype=bool), [p.to_json() for p in c.perturbations], float(c.dice)))
    others = [int(j) for j in np.unique(ref_slice) if j not in (0, k)]
    if others:
        for i in range(len(out)):
            if rng.random() < swap_p:
                j = others[int(rng.integers(len(others)))]
                swapped, rec = class_swap(np.asarray(ref_slice), k, j)
                m = np.asarray(swapped == k)
                out[i] = (m, [rec.to_json()], dice(m, gt))
    return out


@dataclass
class CandidateSet:
    """Training (or evaluation) candidates as model-ready arrays.

    Attributes:
        inputs: ``(N, 2, S, S)`` float16 model inputs (see :func:`labelwise.methods.sentinel.crop_input`).
        structure: ``(N,)`` int64 index into ``names``.
        names: Structure names.
        dice: ``(N,)`` float32 true Dice of each candidate with the reference on its slice.
        records: Per candidate: case, slice, structure, source and the perturbation record.

    """

    inputs: np.ndarray
    structure: np.ndarray
    names: list[str]
    dice: np.ndarray
    records: list[dict[str, Any]]

    def __len__(self) -> int:
        return int(self.dice.shape[0])

    def histogram(self, bins: int = 10) -> list[int]:
        """Counts of true Dice in ``bins`` equal bins of [0, 1]."""
        return [int(v) for v in np.histogram(self.dice, bins=bins, range=(0.0, 1.0))[0]]

    def source_counts(self) -> dict[str, int]:
        """Number of candidates per source kind (``perturb``, ``rater``, ``checkpoint``)."""
        out: dict[str, int] = {}
        for r in self.records:
            key = str(r["source"]).split(":")[0]
            out[key] = out.get(key, 0) + 1
        return out


def build_candidates(
    cases: Sequence[Case],
    cfg: SentinelConfig,
    seed: int,
    slice_filter: Mapping[str, Sequence[int]] | None = None,
    snapshots: Mapping[str, Sequence[np.ndarray]] | None = None,
    perturbations_per_slice: int | None = None,
    balance: bool = True,
) -> CandidateSet:
    """Generate candidates with their true Dice for every (slice, structure) of ``cases``.

    Args:
        cases: Labelled cases (the reference from ``cfg.reference_rater`` or the majority vote).
        cfg: Settings (structures, slices per structure, perturbations, crop, intensity window, bins).
        seed: Seed of the perturbations and the balancing.
        slice_filter: Case id -> allowed slice indices (3D); default: the labelled slices.
        snapshots: Case id -> label maps ``(*spatial)`` predicted by segmentation-model checkpoints (one per
            ``cfg.checkpoint_steps``).
        perturbations_per_slice: Override of ``cfg.perturbations_per_slice``.
        balance: Balance over ``cfg.dice_bins`` Dice bins.

    Returns:
        The candidate set (possibly empty: ``N = 0``).

    """
    rng = np.random.default_rng(seed)
    n_pert = cfg.perturbations_per_slice if perturbations_per_slice is None else perturbations_per_slice
    inputs: list[np.ndarray] = []
    dices: list[float] = []
    records: list[dict[str, Any]] = []
    names: list[str] = []
    name_idx: dict[str, int] = {}
    struct: list[int] = []

    def add(cand: np.ndarray, gt: np.ndarray, img: np.ndarray, name: str, rec: dict[str, Any]) -> None:
        if name not in name_idx:
            name_idx[name] = len(names)
            names.append(name)
        inputs.append(crop_input(img, cand, cfg.crop_size, cfg.crop_margin).astype(np.float16))
        dices.append(dice(cand, gt))
        struct.append(name_idx[name])
        records.append(rec)

    for case in cases:
        ref = reference_map(case, cfg.reference_rater)
        if ref is None:
            continue
        unit = intensity_unit(case.image, cfg.ct_clip)
        allowed = slice_filter.get(case.id) if slice_filter is not None else None
        zs_all = [z for z in case_slices(case, allowed) if z is not None]
        others_r = (
            [(rid, case.raters[i]) for i, rid in enumerate(case.rater_ids) if rid != cfg.reference_rater]
            if cfg.rater_candidates and case.num_raters > 1
            else []
        )
        for k, name in structure_names(case.class_names, cfg.structures):
            gt3 = ref == k
            if not gt3.any():
                continue
            zs: list[int | None] = [None]
            if case.spatial_dims == 3:
                zs = list(slice_indices(gt3, cfg.slices_per_structure, zs_all))
            for z in zs:
                img, gt = take_slice(unit, z), take_slice(gt3, z)
                if not gt.any():
                    continue
                base = {"case": case.id, "slice": z, "structure": name}
                perturbed = perturb_mask(take_slice(ref, z), k, n_pert, rng, case.spacing_mm[:2]) if n_pert else []
                for cand, rec, _d in perturbed:
                    if cand.any():
                        add(cand, gt, img, name, {**base, "source": "perturb", "record": rec})
                for rid, rmap in others_r:
                    cand = take_slice(rmap, z) == k
                    if cand.any():
                        add(cand, gt, img, name, {**base, "source": f"rater:{rid}", "record": []})
                for s, snap in enumerate((snapshots or {}).get(case.id, [])):
                    cand = take_slice(snap, z) == k
                    if cand.any():
                        source = f"checkpoint:{cfg.checkpoint_steps[s]}"
                        add(cand, gt, img, name, {**base, "source": source, "record": []})
    s = cfg.crop_size
    cs = CandidateSet(
        inputs=np.stack(inputs) if inputs else np.zeros((0, 2, s, s), np.float16),
        structure=np.asarray(struct, dtype=np.int64),
        names=names,
        dice=np.asarray(dices, dtype=np.float32),
        records=records,
    )
    if balance and cfg.dice_bins > 0 and len(cs):
        cs = _balance(cs, cfg.dice_bins, rng)
    return cs


def _balance(cs: CandidateSet, bins: int, rng: np.random.Generator) -> CandidateSet:
    """Keep at most ``ceil(1.5 N / bins)`` candidates per Dice bin (random subset) so Dice 0..1 is even."""
    b = np.minimum((cs.dice * bins).astype(int), bins - 1)
    cap = math.ceil(1.5 * len(cs) / bins)
    keep: list[int] = []
    for i in range(bins):
        idx = np.nonzero(b == i)[0]
        keep.extend(idx if idx.size <= cap else rng.choice(idx, cap, replace=False))
    k = np.sort(np.asarray(keep, dtype=int))
    return CandidateSet(cs.inputs[k], cs.structure[k], cs.names, cs.dice[k], [cs.records[i] for i in k])
