"""Helpers shared by CLI commands: logging set-up, deprecated spellings, and the options every command reads alike.

One dialect: the dataset is ``--data DATASET``, an output ``--out``, a trained run ``--run RUN``, a prediction folder
``--pred``, ``--split`` a split of the dataset (validated against it), ``--classes`` class names, ``--labels`` which
labels of the dataset a command reads (:data:`LABELS_OPTION`, :func:`open_dataset`). Old spellings keep working for
one release through :func:`moved`, which prints one ``warning:`` line.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from typer.core import TyperCommand

from labelwise.errors import UsageError

if TYPE_CHECKING:
    from typer._click import Context  # typer vendors click; the `click` package may be absent

    from labelwise.data import Dataset, LabelSource

__all__ = [
    "LABELS_OPTION",
    "REMOVED_IN",
    "AllowPartial",
    "Command",
    "Labels",
    "NumParts",
    "PartId",
    "Scheduler",
    "class_indices",
    "cohort_engine",
    "deprecated",
    "moved",
    "moved_optional",
    "open_dataset",
    "setup_logging",
    "split_ids",
    "with_merge",
]

T = TypeVar("T")

REMOVED_IN = "0.2"
"""The release that drops the deprecated spellings."""

ALL_SPLITS = "all"


class Labels(str, Enum):
    """``--labels``: which labels of the dataset a command reads (docs/lifecycle.md, "Corrections are labels")."""

    raters = "raters"
    reviewed = "reviewed"


LABELS_HELP = (
    "Labels to read: raters (the dataset's label files) or reviewed (a case's latest correction saved in the "
    "viewer as the one rater 'reviewed', cases rejected and not corrected left out, the raters elsewhere)."
)
LABELS_OPTION: Any = typer.Option(Labels.raters, "--labels", help=LABELS_HELP)
"""The ``--labels`` option, the same on every command that reads labels: ``labels: Labels = LABELS_OPTION``."""


def open_dataset(data: Path, labels: Labels = Labels.raters) -> Dataset:
    """Open ``--data`` with the labels ``--labels`` asks for (:class:`labelwise.data.Dataset`).

    Args:
        data: The dataset folder (or its ``dataset.json``).
        labels: ``raters`` or ``reviewed``.

    Raises:
        DataError: an unreadable manifest or review file, or a correction listed but missing.

    """
    from labelwise.data import Dataset

    source: dict[Labels, LabelSource] = {Labels.raters: "raters", Labels.reviewed: "reviewed"}
    return Dataset(data, labels=source[Labels(labels)])


class Command(TyperCommand):
    """A command whose usage line leaves out hidden arguments (the deprecated positional spellings)."""

    def collect_usage_pieces(self, ctx: Context) -> list[str]:
        """The usage line's pieces: ``[OPTIONS]`` and the visible arguments."""
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if not getattr(param, "hidden", False):
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces


def with_merge(merge: Any) -> type[Command]:
    """A :class:`Command` class for a command that also has a ``merge`` step: ``labelwise CMD merge ...``.

    ``labelwise evaluate merge --out OUT`` runs the Typer function ``merge`` with the arguments after ``merge``;
    any other first argument runs the command itself, so its options and spellings stay as they are.
    """

    class MergeCommand(Command):
        @property
        def merge_command(self) -> Any:
            """The click command of the ``merge`` step."""
            sub = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
            sub.command(cls=Command)(merge)
            return typer.main.get_command(sub)

        def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
            if args and args[0] == "merge":
                return self.merge_command.make_context(f"{info_name} merge", list(args[1:]), parent=parent, **extra)
            return super().make_context(info_name, args, parent=parent, **extra)

    return MergeCommand


NumParts = Annotated[
    int | None,
    typer.Option(
        "--num-parts", min=1, help="Split the cases into N parts balanced by size (with --part-id; merge after)."
    ),
]
"""``--num-parts N``: the same on ``predict``, ``evaluate`` and ``qa`` (docs/scale.md); ``num_parts: NumParts = None``.

Annotated, so that a command called as a Python function (``labelwise loop`` calls ``predict``) gets a real None.
"""
PartId = Annotated[
    int | None,
    typer.Option("--part-id", min=0, help="Which part to run, 0..N-1 (e.g. $SLURM_ARRAY_TASK_ID); writes OUT/parts/."),
]
"""``--part-id K``: the part of ``--num-parts`` this process runs."""
AllowPartial = Annotated[
    bool,
    typer.Option("--allow-partial", help="Merge the parts present even when some are missing or unfinished."),
]
"""``--allow-partial`` of ``labelwise predict|evaluate|qa merge``: ``allow_partial: AllowPartial = False``."""
Scheduler = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        help="Run the cases on Dask: a scheduler address (tcp://HOST:8786) or local:N for N local worker "
        "processes (needs the dask extra).",
    ),
]
"""``--scheduler``: where the cases run on Dask (:class:`labelwise.engine.cohort.Engine`)."""


