"""Fuse every case of a dataset into a new dataset whose single rater is the fused label (``labelwise fuse``).

Output layout (``DEST``)::

    DEST/
      dataset.json                  # a labelwise dataset: rater_ids == ["fused"], same classes, splits,
                                    #   image-level labels and labelled slices as the source
      images/<case>.nii.gz          # the source image, same affine and spacing
      labels/<case>_fused.nii.gz    # the fused label map (same geometry as the source)
      probabilities/<case>.nii.gz   # (mean, staple) per-class probabilities, float32, classes on the last axis
      undecided/<case>.nii.gz       # uint8 mask of the voxels the rule could not decide (ties); the label there
                                    #   follows the tie policy ("lowest" or "highest")
      reliability.csv               # per rater: cases, STAPLE sensitivity/specificity, Dice vs the fused map
      reliability_cases.csv         # the same per case and rater
      fusion.json                   # method, tie policy, source, labels read (provenance of reviewed cases),
                                    #   case counts, failures

DEST may not be, contain or lie inside the source. It is built in a hidden sibling folder and swapped in when
complete (:class:`labelwise.io.StagedDir`), so ``overwrite`` keeps the previous DEST until the new one exists and
a run that fails early leaves nothing behind.

Unlabelled cases (no rater) are copied without a label, so semi-supervised methods still see them. Missing
raters are left out of a case's fusion. For partially labelled volumes (``labelled_slices``) the whole volume is
fused (the slice list is kept in the manifest) but reliability is computed on the labelled slices only.
Reliability always uses STAPLE's estimates (whatever ``method`` is), averaged over the cases where the rater is
present (NaN values, e.g. sensitivity on a case without foreground, are skipped).
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from labelwise.data import Dataset, DatasetWriter
from labelwise.errors import DataError
from labelwise.io import (
    StagedDir,
    check_output_not_input,
    safe_join,
    write_image,
    write_json_atomic,
    write_label,
    write_text_atomic,
)
from labelwise.labels.fusion import TiePolicy, fuse, staple
from labelwise.metrics import per_class_overlap

__all__ = ["FUSED_RATER", "FuseReport", "fuse_dataset", "multiclass_dice"]

logger = logging.getLogger(__name__)

FUSED_RATER = "fused"


@dataclass
class FuseReport:
    """What :func:`fuse_dataset` did.

    Attributes:
        dest: The written dataset folder.
        fused: Ids of the cases fused.
        unlabelled: Ids of the cases copied without a label.
        failures: Case id -> one-line reason, for the cases that could not be processed (left out of DEST).
        reliability: One dict per rater (the rows of ``reliability.csv``).

    """

    dest: Path
    fused: list[str] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    reliability: list[dict[str, Any]] = field(default_factory=list)


def multiclass_dice(a: NDArray[Any], b: NDArray[Any], num_classes: int) -> float:
    """Mean Dice over the foreground classes present in ``a`` or ``b``; 1.0 when both are all background.

    The ``dice_vs_fused`` column of the reliability tables: :func:`labelwise.metrics.per_class_overlap` with the
    ``"nnunet"`` empty convention (nan for a class absent from both maps), averaged over the other classes.

    Args:
        a: ``(*spatial)`` integer label map, values in ``[0, num_classes)``.
        b: ``(*spatial)`` integer label map, same shape.
        num_classes: Number of classes including background.

    Example:
        >>> multiclass_dice(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3)
        0.6666666666666666

    """
    scores = per_class_overlap(a, b, num_classes, "dice", empty="nnunet")
    present = scores[~np.isnan(scores)]
    return float(present.mean()) if present.size else 1.0


def _nanmean(values: list[float]) -> float:
    v = [x for x in values if not math.isnan(x)]
    return float(np.mean(v)) if v else float("nan")


def fuse_dataset(
    source: str | Path | Dataset,
    dest: str | Path,
    method: str = "majority",
    *,
    tie: TiePolicy = "lowest",
    overwrite: bool = False,
    on_case: Callable[[str], None] | None = None,
    case_ids: Iterable[str] | None = None,
) -> FuseReport:
    """Fuse each case's raters with a registered rule and write the result as a new dataset.

    Args:
        source: Source dataset folder, or an open dataset (e.g. ``Dataset(root, labels="reviewed")``).
        dest: Output folder (layout in the module docstring).
        method: Fusion rule name (``labelwise.labels.fusion_rules.available()``).
        tie: ``"lowest"`` or ``"highest"`` (label maps cannot hold an "undecided" value; undecided voxels are
            written as a separate mask instead).
        overwrite: Replace an existing dataset at ``dest``.
        on_case: Called with each case id after it is processed (progress bars).
        case_ids: Only these cases (default: all).

    Returns:
        A :class:`FuseReport`. A case that fails (unreadable file, bad labels) is recorded in ``failures`` and
        left out; the other cases are still written and the manifest lists them.

    Raises:
        DataError: unreadable source manifest, ``dest`` overlapping the source, ``dest`` already a dataset
            without ``overwrite`` (or a folder of other files). ``dest`` is unchanged when this is raised.
        ConfigError: unknown method or tie policy.

    """
    from labelwise.labels.fusion import fusion_rules

    fusion_rules.get(method)
    if tie == "undecided":
        raise DataError("fused label maps cannot hold an undecided value; use tie 'lowest' or 'highest'")
    ds = source if isinstance(source, Dataset) else Dataset(source)
    check_output_not_input(dest, [ds.root], "--out")
    with StagedDir(dest, overwrite=overwrite, marker="dataset.json", kind="dataset") as stage:
        report = _fuse_into(ds, stage.path, method, tie, on_case, case_ids)
    report.dest = Path(dest)
    return report


def _fuse_into(
    ds: Dataset,
    out: Path,
    method: str,
    tie: TiePolicy,
    on_case: Callable[[str], None] | None,
    case_ids: Iterable[str] | None,
) -> FuseReport:
    """Write the fused dataset into the empty folder ``out`` (see :func:`fuse_dataset`)."""
    k = len(ds.class_names)
    writer = DatasetWriter(
        out,
        name=f"{ds.name}-{method}",
        spatial_dims=ds.spatial_dims,
        class_names=ds.class_names,
        rater_ids=(FUSED_RATER,),
        image_label_names=ds.manifest.image_label_names,
        description=f"{method} fusion (tie: {tie}) of the raters of {ds.name}. {ds.manifest.description}".strip(),
        source=f"labelwise fuse {method} from {ds.root.resolve()}",
    )
    report = FuseReport(dest=out)
    per_case: list[dict[str, Any]] = []
    ids = list(case_ids) if case_ids is not None else ds.ids
    for cid in ids:
        try:
            case = ds.load(cid)
            if case.num_raters == 0:
                writer.add_case(
                    cid,
                    case.image,
                    spacing_mm=case.spacing_mm,
                    affine=case.affine,
                    image_labels=case.image_labels,
                    split=case.split,
                    labelled_slices=case.labelled_slices,
                )
                report.unlabelled.append(cid)
                continue
            stack, present = case.rater_stack(ds.rater_ids)
            if int(stack.max(initial=0)) >= k or int(stack.min(initial=0)) < 0:
                raise DataError(f"labels outside 0..{k - 1} (classes {list(ds.class_names)})")
            result = fuse(method, stack, present, num_classes=k, tie=tie)
            # Reliability only where labels are valid (partially labelled volumes: the labelled slices).
            valid = stack if case.labelled_slices is None else stack[..., list(case.labelled_slices)]
            st = staple(valid, present, num_classes=k, tie=tie)
            sp, aff = case.spacing_mm, case.affine
            if result.probabilities is not None:
                write_image(safe_join(out, "probabilities", f"{cid}.nii.gz"), result.probabilities, sp, aff)
            write_label(safe_join(out, "undecided", f"{cid}.nii.gz"), result.undecided.astype(np.uint8), sp, aff)
            writer.add_case(
                cid,
                case.image,
                raters={FUSED_RATER: result.label},
                image_labels=case.image_labels,
                split=case.split,
                labelled_slices=case.labelled_slices,
                spacing_mm=sp,
                affine=aff,
            )
            for j, rid in enumerate(ds.rater_ids):
                if present[j]:
                    per_case.append(
                        {
                            "case": cid,
                            "rater": rid,
                            "sensitivity": float(st.sensitivity[j]),
                            "specificity": float(st.specificity[j]),
                            "dice_vs_fused": multiclass_dice(valid[j], result.label[..., list(case.labelled_slices)], k)
                            if case.labelled_slices is not None
                            else multiclass_dice(stack[j], result.label, k),
                        }
                    )
            report.fused.append(cid)
        except Exception as exc:  # one bad case must not stop the others; it is reported and exit code is 1
            msg = str(exc) if isinstance(exc, DataError) else f"{type(exc).__name__}: {exc}"
            report.failures[cid] = msg
            logger.error("case %s failed: %s", cid, msg)
        finally:
            if on_case is not None:
                on_case(cid)
    for rid in ds.rater_ids:
        rows = [r for r in per_case if r["rater"] == rid]
        report.reliability.append(
            {
                "rater": rid,
                "cases": len(rows),
                "sensitivity": _nanmean([r["sensitivity"] for r in rows]),
                "specificity": _nanmean([r["specificity"] for r in rows]),
                "dice_vs_fused": _nanmean([r["dice_vs_fused"] for r in rows]),
            }
        )
    _write_csv(
        out / "reliability.csv", report.reliability, ["rater", "cases", "sensitivity", "specificity", "dice_vs_fused"]
    )
    _write_csv(
        out / "reliability_cases.csv", per_case, ["case", "rater", "sensitivity", "specificity", "dice_vs_fused"]
    )
    write_json_atomic(
        out / "fusion.json",
        {
            "method": method,
            "tie": tie,
            "source": str(ds.root.resolve()),
            "labels": ds.provenance(),
            "fused": len(report.fused),
            "unlabelled": len(report.unlabelled),
            "failures": report.failures,
        },
    )
    writer.finish()
    return report


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: (f"{r[c]:.6g}" if isinstance(r[c], float) else r[c]) for c in columns})
    write_text_atomic(path, buf.getvalue())
