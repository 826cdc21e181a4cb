"""The trainable method: candidates -> (segmenter stage) -> sentinel stage, on the method skeleton.

Two stages of one run (:meth:`SentinelMethod.train`): the segmenter (``RUN/segmenter``, see
:mod:`labelwise.methods.sentinel.segmenter`), whose snapshots join the candidates, then the sentinel itself in
``RUN`` (weighted MSE + ranking loss, selected on the Pearson r of the val cases' perturbed candidates). The
final ``weights.safetensors`` holds the sentinel, the embeddings and the (frozen) segmenter.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import torch

from labelwise.data import Case, Dataset
from labelwise.data.slices import labelled_slice_indices
from labelwise.engine import FitResult, Plan, StepContext, TrainTask, default_device, make_plan
from labelwise.errors import ConfigError, DataError
from labelwise.methods.base import FitContext, Method, Stage, register_method
from labelwise.methods.sentinel.candidates import CandidateSet, build_candidates
from labelwise.methods.sentinel.config import SEGMENTER_DIR, SENTINEL_META, TEXT_CACHE, SentinelConfig
from labelwise.methods.sentinel.inputs import heldout_slices, structure_names
from labelwise.methods.sentinel.scoring import SentinelPredictor, build_sentinel_net
from labelwise.methods.sentinel.segmenter import segmenter_snapshots, segmenter_stage
from labelwise.metrics import mae, pearson
from labelwise.models import build_model, spec_divisor
from labelwise.models.sentinel import ClassEmbedding, SentinelNet
from labelwise.models.sentinel_losses import sentinel_loss
from labelwise.models.text import embed_names, minilm_available

__all__ = ["SentinelMethod", "SentinelTask"]

logger = logging.getLogger(__name__)


class _CandidateSource:
    """Samples candidates uniformly with random flips / transposes of the crop (both channels alike)."""

    def __init__(self, cs: CandidateSet) -> None:
        self.cs = cs

    def sample(self, epoch: int, index: int, rng: np.random.Generator) -> dict[str, Any]:
        i = int(rng.integers(len(self.cs)))
        x = self.cs.inputs[i].astype(np.float32)
        if rng.random() < 0.5:
            x = x[:, :, ::-1]
        if rng.random() < 0.5:
            x = x[:, ::-1, :]
        if rng.random() < 0.5:
            x = x.transpose(0, 2, 1)
        return {"x": np.ascontiguousarray(x), "k": int(self.cs.structure[i]), "y": float(self.cs.dice[i])}


class SentinelTask(TrainTask):
    """Regress Dice with weighted MSE + ranking; validate Pearson r / MAE on perturbed val candidates."""

    def __init__(
        self, net: SentinelNet, emb: ClassEmbedding, cfg: SentinelConfig, val_sets: dict[str, CandidateSet]
    ) -> None:
        self.modules = {"sentinel": net, "embedding": emb}
        self.cfg = cfg
        self.val_sets = val_sets
        self.emb = emb

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        """Loss of one batch of candidates."""
        e = ctx.module("embedding")(batch["k"])
        pred = ctx.module("sentinel")(batch["x"], e)
        c = self.cfg
        return sentinel_loss(pred.float(), batch["y"].float(), c.mse_edges, c.mse_weights, c.rank_weight, c.rank_margin)

    def validation_step(self, case: Case, ctx: StepContext) -> dict[str, float]:
        """Pearson r and MAE (as ``neg_mae``) of the val case's perturbed candidates."""
        cs = self.val_sets.get(case.id)
        if cs is None or len(cs) < 2:
            return {}
        net = self.modules["sentinel"]
        fallback = embed_names(cs.names, self.cfg.text_backend)
        table = self.emb.lookup(cs.names, fallback)
        preds = []
        for i in range(0, len(cs), 256):
            x = torch.from_numpy(cs.inputs[i : i + 256].astype(np.float32)).to(ctx.device)
            e = table[torch.from_numpy(cs.structure[i : i + 256]).to(table.device)]
            preds.append(net(x, e).float().cpu().numpy())
        p = np.concatenate(preds)
        return {"pearson": pearson(p, cs.dice), "neg_mae": -mae(p, cs.dice)}


def _labelled_train_cases(dataset: Dataset) -> list[Case]:
    return [c for c in dataset.cases("train") if c.num_raters]


