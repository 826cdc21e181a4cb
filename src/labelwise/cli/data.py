"""``labelwise data import|import-rater|export|check|stats|split``.

The dataset is ``--data DATASET`` and a written dataset or file ``--out``; only an import's source (not a labelwise
dataset yet) is positional: ``labelwise data import FORMAT SRC --out DATASET``.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from labelwise.cli.common import LABELS_OPTION, Command, Labels, moved, moved_optional
from labelwise.progress import track

if TYPE_CHECKING:
    import numpy as np

    from labelwise.data import Dataset
    from labelwise.data.export import Corrections

__all__ = [
    "ImportFormat",
    "RaterSourceFormat",
    "app",
    "check",
    "export_app",
    "export_nnunet",
    "import_",
    "import_rater",
    "split",
    "stats",
]

app = typer.Typer(help="Import, check and summarise datasets.", no_args_is_help=True)
export_app = typer.Typer(help="Export a dataset to another tool's layout.", no_args_is_help=True)
app.add_typer(export_app, name="export")


class ImportFormat(str, Enum):
    """``FORMAT`` of ``data import``: the registered importers of :mod:`labelwise.data.importers` (docs/data.md)."""

    qubiq = "qubiq"
    medical_matting = "medical-matting"
    lidc_probunet = "lidc-probunet"
    riga = "riga"
    ph2 = "ph2"
    nifti_partial = "nifti-partial"
    mni152 = "mni152"
    folder = "folder"
    nnunet = "nnunet"
    msd = "msd"


_LABEL_FOLDER_FORMATS = (ImportFormat.nnunet, ImportFormat.msd)
_DATA_HELP = "Dataset folder (or its dataset.json) (required)."


class RaterSourceFormat(str, Enum):
    """Source formats of ``data import-rater``."""

    auto = "auto"
    nifti = "nifti"
    totalsegmentator = "totalsegmentator"
    dicom_seg = "dicom-seg"


@app.command("import", cls=Command)
def import_(
    fmt: ImportFormat = typer.Argument(..., metavar="FORMAT", help="Source layout (see docs/data.md)."),
    src: Path = typer.Argument(..., help="Source file or folder."),
    out: Path | None = typer.Option(None, "--out", help="Dataset folder to create (required)."),
    task: str | None = typer.Option(None, "--task", help="Sub-task (qubiq: task01..; nifti-partial: class-map key)."),
    classes: str | None = typer.Option(None, "--classes", help="Comma-separated class names, background first."),
    seed: int = typer.Option(0, "--seed", help="Seed of the case-level split."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset at --out."),
    raters: str | None = typer.Option(
        None,
        "--raters",
        help="nnunet, msd: label folders to import and their rater ids, e.g. labelsTr=expert,labelsTr_fast=fast "
        "(default: every labelsTr* folder; labelsTr is rater 'label').",
    ),
    old_dest: Path | None = typer.Argument(None, hidden=True, help="Deprecated: use --out."),
) -> None:
    """Import SRC (layout FORMAT) into a labelwise dataset folder OUT; the manifest is written last."""
    from labelwise.data.importers import ImportOptions, LabelFolderOptions, import_dataset, parse_rater_mapping
    from labelwise.errors import UsageError

    dest = moved(
        out,
        old_dest,
        option="--out",
        old="labelwise data import FORMAT SRC DEST",
        new="labelwise data import FORMAT SRC --out DEST",
    )
    class_names = tuple(c.strip() for c in classes.split(",") if c.strip()) if classes else None
    options: ImportOptions
    if raters is not None:
        if fmt not in _LABEL_FOLDER_FORMATS:
            names = " and ".join(f.value for f in _LABEL_FOLDER_FORMATS)
            raise UsageError(f"--raters is read by the {names} importers only")
        options = LabelFolderOptions(
            task=task, class_names=class_names, seed=seed, overwrite=overwrite, raters=parse_rater_mapping(raters)
        )
    else:
        options = ImportOptions(task=task, class_names=class_names, seed=seed, overwrite=overwrite)
    manifest = import_dataset(fmt.value, src, dest, options, track=track)
    splits = {s: sum(c.split == s for c in manifest.cases) for s in ("train", "val", "test")}
    typer.echo(
        f"imported {len(manifest.cases)} cases ({manifest.spatial_dims}D, {len(manifest.rater_ids)} raters, "
        f"{len(manifest.class_names)} classes; train {splits['train']} / val {splits['val']} / "
        f"test {splits['test']}) into {dest}"
    )


@app.command("import-rater", cls=Command)
def import_rater(
    src: Path = typer.Argument(..., help="A model's output: folder (or one file for a one-case dataset)."),
    data: Path | None = typer.Option(None, "--data", help="Existing dataset folder (or its dataset.json) (required)."),
    name: str = typer.Option(..., "--name", help="Id of the new rater."),
    fmt: RaterSourceFormat = typer.Option(
        RaterSourceFormat.auto,
        "--format",
        help="nifti: <case>.nii.gz label maps; totalsegmentator: <case>/<structure>.nii.gz masks; dicom-seg: "
        "<case>.dcm DICOM Segmentations; auto: guess from the files.",
    ),
    classes_map: str | None = typer.Option(
        None,
        "--classes-map",
        help="Source value / structure / segment label to dataset class, e.g. 5=liver,kidney_left=kidney "
        "(nifti: values not named become background).",
    ),
    allow_missing: bool = typer.Option(
        False, "--allow-missing", help="Import the cases that have a file even if others have none."
    ),
    dicom: Path | None = typer.Option(
        None, "--dicom", help="dicom-seg: folder of the source series (<case>/); checks the referenced instances."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing rater of that name."),
    old_src: Path | None = typer.Argument(None, hidden=True, help="Deprecated: DATASET SRC; use SRC --data DATASET."),
) -> None:
    """Add rater NAME to DATASET from a segmentation model's output in SRC (the manifest is written last)."""
    from labelwise.data.raters import import_rater as run_import
    from labelwise.data.raters import parse_classes_map

    # The old spelling `import-rater DATASET SRC` fills SRC with the dataset and the hidden argument with the source.
    dataset = moved(
        data,
        src if old_src is not None else None,
        option="--data",
        old="labelwise data import-rater DATASET SRC",
        new="labelwise data import-rater SRC --data DATASET",
    )
    if old_src is not None:
        src = old_src

    report = run_import(
        dataset,
        src,
        name,
        fmt.value,
        parse_classes_map(classes_map) if classes_map else None,
        allow_missing=allow_missing,
        overwrite=overwrite,
        dicom=dicom,
        track=track,
    )
    typer.echo(f"added rater {report.rater} ({report.format}) to {len(report.imported)} cases of {dataset}")
    if report.missing:
        typer.echo(f"  no file for {len(report.missing)} case(s): {', '.join(report.missing[:10])}")
    if report.extra:
        typer.echo(f"  skipped {len(report.extra)} entries that match no case: {', '.join(report.extra[:10])}")
    if report.skipped_structures:
        shown = ", ".join(report.skipped_structures[:10])
        typer.echo(f"  skipped {len(report.skipped_structures)} structure(s) that match no class: {shown}")


