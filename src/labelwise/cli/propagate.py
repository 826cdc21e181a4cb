"""``labelwise propagate VOLUME --labels SLICE_LABELS --out OUT``: fill a volume from one or a few annotated slices.

SLICE_LABELS is a label map (NIfTI or any format labelwise reads) with the **same geometry as VOLUME** (shape,
spacing and orientation). Only its annotated slices count, i.e. the slices along the last axis named by
``--slices 40,60``, or, without ``--slices``, every slice that contains any foreground; the rest of the file is
ignored (it may be zeros). The output is a full label map in VOLUME's geometry. Without ``--model`` the
training-free propagation is used; ``--model RUN_DIR`` uses the STCN of a ``propagation`` run.
"""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["propagate"]


def _parse_slices(text: str | None) -> tuple[int, ...] | None:
    from labelwise.errors import ConfigError

    if text is None or not text.strip():
        return None
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--slices must be comma-separated integers, got {text!r}") from None


def propagate(
    volume: Path = typer.Argument(..., help="3D image (NIfTI, ...)."),
    labels: Path = typer.Option(..., "--labels", help="Label map in VOLUME's geometry, valid on annotated slices."),
    out: Path = typer.Option(..., "--out", help="Output label map (e.g. out.nii.gz)."),
    slices: str | None = typer.Option(
        None, "--slices", help="Annotated slice indices (last axis), e.g. 40,60; default: slices with foreground."
    ),
    model: Path | None = typer.Option(None, "--model", help="A `propagation` run directory (default: training-free)."),
    allow_empty: bool = typer.Option(False, "--allow-empty", help="Accept listed slices without foreground."),
    probs: Path | None = typer.Option(None, "--probs", help="Also write class probabilities (K channels) here."),
    device: str | None = typer.Option(None, "--device", help="torch device for --model (default: cuda if available)."),
) -> None:
    """Propagate the annotated slices of SLICE_LABELS through VOLUME and write the filled label map to OUT."""
    import torch

    from labelwise.io import write_image, write_label
    from labelwise.methods.propagation import load_propagation_model, read_slice_annotations
    from labelwise.methods.propagation import propagate as run_propagation

    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    vol, ann, img = read_slice_annotations(volume, labels, _parse_slices(slices), allow_empty)
    net = load_propagation_model(model, device) if model is not None else None
    result = run_propagation(vol, ann, net, allow_empty=allow_empty)
    write_label(out, result.labels, img.spacing_mm, img.affine)
    if probs is not None:
        write_image(probs, result.probs, img.spacing_mm, img.affine)
    typer.echo(f"propagated from slice(s) {', '.join(map(str, result.annotated))} -> {out}")
