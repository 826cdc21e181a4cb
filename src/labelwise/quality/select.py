"""Which cases to review or annotate next: the ranking behind ``labelwise next`` and the viewer's queue.

:func:`select_cases` proposes ``n`` cases of a dataset, each with the reason it was chosen, by one strategy:

================ ========================================================================================
strategy         the cases proposed first
================ ========================================================================================
``quality``      the worst predicted label quality: the lowest ``predicted_dice`` of any of the case's rows
                 in a ``labelwise qa`` table (``quality.csv``, ``review_queue.csv`` or ``case_quality.csv``)
``uncertainty``  the highest mean voxel uncertainty of a ``labelwise predict`` folder: the method's
                 ``<case>_uncertainty`` map, else the normalised entropy of ``<case>_probs`` (0..1), else the
                 disagreement of ``<case>_samples`` (1 - agreement with their plurality vote), averaged over
                 every voxel of the case (MONAI Label's epistemic scoring takes the same whole-image mean)
``disagreement`` the largest inter-rater spread: 1 - the case's mean pairwise Dice between its raters, the rule
                 of ``labelwise data stats`` (``evaluation.rater_stats.PairwiseAgreement``: per foreground
                 class, pairs where both raters leave the class empty are skipped; labelled slices only)
``diversity``    coverage of the image feature space: greedy k-center (Sener & Savarese, ICLR 2018) on cheap
                 features (a block-mean thumbnail, 16 x 16 in 2D or 8 x 8 x 8 in 3D, plus a 16-bin histogram of
                 the intensities scaled to their 1st..99th percentile); cases already reviewed count as centres,
                 so near-duplicates of a chosen or reviewed case come last
``mix``          the rank average of every signal available (``quality`` with a qa table, ``uncertainty`` with
                 a prediction folder, ``disagreement`` when the dataset has raters; each signal's ranks scaled
                 to 0..1, 1 = look first), then among the ``pool * n`` best a greedy pick of the highest
                 ``score * min(1, d / d_typical)``: ``d`` is the image-feature distance to the nearest case
                 picked or reviewed before, ``d_typical`` the median distance between the pool's cases, so a
                 case unlike those picked keeps its score and a near-duplicate of one drops to about 0
``random``       a seeded random order: the baseline the other strategies are measured against
================ ========================================================================================

Cases already reviewed (a decision or a correction in ``DATASET/review``, :func:`reviewed_cases`) are left out
unless ``include_reviewed``; a simulation can pass its own ``reviewed`` set instead.
Everything is deterministic: ties go to the lower case id (in manifest order for diversity), and ``random`` is
seeded. :meth:`Selection.write` writes the proposal as JSON or CSV, atomically.

Example:
    >>> import numpy as np
    >>> features = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # cases 0 and 1 are duplicates
    >>> [i for i, _ in k_center(features, 3, first=0)]
    [0, 2, 3]

"""

from __future__ import annotations

import csv
import io
import logging
import math
import typing
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from labelwise.data import Dataset
from labelwise.data.review import ReviewStore, case_reviews
from labelwise.data.slices import labelled_slice_indices
from labelwise.errors import ConfigError, DataError
from labelwise.evaluation.rater_stats import PairwiseAgreement
from labelwise.io import PredictionIndex, read_image, read_prediction, safe_join
from labelwise.io.atomic import write_json_atomic, write_text_atomic
from labelwise.quality.qa import read_quality_csv
from labelwise.uncertainty import agreement_map

__all__ = [
    "SELECTION_FORMAT",
    "SIGNALS",
    "STRATEGIES",
    "Proposal",
    "Selection",
    "Signal",
    "Strategy",
    "disagreement_signal",
    "image_features",
    "k_center",
    "quality_signal",
    "reviewed_cases",
    "select_cases",
    "uncertainty_signal",
]

logger = logging.getLogger(__name__)

Strategy = Literal["quality", "uncertainty", "disagreement", "diversity", "mix", "random"]
STRATEGIES: tuple[str, ...] = typing.get_args(Strategy)
SIGNALS = ("quality", "uncertainty", "disagreement")
"""The per-case signals, in the order ``mix`` lists them."""
SELECTION_FORMAT = "labelwise-next"
Track = Callable[[Iterable[Any], str], Iterable[Any]]

