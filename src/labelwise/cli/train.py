"""``labelwise train METHOD --data DATASET --out RUN_DIR``: train a registered method (resumes a killed run).

Multi-process: ``torchrun --nproc-per-node N -m labelwise.cli train ...`` (gloo on CPU, NCCL on GPUs).
"""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["train"]


def train(
    method: str = typer.Argument(..., help="Method name (see `labelwise methods`)."),
    data: Path = typer.Option(..., "--data", help="Dataset folder (with dataset.json)."),
    out: Path = typer.Option(..., "--out", help="Run directory to create, or to resume if it holds this run."),
    config: Path | None = typer.Option(None, "--config", help="YAML config (partial, or a run's config.yaml)."),
    set_: list[str] | None = typer.Option(None, "--set", help="Override: key=value (dotted keys, YAML values)."),
    preset: str | None = typer.Option(None, "--preset", help="Named preset of the method, e.g. full."),
    time_budget: str = typer.Option(
        "auto",
        "--time-budget",
        help="Wall-clock budget, e.g. 15m or 1h30m; 'none' trains the full schedule; 'auto' (default): a budget from "
        "the training-set size on a CPU unless a schedule (--preset, --config, epochs/steps) was asked for.",
    ),
) -> None:
    """Train METHOD on the train split of DATASET, selecting on the val split; writes RUN_DIR."""
    import torch

    from labelwise.data import Dataset
    from labelwise.engine.budget import resolve_time_budget
    from labelwise.engine.distributed import cleanup_distributed, init_distributed
    from labelwise.methods import get_method, load_method_config

    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, torch.get_num_threads()))
    m = get_method(method)
    ds = Dataset(data)
    cfg = load_method_config(m, config, set_ or (), preset)
    schedule_keys = ("epochs=", "steps_per_epoch=", "time_budget_s=")
    asked = (
        preset is not None or config is not None or any(s.split(".")[-1].startswith(schedule_keys) for s in set_ or ())
    )
    cfg = resolve_time_budget(
        cfg,
        time_budget,
        num_train_cases=len(ds.split_ids("train")),
        full_schedule_asked=asked,
        cuda=torch.cuda.is_available(),
    )
    try:
        m.fit(ds, cfg, out)
        main_rank = init_distributed().is_main
    finally:
        cleanup_distributed()
    if main_rank:  # under torchrun every process runs this command; one line is enough
        typer.echo(f"trained {method} -> {out}")
