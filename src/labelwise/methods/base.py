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

Use :func:`train` / :func:`load_run` from code; the CLI (``labelwise train|predict|methods``) calls the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import torch

from labelwise.data import Case, Dataset
from labelwise.engine.checkpoint import load_weights
from labelwise.engine.config import TrainConfig, config_from_dict, config_to_dict, load_config, resolve_device
from labelwise.engine.data import SampleSource
from labelwise.engine.distributed import DistInfo, barrier, default_device, init_distributed
from labelwise.engine.planner import PLAN_NAME, Plan
from labelwise.engine.rundir import RunDir
from labelwise.engine.seed import seed_everything
from labelwise.engine.trainer import FitResult, Trainer, TrainTask
from labelwise.errors import ConfigError, DataError
from labelwise.io import Prediction
from labelwise.io.atomic import write_json_atomic
from labelwise.registry import Registry

__all__ = [
    "METHODS",
    "FitContext",
    "Method",
    "MethodPredictor",
    "PredictOptions",
    "Stage",
    "TrainedRun",
    "available",
    "get_method",
    "load_method_config",
    "load_run",
    "open_run",
    "register_method",
    "train",
]

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

    @property
    def path(self) -> Path:
        """The run directory's path."""
        return self.rundir.path

    def run_stage(self, stage: Stage, name: str | None = None) -> FitResult:
        """Train ``stage`` with the engine in the run directory (``name`` None) or in ``RUN/<name>``.

        Each stage checkpoints and resumes on its own; a finished stage returns at once on a rerun.
        """
        work = self.path if name is None else self.path / name
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
    def fit(cls, dataset: Dataset, config: Any, run_dir: str | Path) -> None:
        """Train on ``dataset`` (train split; select on val) and write ``run_dir``; a rerun resumes.

        Rank 0 writes ``plan.json`` once (never rewritten on resume) and ``meta.json`` at the end; every rank
        trains. Do not override: fill :meth:`check`, :meth:`plan` and :meth:`build` (or :meth:`train`).
        """
        cls.check(dataset, config)
        rd = RunDir(run_dir)
        resumed = rd.prepare(cls.name, config_to_dict(config), dataset)
        dist = init_distributed()
        plan_path = rd.path / PLAN_NAME
        if dist.is_main and not plan_path.exists():
            cls.plan(dataset, config).save(plan_path)
        barrier()
        plan = Plan.load(plan_path)
        seed_everything(cls.train_config(config).seed)
        ctx: FitContext[Any] = FitContext(dataset, config, rd, plan, resumed, dist)
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


def train(
    method_name: str,
    dataset: Dataset | str | Path,
    run_dir: str | Path,
    config_path: str | Path | None = None,
    overrides: Sequence[str] = (),
    preset: str | None = None,
) -> Any:
    """Load the config and run ``fit``; returns the config used."""
    method = get_method(method_name)
    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    cfg: Any = load_method_config(method, config_path, overrides, preset)
    method.fit(ds, cfg, run_dir)
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
