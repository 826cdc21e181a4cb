"""Checkpoints without pickle: module weights, optimiser state and RNG states in one safetensors file.

Decision (documented in docs/engine.md): optimiser state is stored as safetensors tensors plus a JSON
description of its structure in the file's metadata, so every file labelwise reads -- including resume
checkpoints -- is loaded without unpickling anything. Tensor keys::

    module.<name>.<param>                     state_dict entries of each named module
    optim.<name>.<param index>.<state key>    tensor entries of each optimiser's per-parameter state
    rng.torch | rng.cuda.<i> | rng.numpy | rng.python
    extra.<key>                               any extra tensors (e.g. an EMA buffer)

Metadata key ``labelwise`` holds JSON: ``{"format": "labelwise-checkpoint", "version": 1, "optimizers":
{name: {"param_groups": [...], "scalars": {index: {key: value}}}}, "rng": {...}, "state": {...}}`` where
``state`` carries the loop counters (epoch, step, batch within epoch, best metric, ...).

Every write is atomic (temporary file + rename), so a SIGKILL during a save leaves the previous checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from labelwise.errors import ConfigError, DataError
from labelwise.io.atomic import atomic_path

__all__ = [
    "CHECKPOINT_FORMAT",
    "load_checkpoint",
    "load_weights",
    "optimizer_state_from_tensors",
    "optimizer_state_to_tensors",
    "read_safetensors",
    "save_checkpoint",
    "save_weights",
]

CHECKPOINT_FORMAT = "labelwise-checkpoint"
_VERSION = 1


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def _jsonable(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return v


def optimizer_state_to_tensors(
    name: str, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser ``state_dict`` into tensors (non-scalar state) and a JSON structure."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optim.{name}.{idx}.{key}"] = val.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = _jsonable(val)
    return tensors, {"param_groups": _jsonable(sd["param_groups"]), "scalars": scalars}


def optimizer_state_from_tensors(
    name: str, tensors: Mapping[str, torch.Tensor], structure: Mapping[str, Any]
) -> dict[str, Any]:
    """Rebuild an optimiser ``state_dict`` from :func:`optimizer_state_to_tensors` output."""
    state: dict[int, dict[str, Any]] = {}
    prefix = f"optim.{name}."
    for key, val in tensors.items():
        if key.startswith(prefix):
            idx, skey = key[len(prefix) :].split(".", 1)
            state.setdefault(int(idx), {})[skey] = val
    for idx, sc in structure.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(sc)
    groups = []
    for g in structure["param_groups"]:
        groups.append({k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()})
    return {"state": state, "param_groups": groups}


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read all tensors and the metadata of a safetensors file.

    Raises:
        DataError: missing, truncated or otherwise unreadable file (naming it).

    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers/bodies
        raise DataError(f"corrupt or unreadable safetensors file ({type(exc).__name__}: {exc})", path) from None
    return tensors, meta


def _write(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    from safetensors.torch import save_file

    with atomic_path(path, suffix=".tmp") as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)


def save_weights(path: str | Path, modules: Mapping[str, nn.Module], metadata: Mapping[str, Any] | None = None) -> Path:
    """Write the weights of named modules to ``path`` (safetensors, keys ``<name>.<param>``), atomically."""
    tensors = {}
    for name, mod in modules.items():
        for k, v in _unwrap(mod).state_dict().items():
            tensors[f"{name}.{k}"] = v
    meta = {"format": "labelwise-weights", "labelwise": json.dumps(dict(metadata or {}))}
    _write(Path(path), tensors, meta)
    return Path(path)


def _load_module(path: Path, name: str, module: nn.Module, tensors: Mapping[str, torch.Tensor], prefix: str) -> None:
    sd = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    target = _unwrap(module)
    own = target.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    bad_shape = [k for k in own if k in sd and tuple(own[k].shape) != tuple(sd[k].shape)]
    if missing or unexpected or bad_shape:
        detail = []
        if missing:
            detail.append(f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}")
        if unexpected:
            detail.append(f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}")
        if bad_shape:
            k = bad_shape[0]
            detail.append(f"shape of {k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}")
        raise ConfigError(
            f"{path}: weights of {name!r} do not match the model built from the config ({'; '.join(detail)})"
        )
    target.load_state_dict(sd)


def load_weights(path: str | Path, modules: Mapping[str, nn.Module]) -> dict[str, Any]:
    """Load weights written by :func:`save_weights` into ``modules`` (strict); returns the stored metadata.

    Raises:
        DataError: unreadable/corrupt file.
        ConfigError: the weights do not fit the modules (different architecture, classes or channels).

    """
    path = Path(path)
    tensors, meta = read_safetensors(path)
    for name, mod in modules.items():
        _load_module(path, name, mod, tensors, f"{name}.")
    try:
        return dict(json.loads(meta.get("labelwise", "{}")))
    except json.JSONDecodeError:
        raise DataError("corrupt weights metadata", path) from None


def save_checkpoint(
    path: str | Path,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    state: Mapping[str, Any],
    rng: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None,
    extra_tensors: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write a full training checkpoint atomically (see the module docstring for the layout)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, mod in modules.items():
        for k, v in _unwrap(mod).state_dict().items():
            tensors[f"module.{name}.{k}"] = v
    optim_meta = {}
    for name, opt in optimizers.items():
        t, m = optimizer_state_to_tensors(name, opt)
        tensors.update(t)
        optim_meta[name] = m
    rng_meta: dict[str, Any] = {}
    if rng is not None:
        tensors.update(rng[0])
        rng_meta = rng[1]
    for k, v in (extra_tensors or {}).items():
        tensors[f"extra.{k}"] = v
    meta = {
        "format": CHECKPOINT_FORMAT,
        "version": _VERSION,
        "optimizers": optim_meta,
        "rng": rng_meta,
        "state": _jsonable(dict(state)),
    }
    _write(Path(path), tensors, {"labelwise": json.dumps(meta)})
    return Path(path)


def load_checkpoint(
    path: str | Path,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
) -> tuple[dict[str, Any], tuple[dict[str, torch.Tensor], dict[str, Any]], dict[str, torch.Tensor]]:
    """Load a checkpoint into ``modules`` and ``optimizers``.

    Returns:
        ``(state, rng, extra_tensors)``: the loop counters, the RNG snapshot for
        :func:`labelwise.engine.seed.set_rng_state`, and the extra tensors.

    Raises:
        DataError: corrupt file or not a labelwise checkpoint.
        ConfigError: modules/optimisers do not match the checkpoint.

    """
    path = Path(path)
    tensors, raw_meta = read_safetensors(path)
    try:
        meta = json.loads(raw_meta["labelwise"])
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise KeyError("format")
    except (KeyError, json.JSONDecodeError):
        raise DataError("not a labelwise training checkpoint", path) from None
    for name, mod in modules.items():
        _load_module(path, name, mod, tensors, f"module.{name}.")
    for name, opt in optimizers.items():
        if name not in meta["optimizers"]:
            raise ConfigError(f"{path}: no state for optimiser {name!r}")
        sd = optimizer_state_from_tensors(name, tensors, meta["optimizers"][name])
        try:
            opt.load_state_dict(sd)
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"{path}: optimiser {name!r} state does not fit ({exc})") from None
    rng_t = {k: v for k, v in tensors.items() if k.startswith("rng.")}
    extra = {k[len("extra.") :]: v for k, v in tensors.items() if k.startswith("extra.")}
    return dict(meta["state"]), (rng_t, meta.get("rng", {})), extra