@export_app.command("nnunet", cls=Command)
def export_nnunet(
    data: Path | None = typer.Option(None, "--data", help=_DATA_HELP),
    out: Path | None = typer.Option(
        None, "--out", help="nnU-Net raw folder (nnUNet_raw) that receives DatasetNNN_Name/ (required)."
    ),
    labels: str = typer.Option(
        ...,
        "--labels",
        help="Labels for labelsTr: fused (a `labelwise fuse` output), rater:NAME, or reviewed (as --labels reviewed "
        "everywhere: each case's latest correction, rejected cases left out, --fallback for the others).",
    ),
    dataset_id: int = typer.Option(..., "--id", min=1, max=999, help="nnU-Net dataset id (1..999)."),
    name: str | None = typer.Option(None, "--name", help="Dataset name (default: the manifest's name)."),
    fallback: str = typer.Option(
        "auto",
        "--fallback",
        help="Training cases without the chosen labels: auto (the dataset's only rater, else error), error, skip, "
        "or rater:NAME.",
    ),
    channel_names: str | None = typer.Option(
        None, "--channel-names", help="Comma-separated channel names (CT selects nnU-Net's CT normalisation)."
    ),
    keep_raters: bool = typer.Option(
        False, "--keep-raters", help="Also write every other rater to labelsTr_<rater>/ (read back by `import`)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing DatasetNNN_Name."),
    old_dataset: Path | None = typer.Argument(None, hidden=True, help="Deprecated: use --data."),
    old_dest: Path | None = typer.Argument(None, hidden=True, help="Deprecated: use --out."),
) -> None:
    """Write DATASET as the nnU-Net v2 raw dataset OUT/DatasetNNN_Name (atomically: temp folder, then rename)."""
    from labelwise.cli.common import open_dataset
    from labelwise.data import Dataset
    from labelwise.data.export import export_nnunet as run_export
    from labelwise.errors import DataError
    from labelwise.labels.dataset_fusion import FUSED_RATER

    old, new = "labelwise data export nnunet DATASET DEST", "labelwise data export nnunet --data DATASET --out DEST"
    dataset = moved(data, old_dataset, option="--data", old=old, new=new)
    dest = moved(out, old_dest, option="--out", old=old, new=new)
    choice = f"rater:{FUSED_RATER}" if labels == "fused" else labels
    if labels == "fused" and FUSED_RATER not in Dataset(dataset).rater_ids:
        raise DataError(f"no '{FUSED_RATER}' rater: --labels fused needs a `labelwise fuse` output", dataset)
    corrections = _reviewed_corrections(open_dataset(dataset, Labels.reviewed)) if choice == "reviewed" else None
    report = run_export(
        dataset,
        dest,
        dataset_id,
        choice,
        corrections=corrections,
        fallback=fallback,
        name=name,
        channel_names=[c.strip() for c in channel_names.split(",")] if channel_names else None,
        keep_raters=keep_raters,
        overwrite=overwrite,
        track=track,
    )
    typer.echo(
        f"wrote {report.folder} ({len(report.training)} training, {len(report.test)} test cases; labels {labels}"
        + (f", fallback for {len(report.fallback)}" if report.fallback else "")
        + (f", skipped {len(report.skipped)}" if report.skipped else "")
        + ")"
    )


