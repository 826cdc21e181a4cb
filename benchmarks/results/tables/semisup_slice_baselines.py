"""Table ``semisup_slice_baselines``: slice-interpolation baselines of the k = 5 labelled-slice protocol.

Same protocol as the semi-supervised rows of ``docs/results.md`` (``benchmarks/semisup_protocol.py``): one 3D case
per dataset, k = 5 labelled slices chosen by ``labelwise.data.slices.k_slice_split(case, 5, "even")``, scored on
the held-out labelled slices (gathered, Dice per class pooled over all of them, then the mean over classes).

* TotalSegmentator CT (``totalsegmentator_example`` imported with ``nifti-partial``): rater ``model``, classes
  liver, spleen, kidney_left, kidney_right renumbered 1..4 in that order (every other structure = background).
* MNI152 (``mni152_nilearn`` imported with ``mni152``, 2x down-sampled by ``benchmarks/semisup_protocol.py``'s
  ``downsampled_mni``): grey matter, white matter.

Both are dev data (``docs/protocol.md``: the CT has no untouched test, MNI152 is for method checks only).

Methods, each from the same k label slices:

1. ``nearest``: each slice takes the labels of the nearest labelled slice (ties: the lower slice index).
2. ``shape``: shape-based interpolation. Per class, the 2D signed distance (``labelwise.data.geometry
   .signed_distance``, in-plane spacing, > 0 inside) of the two enclosing labelled slices is interpolated linearly
   along z; a voxel takes the class of the largest interpolated distance if that is > 0, else background. A class
   absent from one of the two slices gets there the constant minus the other slice's maximum inside distance, so
   it tapers to nothing half-way (where ``nearest`` drops it too). Outside the labelled range: ``nearest``.
3. ``itk_mci``: ITK morphological contour interpolation (Zukic et al. 2016, ``itk-morphologicalcontourinterpolation``)
   along the slice axis, all labels at once, on a volume holding only the k label slices. Slices where a class is
   absent are "not annotated" for that class in ITK's sense (it cannot express "absent here"). Needs the
   ``[bench]`` extra; without it the row says so.
4. ``propagation``: labelwise's training-free propagation (``labelwise.methods.propagation.propagate`` with no
   model) from the k slices: the existing row of ``docs/results.md``, reproduced here.

Trained rows (``labelwise.methods.train`` / ``load_run``, through ``benchmarks/semisup_protocol.py``'s
``protocol_overrides`` and ``train_and_predict``), each from the same k labelled slices; the other labelled slices
are never a training label (the one case is in the ``train`` split, so no validation split exists and the last
weights are used):

5. ``supervised``: the 2D ``supervised`` U-Net (``slicewise``) on the k labelled slices only, i.e. supervised at
   equal (annotation) budget. Its default schedule (50 x 100 steps of batch 8, measured 0.6 CPU-s per step here:
   ~53 CPU-min per volume) does not fit the table's CPU budget, so it trains 10 of its 50 epochs (1000 steps);
   everything else is its default. Fixed from the budget before any of its scores was computed.
6. ``cps``: ``cps`` with its default network and schedule (160 steps of batch 4 + 4 unlabelled); every other
   slice of the volume is an unlabelled image.
7. ``propagation_stcn``: the ``propagation`` method with its default STCN and schedule (300 steps), propagating
   from the case's k labelled slices (``anchors: labelled``, the k-annotated-slices use case; no reference model).

The protocol settings (rater, classes, ``train_slices``, CT windows, anchors) are data, not tuning; every
trained row reports its wall and CPU seconds (training + prediction).

Metrics: DSC per class pooled over the held-out slices (unchanged), and NSD per 3D case: the held-out slices at
their true positions in the volume (every other slice blank), ``labelwise.metrics.nsd`` with the 3D spacing at
the tolerance of ``benchmarks/semisup_protocol.py`` (CT 3 mm, MNI 2 mm: one voxel), per class; then the mean over
classes.

``--quick`` (CI smoke) keeps only the held-out slices between the first two labelled slices and propagates through
that slab alone (so its propagation numbers differ from the full volume's); ITK runs on that slab too, and the
trained rows train for 2 steps and predict the slab.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from benchmarks.results.common import cached_json, import_once, provenance_line, step_dir, write_json
from benchmarks.results.tables import Context

__all__ = ["NAME", "check", "config", "headline", "render", "run"]

NAME = "semisup_slice_baselines"
K = 5
METHODS = {
    "nearest": "copy of the nearest labelled slice (ties: lower index)",
    "shape": "shape-based interpolation (signed distance, linear in z)",
    "itk_mci": "ITK morphological contour interpolation",
    "propagation": "labelwise training-free propagation (existing row)",
    "supervised": "`supervised` 2D U-Net on the k slices only (supervised at equal budget)",
    "cps": "`cps` (default; every other slice unlabelled)",
    "propagation_stcn": "`propagation` with its trained STCN (default; from the k slices)",
}
SHORT = {
    "nearest": "nearest-slice copy",
    "shape": "shape-based interpolation",
    "itk_mci": "ITK MCI",
    "propagation": "training-free propagation",
    "supervised": "supervised at equal budget",
    "cps": "`cps`",
    "propagation_stcn": "`propagation` (trained STCN)",
}
BASELINES = ("nearest", "shape", "itk_mci", "supervised")
LABELWISE = ("propagation", "cps", "propagation_stcn")
# trained row -> labelwise method; overrides beyond the protocol's data settings
TRAINED: dict[str, tuple[str, list[str]]] = {
    "supervised": ("supervised", ["train.epochs=10"]),
    "cps": ("cps", []),
    "propagation_stcn": ("propagation", []),
}
COMMON_OVERRIDES = ["train.progress=false"]  # no progress bar; does not change the numbers
QUICK_OVERRIDES = ["train.epochs=1", "train.steps_per_epoch=2"]
SETTING = {"totalseg": "totalseg", "mni": "mni"}  # table dataset -> benchmarks/semisup_protocol.py setting
DATASETS = {
    # name -> (source folder under the data root, importer, description)
    "totalseg": ("totalsegmentator_example", "nifti-partial", "TotalSegmentator CT"),
    "mni": ("mni152_nilearn", "mni152", "MNI152 (2 mm)"),
}
TS_CLASSES = ("liver", "spleen", "kidney_left", "kidney_right")
# The training-free propagation rows (k = 5) of docs/results.md, "Semi-supervised 3D": mean DSC and per class.
DOCS_PROPAGATION: dict[str, dict[str, Any]] = {
    "totalseg": {"DSC": 0.924, "per_class": [0.956, 0.948, 0.887, 0.903]},
    "mni": {"DSC": 0.833, "per_class": [0.837, 0.830]},
}
ITK_MISSING = "not run: needs the [bench] extra (itk-morphologicalcontourinterpolation)"


def config() -> dict[str, Any]:
    """Everything that defines this table's numbers (hashed into ``config_hash``)."""
    return {
        "k": K,
        "slice_mode": "even",
        "methods": METHODS,
        "datasets": {
            "totalseg": {
                "source": DATASETS["totalseg"][0],
                "importer": "nifti-partial",
                "rater": "model",
                "classes": list(TS_CLASSES),
            },
            "mni": {
                "source": DATASETS["mni"][0],
                "importer": "mni152",
                "rater": "p50 (first rater)",
                "downsample": "2x every axis (benchmarks/semisup_protocol.py downsampled_mni)",
            },
        },
        "scoring": "held-out labelled slices gathered; labelwise.metrics.dice per class pooled over them "
        "(empty='labelwise'); mean over classes",
        "nsd": {
            "definition": "per 3D case: the held-out slices at their true positions (other slices blank), "
            "labelwise.metrics.nsd with the 3D spacing, per class (both empty = 1); mean over classes",
            "tolerance_mm": {n: _tolerance(SETTING[n]) for n in DATASETS},
        },
        "trained": {
            m: {
                "method": meth,
                "overrides": {n: _overrides(n, m, quick=False) for n in DATASETS},
                "quick_overrides": QUICK_OVERRIDES,
                "schedule": "method default"
                if not extra
                else "default except " + ", ".join(extra) + " (default 50 epochs does not fit the CPU budget)",
            }
            for m, (meth, extra) in TRAINED.items()
        },
        "device": "cpu",
        "shape": {
            "signed_distance": "2D per slice, in-plane spacing; a class absent from one of the two slices: "
            "minus the other slice's maximum inside distance (tapers to nothing half-way); absent from both: "
            "none",
            "combine": "argmax of interpolated distances, > 0",
            "outside_range": "nearest",
        },
        "itk_mci": {"axis": "slice axis", "label": 0, "use_distance_transform": True},
        "propagation": {"model": None, "num_classes": "foreground classes + 1", "allow_empty": True},
    }


