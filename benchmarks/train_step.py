"""Training-step overhead: labelwise's Trainer vs a bare PyTorch loop, same model, batch and optimiser.

Run: ``python benchmarks/train_step.py [--steps 30] [--size 128] [--batch 8]``. The engine run includes
everything a real run does per step (sample source + DataLoader collation, loss logging with the cross-rank
mean, CSV and TensorBoard logs, LR schedule, periodic checkpoints every 50 steps); the bare loop reuses one
pre-built batch tensor. Reported: median seconds per optimiser step after 5 warm-up steps, and the overhead
``engine / bare - 1`` (target <= 10%).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from typing import Any

import numpy as np
import torch

from labelwise.engine import StepContext, TrainConfig, Trainer, TrainTask
from labelwise.models import ModelSpec, build_model, dice_ce_loss

WARMUP = 5


class FixedSource:
    """Returns sample ``index % B`` of one pre-built batch (no augmentation: the bare loop has none)."""

    def __init__(self, images: np.ndarray, targets: np.ndarray) -> None:
        self.images, self.targets = images, targets

    def sample(self, epoch: int, index: int, rng: np.random.Generator) -> dict[str, Any]:
        i = index % len(self.images)
        return {"image": self.images[i], "target": self.targets[i]}


class Task(TrainTask):
    def __init__(self, net: torch.nn.Module) -> None:
        self.modules = {"net": net}

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> torch.Tensor:
        return dice_ce_loss(ctx.module("net")(batch["image"]), batch["target"])


class Clock:
    def __init__(self) -> None:
        self.stamps: list[float] = []

    def log(self, phase: str, metrics: Any, step: int, epoch: int) -> None:
        if phase == "train":
            self.stamps.append(time.perf_counter())

    def truncate(self, step: int) -> None:
        pass

    def close(self) -> None:
        pass


def median_step(stamps: list[float]) -> float:
    d = np.diff(stamps[WARMUP:])
    return float(statistics.median(d.tolist()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rng = np.random.default_rng(0)
    images = rng.normal(size=(args.batch, 1, args.size, args.size)).astype(np.float32)
    fg = (images[:, 0] > 0.5).astype(np.float32)
    targets = np.stack([1 - fg, fg], axis=1)
    spec = ModelSpec("unet", {"channels": [32, 64, 128, 256], "num_res_units": 2})
    cfg = TrainConfig(epochs=1, steps_per_epoch=args.steps, batch_size=args.batch, progress=False, amp=True, seed=0)

    # bare PyTorch loop
    torch.manual_seed(0)
    net = build_model(spec, 2, 1, 2).to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    x, y = torch.from_numpy(images).to(device), torch.from_numpy(targets).to(device)
    stamps = []
    for _ in range(args.steps):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = dice_ce_loss(net(x), y)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        loss.item()
        stamps.append(time.perf_counter())
    bare = median_step(stamps)

    # engine
    torch.manual_seed(0)
    net = build_model(spec, 2, 1, 2)
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        Trainer(Task(net), cfg, tmp, FixedSource(images, targets), device=device, loggers=[clock]).fit()
    engine = median_step(clock.stamps)
    print(
        json.dumps(
            {
                "benchmark": "train_step",
                "device": str(device),
                "threads": args.threads,
                "model": "unet channels [32, 64, 128, 256], 2 res units",
                "batch": [args.batch, 1, args.size, args.size],
                "bare_s_per_step": round(bare, 4),
                "engine_s_per_step": round(engine, 4),
                "overhead": round(engine / bare - 1, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
