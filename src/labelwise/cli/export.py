"""``labelwise export dicom-seg``: predictions or fused labels as DICOM Segmentations of their source series."""

from __future__ import annotations

from pathlib import Path

import typer

from labelwise.cli.common import progress

__all__ = ["app", "dicom_seg"]

app = typer.Typer(help="Export predictions or labels to clinical formats.", no_args_is_help=True)


@app.command("dicom-seg")
def dicom_seg(
    pred: Path = typer.Argument(..., help="Prediction folder (labelwise predict) or a dataset, e.g. a fuse output."),
    data: Path = typer.Option(..., "--data", help="The dataset the predictions belong to (imported from DICOM)."),
    out: Path = typer.Option(..., "--out", help="Output folder: one <case>.dcm DICOM-SEG per case."),
    dicom: Path | None = typer.Option(
        None, "--dicom", help="Folder of the source series, <case>/ or <case>.dcm (default: <source>/images)."
    ),
    rater: str = typer.Option("fused", "--rater", help="Rater exported when PRED is a dataset folder."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
) -> None:
    """Write one DICOM Segmentation per case (one segment per class) referencing the case's DICOM series."""
    from labelwise.data.export import export_dicom_seg

    written = export_dicom_seg(pred, data, out, dicom=dicom, rater=rater, overwrite=overwrite, track=progress)
    typer.echo(f"wrote {len(written)} DICOM-SEG file(s) to {out}")
