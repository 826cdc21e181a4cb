"""Deterministic seeding and capture/restore of every random-number generator the engine relies on.

Per-sample randomness (patch positions, augmentation) never uses global state: it comes from
:func:`sample_rng` ``(seed, epoch, index)``, so a resumed run, any number of workers or DDP ranks draw the same
numbers for the same sample. Global generators (torch CPU/CUDA, Python ``random``, NumPy legacy) drive things
like dropout and are saved in checkpoints via :func:`get_rng_state` / :func:`set_rng_state`.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["get_rng_state", "sample_rng", "seed_everything", "set_rng_state"]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy's legacy global generator and torch (CPU and all CUDA devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (third-party code may use the legacy global generator)
    torch.manual_seed(seed)


def sample_rng(seed: int, epoch: int, index: int, stream: int = 0) -> np.random.Generator:
    """An independent generator for one sample of one epoch (``stream`` separates uses within a sample)."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, index, stream]))


def get_rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Snapshot global RNG states as tensors (for safetensors) plus JSON-able scalars."""
    tensors = {"rng.torch": torch.get_rng_state().clone()}
    if torch.cuda.is_available():
        for i, st in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = st.clone()
    np_state: Any = np.random.get_state()  # noqa: NPY002
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(np_state[1], dtype=np.int64))
    py_version, py_internal, py_gauss = random.getstate()
    tensors["rng.python"] = torch.tensor(py_internal, dtype=torch.int64)
    meta = {
        "numpy": [str(np_state[0]), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_version, py_gauss],
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Restore states captured by :func:`get_rng_state` (CUDA states only if the devices exist)."""
    torch.set_rng_state(tensors["rng.torch"].to(torch.uint8))
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            key = f"rng.cuda.{i}"
            if key in tensors:
                torch.cuda.set_rng_state(tensors[key].to(torch.uint8), i)
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            name,
            tensors["rng.numpy"].numpy().astype(np.uint32),
            pos,
            has_gauss,
            cached,
        )
    )
    version, gauss = meta["python"]
    random.setstate((version, tuple(int(v) for v in tensors["rng.python"].tolist()), gauss))