_THUMB = {2: 16, 3: 8}  # thumbnail cells per axis
_BINS = 16


@dataclass(frozen=True)
class Signal:
    """One case's value of one signal.

    Attributes:
        value: The measured value: predicted Dice (``quality``, 0..1), mean voxel uncertainty (``uncertainty``),
            1 - mean pairwise inter-rater Dice (``disagreement``, 0..1).
        priority: Higher means "look at it sooner" (``1 - value`` for ``quality``, ``value`` otherwise).
        reason: The value in words, for the user.

    """

    value: float
    priority: float
    reason: str


@dataclass(frozen=True)
class Proposal:
    """One proposed case.

    Attributes:
        rank: 1 = look at it first.
        case: Case id.
        split: The case's split (None: no split).
        score: The strategy's score (higher = sooner): the signal's priority, the k-center distance for
            ``diversity`` (nan for its first pick without reviewed cases), the rank average times the image-feature
            weight for ``mix``; nan for ``random``.
        reason: Why, in words.
        signals: The raw value of every signal computed for the case (see :class:`Signal`).

    """

    rank: int
    case: str
    split: str | None
    score: float
    reason: str
    signals: dict[str, float] = field(default_factory=dict)


def _num(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), 6)


@dataclass(frozen=True)
class Selection:
    """What :func:`select_cases` proposes, and how.

    Attributes:
        strategy: The strategy used.
        proposals: The cases, rank 1 first (at most ``n``).
        n: How many were asked for.
        seed: The seed (``random``).
        candidates: Cases that could be proposed (after leaving out reviewed ones and cases without the signal).
        skipped_reviewed: Reviewed cases left out.
        signals: The signals the strategy used.
        inputs: ``{"qa": path or None, "pred": path or None}``.
        dataset: Dataset name.
        dataset_path: Dataset folder.

    """

    strategy: str
    proposals: tuple[Proposal, ...]
    n: int
    seed: int
    candidates: int
    skipped_reviewed: tuple[str, ...] = ()
    signals: tuple[str, ...] = ()
    inputs: Mapping[str, str | None] = field(default_factory=dict)
    dataset: str = ""
    dataset_path: str = ""

    @property
    def case_ids(self) -> list[str]:
        """The proposed case ids, rank 1 first."""
        return [p.case for p in self.proposals]

    def to_json(self) -> dict[str, Any]:
        """The JSON document :meth:`write` writes (``format: labelwise-next``; nan becomes null)."""
        return {
            "format": SELECTION_FORMAT,
            "version": 1,
            "dataset": self.dataset,
            "dataset_path": self.dataset_path,
            "strategy": self.strategy,
            "n": self.n,
            "seed": self.seed,
            "inputs": dict(self.inputs),
            "signals": list(self.signals),
            "candidates": self.candidates,
            "skipped_reviewed": list(self.skipped_reviewed),
            "cases": [
                {
                    "rank": p.rank,
                    "case": p.case,
                    "split": p.split,
                    "score": _num(p.score),
                    "reason": p.reason,
                    "signals": {k: _num(v) for k, v in p.signals.items()},
                }
                for p in self.proposals
            ],
        }

    def to_csv(self) -> str:
        """One row per proposal: rank, case, split, score, reason, then one column per signal computed."""
        names = [s for s in SIGNALS if any(s in p.signals for p in self.proposals)]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["rank", "case", "split", "score", "reason", *names])
        for p in self.proposals:
            cells = [_num(p.score), *(_num(p.signals.get(s, math.nan)) for s in names)]
            text = ["" if c is None else f"{c:.6g}" for c in cells]
            writer.writerow([p.rank, p.case, p.split or "", text[0], p.reason, *text[1:]])
        return buf.getvalue()

    def write(self, path: str | Path) -> Path:
        """Write atomically: JSON for a ``.json`` path, CSV for ``.csv``.

        Raises:
            ConfigError: another suffix.

        """
        p = Path(path)
        if p.suffix.lower() == ".json":
            return write_json_atomic(p, self.to_json())
        if p.suffix.lower() == ".csv":
            return write_text_atomic(p, self.to_csv())
        raise ConfigError(f"--out {p}: write the proposal to a .json or a .csv file")


