"""k-labelled-slice protocol for the semi-supervised methods (docs/results.md, "Semi-supervised 3D").

For one 3D case: choose k labelled slices (evenly spaced over the labelled ones), train on them plus every other
slice as unlabelled, and test on the held-out labelled slices. Compared: supervised-only (``cps`` with
``cps_weight=0``), ``cps``, training-free propagation from the k labelled slices, ``cps`` + propagation from the
reference model's largest-area slice per class (FLARE22 inference), and ``cps`` retrained with pseudo-labels
selected by agreement certainty (vote of CPS net a, net b and the propagation).

Usage::

    python benchmarks/semisup_protocol.py totalseg --data /tmp/h7/totalseg --work /tmp/h7/runs_ts --k 1 3 5 10
    python benchmarks/semisup_protocol.py mni --data /tmp/h7/mni152 --work /tmp/h7/runs_mni --k 1 3 5 10

``mni`` first writes a 2x down-sampled copy of the imported MNI152 dataset (99x117x95, 2 mm) whose labelled
slices are the non-empty ones. Results are appended as JSON lines to ``WORK/results.jsonl``.

The helpers :func:`protocol_overrides`, :func:`train_and_predict` and :func:`nsd_at_true_positions` are shared with
the results table ``benchmarks/results/tables/semisup_slice_baselines.py`` (the same protocol through
``labelwise.methods.train`` / ``load_run`` with the methods' default schedules).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labelwise.data import Dataset, DatasetWriter
from labelwise.data.slices import k_slice_split, nonempty_slices
from labelwise.engine import config_from_dict
from labelwise.methods.cps import CPSConfig, CPSMethod, CPSPredictor, case_target
from labelwise.methods.propagation import propagate, propagate_from_reference
from labelwise.metrics import dice, nsd
from labelwise.uncertainty import write_pseudo_labels

SETTINGS: dict[str, dict[str, Any]] = {
    "totalseg": {
        "classes": ["liver", "spleen", "kidney_left", "kidney_right"],
        "rater": "model",
        "ct_windows": True,
        "tolerance_mm": 3.0,
    },
    "mni": {"classes": None, "rater": None, "ct_windows": False, "tolerance_mm": 2.0},
}


def downsampled_mni(src: Path, dest: Path) -> Path:
    """2x down-sampled MNI152 dataset whose labelled slices are the non-empty ones."""
    if (dest / "dataset.json").exists():
        return dest
    ds = Dataset(src)
    case = ds[ds.ids[0]]
    img = case.image[:, ::2, ::2, ::2]
    lab = case.raters[0][::2, ::2, ::2]
    aff = case.affine.copy()
    aff[:3, :3] *= 2
    w = DatasetWriter(dest, "mni152-ds2", 3, ds.class_names, ds.rater_ids)
    w.add_case(
        "mni152",
        img,
        {"p50": lab},
        tuple(2 * s for s in case.spacing_mm),
        aff,
        split="train",
        labelled_slices=nonempty_slices(lab),
    )
    w.finish()
    return dest


def protocol_overrides(setting: str, method: str, k: int) -> list[str]:
    """Config overrides that put ``method`` on the k-labelled-slice protocol of ``setting`` (data, not tuning).

    They say which labels to learn (rater, classes), which k slices are labelled (``train_slices``, evenly spaced
    as :func:`labelwise.data.slices.k_slice_split`), the FLARE22 CT windows of the CT, and for ``propagation``
    that prediction starts from the case's own k labelled slices (``anchors: labelled``). Network, losses and
    schedule stay the method's defaults.

    Example:
        >>> protocol_overrides("mni", "supervised", 5)
        ['slicewise=true', 'train_slices=5']
        >>> protocol_overrides("totalseg", "propagation", 5)[:3]
        ['anchors=labelled', 'reference.rater=model', 'reference.classes=[liver, spleen, kidney_left, kidney_right]']

    """
    st = SETTINGS[setting]
    data: list[str] = []
    if st["rater"] is not None:
        data.append(f"rater={st['rater']}")
    if st["classes"] is not None:
        data.append(f"classes=[{', '.join(st['classes'])}]")
    if method == "supervised":
        target = ["target=rater"] if st["rater"] is not None else []
        return [*target, *data, "slicewise=true", f"train_slices={k}"]
    cps = [*data, f"train_slices={k}"] + (["ct_windows=true"] if st["ct_windows"] else [])
    if method == "cps":
        return cps
    if method == "propagation":
        return ["anchors=labelled", *(f"reference.{o}" for o in cps)]
    raise ValueError(f"no k-slice protocol for method {method!r}")


def train_and_predict(
    method: str, data: Path, run: Path, overrides: Sequence[str], case: Any
) -> tuple[np.ndarray, tuple[str, ...], dict[str, list[int]]]:
    """Train (or resume) ``method`` on ``data`` into ``run``, predict ``case``.

    Returns:
        The label map of ``case`` (model class indices), the model's class names, and the training slices the
        run recorded in its plan (case id -> slices).

    """
    from labelwise.methods import load_run, train

    train(method, Dataset(data), run, overrides=list(overrides))
    _, _, predictor = load_run(run, "cpu")
    pred = predictor.predict(case)
    assert pred.label is not None
    plan = predictor.plan
    return np.asarray(pred.label), tuple(plan.class_names), dict(plan.train_slices)


def nsd_at_true_positions(
    pred: np.ndarray, ref: np.ndarray, positions: Sequence[int], depth: int, spacing: Sequence[float], tol: float
) -> float:
    """NSD of two gathered masks ``(X, Y, len(positions))`` as one 3D case, the slices at their true positions.

    The gathered slices go back to their indices along the last axis of a ``depth``-slice volume, every other
    slice blank (background in both), and :func:`labelwise.metrics.nsd` scores that volume with the 3D spacing
    (the per-case rule of ``labelwise evaluate --slices``; both empty = 1).
    """
    p = np.zeros((*pred.shape[:-1], depth), dtype=bool)
    r = np.zeros_like(p)
    p[..., list(positions)] = pred
    r[..., list(positions)] = ref
    return float(nsd(p, r, tuple(spacing), tolerance_mm=tol))


def cps_predictor(run: Path) -> CPSPredictor:
    """The predictor of a trained ``cps`` run, on the CPU."""
    predictor = CPSMethod.load_predictor(run, "cpu")
    assert isinstance(predictor, CPSPredictor)
    return predictor


def scores(
    pred: np.ndarray | None, gt: np.ndarray, test: list[int], k: int, spacing: tuple[float, ...], tol: float
) -> dict[str, float]:
    """Per-class DSC (pooled over the test slices), NSD (2D per test slice, averaged; ``nsd``) and NSD per 3D case
    (the test slices at their true positions; ``nsd3d``); both-empty = 1."""
    assert pred is not None, "the prediction has no label map"
    out: dict[str, float] = {}
    d_all, n_all, n3_all = [], [], []
    for c in range(1, k):
        p, g = pred[..., test] == c, gt[..., test] == c
        d = dice(p, g)
        n = float(np.mean([nsd(p[..., i], g[..., i], spacing[:2], tolerance_mm=tol) for i in range(len(test))]))
        n3 = nsd_at_true_positions(p, g, test, gt.shape[-1], spacing, tol)
        out[f"dsc_{c}"], out[f"nsd_{c}"], out[f"nsd3d_{c}"] = d, n, n3
        d_all.append(d)
        n_all.append(n)
        n3_all.append(n3)
    out["dsc"], out["nsd"], out["nsd3d"] = float(np.mean(d_all)), float(np.mean(n_all)), float(np.mean(n3_all))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("setting", choices=sorted(SETTINGS))
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--k", type=int, nargs="+", default=[1, 3, 5, 10])
    ap.add_argument("--retrain-k", type=int, nargs="*", default=[5])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument(
        "--retrain-only",
        action="store_true",
        help="Only the retraining variant with pseudo-labels voted by CPS a, CPS b and the k-slice propagation "
        "(reuses WORK/cps_k<k>).",
    )
    ap.add_argument(
        "--stcn-run", type=Path, default=None, help="Score a trained `propagation` run (anchors: labelled)."
    )
    ap.add_argument("--threshold", type=float, default=0.9, help="Certainty threshold of --retrain-only.")
    args = ap.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    st = SETTINGS[args.setting]
    args.work.mkdir(parents=True, exist_ok=True)
    data = downsampled_mni(args.data, args.work / "data") if args.setting == "mni" else args.data
    ds = Dataset(data)
    case = ds[ds.ids[0]]
    results = args.work / "results.jsonl"

    def base_cfg(k: int, weight: float, pseudo: str | None = None) -> CPSConfig:
        return config_from_dict(
            CPSConfig,
            {
                "model": {"name": "unet", "kwargs": {"channels": [16, 32, 64, 128], "num_res_units": 1}},
                "cps_weight": weight,
                "rater": st["rater"],
                "classes": st["classes"],
                "train_slices": k,
                "ct_windows": st["ct_windows"],
                "pseudo_labels": pseudo,
                "train": {
                    "epochs": args.epochs,
                    "steps_per_epoch": args.steps,
                    "batch_size": 4,
                    "amp": False,
                    "progress": False,
                    "lr": 2e-3,
                },
            },
        )

    def record(k: int, variant: str, res: dict[str, float], seconds: float) -> None:
        row = {"setting": args.setting, "k": k, "variant": variant, "seconds": round(seconds, 1), **res}
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        logging.info("%s", row)

    if args.stcn_run is not None:
        from labelwise.methods import load_run

        _, pcfg, predictor = load_run(args.stcn_run, "cpu")
        k = pcfg.reference.train_slices
        split = k_slice_split(case, k, "even", pcfg.reference.train.seed)
        nk = predictor.plan.num_classes
        target = case_target(predictor.plan.model_case(case), pcfg.reference, nk)
        assert target is not None
        gt = np.argmax(target, 0)
        t0 = time.perf_counter()
        pred = predictor.predict(case)
        record(
            k,
            "propagation (k slices, trained STCN)",
            scores(pred.label, gt, list(split.test), nk, case.spacing_mm, st["tolerance_mm"]),
            time.perf_counter() - t0,
        )
        return

    if args.retrain_only:
        for k in args.retrain_k:
            cfg0 = base_cfg(k, 0.1)
            split = k_slice_split(case, k, "even", cfg0.train.seed)
            t0 = time.perf_counter()
            cps_pred = cps_predictor(args.work / f"cps_k{k}")
            plan = cps_pred.plan
            nk = plan.num_classes
            target = case_target(plan.model_case(case), cfg0, nk)
            assert target is not None
            gt = np.argmax(target, 0)
            cps = cps_pred.predict(case)
            assert cps.samples is not None
            prop = propagate(case.image, {z: gt[..., z] for z in split.train}, None, num_classes=nk, allow_empty=True)
            tag = "" if args.threshold == 0.9 else f"_t{args.threshold:g}"
            dest = args.work / f"pseudo_kslice_k{k}{tag}"
            rep = write_pseudo_labels(
                ds,
                {case.id: [cps.samples[0], cps.samples[1], prop.labels]},
                dest,
                plan.class_names,
                threshold=args.threshold,
                chunk_size=4,
                skip_labelled=False,
                overwrite=True,
            )
            CPSMethod.fit(ds, base_cfg(k, 0.1, str(dest)), args.work / f"retrain_kslice_k{k}{tag}")
            re = cps_predictor(args.work / f"retrain_kslice_k{k}{tag}").predict(case)
            res = scores(re.label, gt, list(split.test), nk, case.spacing_mm, st["tolerance_mm"])
            res["pseudo_kept_units"] = rep.kept_units
            res["pseudo_total_units"] = len(rep.decisions)
            record(
                k,
                f"cps + pseudo-labels (vote of cps a, cps b, k-slice propagation; certainty >= {args.threshold:g}) "
                "retraining",
                res,
                time.perf_counter() - t0,
            )
        return

    for k in args.k:
        cfg0 = base_cfg(k, 0.0)
        split = k_slice_split(case, k, "even", cfg0.train.seed)
        t0 = time.perf_counter()
        CPSMethod.fit(ds, cfg0, args.work / f"sup_k{k}")
        sup = cps_predictor(args.work / f"sup_k{k}")
        plan = sup.plan
        nk = plan.num_classes
        mc = plan.model_case(case)
        target = case_target(mc, cfg0, nk)
        assert target is not None
        gt = np.argmax(target, 0)
        test = list(split.test)
        sp = case.spacing_mm
        record(
            k,
            "supervised",
            scores(sup.predict(case).label, gt, test, nk, sp, st["tolerance_mm"]),
            time.perf_counter() - t0,
        )
        t0 = time.perf_counter()
        prop = propagate(case.image, {z: gt[..., z] for z in split.train}, None, num_classes=nk, allow_empty=True)
        record(
            k,
            "propagation (k slices, training-free)",
            scores(prop.labels, gt, test, nk, sp, st["tolerance_mm"]),
            time.perf_counter() - t0,
        )
        t0 = time.perf_counter()
        CPSMethod.fit(ds, base_cfg(k, 0.1), args.work / f"cps_k{k}")
        cps = cps_predictor(args.work / f"cps_k{k}").predict(case)
        assert cps.label is not None
        record(k, "cps", scores(cps.label, gt, test, nk, sp, st["tolerance_mm"]), time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref = propagate_from_reference(case.image, cps.label, nk, None, stride=5)
        record(
            k,
            "cps + propagation (FLARE reference slices)",
            scores(ref.labels, gt, test, nk, sp, st["tolerance_mm"]),
            time.perf_counter() - t0,
        )
        if k not in args.retrain_k:
            continue
        t0 = time.perf_counter()
        assert cps.samples is not None
        maps = [cps.samples[0], cps.samples[1], ref.labels]
        rep = write_pseudo_labels(
            ds,
            {case.id: maps},
            args.work / f"pseudo_k{k}",
            plan.class_names,
            threshold=0.9,
            chunk_size=4,
            skip_labelled=False,
            overwrite=True,
        )
        CPSMethod.fit(ds, base_cfg(k, 0.1, str(args.work / f"pseudo_k{k}")), args.work / f"retrain_k{k}")
        re = cps_predictor(args.work / f"retrain_k{k}").predict(case)
        res = scores(re.label, gt, test, nk, sp, st["tolerance_mm"])
        res["pseudo_kept_units"] = rep.kept_units
        res["pseudo_total_units"] = len(rep.decisions)
        record(k, "cps + pseudo-label retraining", res, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
