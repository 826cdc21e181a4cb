"""``labelwise export dicom-seg --pred PRED --data DATASET --out SEG_DIR``: DICOM Segmentations of the source series.

PRED is a prediction folder or a dataset folder (e.g. a ``labelwise fuse`` output, whose ``--rater`` is exported).
"""

from __future__ import annotations

from pathlib import Path

import typer

from labelwise.cli.common import Command, moved
from labelwise.progress import track

__all__ = ["app", "dicom_seg"]

app = typer.Typer(help="Export predictions or labels to clinical formats.", no_args_is_help=True)


@app.command("dicom-seg", cls=Command)
def dicom_seg(
    pred: Path | None = typer.Option(
        None, "--pred", help="Prediction folder (labelwise predict) or a dataset, e.g. a fuse output (required)."
    ),
    data: Path = typer.Option(..., "--data", help="The dataset the predictions belong to (imported from DICOM)."),
    out: Path = typer.Option(..., "--out", help="Output folder: one <case>.dcm DICOM-SEG per case."),
    dicom: Path | None = typer.Option(
        None, "--dicom", help="Folder of the source series, <case>/ or <case>.dcm (default: <source>/images)."
    ),
    rater: str = typer.Option("fused", "--rater", help="Rater exported when --pred is a dataset folder."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
    old_pred: Path | None = typer.Argument(None, hidden=True, help="Deprecated: use --pred."),
) -> None:
    """Write one DICOM Segmentation per case (one segment per class) referencing the case's DICOM series."""
    from labelwise.data.export import export_dicom_seg

    old, new = "labelwise export dicom-seg PRED", "labelwise export dicom-seg --pred PRED"
    source = moved(pred, old_pred, option="--pred", old=old, new=new)
    written = export_dicom_seg(source, data, out, dicom=dicom, rater=rater, overwrite=overwrite, track=track)
    typer.echo(f"wrote {len(written)} DICOM-SEG file(s) to {out}")
