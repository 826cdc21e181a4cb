"""Sliding-window inference: labelwise vs MONAI's ``sliding_window_inference``, same network/patch/overlap.

Run: ``python benchmarks/inference.py [--volume PATH.nii.gz] [--repeats 3]``. Both sides use Gaussian blending,
the same windows batch size and run under ``torch.inference_mode``; timings are the median of ``--repeats``
alternating runs after one warm-up each. Prints a JSON line with both times and the ratio (labelwise / MONAI;
the target is <= 1.0) and the max absolute difference of the outputs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from labelwise.engine import sliding_window
from labelwise.models import ModelSpec, build_model

DEFAULT_VOLUME = (
    Path(__file__).resolve().parents[1].parent
    / "shared/data/mni152_nilearn/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
)


def load_volume(path: Path | None, downsample: int) -> tuple[np.ndarray, str]:
    if path is not None and path.exists():
        from labelwise.io import read_image

        img = read_image(path, 3).array[:, ::downsample, ::downsample, ::downsample]
        img = (img - img.mean()) / max(float(img.std()), 1e-6)
        return np.ascontiguousarray(img, dtype=np.float32), f"{path.name} (every {downsample}th voxel)"
    rng = np.random.default_rng(0)
    return rng.normal(size=(1, 96, 112, 96)).astype(np.float32), "synthetic 96x112x96"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--volume", type=Path, default=DEFAULT_VOLUME)
    ap.add_argument("--downsample", type=int, default=2)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--sw-batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from monai.inferers.utils import sliding_window_inference

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    vol, desc = load_volume(args.volume, args.downsample)
    torch.manual_seed(0)
    net = build_model(ModelSpec("unet", {"channels": [16, 32, 64, 128], "num_res_units": 1}), 3, 1, 2).to(device).eval()
    x = torch.from_numpy(vol)[None].to(device)
    patch = (args.patch,) * 3

    def ours() -> torch.Tensor:
        return sliding_window(net, x, patch, args.overlap, args.sw_batch)

    def monai() -> torch.Tensor:
        out = sliding_window_inference(x, patch, args.sw_batch, net, overlap=args.overlap, mode="gaussian")
        assert isinstance(out, torch.Tensor)
        return out

    def timed(fn: Callable[[], torch.Tensor]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    with torch.inference_mode():
        a, b = ours(), monai()  # warm-up
        diff = float((a - b).abs().max())
        t_ours, t_monai = [], []
        for _ in range(args.repeats):
            t_ours.append(timed(ours))
            t_monai.append(timed(monai))
    mo, mm = statistics.median(t_ours), statistics.median(t_monai)
    print(
        json.dumps(
            {
                "benchmark": "sliding_window_inference",
                "device": str(device),
                "threads": args.threads,
                "volume": desc,
                "shape": list(vol.shape[1:]),
                "patch": list(patch),
                "overlap": args.overlap,
                "sw_batch": args.sw_batch,
                "labelwise_s": round(mo, 4),
                "monai_s": round(mm, 4),
                "ratio": round(mo / mm, 3),
                "max_abs_diff": diff,
            }
        )
    )


if __name__ == "__main__":
    main()
