"""``labelwise demo``: the whole idea in one command, on built-in phantoms (or your dataset).

Stages: make data -> check -> fuse raters (STAPLE) -> train a supervised baseline, MRNet and D-Persona -> predict the
test split -> evaluate -> estimate label quality (Quality Sentinel) -> HTML report. Each stage runs the same
``labelwise`` subcommand a user would type, in this process, so the demo is also a smoke test of the CLI.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import typer

__all__ = ["demo"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Budget:
    """Training sizes of one demo setting."""

    cases: int
    epochs: int
    steps: int
    sentinel_epochs: int
    sentinel_steps: int


_BUDGETS = {
    "default": _Budget(cases=40, epochs=12, steps=20, sentinel_epochs=6, sentinel_steps=20),
    "quick": _Budget(cases=12, epochs=1, steps=2, sentinel_epochs=1, sentinel_steps=2),
}


def _invoke(ctx: typer.Context, args: list[str]) -> int:
    """Run one ``labelwise`` subcommand in-process through the running root command; return its exit status.

    The root command comes from the click context, so this module does not import the module that registers it.
    A :class:`~labelwise.errors.LabelwiseError` propagates to the entry point, which prints it once.
    """
    result = ctx.find_root().command.main(args=args, prog_name="labelwise", standalone_mode=False)
    return result if isinstance(result, int) else 0


def demo(
    ctx: typer.Context,
    out: Path = typer.Option(Path("labelwise-demo"), "--out", help="Folder for everything the demo writes."),
    data: Path | None = typer.Option(
        None, "--data", help="Use this dataset (with raters and a test split) instead of the built-in phantoms."
    ),
    quick: bool = typer.Option(False, "--quick", help="Tiny training (seconds): checks the pipeline, not the results."),
    seed: int = typer.Option(0, "--seed", help="Seed of the phantoms and of training."),
) -> None:
    """Run import -> check -> fuse -> train (supervised, MRNet, D-Persona) -> predict -> evaluate -> QA -> report."""
    from rich.console import Console

    from labelwise.errors import LabelwiseError

    console = Console(stderr=True)
    budget = _BUDGETS["quick" if quick else "default"]
    out.mkdir(parents=True, exist_ok=True)
    dataset = data if data is not None else out / "data"
    methods = {
        "supervised": ["--set", "target=mean"],
        "mrnet": [],
        "dpersona": ["--set", f"stage2.epochs={budget.epochs}", "--set", f"stage2.steps_per_epoch={budget.steps}"],
    }
    common = ["--set", f"train.epochs={budget.epochs}", "--set", f"train.steps_per_epoch={budget.steps}"]
    common += ["--set", f"train.seed={seed}"]
    if quick:
        common += ["--set", "train.progress=false"]
    stages: list[tuple[str, list[list[str]]]] = [
        ("check the dataset", [["data", "check", "--data", str(dataset)], ["data", "stats", "--data", str(dataset)]]),
        (
            "fuse raters with STAPLE",
            [["fuse", "--data", str(dataset), "--method", "staple", "--out", str(out / "fused"), "--overwrite"]],
        ),
    ]
    for name, extra in methods.items():
        run = out / "runs" / name
        pred = out / "pred" / name
        predict = ["predict", "--run", str(run), "--data", str(dataset), "--out", str(pred)]
        if name == "dpersona":
            predict += ["--samples", "8"]
        stages.append((f"train {name}", [["train", name, "--data", str(dataset), "--out", str(run), *common, *extra]]))
        stages.append(
            (
                f"predict + evaluate {name}",
                [
                    predict,
                    [
                        "evaluate",
                        "--pred",
                        str(pred),
                        "--data",
                        str(dataset),
                        "--out",
                        str(out / "eval" / name),
                        "--n-bootstrap",
                        "200",
                    ],
                ],
            )
        )
    sentinel_run = out / "runs" / "sentinel"
    stages.append(
        (
            "train the label-quality estimator (Quality Sentinel)",
            [
                [
                    "train",
                    "sentinel",
                    "--data",
                    str(dataset),
                    "--out",
                    str(sentinel_run),
                    "--set",
                    f"train.epochs={budget.sentinel_epochs}",
                    "--set",
                    f"train.steps_per_epoch={budget.sentinel_steps}",
                    "--set",
                    f"train.seed={seed}",
                    "--set",
                    "checkpoint_steps=[5,15,30]",
                    "--set",
                    "perturbations_per_slice=4",
                ]
            ],
        )
    )
    stages.append(
        (
            "score every rater's labels",
            [
                [
                    "qa",
                    "--run",
                    str(sentinel_run),
                    "--data",
                    str(dataset),
                    "--raters",
                    "--split",
                    "test",
                    "--reference",
                    "others",
                    "--out",
                    str(out / "qa"),
                ]
            ],
        )
    )
    stages.append(
        (
            "write the report",
            [
                [
                    "report",
                    *[str(out / "eval" / m) for m in methods],
                    "--data",
                    str(dataset),
                    *[a for m in methods for a in ("--pred", str(out / "pred" / m))],
                    "--qa",
                    str(out / "qa" / "quality.csv"),
                    "--out",
                    str(out / "report.html"),
                ]
            ],
        )
    )

    start = time.perf_counter()
    if data is None:
        from labelwise.data.phantoms import make_phantom_dataset

        console.rule(f"[1/{len(stages) + 1}] make {budget.cases} 2D phantoms with 4 simulated raters")
        make_phantom_dataset(
            dataset, n_cases=budget.cases, raters=4, spatial_dims=2, seed=seed, overwrite=True, name="demo-phantoms"
        )
    for number, (title, commands) in enumerate(stages, start=2):
        console.rule(f"[{number}/{len(stages) + 1}] {title}")
        stage_start = time.perf_counter()
        for args in commands:
            code = _invoke(ctx, args)
            if code != 0:
                raise LabelwiseError(f"demo stage '{title}' failed (labelwise {' '.join(args[:2])} exited {code})")
        console.print(f"[dim]{title}: {time.perf_counter() - stage_start:.0f} s[/dim]")
    minutes = (time.perf_counter() - start) / 60
    console.rule(f"done in {minutes:.1f} min")
    typer.echo(f"report: {(out / 'report.html').resolve()}")
