"""Draw ``docs/images/weak_ph2_val.png``: a fold's val images with the `cltn` and `cam` outputs.

Usage: ``python docs/scripts/weak_ph2_figure.py DATASET CLTN_RUN CAM_RUN OUT.png``. Columns: the image at the
working size, the expert mask, the raw `cltn` mask, the fused image, the final `cltn` mask and the `cam` mask
(both at probability 0.5, as scored by ``labelwise evaluate``).
"""

from __future__ import annotations

import sys

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from labelwise.data import Dataset
from labelwise.data.domains import prepare_image
from labelwise.methods.cam import CAMMethod
from labelwise.methods.cltn import CLTNMethod

COLUMNS = ["image", "expert mask", "cltn raw mask", "cltn fused image", "cltn mask", "cam mask"]


def rgb(chw: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` in [-1, 1] -> ``(H, W, C)`` in [0, 1]."""
    return np.clip((np.moveaxis(chw, 0, -1) + 1) / 2, 0, 1)


def main(data: str, cltn_run: str, cam_run: str, out: str) -> None:
    """Write the figure to ``out``."""
    ds = Dataset(data)
    cltn, cam = CLTNMethod.load_predictor(cltn_run, "cpu"), CAMMethod.load_predictor(cam_run, "cpu")
    ids = ds.split_ids("val")
    fig, ax = plt.subplots(len(ids), len(COLUMNS), figsize=(1.6 * len(COLUMNS), 1.5 * len(ids)), squeeze=False)
    for i, cid in enumerate(ids):
        case = ds[cid]
        img = prepare_image(case.image, cltn.plan.channels, cltn.config.domain.image_size, cid)
        mask, _, fused = cltn.translate(img)
        panels = [
            rgb(img),
            case.raters[0] > 0,
            mask,
            rgb(fused),
            cltn.predict(case).probs[1] >= 0.5,
            cam.predict(case).probs[1] >= 0.5,
        ]
        for j, panel in enumerate(panels):
            ax[i, j].imshow(panel, cmap="viridis" if j == 2 else "gray", vmin=0, vmax=1)
            ax[i, j].set_xticks([])
            ax[i, j].set_yticks([])
            if i == 0:
                ax[i, j].set_title(COLUMNS[j], fontsize=8)
        ax[i, 0].set_ylabel(cid, fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=70)


if __name__ == "__main__":
    main(*sys.argv[1:5])
