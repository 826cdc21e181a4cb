"""Compiled (numba) inner loops: fused counting, bounding boxes, boundary extraction. Private module.

Kernels are compiled on first use and cached on disk (``cache=True``), so only the first call in a fresh
environment pays the compilation (a few seconds).
"""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray

__all__ = [
    "bbox_union",
    "boundary_coords",
    "confusion_matrix_kernel",
    "count_pair",
    "count_rows",
    "local_nearest",
]

_M8 = np.uint64(0x00FF00FF00FF00FF)
_M16 = np.uint64(0x0000FFFF0000FFFF)
_M32 = np.uint64(0x00000000FFFFFFFF)
_S8 = np.uint64(8)
_S16 = np.uint64(16)
_S32 = np.uint64(32)


@numba.njit(cache=True, nogil=True, inline="always")
def _hsum_bytes(x: np.uint64) -> np.int64:  # pragma: no cover - compiled
    y = (x & _M8) + ((x >> _S8) & _M8)
    y = (y & _M16) + ((y >> _S16) & _M16)
    y = (y & _M32) + (y >> _S32)
    return np.int64(y)


@numba.njit(cache=True, nogil=True)
def _count_words(
    a: NDArray[np.uint64], b: NDArray[np.uint64]
) -> tuple[np.int64, np.int64, np.int64]:  # pragma: no cover
    n = a.size
    tot_a = np.int64(0)
    tot_b = np.int64(0)
    tot_ab = np.int64(0)
    i = 0
    while i < n:
        end = min(i + 255, n)
        sa = np.uint64(0)
        sb = np.uint64(0)
        sab = np.uint64(0)
        for j in range(i, end):
            x = a[j]
            y = b[j]
            sa += x
            sb += y
            sab += x & y
        tot_a += _hsum_bytes(sa)
        tot_b += _hsum_bytes(sb)
        tot_ab += _hsum_bytes(sab)
        i = end
    return tot_a, tot_b, tot_ab


@numba.njit(cache=True, nogil=True)
def _count_rows(a: NDArray[np.uint64], b: NDArray[np.uint64]) -> NDArray[np.int64]:  # pragma: no cover
    out = np.empty((a.shape[0], 3), dtype=np.int64)
    for r in range(a.shape[0]):
        x, y, z = _count_words(a[r], b[r])
        out[r, 0] = x
        out[r, 1] = y
        out[r, 2] = z
    return out


def count_rows(p: NDArray[np.bool_], t: NDArray[np.bool_]) -> NDArray[np.int64]:
    """Per-row ``(|p|, |t|, |p & t|)`` of C-contiguous bool arrays ``(B, ...)`` in one compiled call -> ``(B, 3)``."""
    b = p.shape[0]
    pb = p.reshape(b, -1).view(np.uint8)
    tb = t.reshape(b, -1).view(np.uint8)
    n = pb.shape[1]
    if n % 8 == 0 and n > 0:
        return np.asarray(_count_rows(pb.view(np.uint64), tb.view(np.uint64)))
    return np.array([count_pair(p[i], t[i]) for i in range(b)], dtype=np.int64).reshape(b, 3)


def count_pair(p: NDArray[np.bool_], t: NDArray[np.bool_]) -> tuple[int, int, int]:
    """Return ``(|p|, |t|, |p & t|)`` for C-contiguous bool arrays of equal shape, in one fused pass."""
    pb = p.reshape(-1).view(np.uint8)
    tb = t.reshape(-1).view(np.uint8)
    n = pb.size
    nw = n // 8
    sp = st = spt = 0
    if nw:
        a, b, c = _count_words(pb[: nw * 8].view(np.uint64), tb[: nw * 8].view(np.uint64))
        sp, st, spt = int(a), int(b), int(c)
    if n > nw * 8:
        rp, rt = pb[nw * 8 :].astype(bool), tb[nw * 8 :].astype(bool)
        sp += int(rp.sum())
        st += int(rt.sum())
        spt += int((rp & rt).sum())
    return sp, st, spt


@numba.njit(cache=True, nogil=True)
def _cm_kernel(p: NDArray[np.int64], t: NDArray[np.int64], k: int) -> NDArray[np.int64]:  # pragma: no cover
    cm = np.zeros((k, k), dtype=np.int64)
    for i in range(p.size):
        cm[p[i], t[i]] += 1  # labels are checked to lie in [0, k) before the call
    return cm


