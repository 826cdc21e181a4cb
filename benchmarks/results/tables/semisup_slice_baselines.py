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

``--quick`` (CI smoke) keeps only the held-out slices between the first two labelled slices and propagates through
that slab alone (so its propagation numbers differ from the full volume's).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from benchmarks.results.common import import_once, write_json
from benchmarks.results.tables import Context

__all__ = ["NAME", "render", "run"]

NAME = "semisup_slice_baselines"
K = 5
METHODS = {
    "nearest": "copy of the nearest labelled slice (ties: lower index)",
    "shape": "shape-based interpolation (signed distance, linear in z)",
    "itk_mci": "ITK morphological contour interpolation",
    "propagation": "labelwise training-free propagation (existing row)",
}
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


def _load(name: str, ctx: Context) -> tuple[Any, np.ndarray, list[str]]:
    """The case, its reference label map (classes renumbered 1..K-1) and the foreground class names."""
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
        return case, gt, list(TS_CLASSES)
    return case, np.asarray(case.raters[0], dtype=np.int16), list(case.class_names[1:])


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


def _scores(pred: np.ndarray, ref: np.ndarray, names: list[str]) -> dict[str, float]:
    from labelwise.metrics import dice

    per = {f"DSC_{n}": float(dice(pred == c, ref == c)) for c, n in enumerate(names, start=1)}
    return {"DSC": float(np.mean(list(per.values()))), **per}


def _score_dataset(name: str, ctx: Context) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """Split info, per-method scores of the one case, and the methods not run (with why)."""
    import time

    from labelwise.data.slices import k_slice_split

    case, gt, names = _load(name, ctx)
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
    }
    key = hashlib.sha256(json.dumps([config(), info, ctx.quick], sort_keys=True).encode()).hexdigest()[:12]
    step_dir = ctx.work / "steps" / f"{name}-{key}"
    step_dir.mkdir(parents=True, exist_ok=True)
    ref = gt[..., test]
    skipped: dict[str, str] = {}
    out: dict[str, Any] = {}
    for m in METHODS:
        done = step_dir / f"{m}.json"
        if done.is_file():  # resume
            out[m] = json.loads(done.read_text(encoding="utf-8"))
            continue
        if m == "itk_mci" and _itk_version() is None:
            skipped[m] = ITK_MISSING
            continue
        t0 = time.perf_counter()
        if m == "nearest":
            pred = _nearest(gt, train, test)
        elif m == "shape":
            pred = _shape(gt, train, test, len(names), case.spacing_mm)
        elif m == "itk_mci":
            pred = _itk(gt, train, test, step_dir)
        else:
            pred = _propagation(case, gt, train, len(names), lo, hi)[..., [z - lo for z in test]]
        res = {"scores": _scores(pred, ref, names), "seconds": round(time.perf_counter() - t0, 2)}
        write_json(done, res)
        out[m] = res
    return info, out, skipped


def run(ctx: Context) -> dict[str, Any]:
    """Import both volumes into ``ctx.work``, predict the held-out slices with each baseline, return the body."""
    splits: dict[str, Any] = {}
    per_case: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    not_run: dict[str, dict[str, str]] = {}
    seconds: dict[str, dict[str, float]] = {}
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
        "title": "Slice-interpolation baselines, k = 5 labelled slices",
        "config": config(),
        "seeds": [],
        "splits": splits,
        "rows": rows,
        "per_case": per_case,
        "not_run": not_run,
        "method_seconds": seconds,
        "checks": checks,
        "versions": {"itk-morphologicalcontourinterpolation": _itk_version()},
    }


def render(record: dict[str, Any]) -> str:
    """The Markdown tables of a record (deterministic: the docs block must equal it)."""
    prov, splits = record["provenance"], record["splits"]
    lines: list[str] = []
    for name in [n for n in DATASETS if n in splits]:  # the record's JSON keys are sorted
        sp = splits[name]
        classes = sp["classes"]
        if lines:
            lines.append("")
        lines += [
            f"**{sp['description']}**: labelled slices {sp['train_slices']}, {len(sp['test_slices'])} held-out "
            f"slices scored.",
            "",
            "| method (k = 5 labelled slices) | DSC | " + " | ".join(f"DSC {c}" for c in classes) + " | s |",
            "|---|---|" + "---|" * len(classes) + "---|",
        ]
        by_method = {r["method"]: r for r in record["rows"] if r["split"] == name}
        for m, label in METHODS.items():
            if m in by_method:
                mt = by_method[m]["metrics"]
                cells = [f"{mt['DSC']['mean'] / 100:.3f}"] + [f"{mt[f'DSC_{c}']['mean'] / 100:.3f}" for c in classes]
                secs = f"{record['method_seconds'][name][m]:.1f}"
            else:
                cells = [record["not_run"][name].get(m, "not run")] + ["–"] * len(classes)
                secs = ""
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {secs} |")
    commit = (prov["git_commit"] or "unknown")[:10] + (" (uncommitted changes)" if prov["git_dirty"] else "")
    txt = {True: "yes, exactly (mean and per class, 3 decimals)", False: "**no**", None: "not checked (quick run)"}
    repro = "; ".join(
        f"{splits[n]['description']} {DOCS_PROPAGATION[n]['DSC']}: "
        + txt[record["checks"][f"{n}_propagation_reproduces"]]
        for n in DOCS_PROPAGATION
        if n in splits
    )
    lines += [
        "",
        "DSC per class pooled over the held-out labelled slices of the one 3D case, then the mean over classes; "
        "dev data only (`docs/protocol.md`: no untouched test exists for either volume). s = wall seconds of the "
        f"method alone. Record `{record['table']}.json`: commit {commit}, {prov['date'][:10]}, config "
        f"`{record['config_hash'][:12]}`"
        + (", **quick smoke run**" if record.get("quick") else "")
        + f". Propagation reproduces the earlier rows ({repro}).",
    ]
    return "\n".join(lines)