def _tolerance(setting: str) -> float:
    from benchmarks.semisup_protocol import SETTINGS

    return float(SETTINGS[setting]["tolerance_mm"])


def _overrides(name: str, method: str, quick: bool) -> list[str]:
    """Config overrides of a trained row: the protocol's data settings, the row's own, quick steps."""
    from benchmarks.semisup_protocol import protocol_overrides

    meth, extra = TRAINED[method]
    return [*protocol_overrides(SETTING[name], meth, K), *extra, *COMMON_OVERRIDES, *(QUICK_OVERRIDES if quick else [])]


def _load(name: str, ctx: Context) -> tuple[Any, np.ndarray, list[str], Path]:
    """The case, its reference label map (classes renumbered 1..K-1), the foreground class names, the dataset."""
    from labelwise.data import Dataset

    folder, importer, _ = DATASETS[name]
    dest = import_once(importer, ctx.data / folder, ctx.work / f"{name}_import")
    if name == "mni":
        from benchmarks.semisup_protocol import downsampled_mni

        dest = downsampled_mni(dest, ctx.work / "mni_ds2")
    ds = Dataset(dest)
    case = ds[ds.ids[0]]
    if name == "totalseg":
        lab = case.raters[list(case.rater_ids).index("model")]
        gt = np.zeros(lab.shape, dtype=np.int16)
        for i, cname in enumerate(TS_CLASSES, start=1):
            gt[lab == case.class_names.index(cname)] = i
        return case, gt, list(TS_CLASSES), dest
    return case, np.asarray(case.raters[0], dtype=np.int16), list(case.class_names[1:]), dest