@numba.njit(cache=True, nogil=True)
def _cm_kernel_u8(p: NDArray[np.uint8], t: NDArray[np.uint8], k: int) -> NDArray[np.int64]:  # pragma: no cover
    cm = np.zeros((256, 256), dtype=np.int64)
    for i in range(p.size):
        cm[p[i], t[i]] += 1
    return cm[:k, :k].copy()


def confusion_matrix_kernel(p: NDArray[np.integer], t: NDArray[np.integer], k: int) -> NDArray[np.int64]:
    """``(k, k)`` matrix ``cm[pred_label, target_label]`` of voxel counts for integer label maps in [0, k)."""
    pf = p.reshape(-1)
    tf = t.reshape(-1)
    if k <= 256 and pf.dtype == np.uint8 and tf.dtype == np.uint8:
        return np.asarray(_cm_kernel_u8(pf.astype(np.uint8, copy=False), tf.astype(np.uint8, copy=False), k))
    return np.asarray(_cm_kernel(pf.astype(np.int64), tf.astype(np.int64), k))


@numba.njit(cache=True, nogil=True)
def _row_bbox(rows: NDArray[np.uint8], lo: NDArray[np.int64], hi: NDArray[np.int64]) -> None:  # pragma: no cover
    # rows: (nrows, rowlen) uint8; lo/hi: per-row first/last nonzero index (or -1). A branch-free OR reduction
    # (vectorised) skips empty rows; only rows holding foreground are searched.
    nrows, rowlen = rows.shape
    for r in range(nrows):
        acc = np.uint8(0)
        for j in range(rowlen):
            acc |= rows[r, j]
        if acc == 0:
            lo[r] = -1
            hi[r] = -1
            continue
        first = 0
        while rows[r, first] == 0:
            first += 1
        last = rowlen - 1
        while rows[r, last] == 0:
            last -= 1
        lo[r] = first
        hi[r] = last


def bbox_union(p: NDArray[np.bool_], t: NDArray[np.bool_]) -> tuple[tuple[int, int], ...] | None:
    """Inclusive-exclusive bounding box ``((start, stop), ...)`` of ``p | t``; None when both are empty."""
    shape = p.shape
    if p.ndim == 1:
        idx = np.flatnonzero(p | t)
        return None if idx.size == 0 else ((int(idx[0]), int(idx[-1]) + 1),)
    rowlen = shape[-1]
    lead = shape[:-1]
    boxes = []
    for m in (p, t) if p is not t else (p,):
        rows = m.reshape(-1, rowlen).view(np.uint8)
        lo = np.empty(rows.shape[0], dtype=np.int64)
        hi = np.empty(rows.shape[0], dtype=np.int64)
        _row_bbox(rows, lo, hi)
        nz = np.flatnonzero(lo >= 0)
        if nz.size == 0:
            continue
        sub = np.unravel_index(nz, lead)
        box = [(int(s.min()), int(s.max()) + 1) for s in sub]
        box.append((int(lo[nz].min()), int(hi[nz].max()) + 1))
        boxes.append(box)
    if not boxes:
        return None
    return tuple((min(b[d][0] for b in boxes), max(b[d][1] for b in boxes)) for d in range(p.ndim))


@numba.njit(cache=True, nogil=True)
def _boundary3d(m: NDArray[np.uint8]) -> NDArray[np.int64]:  # pragma: no cover
    # m is zero-padded by one voxel on every side; returns (n, 3) coords in the padded frame
    nx, ny, nz = m.shape
    cap = 1024
    out = np.empty((cap, 3), dtype=np.int64)
    n = 0
    for x in range(1, nx - 1):
        for y in range(1, ny - 1):
            for z in range(1, nz - 1):
                if m[x, y, z] == 0:
                    continue
                if (
                    m[x - 1, y, z] == 0
                    or m[x + 1, y, z] == 0
                    or m[x, y - 1, z] == 0
                    or m[x, y + 1, z] == 0
                    or m[x, y, z - 1] == 0
                    or m[x, y, z + 1] == 0
                ):
                    if n == cap:
                        cap *= 2
                        new = np.empty((cap, 3), dtype=np.int64)
                        new[:n] = out[:n]
                        out = new
                    out[n, 0] = x
                    out[n, 1] = y
                    out[n, 2] = z
                    n += 1
    return out[:n].copy()


