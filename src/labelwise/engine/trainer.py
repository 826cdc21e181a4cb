"""The training loop every method shares.

A method describes *what* to train with a :class:`TrainTask`; the :class:`Trainer` does the rest: devices,
DDP wrapping, optimisers and LR schedules, mixed precision, gradient accumulation, validation on the ``val``
split only, best checkpoint and early stopping, resumable checkpoints, logs and the progress bar.

Writing a task::

    class MyTask(TrainTask):
        def __init__(self, net):
            self.modules = {"net": net}          # every trainable/stateful module, by name

        def training_step(self, batch, ctx):     # batch: collated samples, tensors on ctx.device
            logits = ctx.module("net")(batch["image"])
            return loss_fn(logits, batch["target"])   # scalar: the engine does backward/accumulate/step

        def validation_step(self, case, ctx):    # one val Case -> metrics (higher is better for ctx monitor)
            return {"dice": ...}

Several networks trained jointly (MRNet, CPS) simply put several entries in ``modules``; their parameters share
the default optimiser unless :meth:`TrainTask.configure_optimizers` says otherwise. GANs (CLTN) set
``manual_optimization = True`` and drive optimisers in ``training_step`` with ``ctx.backward(loss)``,
``ctx.optimizer_step("gen")`` and ``ctx.zero_grad("disc")``. Two-stage methods (D-Persona) run two Trainers in
sub-folders of the same run dir (``stage1/``, ``stage2/``), freezing stage-1 modules with ``requires_grad_(False)``
(frozen modules are not DDP-wrapped); each stage resumes independently.

Resume: ``<work_dir>/checkpoint.safetensors`` is written every ``checkpoint_every`` optimiser steps and at each
epoch end (atomic). Running the same fit again loads it (weights, optimisers, schedules, RNG states, epoch,
micro-batch within the epoch, best metric) and continues; the data of the remaining micro-batches is the same
because samples depend only on ``(seed, epoch, index)``.

Time budget: with ``cfg.time_budget_s > 0`` the first start measures the step time (probe steps rolled back
afterwards) and one validation, fixes the schedule that fits (:func:`labelwise.engine.budget.plan_schedule`), logs
the planned wall time, and records the schedule in the checkpoint and in ``<work_dir>/schedule.json``. Tasks read
the schedule in force from ``ctx.epochs`` / ``ctx.total_steps``, never from the config.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from labelwise.data import Case
from labelwise.engine.allocator import tune_allocator
from labelwise.engine.budget import plan_schedule, starved_plan_warning
from labelwise.engine.checkpoint import load_checkpoint, save_checkpoint, save_weights
from labelwise.engine.config import TrainConfig
from labelwise.engine.data import SampleSource, epoch_loader
from labelwise.engine.distributed import (
    DistInfo,
    all_reduce_mean,
    barrier,
    broadcast_float,
    default_device,
    init_distributed,
)
from labelwise.engine.logger import CSVLogger, MetricLogger, MultiLogger, TensorBoardLogger
from labelwise.engine.seed import get_rng_state, set_rng_state
from labelwise.errors import ConfigError
from labelwise.io.atomic import write_json_atomic
from labelwise.progress import ProgressBar

__all__ = ["FitResult", "StepContext", "TrainTask", "Trainer", "lr_lambda", "make_optimizer"]

logger = logging.getLogger(__name__)
# The planned schedule and wall time are shown by the CLI even without --verbose (see cli.common.setup_logging).
plan_logger = logging.getLogger("labelwise.plan")

SCHEDULE_NAME = "schedule.json"
_PROBE_STEPS = 3  # measured optimiser steps of the time-budget probe (after one warm-up step)

CHECKPOINT_NAME = "checkpoint.safetensors"


def lr_lambda(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the peak LR at optimiser step ``s`` (linear warm-up, then poly/cosine/constant)."""

    def f(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        t = min(max(step - cfg.warmup_steps, 0) / max(total_steps - cfg.warmup_steps, 1), 1.0)
        if cfg.schedule == "poly":
            return float((1 - t) ** 0.9)
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        return 1.0

    return f


class TrainTask:
    """Base class of what a method trains (see the module docstring).

    Attributes:
        modules: Named modules; all are moved to the device, checkpointed, and (if trainable) DDP-wrapped.
        manual_optimization: If True the task steps optimisers itself through the :class:`StepContext`.

    """

    modules: dict[str, nn.Module]
    manual_optimization: bool = False

    def configure_optimizers(self, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        """Default: one optimiser named ``"main"`` over every trainable parameter of every module."""
        params = [p for m in self.modules.values() for p in m.parameters() if p.requires_grad]
        return {"main": make_optimizer(params, cfg)}

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> torch.Tensor | dict[str, torch.Tensor]:
        """Compute the loss of one micro-batch.

        Returns:
            A scalar loss, or a dict with a ``"loss"`` entry plus extra scalars to log. With
            ``manual_optimization`` the returned values are only logged.

        """
        raise NotImplementedError

    def validation_step(self, case: Case, ctx: StepContext) -> dict[str, float]:
        """Metrics for one validation case (averaged over cases, NaNs ignored). Default: none."""
        return {}

    def on_epoch_start(self, epoch: int, ctx: StepContext) -> None:
        """Hook called at the start of each epoch (e.g. ramp-up weights)."""


def make_optimizer(params: Sequence[nn.Parameter] | Iterator[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser named by ``cfg.optimizer`` with ``cfg.lr`` and ``cfg.weight_decay``."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.99, nesterov=True, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@dataclass
class StepContext:
    """What a task sees during a step: counters, device, wrapped modules and optimiser controls."""

    trainer: Trainer
    epoch: int = 0
    step: int = 0
    micro: int = 0

    @property
    def device(self) -> torch.device:
        """The training device."""
        return self.trainer.device

    @property
    def dist(self) -> DistInfo:
        """Rank and world size."""
        return self.trainer.dist

    def module(self, name: str) -> nn.Module:
        """The (possibly DDP-wrapped) module to call in training steps."""
        return self.trainer.wrapped[name]

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bfloat16 autocast on CUDA when ``amp`` is on, else a no-op."""
        return self.trainer.autocast()

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of ``loss / grad_accum`` (manual optimisation)."""
        (loss / self.trainer.cfg.grad_accum).backward()  # type: ignore[no-untyped-call]

    def optimizer_step(self, name: str) -> None:
        """Clip (if configured) and step optimiser ``name`` (manual optimisation)."""
        self.trainer._step_optimizer(name)

    def zero_grad(self, name: str) -> None:
        """Zero the gradients of optimiser ``name``."""
        self.trainer.optimizers[name].zero_grad(set_to_none=True)

    @property
    def last_micro(self) -> bool:
        """True on the last micro-batch of an optimiser step."""
        return self.micro == self.trainer.cfg.grad_accum - 1

    @property
    def epochs(self) -> int:
        """Epochs of the schedule in force (the config's, or fewer under a time budget)."""
        return self.trainer.epochs

    @property
    def total_steps(self) -> int:
        """Optimiser steps of the schedule in force."""
        return self.trainer.epochs * self.trainer.steps_per_epoch


@dataclass
class FitResult:
    """Outcome of :meth:`Trainer.fit`."""

    best_metrics: dict[str, float] = field(default_factory=dict)
    best_epoch: int = -1
    last_epoch: int = -1
    stopped_early: bool = False
    steps: int = 0
    seconds: float = 0.0
    planned_steps: int = 0


class Trainer:
    """Runs a :class:`TrainTask`.

    Args:
        task: The task (modules already built and seeded by the method).
        cfg: Engine settings.
        work_dir: Folder for ``checkpoint.safetensors``, ``weights.safetensors`` (best) and ``logs/``.
        source: Training samples.
        val_cases: Cases of the ``val`` split (possibly empty: then the last weights are kept).
        weights_name: File name of the selected weights in ``work_dir``.
        device: Training device (default: :func:`default_device`).
        loggers: Extra metric loggers (CSV and TensorBoard are always used on rank 0).

    """

    def __init__(
        self,
        task: TrainTask,
        cfg: TrainConfig,
        work_dir: str | Path,
        source: SampleSource,
        val_cases: Sequence[Case] = (),
        weights_name: str = "weights.safetensors",
        device: torch.device | None = None,
        loggers: Sequence[MetricLogger] = (),
    ) -> None:
        tune_allocator()
        self.task = task
        self.cfg = cfg
        self.work_dir = Path(work_dir)
        self.source = source
        self.val_cases = list(val_cases)
        for c in self.val_cases:
            if c.split is not None and c.split != "val":
                raise ValueError(f"case {c.id} is in split {c.split!r}; validation uses the 'val' split only")
        self.weights_name = weights_name
        self.dist = init_distributed()
        self.device = device or default_device()
        self.extra_loggers = list(loggers)
        self.wrapped: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LambdaLR] = {}
        self.epochs, self.steps_per_epoch = cfg.epochs, cfg.steps_per_epoch  # the schedule in force

    # ------------------------------------------------------------------ helpers
    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Mixed-precision context for forward passes."""
        if self.cfg.amp and self.device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _step_optimizer(self, name: str) -> None:
        opt = self.optimizers[name]
        if self.cfg.grad_clip > 0:
            params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        opt.step()

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        nb = self.device.type == "cuda"
        return {k: (v.to(self.device, non_blocking=nb) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}

    def _setup(self) -> None:
        for name, mod in self.task.modules.items():
            mod.to(self.device)
            trainable = any(p.requires_grad for p in mod.parameters())
            if self.dist.world_size > 1 and trainable:
                ids = [self.device.index] if self.device.type == "cuda" else None
                self.wrapped[name] = nn.parallel.DistributedDataParallel(mod, device_ids=ids)
            else:
                self.wrapped[name] = mod
        self.optimizers = self.task.configure_optimizers(self.cfg)

        def schedule(step: int) -> float:  # reads the schedule in force, which a time budget fixes after _setup
            return lr_lambda(self.cfg, self.epochs * self.steps_per_epoch)(step)

        self.schedulers = {n: torch.optim.lr_scheduler.LambdaLR(o, schedule) for n, o in self.optimizers.items()}

    def _micro_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, float]:
        """Forward/backward of one micro-batch (and the optimiser step on the last one); returns the logs."""
        accum = self.cfg.grad_accum
        last = ctx.micro == accum - 1
        if ctx.micro == 0 and not self.task.manual_optimization:
            for o in self.optimizers.values():
                o.zero_grad(set_to_none=True)
        batch = self._to_device(batch)
        with self._no_sync(not last and not self.task.manual_optimization):
            with self.autocast():
                out = self.task.training_step(batch, ctx)
            out = {"loss": out} if isinstance(out, torch.Tensor) else dict(out)
            if not self.task.manual_optimization:
                (out["loss"].float() / accum).backward()  # type: ignore[no-untyped-call]
        logs = {}
        for k, v in out.items():
            val = v.detach().float() if isinstance(v, torch.Tensor) else torch.tensor(float(v))
            logs[k] = float(all_reduce_mean(val.to(self.device)))
        if "loss" in logs and not math.isfinite(logs["loss"]):
            raise ConfigError(
                f"{self.work_dir}: the training loss became {logs['loss']} at step {ctx.step} (epoch {ctx.epoch}); "
                f"the weights are not usable: lower train.lr (now {self.cfg.lr:g}) or set train.grad_clip"
            )
        if last and not self.task.manual_optimization:
            for name in self.optimizers:
                self._step_optimizer(name)
        return logs

    def _measure(self, ctx: StepContext) -> tuple[float, float]:
        """Seconds per optimiser step and per validation case, on probe steps that are rolled back.

        Weights, buffers, optimiser states and RNG states are restored afterwards, so a budgeted run trains exactly
        as an unbudgeted run with the same (shortened) schedule would.
        """
        cfg = self.cfg
        modules = {n: copy.deepcopy(m.state_dict()) for n, m in self.task.modules.items()}
        optims = {n: copy.deepcopy(o.state_dict()) for n, o in self.optimizers.items()}
        rng = get_rng_state()
        self.task.on_epoch_start(0, ctx)
        loader = epoch_loader(
            self.source,
            cfg.seed + 7919,
            0,
            cfg.batch_size,
            (_PROBE_STEPS + 1) * cfg.grad_accum,
            0,
            self.dist.rank,
            self.dist.world_size,
            0,
            self.device.type == "cuda",
        )
        t0 = 0.0
        for b, batch in enumerate(loader):
            if b == cfg.grad_accum:  # the first optimiser step is a warm-up
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                t0 = time.perf_counter()
            ctx.micro, ctx.step = b % cfg.grad_accum, 0
            self._micro_step(batch, ctx)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        step_s = broadcast_float((time.perf_counter() - t0) / _PROBE_STEPS, self.device)
        val_s = 0.0
        if self.val_cases:
            t1 = time.perf_counter()
            for m in self.task.modules.values():
                m.eval()
            if self.dist.is_main:
                with torch.inference_mode():
                    self.task.validation_step(self.val_cases[0], ctx)
            for m in self.task.modules.values():
                m.train()
            val_s = broadcast_float(time.perf_counter() - t1, self.device)
        for n, m in self.task.modules.items():
            m.load_state_dict(modules[n])
        for n, o in self.optimizers.items():
            o.load_state_dict(optims[n])
            o.zero_grad(set_to_none=True)
        set_rng_state(*rng)
        return step_s, val_s

    def _plan(self, ctx: StepContext) -> dict[str, Any]:
        """Fix the schedule of a fresh run (shortened to the time budget, if any) and describe it."""
        cfg = self.cfg
        info: dict[str, Any] = {
            "nominal_epochs": cfg.epochs,
            "nominal_steps_per_epoch": cfg.steps_per_epoch,
            "time_budget_s": cfg.time_budget_s,
        }
        if cfg.time_budget_s > 0:
            step_s, val_s = self._measure(ctx)
            self.epochs, self.steps_per_epoch, predicted = plan_schedule(cfg, step_s, val_s, len(self.val_cases))
            info.update(step_seconds=step_s, val_case_seconds=val_s, predicted_seconds=predicted)
            plan_logger.info(
                "%s: %d steps (%d epochs x %d) planned in a %.0f s budget: about %.1f min at %.2f s/step%s",
                self.work_dir,
                self.epochs * self.steps_per_epoch,
                self.epochs,
                self.steps_per_epoch,
                cfg.time_budget_s,
                predicted / 60,
                step_s,
                ""
                if self.epochs * self.steps_per_epoch == cfg.epochs * cfg.steps_per_epoch
                else f" (the configured {cfg.epochs * cfg.steps_per_epoch} would not fit)",
            )
            warning = starved_plan_warning(
                self.epochs * self.steps_per_epoch, cfg.epochs * cfg.steps_per_epoch, _load_average(), os.cpu_count()
            )
            if warning is not None and self.dist.is_main:
                plan_logger.warning("%s: %s", self.work_dir, warning)
        info.update(epochs=self.epochs, steps_per_epoch=self.steps_per_epoch)
        return info

    def _no_sync(self, active: bool) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        if active:
            for m in self.wrapped.values():
                if isinstance(m, nn.parallel.DistributedDataParallel):
                    stack.enter_context(m.no_sync())
        return stack

    def _save_checkpoint(self, state: Mapping[str, Any]) -> None:
        if self.dist.is_main:
            save_checkpoint(
                self.work_dir / CHECKPOINT_NAME, self.task.modules, self.optimizers, state, rng=get_rng_state()
            )
        barrier()

    def _validate(self, ctx: StepContext) -> dict[str, float]:
        if not self.val_cases:
            return {}
        for m in self.task.modules.values():
            m.eval()
        per_case: dict[str, list[float]] = {}
        if self.dist.is_main:
            with torch.inference_mode():
                for case in self.val_cases:
                    for k, v in self.task.validation_step(case, ctx).items():
                        per_case.setdefault(k, []).append(float(v))
        for m in self.task.modules.values():
            m.train()
        return {k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for k, v in per_case.items()}

    # ------------------------------------------------------------------ main loop
    def fit(self) -> FitResult:
        """Train (resuming from ``work_dir/checkpoint.safetensors`` if present) and return the outcome."""
        cfg = self.cfg
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._setup()
        state: dict[str, Any] = {
            "epoch": 0,
            "batch": 0,
            "step": 0,
            "best": -math.inf,
            "best_epoch": -1,
            "best_metrics": {},
            "bad_validations": 0,
            "finished": False,
            "stopped_early": False,
        }
        ckpt = self.work_dir / CHECKPOINT_NAME
        ctx = StepContext(self)
        if ckpt.exists():
            loaded, rng, _ = load_checkpoint(ckpt, self.task.modules, self.optimizers)
            state.update(loaded)
            set_rng_state(*rng)
            self.epochs = int(state.get("epochs", cfg.epochs))  # the schedule fixed on the first start
            self.steps_per_epoch = int(state.get("steps_per_epoch", cfg.steps_per_epoch))
            for sch in self.schedulers.values():
                sch.last_epoch = state["step"]
                sch._last_lr = [g["lr"] for g in sch.optimizer.param_groups]
            logger.info(
                "resuming %s at epoch %d, batch %d, step %d", ckpt, state["epoch"], state["batch"], state["step"]
            )
        else:
            schedule = self._plan(ctx)
            if self.dist.is_main:
                write_json_atomic(self.work_dir / SCHEDULE_NAME, schedule)
        state["epochs"], state["steps_per_epoch"] = self.epochs, self.steps_per_epoch
        lg: MultiLogger | None = None
        if self.dist.is_main:
            lg = MultiLogger(
                [CSVLogger(self.work_dir / "logs"), TensorBoardLogger(self.work_dir / "logs"), *self.extra_loggers]
            )
            lg.truncate(state["step"])
        result = FitResult(planned_steps=self.epochs * self.steps_per_epoch)
        if state["finished"]:
            logger.info("%s: training already finished", self.work_dir)
            result.best_metrics = dict(state["best_metrics"])
            result.best_epoch = state["best_epoch"]
            result.steps = state["step"]
            return result
        for m in self.task.modules.values():
            m.train()
        t0 = time.perf_counter()
        accum = cfg.grad_accum
        num_batches = self.steps_per_epoch * accum
        bar = ProgressBar(
            "train",
            self.epochs * self.steps_per_epoch,
            enabled=cfg.progress and self.dist.is_main,
            fields={"loss": "loss {task.fields[loss]:.4f}"},
        )
        bar.update(completed=state["step"])
        try:
            for epoch in range(state["epoch"], self.epochs):
                ctx.epoch = epoch
                self.task.on_epoch_start(epoch, ctx)
                start = state["batch"] if epoch == state["epoch"] else 0
                loader = epoch_loader(
                    self.source,
                    cfg.seed,
                    epoch,
                    cfg.batch_size,
                    num_batches,
                    start,
                    self.dist.rank,
                    self.dist.world_size,
                    cfg.num_workers,
                    self.device.type == "cuda",
                )
                logs: dict[str, float] = {}
                for b, batch in enumerate(loader, start=start):
                    micro = b % accum
                    ctx.micro, ctx.step = micro, state["step"]
                    for k, v in self._micro_step(batch, ctx).items():
                        logs[k] = logs.get(k, 0.0) + v / accum
                    if micro != accum - 1:
                        continue
                    for sch in self.schedulers.values():
                        sch.step()
                    state["step"] += 1
                    state["batch"] = b + 1
                    if lg is not None:
                        lrs = {f"lr_{n}": o.param_groups[0]["lr"] for n, o in self.optimizers.items()}
                        lg.log("train", {**logs, **lrs}, state["step"], epoch)
                    bar.update(state["step"], f"epoch {epoch}", loss=logs.get("loss", float("nan")))
                    logs = {}
                    if state["step"] % cfg.checkpoint_every == 0 and state["batch"] < num_batches:
                        state["epoch"] = epoch
                        self._save_checkpoint(state)
                # ---- end of epoch: validation, selection, checkpoint
                state["epoch"], state["batch"] = epoch + 1, 0
                stop = False
                if (epoch + 1) % cfg.val_every == 0 or epoch + 1 == self.epochs:
                    metrics = self._validate(ctx)
                    if metrics and lg is not None:
                        lg.log("val", metrics, state["step"], epoch)
                    score = metrics.get(cfg.monitor, float("nan")) if metrics else float("nan")
                    score = broadcast_float(score, self.device)
                    if self.val_cases and math.isfinite(score) and score > state["best"]:
                        state.update(best=score, best_epoch=epoch, best_metrics=metrics, bad_validations=0)
                        if self.dist.is_main:
                            save_weights(
                                self.work_dir / self.weights_name, self.task.modules, {"epoch": epoch, **metrics}
                            )
                    elif self.val_cases:
                        state["bad_validations"] += 1
                        stop = cfg.patience > 0 and state["bad_validations"] >= cfg.patience
                if not self.val_cases and self.dist.is_main:
                    save_weights(self.work_dir / self.weights_name, self.task.modules, {"epoch": epoch})
                    state["best_epoch"] = epoch
                if stop or epoch + 1 == self.epochs:
                    state["finished"], state["stopped_early"] = True, stop
                self._save_checkpoint(state)
                if stop:
                    logger.info("early stopping after epoch %d (best epoch %d)", epoch, state["best_epoch"])
                    break
        finally:
            bar.close()
            if lg is not None:
                lg.close()
        result.best_metrics = dict(state["best_metrics"])
        result.best_epoch = int(state["best_epoch"])
        result.last_epoch = int(state["epoch"]) - 1
        result.stopped_early = bool(state["stopped_early"])
        result.steps = int(state["step"])
        result.seconds = time.perf_counter() - t0
        return result


def _load_average() -> float | None:
    """The 1-min load average, or None where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