def _reviewed_corrections(view: Dataset) -> Corrections:
    """The reviewed view as the nnU-Net export takes it: corrected cases, the cases set aside, provenance."""
    from labelwise.data import ReviewStore
    from labelwise.data.export import Corrections

    store = ReviewStore(view.root)

    def latest(case_id: str) -> np.ndarray:
        correction = view.reviews[case_id].correction
        assert correction is not None  # only corrected cases are asked for
        return store.read(correction)

    return Corrections(
        case_ids=frozenset(cid for cid, r in view.reviews.items() if r.status == "corrected"),
        load=latest,
        excluded=frozenset(cid for cid, r in view.reviews.items() if r.status == "rejected"),
        provenance=view.provenance()["cases"],
    )


@app.command("check", cls=Command)
def check(
    data: Path | None = typer.Option(None, "--data", help=_DATA_HELP),
    old_dataset: Path | None = typer.Argument(None, hidden=True, help="Deprecated: use --data."),
) -> None:
    """Check every file of DATASET; list all problems and exit 1 if there are any."""
    from labelwise.data.check import check_dataset
    from labelwise.errors import DataError

    old, new = "labelwise data check DATASET", "labelwise data check --data DATASET"
    dataset = moved(data, old_dataset, option="--data", old=old, new=new)
    report = check_dataset(dataset, track=track)
    if report.review is not None:
        typer.echo(report.review.summary())
    if report.ok:
        typer.echo(f"ok: {report.num_cases} cases in {report.root}, no problems")
        return
    for problem in report.problems:
        typer.secho(f"  {problem}", err=True)
    raise DataError(f"{len(report.problems)} problem(s) in {report.root} ({report.num_cases} cases)")