@numba.njit(cache=True, nogil=True)
def _boundary2d(m: NDArray[np.uint8]) -> NDArray[np.int64]:  # pragma: no cover
    nx, ny = m.shape
    cap = 1024
    out = np.empty((cap, 2), dtype=np.int64)
    n = 0
    for x in range(1, nx - 1):
        for y in range(1, ny - 1):
            if m[x, y] == 0:
                continue
            if m[x - 1, y] == 0 or m[x + 1, y] == 0 or m[x, y - 1] == 0 or m[x, y + 1] == 0:
                if n == cap:
                    cap *= 2
                    new = np.empty((cap, 2), dtype=np.int64)
                    new[:n] = out[:n]
                    out = new
                out[n, 0] = x
                out[n, 1] = y
                n += 1
    return out[:n].copy()


def boundary_coords(m_padded: NDArray[np.uint8]) -> NDArray[np.int64]:
    """Coordinates ``(n, ndim)`` of foreground voxels with a background face neighbour (padded frame)."""
    if m_padded.ndim == 3:
        return np.asarray(_boundary3d(m_padded))
    if m_padded.ndim == 2:
        return np.asarray(_boundary2d(m_padded))
    raise ValueError("boundary extraction supports 2-D and 3-D masks")


@numba.njit(cache=True, nogil=True)
def _local_nearest(  # pragma: no cover - compiled
    src: NDArray[np.int64],
    marks: NDArray[np.uint8],
    spacing: NDArray[np.float64],
    max_box: int,
    out: NDArray[np.float64],
) -> int:
    # Exact nearest marked voxel by growing boxes: a box of half-widths floor(R / s_i) holds every voxel within
    # R mm, so a hit with d <= R is the nearest. Points needing a box above max_box voxels get out = -1.
    nx, ny, nz = marks.shape
    s0, s1, s2 = spacing[0], spacing[1], spacing[2]
    smin = min(s0, min(s1, s2))
    unresolved = 0
    for i in range(src.shape[0]):
        x = src[i, 0]
        y = src[i, 1]
        z = src[i, 2]
        if marks[x, y, z] != 0:
            out[i] = 0.0
            continue
        r = 1.5 * smin
        found = False
        while True:
            kx = int(r / s0)
            ky = int(r / s1)
            kz = int(r / s2)
            if (2 * kx + 1) * (2 * ky + 1) * (2 * kz + 1) > max_box:
                break
            best = np.inf
            for a in range(max(x - kx, 0), min(x + kx + 1, nx)):
                da = (a - x) * s0
                da2 = da * da
                for b in range(max(y - ky, 0), min(y + ky + 1, ny)):
                    db = (b - y) * s1
                    dab = da2 + db * db
                    if dab >= best:
                        continue
                    for c in range(max(z - kz, 0), min(z + kz + 1, nz)):
                        if marks[a, b, c] != 0:
                            dc = (c - z) * s2
                            d2 = dab + dc * dc
                            if d2 < best:
                                best = d2
            if best <= r * r:
                out[i] = np.sqrt(best)
                found = True
                break
            r *= 2.0
        if not found:
            out[i] = -1.0
            unresolved += 1
    return unresolved


def local_nearest(
    src: NDArray[np.int64], marks: NDArray[np.uint8], spacing: NDArray[np.float64], max_box: int = 4096
) -> NDArray[np.float64]:
    """Exact distance (mm) from each ``src`` voxel to the nearest nonzero voxel of ``marks`` (2-D or 3-D).

    Points whose search box would exceed ``max_box`` voxels are returned as -1 (resolve them with a KD-tree).
    """
    out = np.empty(src.shape[0], dtype=np.float64)
    if marks.ndim == 2:
        src3 = np.concatenate([np.zeros((src.shape[0], 1), np.int64), src], axis=1)
        _local_nearest(src3, marks[None], np.concatenate([[1.0], spacing]), max_box, out)
    else:
        _local_nearest(np.ascontiguousarray(src), marks, np.ascontiguousarray(spacing), max_box, out)
    return out