def cohort_engine(workers: int, scheduler: str | None, paths: Sequence[Path | None] = ()) -> Any:
    """The :class:`labelwise.engine.cohort.Engine` of ``--workers`` / ``--scheduler``; workers must see ``paths``."""
    from labelwise.engine.cohort import Engine, parse_scheduler

    address = parse_scheduler(scheduler)
    if address is not None:
        from labelwise.errors import require_extra

        require_extra("distributed", "dask", feature="--scheduler")
    seen = tuple(str(Path(p).resolve() if Path(p).is_dir() else Path(p).resolve().parent) for p in paths if p)
    return Engine(workers=workers, scheduler=address, check_paths=seen)


def setup_logging(verbose: bool) -> None:
    """Send library logs to stderr through rich (INFO with ``--verbose``, WARNING otherwise)."""
    from rich.console import Console
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False, show_time=False)],
        force=True,
    )
    logging.getLogger("labelwise.plan").setLevel(logging.INFO)  # planned schedule and wall time, always shown


def deprecated(old: str, new: str) -> None:
    """Print the one-line deprecation warning for an old spelling on stderr.

    Args:
        old: The old spelling, e.g. ``labelwise predict RUN``.
        new: What to type instead, e.g. ``labelwise predict --run RUN``.

    """
    typer.echo(f"warning: '{old}' is deprecated; use '{new}' (removed in {REMOVED_IN})", err=True)


def moved(value: T | None, old_value: T | None, *, option: str, old: str, new: str) -> T:
    """The value of a required option that used to be spelled differently (a positional argument, another flag).

    Args:
        value: The value given with the new spelling (None: not given).
        old_value: The value given with the old spelling (None: not given); it warns (:func:`deprecated`).
        option: The new option, for the messages (``--run``).
        old: The old spelling as a command line (``labelwise predict RUN``).
        new: The new spelling as a command line (``labelwise predict --run RUN``).

    Returns:
        The value given, either way.

    Raises:
        UsageError: Neither spelling was given, or both were.

    Example:
        >>> moved("runs/a", None, option="--run", old="labelwise predict RUN", new="labelwise predict --run RUN")
        'runs/a'

    """
    given = moved_optional(value, old_value, option=option, old=old, new=new)
    if given is None:
        raise UsageError(f"missing option {option}: {new}")
    return given


def moved_optional(value: T | None, old_value: T | None, *, option: str, old: str, new: str) -> T | None:
    """Like :func:`moved`, for an optional option: None when neither spelling was given."""
    if old_value is not None:
        if value is not None:
            raise UsageError(f"give {option} once: '{new}', not also the deprecated '{old}'")
        deprecated(old, new)
        return old_value
    return value


def split_ids(dataset: Dataset, split: str) -> list[str]:
    """Ids of the cases of ``split`` (``all``: every case), refusing a split the dataset does not have.

    Args:
        dataset: The dataset of ``--data``.
        split: The ``--split`` value: a split with cases in the dataset (``train``, ``val``, ``test``) or ``all``.

    Raises:
        UsageError: ``split`` is not one of the dataset's splits; the message lists them.

    """
    from labelwise.data.manifest import SPLITS

    present = [s for s in SPLITS if dataset.split_ids(s)]
    if split != ALL_SPLITS and split not in present:
        raise UsageError(
            f"--split {split!r} is not a split of {dataset.root}; its splits: {', '.join([*present, ALL_SPLITS])}"
        )
    return dataset.split_ids(None if split == ALL_SPLITS else split)


def class_indices(text: str, class_names: Sequence[str] | None, option: str = "--classes") -> tuple[int, ...]:
    """Parse a comma-separated ``--classes`` list of class names (or label values) into class indices.

    A name is looked up in ``class_names`` (its index is the label value); an integer is taken as a label value.
    An item that is a class name and also an integer naming another class (a class called ``"2"`` at value 3) is
    ambiguous and refused.

    Args:
        text: The option's value, e.g. ``liver,kidney`` or ``5,1``.
        class_names: The class names, background first (None: no names known, only values are accepted).
        option: The option, for the messages.

    Returns:
        The label values in the order given (duplicates kept; callers refuse them where they matter).

    Raises:
        UsageError: An empty list, an unknown name, a name without class names, or an ambiguous item.

    Example:
        >>> class_indices("kidney,1", ("background", "liver", "kidney"))
        (2, 1)

    """
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or not all(items):
        raise UsageError(f"{option} must be comma-separated class names (or label values), got {text!r}")
    out: list[int] = []
    for item in items:
        by_name = class_names.index(item) if class_names is not None and item in class_names else None
        try:
            by_value: int | None = int(item)
        except ValueError:
            by_value = None
        if by_name is not None and by_value is not None and by_name != by_value:
            raise UsageError(f"{option}: {item!r} is ambiguous (class name of value {by_name}, or value {by_value})")
        value = by_name if by_name is not None else by_value
        if value is None:
            known = f"; classes: {', '.join(class_names)}" if class_names is not None else ""
            hint = "" if class_names is not None else " (no class names known here: give label values)"
            raise UsageError(f"{option}: unknown class {item!r}{hint}{known}")
        out.append(value)
    return tuple(out)