def _nearest(gt: np.ndarray, train: list[int], zs: list[int]) -> np.ndarray:
    out = np.zeros((*gt.shape[:-1], len(zs)), dtype=np.int16)
    for j, z in enumerate(zs):
        src = min(train, key=lambda t: (abs(t - z), t))  # ties: the lower index
        out[..., j] = gt[..., src]
    return out


def _shape(gt: np.ndarray, train: list[int], zs: list[int], n_fg: int, spacing: tuple[float, ...]) -> np.ndarray:
    from labelwise.data.geometry import signed_distance

    sp = tuple(float(s) for s in spacing[:2])
    diag = float(np.hypot(gt.shape[0] * sp[0], gt.shape[1] * sp[1]))
    sd = {t: np.stack([signed_distance(gt[..., t] == c, sp, fill_mm=diag) for c in range(1, n_fg + 1)]) for t in train}
    near = _nearest(gt, train, zs)
    out = np.zeros_like(near)
    for j, z in enumerate(zs):
        if z < train[0] or z > train[-1] or z in train:
            out[..., j] = near[..., j]
            continue
        b = next(t for t in train if t > z)
        a = max(t for t in train if t < z)
        sa, sb = sd[a].copy(), sd[b].copy()
        for c in range(n_fg):  # absent on one side: -(max depth on the other), the class ends half-way
            if not (gt[..., a] == c + 1).any() and (gt[..., b] == c + 1).any():
                sa[c] = -sb[c].max()
            elif not (gt[..., b] == c + 1).any() and (gt[..., a] == c + 1).any():
                sb[c] = -sa[c].max()
        d = (b - z) / (b - a) * sa + (z - a) / (b - a) * sb
        best = d.argmax(0)
        out[..., j] = np.where(d.max(0) > 0, best + 1, 0)
    return out