@app.command("stats", cls=Command)
def stats(
    data: Path | None = typer.Option(None, "--data", help=_DATA_HELP),
    out: Path | None = typer.Option(None, "--out", help="Also write the statistics as JSON to this file."),
    max_classes: int = typer.Option(20, "--max-classes", help="Classes listed (most frequent first)."),
    labels: Labels = LABELS_OPTION,
    old_dataset: Path | None = typer.Argument(None, hidden=True, help="Deprecated: use --data."),
    old_json: Path | None = typer.Option(None, "--json", hidden=True, help="Deprecated: use --out."),
) -> None:
    """Print counts, shapes, spacing, class frequencies, inter-rater agreement and review coverage of DATASET.

    Review coverage (a dataset with a review/ folder): cases reviewed, accepted, rejected, corrected, flagged and
    untouched, and the corrections newer than the label files; in the JSON as "review".
    """
    from labelwise.cli.common import open_dataset
    from labelwise.data import review_coverage
    from labelwise.data.review import REVIEW_DIR
    from labelwise.evaluation import dataset_stats, format_stats
    from labelwise.io import write_json_atomic

    old, new = "labelwise data stats DATASET", "labelwise data stats --data DATASET"
    dataset = moved(data, old_dataset, option="--data", old=old, new=new)
    old, new = "labelwise data stats --json FILE", "labelwise data stats --out FILE"
    json_out = moved_optional(out, old_json, option="--out", old=old, new=new)
    ds = open_dataset(dataset, labels)
    result = dataset_stats(ds, track=track)
    typer.echo(format_stats(result, max_classes=max_classes))
    payload = result.to_json()
    if labels is Labels.reviewed:
        payload["labels"] = ds.provenance()
    if (ds.root / REVIEW_DIR).is_dir():
        coverage = review_coverage(ds.root)
        typer.echo(coverage.summary())
        payload["review"] = coverage.to_json()
    if json_out is not None:
        write_json_atomic(json_out, payload)


@app.command("split", cls=Command)
def split(
    data: Path | None = typer.Option(None, "--data", help=_DATA_HELP),
    out: Path = typer.Option(..., "--out", help="New dataset folder (same cases, new splits)."),
    folds: int = typer.Option(..., "--folds", min=2, help="Number of folds."),
    fold: int = typer.Option(..., "--fold", min=0, help="Fold used as the test split (0-based)."),
    stratify: str | None = typer.Option(None, "--stratify", help="Image-level label to stratify by."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="Share of the non-test cases put in val."),
    seed: int = typer.Option(0, "--seed", help="Seed of the fold assignment."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset at OUT."),
    old_dataset: Path | None = typer.Argument(None, hidden=True, help="Deprecated: use --data."),
) -> None:
    """Write a copy of DATASET whose splits are fold FOLD of a seeded k-fold (see labelwise.data.splits)."""
    from labelwise.data.splits import write_fold_dataset

    old, new = "labelwise data split DATASET", "labelwise data split --data DATASET"
    dataset = moved(data, old_dataset, option="--data", old=old, new=new)

    counts = write_fold_dataset(dataset, out, folds, fold, stratify, val_fraction, seed, overwrite)
    typer.echo(f"fold {fold}/{folds}: train {counts['train']} / val {counts['val']} / test {counts['test']} -> {out}")
