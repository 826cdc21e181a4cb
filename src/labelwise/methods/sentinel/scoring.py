"""Scoring with a trained Quality Sentinel: the predictor, label-map scoring in 2D and 3D, uncertainty baselines.

Conventions: the predicted Dice of an **empty candidate** is defined as 0.0 (a structure claimed absent; the
model only sees non-empty masks) and flagged ``empty``. True Dice uses :func:`labelwise.metrics.dice`
(both masks empty: 1.0).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from labelwise.data import Case
from labelwise.errors import ConfigError, DataError
from labelwise.io import Prediction
from labelwise.methods.base import MethodPredictor, PredictOptions
from labelwise.methods.sentinel.config import SENTINEL_META, TEXT_CACHE, SentinelConfig
from labelwise.methods.sentinel.inputs import (
    as_binary,
    crop_input,
    intensity_unit,
    slice_indices,
    structure_names,
    take_slice,
)
from labelwise.methods.sentinel.segmenter import SegProbs, predict_segmenter, seg_slice
from labelwise.metrics import dice
from labelwise.models import build_model
from labelwise.models.sentinel import ClassEmbedding, SentinelNet
from labelwise.models.text import TextBackend, embed_names, normalize_name

__all__ = [
    "SentinelOptions",
    "SentinelPredictor",
    "StructureScore",
    "build_sentinel_net",
    "score_label_map",
    "uncertainty_scores",
]

logger = logging.getLogger(__name__)


def build_sentinel_net(cfg: SentinelConfig, text_dim: int) -> SentinelNet:
    """The sentinel network of ``cfg`` for structure embeddings of size ``text_dim``."""
    return SentinelNet(2, text_dim, cfg.widths, cfg.hidden_dim, cfg.text_conditioning)


@dataclass(frozen=True)
class StructureScore:
    """Predicted quality of one structure of one candidate label map.

    Attributes:
        structure: Structure name.
        predicted_dice: Mean predicted Dice over the scored slices (0.0 for an empty candidate).
        slices: Scored slice indices (3D) or ``(None,)`` (2D); empty for an empty candidate.
        slice_scores: Predicted Dice per scored slice.
        empty: The candidate has no voxel of this structure in the allowed slices.
        baselines: Uncertainty baselines (name -> score), when requested.
        slice_baselines: Per baseline, the per-slice scores.

    """

    structure: str
    predicted_dice: float
    slices: tuple[int | None, ...]
    slice_scores: tuple[float, ...]
    empty: bool = False
    baselines: dict[str, float] = field(default_factory=dict)
    slice_baselines: dict[str, tuple[float, ...]] = field(default_factory=dict)


def uncertainty_scores(
    probs: np.ndarray, mask: np.ndarray, k: int, tta_label: np.ndarray | None = None
) -> dict[str, float]:
    """Uncertainty baselines for one candidate mask of class ``k`` on one slice.

    Args:
        probs: ``(K, H, W)`` segmentation-model class probabilities (flip-TTA mean).
        mask: ``(H, W)`` non-empty binary candidate.
        k: The structure's class index.
        tta_label: ``(H, W)`` argmax of the TTA-mean prediction (default: argmax of ``probs``).

    Returns:
        ``{"softmax": mean p_k inside the candidate, "entropy": 1 - mean normalised entropy inside the
        candidate, "tta_dice": Dice(candidate, tta_label == k)}``; each in [0, 1], higher = better.

    """
    m = as_binary(mask)
    p = np.clip(probs[:, m], 1e-8, 1.0)
    ent = float((-(p * np.log(p)).sum(axis=0) / math.log(max(probs.shape[0], 2))).mean())
    lab = np.argmax(probs, axis=0) if tta_label is None else tta_label
    return {"softmax": float(probs[k][m].mean()), "entropy": 1.0 - ent, "tta_dice": dice(m, lab == k)}


@dataclass(frozen=True)
class SentinelOptions(PredictOptions):
    """Prediction options of ``sentinel``: none (``predict`` gives the segmenter's probabilities as trained)."""


class SentinelPredictor(MethodPredictor[SentinelConfig, SentinelOptions]):
    """A trained sentinel: scores masks; ``predict(case)`` gives the segmentation model's probabilities.

    Attributes:
        structures: The training structure names.
        text_backend: The text backend the run resolved (``minilm`` or ``hashed``).
        net: The sentinel network.
        emb: The structure embeddings.
        segmenter: The segmentation model (None when the run trained none: empty ``checkpoint_steps``).

    """

    Options = SentinelOptions

    def setup(self) -> None:
        """Rebuild the sentinel, its embeddings and the segmenter from the run; load their weights.

        Raises:
            DataError: the run has no ``sentinel.json`` (training did not finish).

        """
        path = self.run.rundir.path
        meta_path = path / SENTINEL_META
        if not meta_path.is_file():
            raise DataError(f"no {SENTINEL_META} (training did not finish)", path)
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        self.structures: list[str] = list(meta["structures"])
        self.text_backend: TextBackend = meta["text_backend"]
        self.net = build_sentinel_net(self.config, int(meta["text_dim"]))
        base = embed_names(self.structures, self.text_backend, path / TEXT_CACHE)
        self.emb = ClassEmbedding(self.structures, base, self.config.learn_embeddings)
        modules: dict[str, torch.nn.Module] = {"sentinel": self.net, "embedding": self.emb}
        self.segmenter: torch.nn.Module | None = None
        if meta.get("segmenter"):
            self.segmenter = build_model(
                self.config.segmenter, self.plan.spatial_dims, self.plan.channels, self.plan.num_classes
            )
            modules["segmenter"] = self.segmenter
        self.run.load(modules)

    def embeddings(self, names: Sequence[str]) -> torch.Tensor:
        """``(N, D)`` embeddings; names unseen in training get their text/hashed vector (logged)."""
        unseen = sorted({n for n in names if normalize_name(n) not in self.emb.index})
        if unseen:
            logger.info("structures not seen in training (text embedding only): %s", unseen)
        with torch.inference_mode():
            fallback = embed_names(names, self.text_backend)
            return self.emb.lookup(names, fallback).to(self.device)

    def score_inputs(self, inputs: np.ndarray, names: Sequence[str], batch: int = 256) -> np.ndarray:
        """Predicted Dice ``(N,)`` float32 of model inputs ``(N, 2, S, S)`` (see :func:`crop_input`)."""
        if len(inputs) != len(names):
            raise DataError(f"{len(inputs)} inputs for {len(names)} structure names")
        if len(inputs) == 0:
            return np.zeros(0, np.float32)
        uniq = sorted(set(names))
        table = self.embeddings(uniq)
        idx = torch.as_tensor([uniq.index(n) for n in names], device=self.device)
        out = []
        with torch.inference_mode():
            for i in range(0, len(inputs), batch):
                x = torch.as_tensor(np.asarray(inputs[i : i + batch], dtype=np.float32), device=self.device)
                out.append(self.net(x, table[idx[i : i + batch]]).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def score_slice(self, image: np.ndarray, mask: np.ndarray, structure: str) -> float:
        """Predicted Dice of one 2D mask.

        Args:
            image: ``(C, H, W)`` or ``(H, W)`` raw image slice.
            mask: ``(H, W)`` binary mask of ``structure``.
            structure: Structure name (unseen names use their text embedding).

        Returns:
            Predicted Dice in [0, 1]; 0.0 for an empty mask (documented convention).

        Raises:
            DataError: shape mismatch or a non-binary mask.

        """
        img = np.asarray(image)
        img = img[None] if img.ndim == 2 else img
        m = as_binary(mask, f"mask of {structure!r}")
        if m.shape != img.shape[1:]:
            raise DataError(f"mask shape {m.shape} does not match image shape {img.shape[1:]}")
        if not m.any():
            return 0.0
        x = crop_input(intensity_unit(img, self.config.ct_clip), m, self.config.crop_size, self.config.crop_margin)
        return float(self.score_inputs(x[None], [structure])[0])

    def segmenter_probs(self, case: Case, slices: Sequence[int] | None = None) -> SegProbs:
        """Flip-TTA class probabilities of the run's segmentation model.

        Returns:
            ``(K, *spatial)`` float32; for a 3D case with ``slices``: a dict slice index -> ``(K, H, W)``.

        Raises:
            ConfigError: the run has no segmentation model.

        """
        if self.segmenter is None:
            raise ConfigError("this sentinel run has no segmentation model (checkpoint_steps was empty)")
        if case.spatial_dims == 3 and slices is not None:
            zs = [int(z) for z in slices]
            probs = predict_segmenter(self.segmenter, case, self.plan, True, self.device, zs)
            return {z: np.ascontiguousarray(probs[..., i]) for i, z in enumerate(zs)}
        return predict_segmenter(self.segmenter, case, self.plan, True, self.device)

    def predict_case(self, case: Case, options: SentinelOptions) -> Prediction:
        """The segmentation model's class probabilities (score masks with :func:`score_label_map`)."""
        probs = self.segmenter_probs(case)
        assert isinstance(probs, np.ndarray)
        return Prediction(probs=np.asarray(probs, dtype=np.float32))


def score_label_map(
    predictor: SentinelPredictor,
    case: Case,
    label_map: np.ndarray,
    structures: Sequence[str] | None = None,
    allowed_slices: Sequence[int] | None = None,
    seg_probs: SegProbs | None = None,
) -> list[StructureScore]:
    """Score every structure of a candidate label map of ``case`` (2D or 3D).

    Args:
        predictor: The trained sentinel.
        case: The case (image and class names).
        label_map: ``(*spatial)`` integer candidate map with the case's class indices.
        structures: Structure names to score (default: every foreground class present in ``label_map``);
            names not among the case's classes raise :class:`DataError`. Requested structures absent from the
            candidate get predicted Dice 0.0 and ``empty=True``.
        allowed_slices: 3D: restrict to these slice indices (default: the slices the case declares labelled,
            ``case.labelled_slices``; every slice when it declares none).
        seg_probs: Segmentation-model probabilities (see :meth:`SentinelPredictor.segmenter_probs`): adds the
            uncertainty baselines.

    Returns:
        One :class:`StructureScore` per structure, in class order.

    """
    lab = np.asarray(label_map)
    if lab.shape != case.spatial_shape:
        raise DataError(f"case {case.id}: candidate shape {lab.shape} does not match the image {case.spatial_shape}")
    if allowed_slices is None and case.spatial_dims == 3 and case.labelled_slices is not None:
        allowed_slices = case.labelled_slices
    if structures is None:
        present = set(np.unique(lab).tolist()) - {0}
        if case.spatial_dims == 3 and allowed_slices is not None:
            present = set(np.unique(lab[..., list(allowed_slices)]).tolist()) - {0}
        todo = [(k, n) for k, n in enumerate(case.class_names) if k in present]
        bad = sorted(k for k in present if k >= len(case.class_names))
        if bad:
            raise DataError(f"case {case.id}: candidate has class indices {bad} beyond the {case.num_classes} classes")
    else:
        todo = structure_names(case.class_names, structures)
    cfg = predictor.config
    unit = intensity_unit(case.image, cfg.ct_clip)
    jobs: list[tuple[int, int | None, np.ndarray]] = []
    inputs: list[np.ndarray] = []
    base_rows: list[dict[str, float]] = []
    for j, (k, _name) in enumerate(todo):
        m3 = lab == k
        zs: list[int | None] = (
            [None] if case.spatial_dims == 2 else list(slice_indices(m3, cfg.slices_per_structure, allowed_slices))
        )
        for z in zs:
            m = take_slice(m3, z)
            if not m.any():
                continue
            jobs.append((j, z, m))
            inputs.append(crop_input(take_slice(unit, z), m, cfg.crop_size, cfg.crop_margin))
            if seg_probs is not None:
                base_rows.append(uncertainty_scores(seg_slice(seg_probs, z), m, k))
    preds = predictor.score_inputs(
        np.stack(inputs) if inputs else np.zeros((0, 2, 1, 1), np.float32), [todo[j][1] for j, _, _ in jobs]
    )
    out = []
    for j, (_k, name) in enumerate(todo):
        rows = [i for i, (jj, _, _) in enumerate(jobs) if jj == j]
        if not rows:
            out.append(StructureScore(name, 0.0, (), (), empty=True))
            continue
        sl = tuple(jobs[i][1] for i in rows)
        sc = tuple(float(preds[i]) for i in rows)
        bl: dict[str, float] = {}
        sbl: dict[str, tuple[float, ...]] = {}
        if base_rows:
            for key in base_rows[rows[0]]:
                vals = tuple(base_rows[i][key] for i in rows)
                sbl[key] = vals
                bl[key] = float(np.mean(vals))
        out.append(StructureScore(name, float(np.mean(sc)), sl, sc, False, bl, sbl))
    return out
