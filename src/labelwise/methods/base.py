"""The method skeleton: how a segmentation method plugs into labelwise.

A method is a :class:`Method` subclass registered with :func:`register_method`. It declares

* ``Config``: a frozen dataclass with defaults for every field (loaded from YAML, ``--set key=value`` overrides
  and named ``presets``; see :func:`labelwise.engine.config.load_config`), with the engine's
  :class:`~labelwise.engine.TrainConfig` as its ``train`` field;
* ``Predictor``: a :class:`MethodPredictor` subclass with typed ``Options`` (a frozen :class:`PredictOptions`
  dataclass; an option the method does not take is a one-line :class:`ConfigError` naming the options it does);

and fills three hooks of the template :meth:`Method.fit`:

* :meth:`Method.check` (optional): reject a dataset/config pair before anything is written;
* :meth:`Method.plan`: the data-derived settings (``plan.json``);
* :meth:`Method.build`: the model(s), the :class:`~labelwise.engine.TrainTask`, the sample source and the
  validation cases, as a :class:`Stage`. Methods trained in several stages (D-Persona, propagation, Sentinel)
  override :meth:`Method.train` instead and call :meth:`FitContext.run_stage` once per stage.

The template does the run plumbing once, the same way for every method: the run directory (resume or refuse,
:class:`~labelwise.engine.RunDir`), ``plan.json`` written by rank 0 and never rewritten on resume, seeding, the
:class:`~labelwise.engine.Trainer`, and ``meta.json`` written by rank 0 when training ends (with what the
hooks put in :attr:`FitContext.meta`). ``docs/architecture.md`` has a complete 40-line example method.

Warm start (``labelwise train METHOD --init RUN1``, ``fit(..., init=RUN1)``): every stage that has not started yet
begins from RUN1's selected weights of the same stage (``RUN1/weights.safetensors``, ``RUN1/<stage>/...``), for
the stage's trainable modules; modules a stage keeps frozen come from this run's earlier stages as usual. RUN1 must be
a run of the same method whose plan has the same classes, channels and spatial dims (one :class:`ConfigError`
saying what differs). ``meta.json`` records the lineage (``init_from``), and a resumed run continues from its own
checkpoints, never from RUN1 again. :func:`warm_start_schedule` is the short default schedule.

Use :func:`train` / :func:`load_run` from code; the CLI (``labelwise train|predict|methods``) calls the same.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import torch

from labelwise.data import Case, Dataset
from labelwise.engine.budget import resolve_time_budget
from labelwise.engine.checkpoint import load_weights
from labelwise.engine.config import TrainConfig, config_from_dict, config_to_dict, load_config, resolve_device
from labelwise.engine.data import SampleSource
from labelwise.engine.distributed import DistInfo, barrier, default_device, init_distributed
from labelwise.engine.planner import PLAN_NAME, Plan
from labelwise.engine.rundir import INIT_KEY, RunDir, file_sha256
from labelwise.engine.seed import seed_everything
from labelwise.engine.trainer import CHECKPOINT_NAME, FitResult, Trainer, TrainTask
from labelwise.errors import ConfigError, DataError
from labelwise.io import Prediction
from labelwise.io.atomic import write_json_atomic
from labelwise.registry import Registry

__all__ = [
    "METHODS",
    "WARM_START_FRACTION",
    "FitContext",
    "Method",
    "MethodPredictor",
    "PredictOptions",
    "Stage",
    "TrainedRun",
    "WarmStart",
    "available",
    "get_method",
    "load_method_config",
    "load_run",
    "open_run",
    "register_method",
    "train",
    "training_config",
    "warm_start_schedule",
]

logger = logging.getLogger(__name__)

ConfigT = TypeVar("ConfigT")
OptionsT = TypeVar("OptionsT", bound="PredictOptions")


# --------------------------------------------------------------------------------------------------- training
@dataclass
class Stage:
    """Everything one :class:`~labelwise.engine.Trainer` run needs (what :meth:`Method.build` returns).

    Attributes:
        task: What to train (modules, loss, validation).
        source: Training samples.
        train: Engine settings of this stage (usually ``config.train``).
        val_cases: Cases of the ``val`` split to select on (empty: the last weights are kept).
        device: Training device (default: this rank's GPU, else CPU).
        train_cases: Number of training units, recorded in ``meta.json`` (None: the train split's size).

    """

    task: TrainTask
    source: SampleSource
    train: TrainConfig
    val_cases: Sequence[Case] = ()
    device: torch.device | None = None
    train_cases: int | None = None


# --------------------------------------------------------------------------------------------------- warm start
WARM_START_FRACTION = 0.25
"""A warm-started run trains ``ceil(WARM_START_FRACTION * epochs)`` epochs (at least 1) of each schedule."""

# Plan fields that fix the shape of the networks: a warm start needs them equal.
_PLAN_SHAPE_FIELDS = ("spatial_dims", "channels", "class_names", "slicewise", "dataset_channels")


@dataclass(frozen=True)
class WarmStart:
    """Where a warm-started run takes the first weights of each stage from (``labelwise train --init RUN1``).

    Attributes:
        source: The earlier run (RUN1).
        lineage: What ``meta.json`` records as ``init_from`` (:meth:`~labelwise.engine.RunDir.lineage` of RUN1
            when this run started): the weights checksums are checked again when a stage loads them.

    """

    source: RunDir
    lineage: Mapping[str, Any]

    @classmethod
    def open(cls, run: str | Path, method: str, into: str | Path) -> WarmStart:
        """Check that ``run`` can warm-start a ``method`` run written to ``into``, and describe it.

        Raises:
            DataError: ``run`` is not a run directory or has no weights.
            ConfigError: ``run`` is of another method, or is the folder being written.

        """
        src = RunDir(run)
        if src.path.resolve() == Path(into).resolve():
            raise ConfigError(f"--init {src.path}: a run cannot start from its own weights; use a new --out folder")
        name, _ = src.read_config()
        if name != method:
            raise ConfigError(f"--init {src.path} is a {name!r} run; a warm start needs a run of {method!r}")
        src.warn_if_unfinished()
        return cls(src, src.lineage())

    @classmethod
    def recorded(cls, lineage: Mapping[str, Any], run_dir: Path) -> WarmStart:
        """The warm start recorded in a run's ``meta.json`` (what a resume continues with)."""
        try:
            return cls(RunDir(str(lineage["path"])), dict(lineage))
        except (KeyError, TypeError):
            raise DataError(f"malformed {INIT_KEY!r} entry", run_dir / "meta.json") from None

    def same_source(self, other: WarmStart) -> bool:
        """True when both name the same run with the same weights."""
        return bool(self.lineage.get("path") == other.lineage.get("path")) and dict(
            self.lineage.get("weights", {})
        ) == dict(other.lineage.get("weights", {}))

    def check_plan(self, plan: Plan) -> None:
        """Refuse a plan whose networks would not take the source run's weights.

        Raises:
            ConfigError: classes, channels, spatial dims or slice-wise mode differ (the message lists each).

        """
        old = Plan.load(self.source.path / PLAN_NAME)
        diffs = [
            f"{name}: {getattr(old, name)!r} in {self.source.path} vs {getattr(plan, name)!r} here"
            for name in _PLAN_SHAPE_FIELDS
            if getattr(old, name) != getattr(plan, name)
        ]
        if diffs:
            raise ConfigError(f"--init {self.source.path}: the plan does not fit its weights ({'; '.join(diffs)})")
        if old.normalization != plan.normalization:
            logger.info("--init %s: intensity normalisation re-planned on this dataset", self.source.path)

    def load(self, stage: str | None, modules: Mapping[str, torch.nn.Module]) -> list[str]:
        """Load the source run's weights of ``stage`` into the trainable ``modules``; returns their names.

        Frozen modules (no parameter needs a gradient) are left alone: they come from this run's earlier stages.

        Raises:
            ConfigError: the source run has no weights for this stage, they changed since this run started, or
                they do not fit the modules built from this run's config.

        """
        path = self.source.stage_weights_path(stage)
        where = "the run" if stage is None else f"stage {stage!r}"
        rel = path.relative_to(self.source.path).as_posix()
        if not path.is_file():
            raise ConfigError(f"--init {self.source.path}: no weights for {where} ({rel} is missing)")
        expected = dict(self.lineage.get("weights", {})).get(rel)
        if expected is not None and file_sha256(path) != expected:
            raise ConfigError(
                f"--init {self.source.path}: {rel} changed since this run started from it (checksum differs); "
                "use a new --out folder"
            )
        trainable = {n: m for n, m in modules.items() if any(p.requires_grad for p in m.parameters())}
        try:
            load_weights(path, trainable)
        except ConfigError as exc:
            raise ConfigError(f"--init: {exc} (was the earlier run trained with another model config?)") from None
        logger.info("%s: initialised %s from %s", where, ", ".join(sorted(trainable)) or "nothing", path)
        return sorted(trainable)


def warm_start_schedule(config: ConfigT, overrides: Sequence[str] = ()) -> tuple[ConfigT, dict[str, tuple[int, int]]]:
    """The short default schedule of a warm start: every engine schedule in ``config`` shortened.

    Each :class:`~labelwise.engine.TrainConfig` of the config (``train``, and e.g. D-Persona's ``stage2`` or
    propagation's ``reference.train``) trains ``max(1, ceil(WARM_START_FRACTION * epochs))`` epochs of the same
    length, unless ``overrides`` sets its ``epochs`` explicitly (``--set train.epochs=N``).

    Args:
        config: The method config (after preset, file and overrides).
        overrides: The ``--set key=value`` strings the user gave.

    Returns:
        ``(config, changes)``: the shortened config and ``{"train.epochs": (before, after)}`` per change.

    Example:
        >>> @dataclass(frozen=True)
        ... class Cfg:
        ...     train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=10))
        >>> warm_start_schedule(Cfg())[1]
        {'train.epochs': (10, 3)}
        >>> warm_start_schedule(Cfg(), ["train.epochs=10"])[1]
        {}

    """
    explicit = {item.split("=", 1)[0].strip() for item in overrides}
    changes: dict[str, tuple[int, int]] = {}

    def shorten(node: Any, prefix: str) -> Any:
        if isinstance(node, TrainConfig):
            key = f"{prefix}epochs"
            if key in explicit:
                return node
            short = max(1, math.ceil(WARM_START_FRACTION * node.epochs))
            if short != node.epochs:
                changes[key] = (node.epochs, short)
            return dataclasses.replace(node, epochs=short)
        if dataclasses.is_dataclass(node) and not isinstance(node, type):
            updates = {}
            for f in dataclasses.fields(node):
                value = getattr(node, f.name)
                new = shorten(value, f"{prefix}{f.name}.")
                if new is not value:
                    updates[f.name] = new
            return dataclasses.replace(node, **updates) if updates else node
        return node

    return shorten(config, ""), changes


@dataclass
class FitContext(Generic[ConfigT]):
    """What the hooks of :meth:`Method.fit` see.

    Attributes:
        dataset: The training dataset (``train`` split for training, ``val`` for selection; never ``test``).
        config: The method's config.
        rundir: The run directory (prepared: ``config.yaml`` and a running ``meta.json`` exist).
        plan: The run's plan (``plan.json``), the same on every rank and after a resume.
        resumed: True when the run directory already held this run.
        dist: Rank and world size.
        meta: Extra ``meta.json`` fields; hooks add to it, the template writes it once training ends.
        results: The result of each stage trained so far, by stage name (``"main"`` for the run dir itself).
        val_counts: The number of validation cases of each stage, by stage name.
        init: The warm start (``--init RUN1``), or None for a run from scratch. :meth:`run_stage` loads RUN1's
            weights of a stage that has no checkpoint yet.

    """

    dataset: Dataset
    config: ConfigT
    rundir: RunDir
    plan: Plan
    resumed: bool
    dist: DistInfo
    meta: dict[str, Any] = field(default_factory=dict)
    results: dict[str, FitResult] = field(default_factory=dict)
    val_counts: dict[str, int] = field(default_factory=dict)
    init: WarmStart | None = None

    @property
    def path(self) -> Path:
        """The run directory's path."""
        return self.rundir.path

    def run_stage(self, stage: Stage, name: str | None = None) -> FitResult:
        """Train ``stage`` with the engine in the run directory (``name`` None) or in ``RUN/<name>``.

        Each stage checkpoints and resumes on its own; a finished stage returns at once on a rerun. In a
        warm-started run (:attr:`init`) a stage without a checkpoint first loads the earlier run's weights of the
        same stage into its trainable modules; a stage with a checkpoint resumes from it and ignores the earlier run.
        """
        work = self.path if name is None else self.path / name
        if self.init is not None and not (work / CHECKPOINT_NAME).exists():
            self.init.load(name, stage.task.modules)
        result = Trainer(stage.task, stage.train, work, stage.source, stage.val_cases, device=stage.device).fit()
        key = "main" if name is None else name
        self.results[key] = result
        self.val_counts[key] = len(stage.val_cases)
        if stage.train_cases is not None:
            self.meta.setdefault("train_cases", stage.train_cases)
        return result

    def write_json_once(self, name: str, payload: Mapping[str, Any]) -> Path:
        """Write ``RUN/<name>`` (atomic JSON) from rank 0 unless it exists: run artifacts are never rewritten."""
        path = self.path / name
        if self.dist.is_main and not path.exists():
            write_json_atomic(path, dict(payload))
        barrier()
        return path


# --------------------------------------------------------------------------------------------------- prediction
@dataclass(frozen=True)
class PredictOptions:
    """Base of a method's typed prediction options (a frozen dataclass; None fields mean "the config's value").

    Subclasses add fields and validate them in ``__post_init__`` (raise :class:`ConfigError`).
    """

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names this method takes."""
        return tuple(f.name for f in dataclasses.fields(cls))


def make_options(options_cls: type[OptionsT], method: str, given: Mapping[str, Any]) -> OptionsT:
    """Build ``options_cls`` from ``given`` (None values dropped); unknown names raise one :class:`ConfigError`.

    Example:
        >>> @dataclass(frozen=True)
        ... class Opts(PredictOptions):
        ...     tta: bool | None = None
        >>> make_options(Opts, "m", {"tta": False, "samples": None})
        Opts(tta=False)
        >>> try:
        ...     make_options(Opts, "m", {"samples": 4})
        ... except ConfigError as exc:
        ...     print(exc)
        method 'm' takes no prediction option 'samples'; it takes: tta

    """
    taken = options_cls.names()
    values = {k: v for k, v in given.items() if v is not None}
    unknown = sorted(k for k in values if k not in taken)
    if unknown:
        raise ConfigError(
            f"method {method!r} takes no prediction option{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(u) for u in unknown)}; it takes: {', '.join(taken) or 'none'}"
        )
    return options_cls(**values)


@dataclass(frozen=True)
class TrainedRun:
    """A finished run directory opened for prediction (what every predictor starts from).

    Attributes:
        rundir: The run directory.
        config: The method's config, rebuilt from ``config.yaml``.
        plan: The data-derived settings from ``plan.json``.
        device: Where the networks run.

    """

    rundir: RunDir
    config: Any
    plan: Plan
    device: torch.device

    def load(self, modules: Mapping[str, torch.nn.Module], path: Path | None = None) -> None:
        """Load ``weights.safetensors`` (or ``path``) into ``modules``, move them to the device, switch to eval."""
        load_weights(self.rundir.weights_path if path is None else path, modules)
        for module in modules.values():
            module.to(self.device).eval()


def open_run(run_dir: str | Path, config_cls: type, device: torch.device | str | None = None) -> TrainedRun:
    """Open a trained run: config, plan and device; a run without weights raises :class:`DataError`."""
    rd = RunDir(run_dir)
    _, cfg_map = rd.read_config()
    if not rd.weights_path.exists():
        raise DataError("no weights.safetensors (training did not finish an epoch)", rd.path)
    return TrainedRun(
        rundir=rd,
        config=config_from_dict(config_cls, cfg_map),
        plan=Plan.load(rd.path / PLAN_NAME),
        device=torch.device(device) if device is not None else default_device(),
    )


class MethodPredictor(Generic[ConfigT, OptionsT]):
    """Base of a method's predictor: validated options, the case check and the shape check, done once.

    Subclasses set ``Options`` and implement :meth:`setup` (build the networks, ``self.run.load(...)``) and
    :meth:`predict_case`. :meth:`predict` checks the case against the plan, builds the typed options
    (an unknown option is a :class:`ConfigError`) and checks that the prediction has the case's shape.

    Args:
        run: The opened run (:func:`open_run`).

    """

    Options: ClassVar[type[PredictOptions]] = PredictOptions
    method: ClassVar[str] = ""

    def __init__(self, run: TrainedRun) -> None:
        self.rater_ids: tuple[str, ...] = ()  # raters of the per-rater outputs, in order (multi-rater methods)
        self.run = run
        self.config: ConfigT = run.config
        self.plan: Plan = run.plan
        self.device: torch.device = run.device
        self.setup()

    def setup(self) -> None:
        """Build the networks and load their weights (``self.run.load({...})``). Default: nothing."""

    def options(self, **given: Any) -> OptionsT:
        """The typed options from keyword values (None: the config's default); unknown names raise ConfigError."""
        return make_options(self.Options, self.method, given)  # type: ignore[return-value]

    def predict(self, case: Case, **options: Any) -> Prediction:
        """Predict one case in its own geometry (see the method's ``Options`` for what ``options`` may hold)."""
        opts = self.options(**options)
        self.plan.check_case(case)
        pred = self.predict_case(case, opts)
        if pred.spatial_shape != case.spatial_shape:
            raise DataError(f"case {case.id}: prediction shape {pred.spatial_shape} != image {case.spatial_shape}")
        return pred

    def predict_case(self, case: Case, options: OptionsT) -> Prediction:
        """Predict one checked case with validated options."""
        raise NotImplementedError


# --------------------------------------------------------------------------------------------------- the method
class Method:
    """Base class of a registered method: the template :meth:`fit` and its hooks (see the module docstring)."""

    name: ClassVar[str] = ""
    Config: ClassVar[type]
    Predictor: ClassVar[type[MethodPredictor[Any, Any]]]
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    citation: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    # ---- hooks
    @classmethod
    def check(cls, dataset: Dataset, config: Any) -> None:
        """Reject a dataset/config pair before anything is written (raise :class:`ConfigError`). Default: accept."""

    @classmethod
    def plan(cls, dataset: Dataset, config: Any) -> Plan:
        """The data-derived settings of a new run (from the ``train`` split only)."""
        raise NotImplementedError(f"method {cls.name!r} does not define plan()")

    @classmethod
    def build(cls, fit: FitContext[Any]) -> Stage:
        """Build the model(s), task, sample source and validation cases of a one-stage method."""
        raise NotImplementedError(f"method {cls.name!r} defines neither build() nor train()")

    @classmethod
    def train(cls, fit: FitContext[Any]) -> FitResult:
        """Train every stage; return the result that selects the final weights. Default: one stage, :meth:`build`."""
        return fit.run_stage(cls.build(fit))

    @classmethod
    def train_config(cls, config: Any) -> TrainConfig:
        """The engine settings whose seed seeds the run (default: ``config.train``)."""
        return config.train  # type: ignore[no-any-return]

    # ---- the template
    @classmethod
    def fit(cls, dataset: Dataset, config: Any, run_dir: str | Path, init: str | Path | None = None) -> None:
        """Train on ``dataset`` (train split; select on val) and write ``run_dir``; a rerun resumes.

        Rank 0 writes ``plan.json`` once (never rewritten on resume) and ``meta.json`` at the end; every rank
        trains. Do not override: fill :meth:`check`, :meth:`plan` and :meth:`build` (or :meth:`train`).

        Args:
            dataset: The training dataset.
            config: The method's config (for a warm start usually shortened by :func:`warm_start_schedule`).
            run_dir: The run directory to create or resume.
            init: An earlier run of this method to start from (warm start, see the module docstring); a resume
                of a warm-started run continues with the lineage recorded in its ``meta.json`` either way.

        Raises:
            ConfigError: ``init`` is not a run of this method, its plan does not fit (nothing is written then),
                or ``run_dir`` holds a run started otherwise (from scratch, or from another run).

        """
        cls.check(dataset, config)
        warm = WarmStart.open(init, cls.name, run_dir) if init is not None else None
        rd = RunDir(run_dir)
        resumed = rd.prepare(cls.name, config_to_dict(config), dataset)
        dist = init_distributed()
        warm = cls._lineage(rd, warm, created=not resumed)
        plan_path = rd.path / PLAN_NAME
        if dist.is_main and not plan_path.exists():
            cls.plan(dataset, config).save(plan_path)
        barrier()
        plan = Plan.load(plan_path)
        if warm is not None:
            try:
                warm.check_plan(plan)
            except ConfigError:
                if dist.is_main and not resumed:
                    rd.discard_untrained()
                raise
            if dist.is_main and INIT_KEY not in rd.read_meta():
                rd.write_meta(**{INIT_KEY: dict(warm.lineage)})
            barrier()
        seed_everything(cls.train_config(config).seed)
        ctx: FitContext[Any] = FitContext(dataset, config, rd, plan, resumed, dist, init=warm)
        result = cls.train(ctx)
        if dist.is_main:
            stages = {
                k: {
                    "best_epoch": r.best_epoch,
                    "val_metrics": r.best_metrics,
                    "steps": r.steps,
                    "val_cases": ctx.val_counts[k],
                }
                for k, r in ctx.results.items()
            }
            fields: dict[str, Any] = {
                "status": "finished",
                "best_epoch": result.best_epoch,
                "val_metrics": result.best_metrics,
                "stopped_early": result.stopped_early,
                "steps": sum(r.steps for r in ctx.results.values()) or result.steps,
                "train_cases": len(dataset.split_ids("train")),
                "val_cases": list(ctx.val_counts.values())[-1] if ctx.val_counts else 0,
            }
            if len(stages) > 1:
                fields["stages"] = stages
            fields.update(ctx.meta)
            rd.write_meta(**fields)

    @staticmethod
    def _lineage(rd: RunDir, given: WarmStart | None, created: bool) -> WarmStart | None:
        """The warm start of this run: the one given, checked against what ``meta.json`` recorded on a resume.

        Raises:
            ConfigError: a resume names another source run than the one recorded, or a run with trained state
                that started from scratch is given ``--init``.

        """
        recorded_map = None if created else rd.read_meta().get(INIT_KEY)
        recorded = None if recorded_map is None else WarmStart.recorded(recorded_map, rd.path)
        if given is None:
            return recorded
        if recorded is None:
            if not created and rd.has_trained_state():
                raise ConfigError(
                    f"{rd.path} holds a run trained from scratch; --init applies to a new run: use a new --out folder"
                )
            return given
        if recorded.lineage.get("path") != given.lineage.get("path"):
            raise ConfigError(
                f"{rd.path} was started from {recorded.lineage.get('path')}; resume it with that --init "
                "(or none), or use a new --out folder"
            )
        if not recorded.same_source(given):
            raise ConfigError(
                f"{rd.path} was started from {given.source.path}, whose weights have changed since (checksums "
                "differ); use a new --out folder"
            )
        return recorded

    @classmethod
    def load_predictor(cls, run_dir: str | Path, device: torch.device | str | None = None) -> MethodPredictor[Any, Any]:
        """Rebuild the trained model(s) from ``run_dir`` (``config.yaml``, ``plan.json``, weights)."""
        return cls.Predictor(open_run(run_dir, cls.Config, device))

    @classmethod
    def example_dataset(cls, dest: Path) -> Dataset | None:
        """Write a tiny dataset this method can train on (its ``smoke`` preset) into ``dest``, for the contract test.

        Returns None (the default) to use the contract test's 2D multi-rater dataset (bright discs, 2 raters,
        train/val/test splits). Methods needing other data (image-level labels, unlabelled domains, text)
        override this.
        """
        return None


METHODS: Registry[type[Method]] = Registry("method")


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator registering a :class:`Method` subclass under ``name`` (twice is an error)."""

    def deco(cls: type[Method]) -> type[Method]:
        cls.name = name
        predictor = getattr(cls, "Predictor", None)
        if predictor is not None:
            predictor.method = name
        return METHODS.register(name)(cls)

    return deco


def _load_builtin() -> None:
    """Import the modules of the built-in methods so they register themselves (explicit list, no crawling)."""
    import importlib

    for mod in _BUILTIN:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:  # a method module not written yet
            if exc.name != mod:
                raise


_BUILTIN: tuple[str, ...] = tuple(
    f"labelwise.methods.{m}"
    for m in ("supervised", "mrnet", "dpersona", "cam", "cltn", "cps", "propagation", "sentinel")
)


def available() -> list[str]:
    """Names of the registered methods."""
    _load_builtin()
    return METHODS.available()


def get_method(name: str) -> type[Method]:
    """The method class registered as ``name`` (unknown names raise :class:`ConfigError` listing them)."""
    _load_builtin()
    return METHODS.get(name)


def load_method_config(
    method: type[Method],
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    preset: str | None = None,
) -> Any:
    """The method's config: defaults < ``preset`` < YAML file < ``overrides``.

    ``path`` may be a bare config mapping or a run's ``config.yaml`` (``{"method": ..., "config": {...}}``).
    """
    preset_map: Mapping[str, Any] | None = None
    if preset is not None:
        if preset not in method.presets:
            raise ConfigError(
                f"method {method.name!r} has no preset {preset!r}; presets: {sorted(method.presets) or 'none'}"
            )
        preset_map = method.presets[preset]
    if path is not None:
        import yaml

        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read config ({exc})") from None
        if isinstance(raw, dict) and set(raw) == {"method", "config"}:
            if raw["method"] != method.name:
                raise ConfigError(f"{path}: config is for method {raw['method']!r}, not {method.name!r}")
            base = config_to_dict(load_config(method.Config, None, (), preset_map))
            from labelwise.engine.config import deep_merge, parse_overrides

            return config_from_dict(
                method.Config, deep_merge(deep_merge(base, raw["config"]), parse_overrides(overrides))
            )
    return load_config(method.Config, path, overrides, preset_map)


SCHEDULE_KEYS = ("epochs=", "steps_per_epoch=", "time_budget_s=")
"""Overrides that ask for a schedule: with one of them, ``--time-budget auto`` keeps the configured schedule."""


def training_config(
    method: type[Method],
    dataset: Dataset,
    config_path: str | Path | None = None,
    overrides: Sequence[str] = (),
    preset: str | None = None,
    init: str | Path | None = None,
    time_budget: str = "none",
) -> Any:
    """The config a training runs with: file, preset and overrides, the warm-start schedule, then the time budget.

    The one place ``labelwise train`` and :func:`train` turn their options into a config.

    Args:
        method: The method class.
        dataset: The training dataset (its train split sizes the ``auto`` budget).
        config_path: A YAML config file (as :func:`load_method_config`).
        overrides: ``key=value`` overrides (as :func:`load_method_config`).
        preset: A named preset of the method (as :func:`load_method_config`).
        init: An earlier run to warm-start from: the schedule is shortened by :func:`warm_start_schedule`.
        time_budget: ``auto`` (the CLI's default: on a CPU, without an asked-for schedule, a budget from the
            training-set size, :func:`labelwise.engine.budget.default_budget_s`), ``none`` (the configured
            schedule; the API's default) or a duration such as ``15m``.

    Raises:
        ConfigError: a bad config, override, preset or duration.

    """
    cfg: Any = load_method_config(method, config_path, overrides, preset)
    if init is not None:
        cfg, shortened = warm_start_schedule(cfg, overrides)
        for key, (before, after) in shortened.items():
            logging.getLogger("labelwise.plan").info("warm start from %s: %s %d -> %d", init, key, before, after)
    asked = (
        preset is not None
        or config_path is not None
        or any(s.split("=", 1)[0].split(".")[-1] + "=" in SCHEDULE_KEYS for s in overrides)
    )
    return resolve_time_budget(
        cfg,
        time_budget,
        num_train_cases=len(dataset.split_ids("train")),
        full_schedule_asked=asked,
        cuda=torch.cuda.is_available(),
    )


def train(
    method_name: str,
    dataset: Dataset | str | Path,
    run_dir: str | Path,
    config_path: str | Path | None = None,
    overrides: Sequence[str] = (),
    preset: str | None = None,
    init: str | Path | None = None,
    time_budget: str = "none",
) -> Any:
    """Load the config (:func:`training_config`) and run ``fit``; returns the config used.

    With ``init`` (an earlier run of the method) the run is warm-started from its weights on the short schedule
    of :func:`warm_start_schedule` (``overrides`` that set ``...epochs`` keep theirs). ``time_budget="auto"``
    trains what ``labelwise train`` trains without ``--time-budget``.
    """
    method = get_method(method_name)
    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    cfg = training_config(method, ds, config_path, overrides, preset, init, time_budget)
    method.fit(ds, cfg, run_dir, init=init)
    return cfg


def load_run(
    run_dir: str | Path, device: torch.device | str | None = None
) -> tuple[type[Method], Any, MethodPredictor[Any, Any]]:
    """Rebuild a trained run: ``(method class, config, predictor)``.

    A run that did not finish (``meta.json`` status not ``"finished"``: killed, failed or still training) is
    loaded with its last saved weights and a warning saying so.

    Raises:
        ConfigError: ``device`` is not usable here (e.g. ``cuda`` on a CPU-only torch), unknown method.
        DataError: not a run directory.

    """
    rd = RunDir(run_dir)
    name, cfg_map = rd.read_config()
    method = get_method(name)
    cfg: Any = config_from_dict(method.Config, cfg_map)
    dev = resolve_device(device)
    rd.warn_if_unfinished()
    return method, cfg, method.load_predictor(run_dir, dev)
