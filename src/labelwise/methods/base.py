"""The method protocol and registry: how a segmentation method plugs into labelwise.

A method is a class registered with :func:`register_method` that provides

* ``Config``: a frozen dataclass with defaults for every field (loaded from YAML, ``--set key=value`` overrides
  and named ``presets``; see :func:`labelwise.engine.config.load_config`). Embed
  :class:`labelwise.engine.TrainConfig` as a ``train`` field to get the engine's settings for free.
* ``fit(dataset, config, run_dir)``: train on ``dataset``'s ``train`` split, select on ``val`` (never ``test``),
  and write the run directory (:mod:`labelwise.engine.rundir`). Called again with the same arguments after a
  crash it resumes (the engine's :class:`~labelwise.engine.Trainer` does this for you).
* ``load_predictor(run_dir, device)``: rebuild the model(s) from ``config.yaml`` + ``plan.json`` +
  ``weights.safetensors`` and return a :class:`Predictor` whose ``predict(case, **options)`` returns a
  :class:`labelwise.io.Prediction` (class probabilities, optional samples ``(S, ...)``, per-rater maps
  ``(R, ...)``, uncertainty) in the case's own geometry.

Minimal example (see :mod:`labelwise.methods.supervised` for the full worked example)::

    @dataclass(frozen=True)
    class MyConfig:
        model: ModelSpec = ModelSpec("unet")
        train: TrainConfig = TrainConfig()

    @register_method("my-method")
    class MyMethod(Method):
        Config = MyConfig
        presets = {"full": {"train": {"epochs": 300}}}
        citation = "Author et al., Venue Year"

        @classmethod
        def fit(cls, dataset, config, run_dir): ...        # build a TrainTask, run Trainer(...).fit()

        @classmethod
        def load_predictor(cls, run_dir, device=None): ... # return an object with .predict(case) -> Prediction

Use :func:`train` / :func:`load_run` from code; the CLI (``labelwise train|predict|methods``) calls the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch

from labelwise.data import Case, Dataset
from labelwise.engine.checkpoint import load_weights
from labelwise.engine.config import config_from_dict, config_to_dict, load_config, resolve_device
from labelwise.engine.planner import PLAN_NAME, Plan
from labelwise.engine.rundir import RunDir
from labelwise.engine.trainer import default_device
from labelwise.errors import ConfigError, DataError
from labelwise.io import Prediction
from labelwise.registry import Registry

__all__ = [
    "METHODS",
    "Method",
    "Predictor",
    "TrainedRun",
    "available",
    "get_method",
    "load_method_config",
    "load_run",
    "open_run",
    "register_method",
    "train",
]


class Predictor(Protocol):
    """A trained method, ready to predict single cases."""

    def predict(self, case: Case, **options: Any) -> Prediction:
        """Predict one case (any split); arrays are in the case's own geometry."""
        ...


class Method:
    """Base class of a registered method (see the module docstring)."""

    name: ClassVar[str] = ""
    Config: ClassVar[type]
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    citation: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    @classmethod
    def fit(cls, dataset: Dataset, config: Any, run_dir: str | Path) -> None:
        """Train on ``dataset`` (train split; select on val) and write ``run_dir``."""
        raise NotImplementedError

    @classmethod
    def load_predictor(cls, run_dir: str | Path, device: torch.device | str | None = None) -> Predictor:
        """Rebuild the trained model(s) from ``run_dir``."""
        raise NotImplementedError

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


def load_run(run_dir: str | Path, device: torch.device | str | None = None) -> tuple[type[Method], Any, Predictor]:
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

    def load(self, modules: Mapping[str, torch.nn.Module]) -> None:
        """Load ``weights.safetensors`` into ``modules``, move them to the device and switch to eval mode."""
        load_weights(self.rundir.weights_path, modules)
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
