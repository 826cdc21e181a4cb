"""Child process for the resume and DDP tests: trains the supervised task on a tiny dataset with the engine.

Usage: python train_child.py DATASET WORK_DIR KILL_AT_STEP [BATCH_SIZE [DROPOUT]]
(KILL_AT_STEP < 0: never kill; otherwise SIGKILL itself right after logging that optimiser step.)
"""

from __future__ import annotations

import os
import signal
import sys

import torch

from labelwise.data import Dataset
from labelwise.engine import AugmentConfig, PatchSource, TrainConfig, Trainer, make_plan, seed_everything
from labelwise.methods.supervised import SupervisedConfig, SupervisedTask, _training_arrays
from labelwise.models import ModelSpec, build_model


class KillAt:
    def __init__(self, step: int) -> None:
        self.step = step

    def log(self, phase, metrics, step, epoch):
        if phase == "train" and step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)

    def truncate(self, step):
        pass

    def close(self):
        pass


def main() -> None:
    torch.set_num_threads(1)
    data, work, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    dropout = float(sys.argv[5]) if len(sys.argv) > 5 else 0.2
    ds = Dataset(data)
    train = TrainConfig(
        epochs=3, steps_per_epoch=4, batch_size=batch, lr=3e-3, checkpoint_every=3, progress=False, seed=3, amp=False
    )
    cfg = SupervisedConfig(model=ModelSpec("unet_tiny", {"dropout": dropout}), train=train, augment=AugmentConfig())
    cases = list(ds.cases("train"))
    plan = make_plan(cases, divisor=4, patch_size=(16, 16))
    seed_everything(train.seed)
    net = build_model(cfg.model, 2, plan.channels, plan.num_classes)
    arrays, ids = _training_arrays(ds, cfg, plan)
    source = PatchSource(arrays, plan.patch_size, cfg.augment, "target", 0.5, ids, seed=train.seed)
    loggers = [KillAt(kill_at)] if kill_at >= 0 else []
    result = Trainer(SupervisedTask(net, plan, cfg), train, work, source, list(ds.cases("val")), loggers=loggers).fit()
    print("done", result.steps, result.best_epoch)


if __name__ == "__main__":
    main()