def _training_slices(cases: list[Case], block: int) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Per 3D case: (training slices, held-out slices) of its labelled slices (alternate blocks of ``block``)."""
    train: dict[str, list[int]] = {}
    held: dict[str, list[int]] = {}
    for c in cases:
        if c.spatial_dims == 3:
            train[c.id], held[c.id] = heldout_slices(labelled_slice_indices(c), block)
    return train, held


@register_method("sentinel")
class SentinelMethod(Method):
    """Quality Sentinel: text-conditioned Dice regression from (image, candidate mask, structure name)."""

    Config = SentinelConfig
    Predictor = SentinelPredictor
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {
            "crop_size": 256,
            "ct_clip": [-200, 200],
            "perturbations_per_slice": 16,
            "checkpoint_steps": [10, 20, 30, 40, 50, 100, 200, 300, 400, 500],
            "train": {"epochs": 100, "steps_per_epoch": 100, "batch_size": 128},
        },
        "ct": {"ct_clip": [-200, 200]},
        "smoke": {
            "crop_size": 16,
            "perturbations_per_slice": 3,
            "checkpoint_steps": [2],
            "segmenter": {"name": "unet_tiny", "kwargs": {"channels": [4, 8, 16]}},
            "widths": [4, 8],
            "hidden_dim": 8,
            "text_backend": "hashed",
            "train": {"epochs": 2, "steps_per_epoch": 3, "batch_size": 8},
        },
    }
    citation = (
        "Wang et al., Quality Sentinel: Estimating Label Quality and Errors in Medical Segmentation Datasets, 2024"
    )
    summary = "Predicts each mask's Dice without ground truth (image + mask + structure name) to rank labels"

    @classmethod
    def check(cls, dataset: Dataset, config: SentinelConfig) -> None:
        """The reference rater and the structures must be the dataset's; the train split must hold labels."""
        if config.reference_rater is not None and config.reference_rater not in dataset.rater_ids:
            raise ConfigError(
                f"reference_rater {config.reference_rater!r} is not one of the raters {list(dataset.rater_ids)}"
            )
        structure_names(dataset.class_names, config.structures)  # unknown names fail early
        if not any(dataset.record(i).labels for i in dataset.split_ids("train")):
            raise DataError(f"{dataset.root}: no labelled cases in the train split")

    @classmethod
    def plan(cls, dataset: Dataset, config: SentinelConfig) -> Plan:
        """The segmenter's plan (slice-wise for 3D data) from the labelled training cases."""
        return make_plan(_labelled_train_cases(dataset), spec_divisor(config.segmenter), dataset.spatial_dims == 3)

    @classmethod
    def train(cls, fit: FitContext[SentinelConfig]) -> FitResult:
        """Segmenter stage (``RUN/segmenter``), candidates, then the sentinel stage in ``RUN``."""
        config, plan, dataset = fit.config, fit.plan, fit.dataset
        train_cases = _labelled_train_cases(dataset)
        slice_filter, held = _training_slices(train_cases, config.slice_holdout)
        seg_net: torch.nn.Module | None = None
        snaps: dict[str, list[np.ndarray]] = {}
        if config.checkpoint_steps:
            seg_net = build_model(config.segmenter, plan.spatial_dims, plan.channels, plan.num_classes)
            work = fit.path / SEGMENTER_DIR
            fit.run_stage(segmenter_stage(seg_net, train_cases, config, plan, slice_filter, work), SEGMENTER_DIR)
            snaps = segmenter_snapshots(seg_net, train_cases, config, plan, slice_filter, work, default_device())
            seg_net.requires_grad_(False)
        cands = build_candidates(train_cases, config, config.seed, slice_filter, snaps)
        if len(cands) < 2:
            raise DataError(f"{dataset.root}: fewer than 2 training candidates (are the masks empty?)")
        logger.info("sentinel: %d candidates, Dice histogram %s", len(cands), cands.histogram())
        val_all = list(dataset.cases("val"))
        val_sets = {
            c.id: build_candidates(
                [c], config, config.seed + 1 + i, None, None, max(4, config.perturbations_per_slice), balance=False
            )
            for i, c in enumerate(val_all)
            if c.num_raters
        }
        base = embed_names(cands.names, config.text_backend, fit.path / TEXT_CACHE)
        emb = ClassEmbedding(cands.names, base, config.learn_embeddings)
        task = SentinelTask(build_sentinel_net(config, base.shape[1]), emb, config, val_sets)
        if seg_net is not None:
            task.modules["segmenter"] = seg_net
        val_cases = [c for c in val_all if c.id in val_sets]
        stage = Stage(task, _CandidateSource(cands), config.train, val_cases, train_cases=len(train_cases))
        result = fit.run_stage(stage)
        backend = config.text_backend
        if backend == "auto":
            backend = "minilm" if minilm_available() else "hashed"
        fit.write_json_once(
            SENTINEL_META,
            {
                "structures": cands.names,
                "text_backend": backend,
                "text_dim": int(base.shape[1]),
                "segmenter": seg_net is not None,
            },
        )
        fit.meta.update(
            candidates=len(cands),
            candidate_dice_histogram=cands.histogram(),
            candidate_sources=cands.source_counts(),
            heldout_slices=held,
        )
        return result
