"""``labelwise train METHOD --data DATASET --out RUN_DIR [--init RUN]``: train a registered method (resumable).

``--init RUN`` warm-starts from an earlier run of the same method (its selected weights, stage by stage) on a short
schedule: each schedule of the config trains a quarter of its epochs (at least one) unless ``--set ...epochs=N``
says otherwise. The lineage is recorded in RUN_DIR's ``meta.json`` (``init_from``); rerunning the same command
resumes RUN_DIR from its own checkpoints.

Multi-process: ``torchrun --nproc-per-node N -m labelwise.cli train ...`` (gloo on CPU, NCCL on GPUs).
"""

from __future__ import annotations

from pathlib import Path

import typer

from labelwise.cli.common import LABELS_OPTION, Labels

__all__ = ["train"]


def train(
    method: str = typer.Argument(..., help="Method name (see `labelwise methods`)."),
    data: Path = typer.Option(..., "--data", help="Dataset folder (with dataset.json)."),
    out: Path = typer.Option(..., "--out", help="Run directory to create, or to resume if it holds this run."),
    config: Path | None = typer.Option(None, "--config", help="YAML config (partial, or a run's config.yaml)."),
    set_: list[str] | None = typer.Option(None, "--set", help="Override: key=value (dotted keys, YAML values)."),
    preset: str | None = typer.Option(None, "--preset", help="Named preset of the method, e.g. full."),
    init: Path | None = typer.Option(
        None,
        "--init",
        help="Warm start: initialise from this earlier run of METHOD and train a short schedule (a quarter of the "
        "epochs unless --set ...epochs=N).",
    ),
    time_budget: str = typer.Option(
        "auto",
        "--time-budget",
        help="Wall-clock budget, e.g. 15m or 1h30m; 'none' trains the full schedule; 'auto' (default): a budget from "
        "the training-set size on a CPU unless a schedule (--preset, --config, epochs/steps) was asked for.",
    ),
    labels: Labels = LABELS_OPTION,
) -> None:
    """Train METHOD on the train split of DATASET, selecting on the val split; writes RUN_DIR."""
    import torch

    from labelwise.cli.common import open_dataset
    from labelwise.engine.distributed import cleanup_distributed, init_distributed
    from labelwise.methods import get_method, training_config

    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, torch.get_num_threads()))
    m = get_method(method)
    ds = open_dataset(data, labels)
    cfg = training_config(m, ds, config, set_ or (), preset, init, time_budget)
    try:
        m.fit(ds, cfg, out, init=init)
        main_rank = init_distributed().is_main
    finally:
        cleanup_distributed()
    if main_rank:  # under torchrun every process runs this command; one line is enough
        typer.echo(f"trained {method} -> {out}" + (f" (warm start from {init})" if init is not None else ""))
