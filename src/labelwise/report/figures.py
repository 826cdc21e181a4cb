"""Matplotlib figures for reports: case overlays, reliability diagrams, agreement matrices.

All functions return PNG bytes so callers can embed them (base64) or write them; matplotlib is imported lazily
with the non-interactive Agg backend.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["agreement_png", "case_panel_png", "display_slice", "reliability_png"]

_COLOURS = (
    np.array(
        [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180]],
        dtype=np.float32,
    )
    / 255.0
)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def display_slice(array: np.ndarray, slice_index: int | None) -> np.ndarray:
    """Return a 2D view of a ``(*spatial)`` array (3D: the given index along the last axis)."""
    if array.ndim == 2:
        return array
    index = array.shape[-1] // 2 if slice_index is None else slice_index
    view: np.ndarray = np.asarray(array[..., index])
    return view


def _image_rgb(image: np.ndarray, slice_index: int | None) -> np.ndarray:
    """``(C, *spatial)`` -> ``(H, W, 3)`` in [0, 1] with 1st/99th percentile windowing."""
    chans = [display_slice(c, slice_index) for c in image[:3]]
    arr = np.stack(chans, axis=-1) if len(chans) == 3 else np.repeat(chans[0][..., None], 3, axis=-1)
    lo, hi = (float(v) for v in np.percentile(arr, [1, 99]))
    rgb: np.ndarray = np.clip((arr - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)
    return rgb


def _overlay(rgb: np.ndarray, label: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    out = rgb.copy()
    lab = label.astype(np.int64)
    fg = lab > 0
    colours = _COLOURS[1 + (lab[fg] - 1) % (len(_COLOURS) - 1)]
    out[fg] = (1 - alpha) * out[fg] + alpha * colours
    return out


def case_panel_png(
    image: np.ndarray,
    panels: Sequence[tuple[str, np.ndarray, str]],
    slice_index: int | None = None,
    title: str = "",
) -> bytes:
    """Draw an image with a row of overlays.

    Args:
        image: ``(C, *spatial)`` intensities.
        panels: ``(title, array, kind)`` with ``array`` ``(*spatial)``; kind ``"label"`` overlays a label map,
            ``"prob"`` shows a [0, 1] map (probability, soft consensus) with a colour bar, ``"heat"`` shows an
            unnormalised map (uncertainty).
        slice_index: Slice along the last axis for 3D (default: middle).
        title: Figure title.

    Returns:
        PNG bytes.

    """
    plt = _pyplot()
    rgb = _image_rgb(image, slice_index)
    n = 1 + len(panels)
    cols = min(n, 6)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    axes[0, 0].imshow(rgb)
    axes[0, 0].set_title("image", fontsize=8)
    for k, (name, arr, kind) in enumerate(panels, start=1):
        ax = axes[k // cols, k % cols]
        view = display_slice(np.asarray(arr), slice_index)
        if kind == "label":
            ax.imshow(_overlay(rgb, view))
        elif kind == "prob":
            ax.imshow(rgb)
            ax.imshow(np.ma.masked_less(view, 0.02), cmap="viridis", vmin=0, vmax=1, alpha=0.7)
        else:
            ax.imshow(view, cmap="magma")
        ax.set_title(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _png(fig)


def reliability_png(confidence: np.ndarray, accuracy: np.ndarray, counts: np.ndarray, title: str = "") -> bytes:
    """Reliability diagram: mean predicted probability vs observed frequency per bin (empty bins skipped)."""
    plt = _pyplot()
    fig, (ax, axc) = plt.subplots(
        2, 1, figsize=(3.6, 4.2), gridspec_kw={"height_ratios": [3, 1]}, sharex=True, squeeze=True
    )
    keep = np.asarray(counts) > 0
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect")
    ax.plot(np.asarray(confidence)[keep], np.asarray(accuracy)[keep], "o-", color="C0", ms=3, label="model")
    ax.set_ylabel("observed frequency")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    centres = np.asarray(confidence)[keep]
    axc.bar(centres, np.asarray(counts)[keep], width=0.04, color="C0")
    axc.set_yscale("log")
    axc.set_xlabel("predicted probability")
    axc.set_ylabel("voxels")
    return _png(fig)


def agreement_png(matrix: np.ndarray, labels: Sequence[str], title: str = "", vmin: float = 0.0) -> bytes:
    """Heat map of a square agreement matrix (e.g. pairwise Dice between raters) with values printed."""
    plt = _pyplot()
    m = np.asarray(matrix, dtype=float)
    size = 1.2 + 0.45 * max(m.shape)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(m, vmin=vmin, vmax=1, cmap="viridis")
    ax.set_xticks(range(m.shape[1]), labels=list(labels)[: m.shape[1]], rotation=90, fontsize=7)
    ax.set_yticks(range(m.shape[0]), labels=list(labels)[: m.shape[0]], fontsize=7)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6, color="w" if m[i, j] < 0.6 else "k")
    fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        ax.set_title(title, fontsize=9)
    return _png(fig)
