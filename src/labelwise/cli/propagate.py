"""``labelwise propagate VOLUME --labels SLICE_LABELS --out OUT``: fill a volume from one or a few annotated slices.

SLICE_LABELS is a label map (NIfTI or any format labelwise reads) with the **same geometry as VOLUME** (shape,
spacing and orientation). Only its annotated slices count, i.e. the slices along the last axis named by
``--slices 40,60``, or, without ``--slices``, every slice that contains any foreground; the rest of the file is
ignored (it may be zeros). The output is a full label map in VOLUME's geometry. Without ``--run`` the
training-free propagation is used; ``--run RUN`` uses the STCN of a ``propagation`` run.

``--classes liver,kidney`` propagates only those classes (every other value is background), in that order: they
become classes 1..n for the propagation (argmax ties go to the earlier one) and are written back with their
original values; ``--probs`` then holds n + 1 channels (background, then the listed classes). Class names are
looked up in the classes of ``--data DATASET`` (the dataset whose numbering SLICE_LABELS uses); label values
(``--classes 5,1``) work with or without it (an item that names one class and is the value of another is refused
as ambiguous).

``--out`` and ``--probs`` may not be (or lie inside) an input, nor the same file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

__all__ = ["propagate"]


def _parse_ints(text: str | None, option: str) -> tuple[int, ...] | None:
    from labelwise.errors import UsageError

    if text is None or not text.strip():
        return None
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"{option} must be comma-separated integers, got {text!r}") from None


def _select_classes(
    ann: dict[int, np.ndarray], values: tuple[int, ...] | None
) -> tuple[dict[int, np.ndarray], np.ndarray | None]:
    """Annotations with ``values`` renumbered 1..n (others 0) and the lookup table back, or unchanged."""
    from labelwise.errors import UsageError

    if values is None:
        return ann, None
    if len(set(values)) != len(values) or min(values) < 1:
        raise UsageError(f"--classes must be distinct foreground classes (label values >= 1), got {list(values)}")
    back = np.array((0, *values), dtype=np.int64)
    out = {}
    for z, lab in ann.items():
        new = np.zeros(lab.shape, dtype=np.int16)
        for i, v in enumerate(values, start=1):
            new[lab == v] = i
        out[z] = new
    return out, back


def propagate(
    volume: Path = typer.Argument(..., help="3D image (NIfTI, ...)."),
    labels: Path = typer.Option(..., "--labels", help="Label map in VOLUME's geometry, valid on annotated slices."),
    out: Path = typer.Option(..., "--out", help="Output label map (e.g. out.nii.gz)."),
    slices: str | None = typer.Option(
        None, "--slices", help="Annotated slice indices (last axis), e.g. 40,60; default: slices with foreground."
    ),
    run: Path | None = typer.Option(None, "--run", help="A `propagation` run directory (default: training-free)."),
    allow_empty: bool = typer.Option(False, "--allow-empty", help="Accept listed slices without foreground."),
    classes: str | None = typer.Option(
        None,
        "--classes",
        help="Only these classes, by name (with --data) or label value, e.g. liver,kidney or 5,1 (others: "
        "background); default: every value.",
    ),
    data: Path | None = typer.Option(None, "--data", help="Dataset whose class names --classes uses."),
    probs: Path | None = typer.Option(None, "--probs", help="Also write class probabilities (K channels) here."),
    device: str | None = typer.Option(None, "--device", help="torch device for --run (default: cuda if available)."),
    old_model: Path | None = typer.Option(None, "--model", hidden=True, help="Deprecated: use --run."),
) -> None:
    """Propagate the annotated slices of SLICE_LABELS through VOLUME and write the filled label map to OUT."""
    import torch

    from labelwise.cli.common import class_indices, moved_optional
    from labelwise.data import Dataset
    from labelwise.engine import RunDir
    from labelwise.engine.config import resolve_device
    from labelwise.errors import DataError
    from labelwise.io import check_output_not_input, write_image, write_label
    from labelwise.methods.propagation import load_propagation_model, read_slice_annotations
    from labelwise.methods.propagation import propagate as run_propagation

    new = "labelwise propagate VOLUME --labels LABELS --run RUN --out OUT"
    old = "labelwise propagate VOLUME --labels LABELS --model RUN --out OUT"
    model = moved_optional(run, old_model, option="--run", old=old, new=new)
    inputs = [volume, labels, model, data]
    check_output_not_input(out, inputs)
    if probs is not None:
        check_output_not_input(probs, [*inputs, out], "--probs")
    for path in (out, probs):
        if path is not None and path.is_dir():
            raise DataError("is a folder; give a file name such as filled.nii.gz", path)
    torch_device = resolve_device(device) if model is not None else None
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    vol, ann, img = read_slice_annotations(volume, labels, _parse_ints(slices, "--slices"), allow_empty)
    names = Dataset(data).class_names if data is not None else None
    wanted = class_indices(classes, names) if classes is not None and classes.strip() else None
    ann, back = _select_classes(ann, wanted)
    net = None
    if model is not None:
        net = load_propagation_model(model, torch_device)
        RunDir(model).warn_if_unfinished()
    k = None if back is None else len(back)
    result = run_propagation(vol, ann, net, num_classes=k, allow_empty=allow_empty)
    filled = result.labels if back is None else back[result.labels].astype(np.int16)
    write_label(out, filled, img.spacing_mm, img.affine)
    if probs is not None:
        write_image(probs, result.probs, img.spacing_mm, img.affine)
    typer.echo(f"propagated from slice(s) {', '.join(map(str, result.annotated))} -> {out}")