def _itk_version() -> str | None:
    """Version of the installed ``itk-morphologicalcontourinterpolation`` (None: not installed); imports nothing."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("itk-morphologicalcontourinterpolation")
    except PackageNotFoundError:
        return None


_ITK_SCRIPT = """
import sys
import numpy as np
import itk
sparse = np.load(sys.argv[1])
img = itk.image_from_array(np.ascontiguousarray(sparse.transpose(2, 1, 0)))
res = itk.morphological_contour_interpolator(img, axis=2, label=0, use_distance_transform=True)
np.save(sys.argv[2], np.asarray(itk.array_from_image(res)).transpose(2, 1, 0).astype(np.int16))
"""


def _itk(gt: np.ndarray, train: list[int], zs: list[int], tmp: Path) -> np.ndarray:
    """ITK MCI along the slice axis, in a child process (ITK and torch in one process abort at exit)."""
    import subprocess
    import sys

    sparse = np.zeros(gt.shape, dtype=np.int16)
    for t in train:
        sparse[..., t] = gt[..., t]
    # numpy (X, Y, Z) -> transposed (Z, Y, X) array, i.e. an ITK image whose index axis 2 is our slice axis
    src, dst = tmp / "itk_in.npy", tmp / "itk_out.npy"
    np.save(src, sparse)
    subprocess.run([sys.executable, "-c", _ITK_SCRIPT, str(src), str(dst)], check=True, timeout=600)
    full = np.load(dst)
    src.unlink()
    dst.unlink()
    return np.asarray(full[..., zs], dtype=np.int16)


def _propagation(case: Any, gt: np.ndarray, train: list[int], n_fg: int, lo: int, hi: int) -> np.ndarray:
    """Label map of the slab ``lo..hi`` (the whole volume in a full run) propagated from the ``train`` slices."""
    from labelwise.methods.propagation import propagate

    image = case.image[..., lo : hi + 1]
    ann = {t - lo: gt[..., t] for t in train if lo <= t <= hi}
    return np.asarray(propagate(image, ann, None, num_classes=n_fg + 1, allow_empty=True).labels)


def _clock() -> tuple[float, float]:
    """Wall seconds and CPU seconds of this process plus its finished children (the ITK child process)."""
    import resource

    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter(), time.process_time() + child.ru_utime + child.ru_stime


def _elapsed(start: tuple[float, float]) -> dict[str, float]:
    wall, cpu = _clock()
    return {"wall": round(wall - start[0], 2), "cpu": round(cpu - start[1], 2)}


def _slab_case(case: Any, train: list[int], lo: int, hi: int) -> Any:
    """The slices ``lo..hi`` of ``case`` as a case of their own (quick runs); its labelled slices = the k in it."""
    return replace(
        case,
        id=f"{case.id}_slab{lo}-{hi}",
        image=case.image[..., lo : hi + 1],
        raters=case.raters[..., lo : hi + 1],
        labelled_slices=tuple(t - lo for t in train if lo <= t <= hi),
    )


def _trained(
    name: str, method: str, ctx: Context, case: Any, data: Path, names: list[str], span: tuple[list[int], int, int]
) -> tuple[np.ndarray, dict[str, float]]:
    """Train (resumable) one trained row and predict slices ``lo..hi``: label map (table classes), seconds."""
    from benchmarks.semisup_protocol import train_and_predict

    train, lo, hi = span
    meth, _ = TRAINED[method]
    ov = _overrides(name, method, ctx.quick)
    run_dir = step_dir(ctx.work, f"{name}-{method}-run", meth, ov, case.id, train, ctx.quick) / "run"
    target = _slab_case(case, train, lo, hi) if ctx.quick else case
    start = _clock()
    label, class_names, recorded = train_and_predict(meth, data, run_dir, ov, target)
    seconds = _elapsed(start)
    seconds["train_steps"] = json.loads((run_dir / "meta.json").read_text(encoding="utf-8")).get("steps")
    if sorted(recorded.get(case.id, [])) != sorted(train):
        raise RuntimeError(f"{method}: trained on slices {recorded.get(case.id)}, expected {train}")
    out = np.zeros(label.shape, dtype=np.int16)  # model classes -> the table's 1..K-1, by name
    for i, cname in enumerate(names, start=1):
        out[label == class_names.index(cname)] = i
    return out, seconds


def _scores(
    pred: np.ndarray, ref: np.ndarray, names: list[str], test: list[int], depth: int, spacing: Any, tol: float
) -> dict[str, float]:
    """DSC per class pooled over the gathered held-out slices; NSD per class of the slices as one 3D case."""
    from benchmarks.semisup_protocol import nsd_at_true_positions

    from labelwise.metrics import dice

    dsc = {f"DSC_{n}": float(dice(pred == c, ref == c)) for c, n in enumerate(names, start=1)}
    nsd = {
        f"NSD_{n}": nsd_at_true_positions(pred == c, ref == c, test, depth, spacing, tol)
        for c, n in enumerate(names, start=1)
    }
    return {
        "DSC": float(np.mean(list(dsc.values()))),
        "NSD": float(np.mean(list(nsd.values()))),
        **dsc,
        **nsd,
    }


def _score_dataset(name: str, ctx: Context) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """Split info, per-method scores (and seconds) of the one case, and the methods not run (with why)."""
    from labelwise.data.slices import k_slice_split

    case, gt, names, data = _load(name, ctx)
    split = k_slice_split(case, K, "even")
    train, test = list(split.train), list(split.test)
    lo, hi = 0, case.spatial_shape[-1] - 1
    if ctx.quick:  # smoke: the held-out slices between the first two labelled slices, propagation on that slab
        lo, hi = train[0], train[1]
        test = [z for z in test if lo < z < hi]
    info = {
        "role": "dev",
        "source": DATASETS[name][0],
        "description": DATASETS[name][2],
        "n": 1,
        "cases": [case.id],
        "classes": names,
        "train_slices": train,
        "test_slices": test,
        "labelled_slices": sorted([*split.train, *split.test]),
        "nsd_tolerance_mm": _tolerance(SETTING[name]),
    }
    folder = step_dir(ctx.work, name, config(), info, ctx.quick)
    ref = gt[..., test]
    depth, spacing, tol = gt.shape[-1], case.spacing_mm, _tolerance(SETTING[name])
    skipped: dict[str, str] = {}
    out: dict[str, Any] = {}
    for m in METHODS:
        done = folder / f"{m}.json"
        if done.is_file():  # resume
            out[m] = cached_json(done, dict)
            continue
        if m == "itk_mci" and _itk_version() is None:
            skipped[m] = ITK_MISSING
            continue
        start = _clock()
        seconds: dict[str, float] | None = None
        if m == "nearest":
            pred = _nearest(gt, train, test)
        elif m == "shape":
            pred = _shape(gt, train, test, len(names), spacing)
        elif m == "itk_mci":
            inside = [t - lo for t in train if lo <= t <= hi]
            pred = _itk(gt[..., lo : hi + 1], inside, [z - lo for z in test], folder)
        elif m == "propagation":
            pred = _propagation(case, gt, train, len(names), lo, hi)[..., [z - lo for z in test]]
        else:
            label, seconds = _trained(name, m, ctx, case, data, names, (train, lo, hi))
            pred = label[..., [z - lo for z in test]]
        if seconds is None:
            seconds = _elapsed(start)
        res = {"scores": _scores(pred, ref, names, test, depth, spacing, tol), "seconds": seconds}
        write_json(done, res)
        out[m] = res
    return info, out, skipped


def run(ctx: Context) -> dict[str, Any]:
    """Import both volumes into ``ctx.work``, predict the held-out slices with each method, return the body."""
    splits: dict[str, Any] = {}
    per_case: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    not_run: dict[str, dict[str, str]] = {}
    seconds: dict[str, dict[str, dict[str, float]]] = {}
    for name in DATASETS:
        info, out, skipped = _score_dataset(name, ctx)
        splits[name] = info
        cid = info["cases"][0]
        per_case[name] = {m: {cid: res["scores"]} for m, res in out.items()}
        seconds[name] = {m: res["seconds"] for m, res in out.items()}
        not_run[name] = skipped
        for m in METHODS:
            if m in out:
                sc = out[m]["scores"]
                rows.append(
                    {
                        "method": m,
                        "split": name,
                        "n": 1,
                        "metrics": {k: {"mean": v * 100, "std": 0.0} for k, v in sc.items()},
                    }
                )
    checks: dict[str, Any] = {"docs_propagation": DOCS_PROPAGATION}
    for name, doc in DOCS_PROPAGATION.items():
        got = per_case[name].get("propagation")
        if ctx.quick or got is None:
            checks[f"{name}_propagation_reproduces"] = None
            continue
        sc = next(iter(got.values()))
        per = [sc[f"DSC_{n}"] for n in splits[name]["classes"]]
        checks[f"{name}_propagation_reproduces"] = round(sc["DSC"], 3) == doc["DSC"] and all(
            round(v, 3) == d for v, d in zip(per, doc["per_class"], strict=True)
        )
    return {
        "title": "Semi-supervised 3D, k = 5 labelled slices: slice-interpolation baselines, supervised, labelwise",
        "config": config(),
        "seeds": [0],
        "splits": splits,
        "rows": rows,
        "per_case": per_case,
        "not_run": not_run,
        "method_seconds": seconds,
        "checks": checks,
        "versions": {"itk-morphologicalcontourinterpolation": _itk_version()},
    }


def _dsc(record: dict[str, Any], name: str, method: str) -> float | None:
    """Mean DSC (fraction) of ``method`` on dataset ``name``, None when the row is missing."""
    for r in record["rows"]:
        if r["split"] == name and r["method"] == method:
            return float(r["metrics"]["DSC"]["mean"]) / 100
    return None


def render(record: dict[str, Any]) -> str:
    """The Markdown tables of a record (deterministic: the docs block must equal it)."""
    splits = record["splits"]
    lines: list[str] = []
    for name in [n for n in DATASETS if n in splits]:  # the record's JSON keys are sorted
        sp = splits[name]
        classes = sp["classes"]
        if lines:
            lines.append("")
        lines += [
            f"**{sp['description']}**: labelled slices {sp['train_slices']}, {len(sp['test_slices'])} held-out "
            f"slices scored; NSD at {sp['nsd_tolerance_mm']:g} mm.",
            "",
            "| method (k = 5 labelled slices) | kind | DSC | NSD | "
            + " | ".join(f"DSC {c}" for c in classes)
            + " | train steps | wall s | CPU s |",
            "|---|---|---|---|" + "---|" * len(classes) + "---|---|---|",
        ]
        by_method = {r["method"]: r for r in record["rows"] if r["split"] == name}
        for m, label in METHODS.items():
            kind = "baseline" if m in BASELINES else "labelwise"
            if m in by_method:
                mt = by_method[m]["metrics"]
                cells = [f"{mt['DSC']['mean'] / 100:.3f}", f"{mt['NSD']['mean'] / 100:.3f}"]
                cells += [f"{mt[f'DSC_{c}']['mean'] / 100:.3f}" for c in classes]
                sec = record["method_seconds"][name][m]
                steps = sec.get("train_steps")
                secs = f"{'–' if steps is None else steps} | {sec['wall']:.1f} | {sec['cpu']:.1f}"
            else:
                cells = [record["not_run"][name].get(m, "not run"), "–"] + ["–"] * len(classes)
                secs = " |  | "
            lines.append(f"| {label} | {kind} | " + " | ".join(cells) + f" | {secs} |")
    txt = {True: "yes, exactly (mean and per class, 3 decimals)", False: "**no**", None: "not checked (quick run)"}
    repro = "; ".join(
        f"{splits[n]['description']} {DOCS_PROPAGATION[n]['DSC']}: "
        + txt[record["checks"][f"{n}_propagation_reproduces"]]
        for n in DOCS_PROPAGATION
        if n in splits
    )
    trained = record["config"]["trained"]
    lines += [
        "",
        "DSC per class pooled over the held-out labelled slices of the one 3D case, then the mean over classes; "
        "NSD per class of the held-out slices as one 3D case (at their true positions, the other slices blank; "
        "3D spacing), then the mean over classes. Dev data only (`docs/protocol.md`: no untouched 3D test volume "
        "exists). Every row uses only the k = 5 labelled slices as labels. Trained rows "
        "(`labelwise.methods.train`, CPU, seed 0, no validation split: last weights): `supervised` trains "
        f"{trained['supervised']['schedule']}; `cps` and `propagation` train their default schedules "
        "(`propagation` starts from the k labelled slices, `anchors: labelled`; batch: 8 `supervised`, 4 + 4 "
        "unlabelled `cps`, 4 STCN sequences). Seconds: wall and CPU (with child processes) of the method alone "
        "(training + prediction; a resumed training counts only its last part). Propagation reproduces the "
        f"earlier rows ({repro}).",
        "",
        provenance_line(record),
    ]
    return "\n".join(lines)


def headline(record: dict[str, Any]) -> str:
    """One overview bullet: best labelwise method vs the strongest baseline on the CT and on MNI152 (dev data)."""
    parts, wins = [], []
    for name in [n for n in DATASETS if n in record["splits"]]:
        desc = record["splits"][name]["description"]
        ours = {m: v for m in LABELWISE if (v := _dsc(record, name, m)) is not None}
        base = {m: v for m in BASELINES if (v := _dsc(record, name, m)) is not None}
        if not ours or not base:
            continue
        best = max(ours, key=lambda m: ours[m])
        strong = max(base, key=lambda m: base[m])
        parts.append(f"{desc} {SHORT[best]} {ours[best]:.3f} vs strongest baseline {SHORT[strong]} {base[strong]:.3f}")
        lost = [f"{SHORT[m]} {v:.3f}" for m, v in ours.items() if v < base[strong]]
        if lost:
            wins.append(f"{desc}: {SHORT[strong]} beats " + ", ".join(lost))
    verdict = ("; a baseline wins on " + "; ".join(wins)) if wins else "; no baseline beats a labelwise row"
    quick = " (**quick smoke run**)" if record.get("quick") else ""
    return (
        "- **Semi-supervised 3D (k = 5 labelled slices)**: DSC on the held-out labelled slices (dev data: no "
        f"untouched 3D test volume exists){quick}: " + "; ".join(parts) + verdict + "."
    )


def check(record: dict[str, Any]) -> None:
    """Each row's DSC and NSD are the means of its per-class values; every row has its seconds."""
    for name, sp in record["splits"].items():
        for m, cases in record["per_case"][name].items():
            for sc in cases.values():
                for metric in ("DSC", "NSD"):
                    per = [sc[f"{metric}_{c}"] for c in sp["classes"]]
                    assert abs(sc[metric] - sum(per) / len(per)) < 1e-12, (name, m, metric)
            assert {"wall", "cpu"} <= set(record["method_seconds"][name][m]), (name, m)
