"""Training data: deterministic per-sample sources and the loader that splits them across steps and ranks.

A :class:`SampleSource` maps ``(epoch, index)`` to one sample dict using a generator derived from
``(seed, epoch, index)`` (:func:`labelwise.engine.seed.sample_rng`); it never touches global RNG state. The
engine's loader takes sample indices ``[k * B, (k + 1) * B)`` for global micro-batch ``k`` and gives rank ``r``
of ``W`` the ``r``-th contiguous ``B / W`` of them. Consequences: resume can skip straight to micro-batch ``k``,
any ``num_workers`` gives the same batches, and W ranks see exactly the samples one process would.

Methods with special samples (slice triplets, labelled + unlabelled pairs, (image, mask, text) triples) write
their own ``SampleSource``; :class:`PatchSource` covers patch-based segmentation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from labelwise.engine.augment import AugmentConfig, apply_augment, draw_augment
from labelwise.engine.seed import sample_rng

__all__ = ["PatchSource", "SampleSource", "crop_or_pad", "epoch_loader"]


class SampleSource(Protocol):
    """Anything that yields training samples deterministically."""

    def sample(self, epoch: int, index: int, rng: np.random.Generator) -> dict[str, Any]:
        """Return sample ``index`` of ``epoch``: a dict of arrays/numbers/strings (collated by torch)."""
        ...


class _EpochView(TorchDataset):  # type: ignore[type-arg]
    def __init__(self, source: SampleSource, seed: int, epoch: int, indices: Sequence[int]) -> None:
        self.source, self.seed, self.epoch, self.indices = source, seed, epoch, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        idx = self.indices[i]
        out = dict(self.source.sample(self.epoch, idx, sample_rng(self.seed, self.epoch, idx)))
        out["index"] = idx
        return out


def epoch_loader(
    source: SampleSource,
    seed: int,
    epoch: int,
    batch_size: int,
    num_batches: int,
    start_batch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[dict[str, Any]]:
    """Yield this rank's share of micro-batches ``start_batch .. num_batches - 1`` of ``epoch``.

    Args:
        source: The sample source.
        seed: Run seed.
        epoch: Epoch number (part of every sample's seed).
        batch_size: Global micro-batch size; must be divisible by ``world_size``.
        num_batches: Micro-batches in the epoch.
        start_batch: First micro-batch to produce (resume).
        rank: This process's rank.
        world_size: Number of processes.
        num_workers: DataLoader workers.
        pin_memory: Pin host memory (CUDA).

    """
    if batch_size % world_size:
        raise ValueError(f"batch size {batch_size} is not divisible by {world_size} processes")
    local = batch_size // world_size
    indices = [k * batch_size + rank * local + j for k in range(start_batch, num_batches) for j in range(local)]
    view = _EpochView(source, seed, epoch, indices)
    # A private generator: creating the loader must not consume the global torch RNG (exact resume).
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    loader = DataLoader(
        view,
        batch_size=local,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=gen,
        persistent_workers=False,
        drop_last=False,
    )
    yield from loader


def crop_or_pad(arr: np.ndarray, start: Sequence[int], size: Sequence[int], pad_value: float = 0.0) -> np.ndarray:
    """Crop ``arr`` ``(K, *spatial)`` to ``size`` starting at ``start`` (may be negative / overrun: padded).

    Args:
        arr: Array with channel axis first.
        start: Start index per spatial axis (negative values pad before).
        size: Output spatial size.
        pad_value: Fill value for padded voxels.

    Returns:
        ``(K, *size)`` array of ``arr``'s dtype.

    """
    out = np.full((arr.shape[0], *size), pad_value, dtype=arr.dtype)
    src, dst = [slice(None)], [slice(None)]
    for s, n, dim in zip(start, size, arr.shape[1:], strict=True):
        lo, hi = max(s, 0), min(s + n, dim)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[tuple(dst)] = arr[tuple(src)]
    return out


class PatchSource:
    """Random patches from in-memory cases, with foreground oversampling and recorded augmentation.

    Args:
        cases: One dict per case of ``(K, *spatial)`` arrays sharing the spatial shape; must contain
            ``image_key``. Float arrays are interpolated linearly under rotation, integer arrays by nearest.
        patch_size: Spatial patch size.
        augment: Augmentation settings.
        foreground_key: Array whose channels ``1..`` mark foreground (e.g. a one-hot/soft target), used to
            centre a fraction ``foreground_p`` of patches on a random foreground voxel; None: uniform.
        foreground_p: Fraction of foreground-centred patches.
        case_ids: Ids stored in each sample's ``"case"`` entry.
        image_key: The intensity image.
        seed: Seed of the per-epoch case permutation (use the run seed).

    Samples are ``{key: (K, *patch) float32/int, "case": id, "aug": json}``. Case order is a per-epoch
    permutation, cycling when an epoch has more samples than cases.

    """

    def __init__(
        self,
        cases: Sequence[Mapping[str, np.ndarray]],
        patch_size: Sequence[int],
        augment: AugmentConfig | None = None,
        foreground_key: str | None = None,
        foreground_p: float = 0.33,
        case_ids: Sequence[str] | None = None,
        image_key: str = "image",
        seed: int = 0,
    ) -> None:
        if not cases:
            raise ValueError("PatchSource needs at least one case")
        self.cases = [dict(c) for c in cases]
        self.patch_size = tuple(int(p) for p in patch_size)
        self.augment = augment or AugmentConfig(enabled=False)
        self.foreground_key = foreground_key
        self.foreground_p = foreground_p
        self.case_ids = list(case_ids) if case_ids is not None else [str(i) for i in range(len(cases))]
        self.image_key = image_key
        self.seed = seed
        self._fg: list[np.ndarray | None] = []
        for c in self.cases:
            if foreground_key is None:
                self._fg.append(None)
                continue
            t = c[foreground_key]
            fg = (t[1:].sum(axis=0) > 0.5) if np.issubdtype(t.dtype, np.floating) else (t[0] > 0)
            coords = np.argwhere(fg)
            self._fg.append(coords if len(coords) else None)

    def __len__(self) -> int:
        return len(self.cases)

    def _case_index(self, epoch: int, index: int) -> int:
        n = len(self.cases)
        cycle, pos = divmod(index, n)
        perm = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, cycle, 7919])).permutation(n)
        return int(perm[pos])

    def sample(self, epoch: int, index: int, rng: np.random.Generator) -> dict[str, Any]:
        """Sample ``index`` of ``epoch`` (see class docstring)."""
        ci = self._case_index(epoch, index)
        case = self.cases[ci]
        shape = case[self.image_key].shape[1:]
        u = rng.random()
        fg = self._fg[ci]
        if fg is not None and u < self.foreground_p:
            centre = fg[int(rng.integers(len(fg)))]
            start = [int(c) - p // 2 for c, p in zip(centre, self.patch_size, strict=True)]
            start = [
                min(max(s, min(0, d - p)), max(0, d - p)) for s, d, p in zip(start, shape, self.patch_size, strict=True)
            ]
        else:
            start = [
                int(rng.integers(0, max(d - p, 0) + 1)) if d > p else (d - p) // 2
                for d, p in zip(shape, self.patch_size, strict=True)
            ]
        patch = {k: crop_or_pad(v, start, self.patch_size) for k, v in case.items()}
        params = draw_augment(rng, self.patch_size, self.augment)
        patch = apply_augment(patch, params, image_key=self.image_key)
        return {**patch, "case": self.case_ids[ci], "aug": json.dumps({"start": start, **params})}