# --------------------------------------------------------------------------------------------------- signals
def reviewed_cases(dataset: Dataset, case_ids: Iterable[str] | None = None) -> tuple[str, ...]:
    """Cases with a review decision (accept, reject or flag) or a saved correction in ``DATASET/review``.

    Raises:
        DataError: a review file that cannot be read.

    """
    ids = dataset.ids if case_ids is None else list(case_ids)
    reviews = case_reviews(ReviewStore(dataset.root), ids)
    return tuple(c for c in ids if reviews[c].status != "untouched")


def _iterate(items: Sequence[str], description: str, track: Track | None) -> Iterable[str]:
    return items if track is None else track(items, description)


def quality_signal(qa: str | Path, case_ids: Collection[str], *, required: bool = True) -> dict[str, Signal]:
    """Worst predicted Dice per case from a ``labelwise qa`` output (a table, or its folder: ``quality.csv``).

    Args:
        qa: ``quality.csv``, ``review_queue.csv``, ``case_quality.csv``, or the folder holding ``quality.csv``.
        case_ids: The cases wanted; rows of other cases are ignored (their number is logged).
        required: Whether no row for any of ``case_ids`` is an error (``quality``) or an empty signal (``mix``,
            which ranks on the signals it has).

    Returns:
        Case id -> signal (value: the lowest finite ``predicted_dice`` among the case's rows); cases without a
        row are absent.

    Raises:
        DataError: an unreadable or malformed table (see :func:`labelwise.quality.qa.read_quality_csv`), or no
            row for any of ``case_ids`` when ``required``.

    """
    path = Path(qa)
    if path.is_dir():
        path = path / "quality.csv"
    if not path.is_file():
        raise DataError("no quality table here (give a `labelwise qa` output: quality.csv or its folder)", path)
    wanted = set(case_ids)
    worst: dict[str, dict[str, Any]] = {}
    foreign = set()
    for row in read_quality_csv(path):
        case, dice = str(row["case"]), float(row["predicted_dice"])
        if case not in wanted:
            foreign.add(case)
            continue
        if math.isfinite(dice) and (case not in worst or dice < worst[case]["predicted_dice"]):
            worst[case] = row
    if foreign:
        logger.info("%s: %d case(s) not among the candidates are ignored", path, len(foreign))
    if not worst:
        if required:
            raise DataError("no row of the quality table names a candidate case of the dataset", path)
        logger.warning("%s: no row names a candidate case; the quality signal is left out", path)
    out = {}
    for case, row in worst.items():
        dice = float(row["predicted_dice"])
        where = ", ".join(f"{k} {row[k]}" for k in ("structure", "source") if row.get(k))
        out[case] = Signal(dice, 1.0 - dice, f"predicted Dice {dice:.3f}" + (f" ({where})" if where else ""))
    return out


def _voxel_uncertainty(folder: Path, case_id: str, spatial_dims: int) -> tuple[np.ndarray, str] | None:
    """The voxel uncertainty of one predicted case and where it comes from (None: hard labels only)."""
    parts = {p: safe_join(folder, f"{case_id}_{p}.nii.gz").is_file() for p in ("uncertainty", "probs", "samples")}
    if not any(parts.values()):
        return None
    pred = read_prediction(folder, case_id, spatial_dims)
    if parts["uncertainty"] and pred.uncertainty is not None:
        return np.asarray(pred.uncertainty, dtype=np.float64), "uncertainty map"
    if parts["probs"]:
        probs = np.clip(np.asarray(pred.probs, dtype=np.float64), 1e-12, 1.0)
        entropy = -(probs * np.log(probs)).sum(axis=0)
        return entropy / math.log(max(probs.shape[0], 2)), "entropy of probs"
    assert pred.samples is not None
    return 1.0 - agreement_map(pred.samples).astype(np.float64), "disagreement of samples"


