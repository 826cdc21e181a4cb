"""glibc allocator tuning for CPU training.

PyTorch on CPU allocates and frees many short-lived tensors of a few MiB per step. With glibc's defaults, blocks
above the (dynamic) mmap threshold are mapped and unmapped on every allocation and freed heap memory is trimmed
back to the system, so each step pays page faults: a 128x128 D-Persona step spent more time in the kernel than
in PyTorch (276 million minor page faults, 538 s system vs 709 s user CPU for the default schedule). Raising the
mmap and trim thresholds keeps the memory in the process and removes most of that cost (same run: system time
18.8 s -> 4.9 s and wall 77 s -> 53 s for 60 steps; ``docs/engine.md``, "Allocator").

:func:`tune_allocator` does this at run time with ``mallopt`` (the same effect as the ``MALLOC_*_`` environment
variables). It does nothing off glibc, when any of those variables is already set (the user's choice wins), or
when ``LABELWISE_MALLOC_TUNING=0``. The cost is memory that stays mapped after its peak (bounded by the peak
resident size, which does not change).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

__all__ = ["tune_allocator"]

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
_done: list[bool] = []


def tune_allocator(mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30, top_pad: int = 256 << 20) -> bool:
    """Raise glibc's mmap / trim thresholds for this process (once; later calls return the first result).

    Args:
        mmap_threshold: Allocations below this many bytes come from the heap (glibc's maximum is 32 MiB on
            64-bit systems).
        trim_threshold: Free heap memory above this many bytes is returned to the system.
        top_pad: Extra bytes requested whenever the heap grows.

    Returns:
        True if the settings were applied; False off Linux/glibc, when a ``MALLOC_*_`` variable is set, or when
        ``LABELWISE_MALLOC_TUNING=0``.

    """
    if _done:
        return _done[0]
    applied = False
    if sys.platform.startswith("linux") and os.environ.get("LABELWISE_MALLOC_TUNING", "1") != "0":
        if not any(k in os.environ for k in _ENV):
            try:
                mallopt = ctypes.CDLL("libc.so.6").mallopt
            except (OSError, AttributeError):
                mallopt = None
            if mallopt is not None:
                applied = all(
                    mallopt(ctypes.c_int(opt), ctypes.c_int(val)) == 1
                    for opt, val in (
                        (_M_MMAP_THRESHOLD, mmap_threshold),
                        (_M_TRIM_THRESHOLD, trim_threshold),
                        (_M_TOP_PAD, top_pad),
                    )
                )
    logger.debug("allocator tuning %s", "applied" if applied else "not applied")
    _done.append(applied)
    return applied
