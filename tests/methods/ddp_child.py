"""Child process of the DDP method tests: trains one method's ``smoke`` preset, then compares weights across ranks.

Usage: torchrun --nproc-per-node 2 ddp_child.py METHOD DATASET RUN_DIR REPORT_JSON

After every ``Trainer.fit`` (every stage), each rank sums each trainable module's parameters; rank 0 writes the
per-rank sums to REPORT_JSON. Under DDP the ranks see different samples, so their weights stay equal only when
the gradients are averaged across ranks, i.e. when the task calls its trainable modules through the DDP wrapper.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import torch
import torch.distributed as dist

from labelwise.engine import Trainer
from labelwise.methods import get_method, load_method_config

REPORT: list[dict[str, Any]] = []


def main() -> None:
    torch.set_num_threads(1)
    name, data, run, report = sys.argv[1:5]
    original = Trainer.fit

    def fit(self: Trainer) -> Any:
        result = original(self)
        sums = {
            k: float(sum(p.detach().double().sum() for p in m.parameters() if p.requires_grad))
            for k, m in self.task.modules.items()
            if any(p.requires_grad for p in m.parameters())
        }
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, sums)
        REPORT.append({"work_dir": str(self.work_dir), "ranks": gathered})
        return result

    Trainer.fit = fit  # type: ignore[method-assign]
    from labelwise.data import Dataset

    method = get_method(name)
    cfg = load_method_config(method, None, ("train.progress=false",), "smoke")
    if cfg.train.batch_size % 2:  # each of the 2 processes takes half of a batch
        cfg = load_method_config(
            method, None, ("train.progress=false", f"train.batch_size={2 * cfg.train.batch_size}"), "smoke"
        )
    method.fit(Dataset(data), cfg, run)
    if dist.get_rank() == 0:
        with open(report, "w", encoding="utf-8") as fh:
            json.dump(REPORT, fh)
    dist.barrier()  # no rank leaves (and tears gloo down) while another still works
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