def uncertainty_signal(
    pred: str | Path, case_ids: Collection[str], spatial_dims: int, track: Track | None = None
) -> dict[str, Signal]:
    """Mean voxel uncertainty per case of a ``labelwise predict`` folder (see the module docstring).

    Args:
        pred: The prediction folder (with ``predictions.json``).
        case_ids: The cases wanted; predicted cases outside them are ignored.
        spatial_dims: The dataset's spatial dims.
        track: Optional progress wrapper ``track(items, description)``.

    Returns:
        Case id -> signal; cases not predicted, or predicted as hard label maps only, are absent.

    Raises:
        DataError: not a prediction folder, an unreadable file, or no candidate case with a soft output.

    """
    folder = Path(pred)
    index = PredictionIndex.load(folder)
    wanted = set(case_ids)
    ids = [c for c in index.cases if c in wanted]
    out: dict[str, Signal] = {}
    hard = []
    for case_id in _iterate(ids, "uncertainty", track):
        got = _voxel_uncertainty(folder, case_id, spatial_dims)
        if got is None:
            hard.append(case_id)
            continue
        voxels, kind = got
        if not np.isfinite(voxels).all():
            raise DataError("the uncertainty holds NaN or infinite values", folder / f"{case_id}_{kind.split()[-1]}")
        value = float(voxels.mean())
        out[case_id] = Signal(value, value, f"mean voxel uncertainty {value:.3f} ({kind})")
    if not out:
        why = "holds only hard label maps for them" if hard else "predicts none of them"
        raise DataError(
            f"no uncertainty for the candidate cases: the folder {why} (predict with a method that writes "
            "<case>_probs, _samples or _uncertainty)",
            folder,
        )
    if hard:
        logger.warning("%s: %d case(s) have hard label maps only and are left out", folder, len(hard))
    return out


def disagreement_signal(dataset: Dataset, case_ids: Sequence[str], track: Track | None = None) -> dict[str, Signal]:
    """Inter-rater spread per case: ``1 - mean pairwise Dice`` between the case's raters (``data stats`` rule).

    Args:
        dataset: The dataset.
        case_ids: The cases wanted.
        track: Optional progress wrapper ``track(items, description)``.

    Returns:
        Case id -> signal; cases with fewer than two raters are absent. Raters that agree everywhere, including
        on leaving every class empty, give 0.

    """
    rater_ids, num_classes = dataset.rater_ids, len(dataset.class_names)
    out = {}
    for case_id in _iterate(list(case_ids), "rater agreement", track):
        case = dataset.load(case_id)
        labels, present = case.rater_stack(rater_ids)
        if present.sum() < 2:
            continue
        if case.labelled_slices is not None:
            labels = labels[..., list(labelled_slice_indices(case))]
        agreement = PairwiseAgreement(len(rater_ids), num_classes)
        agreement(case, labels, present)
        result = agreement.result()
        mean, low = float(result["mean_pairwise_dice"]), float(result["min_pairwise_dice"])
        if math.isnan(mean):  # every rater leaves every class empty: full agreement
            out[case_id] = Signal(0.0, 0.0, f"{int(present.sum())} raters agree (all empty)")
            continue
        reason = f"inter-rater mean pairwise Dice {mean:.3f} over {int(present.sum())} raters"
        out[case_id] = Signal(1.0 - mean, 1.0 - mean, reason + f" (lowest pair {low:.3f})")
    return out


# --------------------------------------------------------------------------------------------------- diversity
def _block_means(arr: np.ndarray, cells: int) -> np.ndarray:
    """Mean of ``arr`` over a ``cells``-per-axis grid of blocks (axes shorter than ``cells`` repeat voxels)."""
    out = arr
    for axis in range(arr.ndim):
        n = out.shape[axis]
        starts = np.floor(np.linspace(0, n, cells + 1)[:-1]).astype(int)
        counts = np.maximum(np.diff(np.append(starts, n)), 1)
        sums = np.add.reduceat(out, np.minimum(starts, n - 1), axis=axis)
        shape = [1] * out.ndim
        shape[axis] = cells
        out = sums / counts.reshape(shape)
    return out


