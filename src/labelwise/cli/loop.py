"""``labelwise loop --data DATASET --out LOOP [--run RUN]``: the non-interactive parts of one round of the label loop.

A round: (1) from round 1 on, train a new run warm-started from the last round's run on the reviewed labels
(``labelwise train METHOD --labels reviewed --init LAST_RUN``); round 0 takes ``--run`` as it is; (2) score it:
predict ``--split`` and evaluate it against the reviewed labels; (3) propose what to review next
(``labelwise next`` with ``--strategy``, on the model's predictions of the ``--pool`` cases); (4) write
``LOOP/round-NNN/round.json`` and the table of rounds ``LOOP/rounds.md``. Between two rounds the user reviews the
proposed cases in the viewer. The layout and the record are in :mod:`labelwise.quality.loop` and
``docs/lifecycle.md`` ("One round").
"""

from __future__ import annotations

from pathlib import Path

import typer

from labelwise.cli.next import StrategyChoice

__all__ = ["loop"]


def loop(
    data: Path = typer.Option(..., "--data", help="Dataset folder (with dataset.json); its review/ holds the fixes."),
    out: Path = typer.Option(..., "--out", help="Loop folder: each call adds the next round-NNN to it."),
    run: Path | None = typer.Option(
        None, "--run", help="Round 0: the trained run to start from. Later rounds: default the last round's run."
    ),
    strategy: StrategyChoice = typer.Option(
        StrategyChoice.mix, "--strategy", help="Strategy of the proposal (as `labelwise next`)."
    ),
    number: int = typer.Option(10, "-n", "--number", min=1, help="How many cases to propose for review."),
    split: str = typer.Option("test", "--split", help="Split the round's model is scored on."),
    pool: str = typer.Option("train", "--pool", help="Split the next cases to review are drawn from, or all."),
    qa: Path | None = typer.Option(None, "--qa", help="A `labelwise qa` output for the quality signal."),
    set_: list[str] | None = typer.Option(None, "--set", help="Training override key=value (the warm start's)."),
    device: str | None = typer.Option(None, "--device", help="torch device (default: cuda if available)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random strategy."),
) -> None:
    """Run one round: retrain from the last round on the reviewed labels, score, and propose the next cases."""
    from labelwise.cli.common import split_ids
    from labelwise.cli.predict import predict
    from labelwise.data import Dataset
    from labelwise.errors import DataError, UsageError
    from labelwise.evaluation import evaluate_folder, write_outputs
    from labelwise.io import StagedDir, check_output_not_input
    from labelwise.methods import train
    from labelwise.quality.loop import (
        RoundRecord,
        corrected_cases,
        coverage_json,
        eval_metric,
        find_rounds,
        format_rounds,
        read_round,
        round_dir,
        rounds_table,
        run_lineage,
        write_round,
        write_rounds_markdown,
    )
    from labelwise.quality.select import select_cases

    check_output_not_input(out, [data] + ([run] if run is not None else []))
    if out.exists() and not out.is_dir():
        raise DataError("exists and is not a folder", out)
    done = find_rounds(out)
    last = read_round(done[-1]) if done else None
    if last is None and run is None:
        raise UsageError(f"--out {out} holds no round yet: give --run RUN, the trained run to start from")
    ds = Dataset(data)
    reviewed = Dataset(data, labels="reviewed")
    split_ids(reviewed, split)
    pool_ids = split_ids(ds, pool)
    number_now = 0 if last is None else last.round + 1
    here = round_dir(out, number_now)
    here.mkdir(parents=True, exist_ok=True)
    corrected = corrected_cases(data)
    coverage = coverage_json(data)

    init: Path | None = None
    if last is None:
        assert run is not None
        model = run.resolve()
        if not (model / "config.yaml").is_file():
            raise DataError("not a run folder (no config.yaml): give a run written by `labelwise train`", model)
    else:
        init = (run or Path(last.run)).resolve()
        lineage = run_lineage(init)
        method = lineage[-1].method
        if method is None:
            raise DataError("cannot read meta.json of the run to start from", init)
        # the recipe of the first run of the chain (model, preset, schedule), on the warm start's short schedule
        recipe = lineage[0].path / "config.yaml"
        model = here / "run"
        if run_lineage(model, max_depth=1)[-1].status == "finished":  # an interrupted round resumes after training
            typer.echo(f"round {number_now}: {model} is trained already")
        else:
            typer.echo(f"round {number_now}: training {method} from {init} on the reviewed labels -> {model}")
            train(method, reviewed, model, recipe if recipe.is_file() else None, list(set_ or []), init=init)

    typer.echo(f"round {number_now}: scoring {model} on split {split}")
    pred_split = here / f"pred-{split}"
    predict(model, data, pred_split, split, None, device, None, None, None)
    result = evaluate_folder(pred_split, reviewed, split=None if split == "all" else split)
    with StagedDir(here / "eval", overwrite=True, marker="summary.json", kind="evaluation") as stage:
        write_outputs(result, stage.path)
    metrics = {m: v for m in ("dice", "nsd", "hd95") if (v := eval_metric(result.summary, m)) is not None}

    pred_pool: Path | None = None
    if strategy.value in ("uncertainty", "mix"):
        pred_pool = here / "pred-pool"
        predict(model, data, pred_pool, pool, None, device, None, None, None)
    selection = select_cases(ds, strategy.value, number, qa=qa, pred=pred_pool, case_ids=pool_ids, seed=seed)
    next_name = "next.json"
    selection.write(here / next_name)
    proposal = selection.case_ids

    method_name = run_lineage(model, max_depth=1)[-1].method
    record = RoundRecord(
        round=number_now,
        run=str(model.resolve()),
        trained=init is not None,
        init_from=None if init is None else str(init),
        method=method_name,
        dataset=str(ds.root.resolve()),
        labels="reviewed",
        split=split,
        eval="eval",
        metrics=metrics,
        n_scored=int(result.summary.get("n_scored", 0)),
        review=coverage,
        corrected=corrected,
        next=next_name,
        proposed=proposal,
        strategy=selection.strategy,
    )
    write_round(here, record)
    table = write_rounds_markdown(out, tuple(metrics) or ("dice",))
    typer.echo(format_rounds(rounds_table([read_round(p) for p in find_rounds(out)]), tuple(metrics) or ("dice",)))
    typer.echo(f"round {number_now}: review these {len(proposal)} case(s) next: {', '.join(proposal)}")
    typer.echo(f"wrote {here / 'round.json'} and {table}")