def image_features(dataset: Dataset, case_ids: Sequence[str], track: Track | None = None) -> np.ndarray:
    """Cheap image features for diversity: a block-mean thumbnail and an intensity histogram per channel.

    Each channel is scaled to its own 1st..99th percentile and clipped to [0, 1], so the features do not depend
    on the scanner's intensity scale; identical images give identical features.

    Args:
        dataset: The dataset.
        case_ids: The cases, in the order of the rows returned.
        track: Optional progress wrapper ``track(items, description)``.

    Returns:
        ``(N, D)`` float64: per channel the thumbnail (16 x 16 in 2D, 8 x 8 x 8 in 3D) divided by the square
        root of its size, then the fraction of voxels in each of 16 intensity bins.

    """
    nd = dataset.spatial_dims
    rows = []
    for case_id in _iterate(list(case_ids), "image features", track):
        image = read_image(dataset.resolve(dataset.record(case_id).image), nd).array.astype(np.float64)
        parts = []
        for channel in image:
            lo, hi = np.percentile(channel, [1.0, 99.0])
            scaled = np.clip((channel - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(channel)
            thumb = _block_means(scaled, _THUMB[nd])
            hist = np.histogram(scaled, bins=_BINS, range=(0.0, 1.0))[0] / scaled.size
            parts += [thumb.ravel() / math.sqrt(thumb.size), hist]
        rows.append(np.concatenate(parts))
    return np.stack(rows) if rows else np.zeros((0, 0))


def _distances(features: np.ndarray, point: np.ndarray) -> np.ndarray:
    return np.asarray(np.sqrt(((features - point[None]) ** 2).sum(axis=1)))


def k_center(
    features: np.ndarray, n: int, first: int | None = None, centres: np.ndarray | None = None
) -> list[tuple[int, float]]:
    """Greedy k-center: each pick is the row farthest from every row picked so far and from ``centres``.

    Args:
        features: ``(N, D)`` feature rows.
        n: How many rows to pick (at most N).
        first: Row to pick first (None: the row farthest from ``centres``, or without centres the row nearest the
            mean of all rows: the most typical one).
        centres: ``(M, D)`` rows that are already covered (e.g. reviewed cases); never picked.

    Returns:
        ``(row, distance)`` in pick order; the distance is the Euclidean distance to the nearest earlier pick or
        centre when picked (nan for a first pick without centres). Ties go to the lower row. Duplicates of a
        picked row have distance 0 and come only after every distinct row.

    """
    num = len(features)
    nearest = np.full(num, np.inf)
    if centres is not None:
        for c in centres:
            nearest = np.minimum(nearest, _distances(features, c))
    picks: list[tuple[int, float]] = []
    taken = np.zeros(num, dtype=bool)
    while len(picks) < min(n, num):
        if not picks and first is not None:
            row = first
        elif not picks and not np.isfinite(nearest).any():
            row = int(np.argmin(_distances(features, features.mean(axis=0))))
        else:
            row = int(np.argmax(np.where(taken, -1.0, nearest)))
        picks.append((row, float(nearest[row]) if np.isfinite(nearest[row]) else math.nan))
        taken[row] = True
        nearest = np.minimum(nearest, _distances(features, features[row]))
    return picks


# --------------------------------------------------------------------------------------------------- selection
def _rank_average(signals: Mapping[str, Mapping[str, Signal]], ids: Sequence[str]) -> dict[str, float]:
    """Mean over the signals a case has of its normalised rank (1 = highest priority, 0 = lowest)."""
    from scipy.stats import rankdata

    per_case: dict[str, list[float]] = {}
    for values in signals.values():
        have = [c for c in ids if c in values]
        if not have:
            continue
        ranks = rankdata([values[c].priority for c in have], method="average")
        for c, r in zip(have, ranks, strict=True):
            per_case.setdefault(c, []).append((r - 1) / (len(have) - 1) if len(have) > 1 else 1.0)
    return {c: float(np.mean(v)) for c, v in per_case.items()}


def _needs(strategy: str, qa: str | Path | None, pred: str | Path | None, dataset: Dataset) -> None:
    """One clear error when the input a strategy needs is missing."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; strategies: {', '.join(STRATEGIES)}")
    if strategy == "quality" and qa is None:
        raise ConfigError("strategy 'quality' needs --qa: a `labelwise qa` output (quality.csv or its folder)")
    if strategy == "uncertainty" and pred is None:
        raise ConfigError("strategy 'uncertainty' needs --pred: a `labelwise predict` folder with probabilities")
    if strategy == "disagreement" and len(dataset.rater_ids) < 2:
        raise ConfigError(
            f"strategy 'disagreement' needs a dataset with at least two raters; {dataset.root} has "
            f"{len(dataset.rater_ids)}"
        )
    if strategy == "mix" and qa is None and pred is None and len(dataset.rater_ids) < 2:
        raise ConfigError(
            "strategy 'mix' needs at least one signal: --qa (label quality), --pred (model uncertainty) or a dataset "
            "with two or more raters (disagreement); use --strategy diversity to cover the images alone"
        )
    for flag, given, users in (("--qa", qa, ("quality", "mix")), ("--pred", pred, ("uncertainty", "mix"))):
        if given is not None and strategy not in users:
            logger.warning("%s is not used by strategy %r", flag, strategy)


def select_cases(
    dataset: Dataset | str | Path,
    strategy: Strategy = "mix",
    n: int = 10,
    *,
    qa: str | Path | None = None,
    pred: str | Path | None = None,
    case_ids: Sequence[str] | None = None,
    reviewed: Collection[str] | None = None,
    include_reviewed: bool = False,
    seed: int = 0,
    pool: int = 3,
    track: Track | None = None,
) -> Selection:
    """Propose the next ``n`` cases to review or annotate, with the reason for each (see the module docstring).

    Args:
        dataset: The dataset (or its folder).
        strategy: ``quality``, ``uncertainty``, ``disagreement``, ``diversity``, ``mix`` or ``random``.
        n: How many cases to propose (fewer when fewer are left).
        qa: A ``labelwise qa`` output (``quality`` and ``mix``).
        pred: A ``labelwise predict`` folder (``uncertainty`` and ``mix``).
        case_ids: The candidate cases (default: every case of the dataset).
        reviewed: Cases already reviewed: not proposed, and covered centres for the diversity step (default: the
            dataset's review store, :func:`reviewed_cases`).
        include_reviewed: Propose reviewed cases too (they are then ordinary candidates).
        seed: Seed of ``random``.
        pool: ``mix`` picks among the ``pool * n`` best-ranked cases.
        track: Optional progress wrapper ``track(items, description)`` (the CLI passes a progress bar).

    Returns:
        The :class:`Selection` (empty when no candidate is left).

    Raises:
        ConfigError: an unknown strategy, ``n`` or ``pool`` below 1, or an input the strategy needs is missing.
        DataError: an input that cannot be read, or that has no value for any candidate case.

    """
    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    if n < 1 or pool < 1:
        raise ConfigError(f"n and pool must be >= 1, got n={n}, pool={pool}")
    _needs(strategy, qa, pred, ds)
    ids = ds.ids if case_ids is None else list(case_ids)
    for c in ids:
        ds.record(c)  # an unknown id is a DataError naming the manifest
    done = set() if include_reviewed else set(reviewed_cases(ds, ids) if reviewed is None else reviewed)
    skipped = tuple(c for c in ids if c in done)
    candidates = [c for c in ids if c not in done]
    signals: dict[str, dict[str, Signal]] = {}
    if candidates and strategy == "quality" and qa is not None:
        signals["quality"] = quality_signal(qa, candidates)
    elif candidates and strategy == "mix" and qa is not None:
        # e.g. every case the table scored has been reviewed since: mix ranks on the other signals
        signals["quality"] = quality_signal(qa, candidates, required=False)
    if candidates and strategy in ("uncertainty", "mix") and pred is not None:
        signals["uncertainty"] = uncertainty_signal(pred, candidates, ds.spatial_dims, track)
    if candidates and strategy in ("disagreement", "mix") and len(ds.rater_ids) >= 2:
        signals["disagreement"] = disagreement_signal(ds, candidates, track)
        if strategy == "disagreement" and not signals["disagreement"]:
            raise DataError("no candidate case has two raters to compare", ds.root)
    if strategy == "mix" and candidates and not any(signals.values()):
        raise DataError("no signal has a value for any candidate case", ds.root)

    picks: list[tuple[str, float, str]] = []  # (case, score, reason)
    if strategy in SIGNALS:
        values = signals[strategy]
        order = sorted(values, key=lambda c: (-values[c].priority, c))
        picks = [(c, values[c].priority, values[c].reason) for c in order[:n]]
        num_candidates = len(values)
    elif strategy == "random":
        rng = np.random.default_rng(seed)
        order = [candidates[i] for i in rng.permutation(len(candidates))]
        picks = [(c, math.nan, f"random draw (seed {seed})") for c in order[:n]]
        num_candidates = len(candidates)
    elif strategy == "diversity":
        picks = _diverse(ds, candidates, skipped, n, track)
        num_candidates = len(candidates)
    else:  # mix
        score = _rank_average(signals, candidates)
        ranked = sorted(score, key=lambda c: (-score[c], c))
        num_candidates = len(score)
        for case, weight, _ in _spread(ds, ranked[: max(n, pool * n)], score, skipped, n, track):
            names = [s for s in SIGNALS if case in signals.get(s, {})]
            reason = f"rank-average {score[case]:.2f} of {', '.join(names)}: "
            reason += "; ".join(signals[s][case].reason for s in names)
            if weight < 1.0:
                reason += f"; near a case picked or reviewed before (image-feature weight {weight:.2f})"
            picks.append((case, score[case] * weight, reason))
    proposals = tuple(
        Proposal(
            rank=i + 1,
            case=case,
            split=ds.record(case).split,
            score=score_value,
            reason=reason,
            signals={s: signals[s][case].value for s in SIGNALS if case in signals.get(s, {})},
        )
        for i, (case, score_value, reason) in enumerate(picks)
    )
    if not candidates:
        logger.warning("every candidate case is reviewed already: nothing to propose")
    return Selection(
        strategy=strategy,
        proposals=proposals,
        n=n,
        seed=seed,
        candidates=num_candidates,
        skipped_reviewed=skipped,
        signals=tuple(s for s in SIGNALS if signals.get(s)),
        inputs={"qa": None if qa is None else str(qa), "pred": None if pred is None else str(pred)},
        dataset=ds.name,
        dataset_path=str(ds.root),
    )


def _spread(
    ds: Dataset, ranked: Sequence[str], score: Mapping[str, float], covered: Sequence[str], n: int, track: Track | None
) -> list[tuple[str, float, str]]:
    """Greedy pick of the highest ``score * min(1, d / d_typical)`` (see ``mix``): ``(case, weight, "")``."""
    if not ranked:
        return []
    features = image_features(ds, [*ranked, *covered], track)
    pool = features[: len(ranked)]
    pairwise = [float(d) for i in range(len(pool)) for d in _distances(pool[i + 1 :], pool[i])]
    typical = float(np.median([d for d in pairwise if d > 0])) if any(d > 0 for d in pairwise) else 1.0
    nearest = np.full(len(ranked), np.inf)
    for c in features[len(ranked) :]:
        nearest = np.minimum(nearest, _distances(pool, c))
    base = np.array([score[c] for c in ranked])
    taken = np.zeros(len(ranked), dtype=bool)
    out: list[tuple[str, float, str]] = []
    while len(out) < min(n, len(ranked)):
        weight = np.minimum(1.0, nearest / typical)
        row = int(np.argmax(np.where(taken, -1.0, base * weight)))  # ties: the better-ranked case
        out.append((ranked[row], float(weight[row]), ""))
        taken[row] = True
        nearest = np.minimum(nearest, _distances(pool, pool[row]))
    return out


def _diverse(
    ds: Dataset, ids: Sequence[str], covered: Sequence[str], n: int, track: Track | None
) -> list[tuple[str, float, str]]:
    """k-center over ``ids`` with ``covered`` cases as centres: ``(case, distance, reason)`` in pick order."""
    if not ids:
        return []
    features = image_features(ds, [*ids, *covered], track)
    centres = features[len(ids) :] if covered else None
    out = []
    for row, distance in k_center(features[: len(ids)], n, None, centres):
        if math.isfinite(distance):
            reason = f"image-feature distance {distance:.3f} from the nearest case picked or reviewed before"
        else:
            reason = "the most typical image (nearest the mean features)"
        out.append((ids[row], distance, reason))
    return out
