"""Compiled (numba) loops: counting, bounding boxes, boundaries, surfels, nearest search, scores. Private module.

Kernels are compiled on first use and cached on disk (``cache=True``), so only the first call in a fresh
environment pays the compilation (about 5 s for HD95 + NSD). Kernels are plain loops: numpy slice copies,
``np.partition`` and fancy indexing inside compiled code cost seconds of compile time each, loops a fraction.
"""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray

__all__ = [
    "batch_surface_kernel",
    "bbox_union",
    "boundary_coords",
    "confusion_matrix_kernel",
    "count_pair",
    "count_rows",
    "local_nearest",
    "score_means",
    "score_nsd",
    "score_percentile",
    "surface_elements",
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
    out = np.empty((k, k), dtype=np.int64)
    for a in range(k):
        for b in range(k):
            out[a, b] = cm[a, b]
    return out


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
def _first_rows(a: NDArray[np.int64], n: int) -> NDArray[np.int64]:  # pragma: no cover - compiled
    # a[:n].copy() written as loops: numba compiles slice copies slowly (seconds), plain loops fast
    out = np.empty((n, a.shape[1]), dtype=np.int64)
    for i in range(n):
        for j in range(a.shape[1]):
            out[i, j] = a[i, j]
    return out


@numba.njit(cache=True, nogil=True)
def _first(a: NDArray[np.float64], n: int) -> NDArray[np.float64]:  # pragma: no cover - compiled
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        out[i] = a[i]
    return out


@numba.njit(cache=True, nogil=True)
def _grow_rows(a: NDArray[np.int64], n: int) -> NDArray[np.int64]:  # pragma: no cover - compiled
    out = np.empty((2 * a.shape[0], a.shape[1]), dtype=np.int64)
    for i in range(n):
        for j in range(a.shape[1]):
            out[i, j] = a[i, j]
    return out


@numba.njit(cache=True, nogil=True)
def _grow(a: NDArray[np.float64], n: int) -> NDArray[np.float64]:  # pragma: no cover - compiled
    out = np.empty(2 * a.shape[0], dtype=np.float64)
    for i in range(n):
        out[i] = a[i]
    return out


@numba.njit(cache=True, nogil=True)
def _boundary3d(m: NDArray[np.uint8]) -> NDArray[np.int64]:  # pragma: no cover
    # m is zero-padded by one voxel on every side; returns (n, 3) coords in the padded frame
    nx, ny, nz = m.shape
    out = np.empty((1024, 3), dtype=np.int64)
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
                    if n == out.shape[0]:
                        out = _grow_rows(out, n)
                    out[n, 0] = x
                    out[n, 1] = y
                    out[n, 2] = z
                    n += 1
    return _first_rows(out, n)


@numba.njit(cache=True, nogil=True)
def _boundary2d(m: NDArray[np.uint8]) -> NDArray[np.int64]:  # pragma: no cover
    # m holds 0/1. Each row's boundary flags are computed branch-free (the loop vectorises), then the row is
    # scanned 8 flags at a time, so the cost is a few instructions per 8 pixels plus one per boundary pixel.
    nx, ny = m.shape
    out = np.empty((1024, 2), dtype=np.int64)
    flags = np.zeros(8 * (ny // 8 + 1), dtype=np.uint8)
    words = flags.view(np.uint64)
    n = 0
    for x in range(1, nx - 1):
        up = m[x - 1]
        row = m[x]
        down = m[x + 1]
        for y in range(1, ny - 1):
            flags[y] = row[y] & ~(up[y] & down[y] & row[y - 1] & row[y + 1])
        for k in range(words.size):
            if words[k] == 0:
                continue
            for y in range(max(8 * k, 1), min(8 * k + 8, ny - 1)):
                if flags[y] != 0:
                    if n == out.shape[0]:
                        out = _grow_rows(out, n)
                    out[n, 0] = x
                    out[n, 1] = y
                    n += 1
    return _first_rows(out, n)


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


# --- surface elements on voxel corners (DeepMind surface-distance's "surfels") -----------------------------------


@numba.njit(cache=True, nogil=True)
def _surfels3d(m: NDArray[np.uint8], table: NDArray[np.float64]) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    # m: zero-padded mask (nx, ny, nz) of 0/1; corner (x, y, z) lies between voxels x..x+1, y..y+1, z..z+1 of m.
    # Code weights [[[128, 64], [32, 16]], [[8, 4], [2, 1]]] over (dx, dy, dz): surface-distance's kernel. The
    # codes of one row of corners are computed branch-free (vectorised) with a flag that is 0 where the code is 0
    # or 255 (code XOR its top bit replicated), then the flags are scanned 8 at a time.
    nx, ny, nz = m.shape
    out = np.empty((1024, 3), dtype=np.int64)
    area = np.empty(1024, dtype=np.float64)
    codes = np.zeros(8 * (nz // 8 + 1), dtype=np.uint8)
    mixed = np.zeros(8 * (nz // 8 + 1), dtype=np.uint8)
    words = mixed.view(np.uint64)
    n = 0
    for x in range(nx - 1):
        for y in range(ny - 1):
            r00 = m[x, y]
            r01 = m[x, y + 1]
            r10 = m[x + 1, y]
            r11 = m[x + 1, y + 1]
            for z in range(nz - 1):
                codes[z] = (
                    (r00[z] << 7)
                    | (r00[z + 1] << 6)
                    | (r01[z] << 5)
                    | (r01[z + 1] << 4)
                    | (r10[z] << 3)
                    | (r10[z + 1] << 2)
                    | (r11[z] << 1)
                    | r11[z + 1]
                )
                mixed[z] = codes[z] ^ (r00[z] * 255)
            for k in range(words.size):
                if words[k] == 0:
                    continue
                for z in range(8 * k, min(8 * k + 8, nz - 1)):
                    if mixed[z] == 0:
                        continue
                    if n == out.shape[0]:
                        out = _grow_rows(out, n)
                        area = _grow(area, n)
                    out[n, 0] = x
                    out[n, 1] = y
                    out[n, 2] = z
                    area[n] = table[codes[z]]
                    n += 1
    return _first_rows(out, n), _first(area, n)


@numba.njit(cache=True, nogil=True)
def _surfels2d(m: NDArray[np.uint8], table: NDArray[np.float64]) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    # 2D: code weights [[8, 4], [2, 1]] over (dx, dy)
    nx, ny = m.shape
    out = np.empty((1024, 2), dtype=np.int64)
    length = np.empty(1024, dtype=np.float64)
    codes = np.zeros(8 * (ny // 8 + 1), dtype=np.uint8)
    mixed = np.zeros(8 * (ny // 8 + 1), dtype=np.uint8)
    words = mixed.view(np.uint64)
    n = 0
    for x in range(nx - 1):
        r0 = m[x]
        r1 = m[x + 1]
        for y in range(ny - 1):
            codes[y] = (r0[y] << 3) | (r0[y + 1] << 2) | (r1[y] << 1) | r1[y + 1]
            mixed[y] = codes[y] ^ (r0[y] * 15)  # 0 where the code is 0 or 15
        for k in range(words.size):
            if words[k] == 0:
                continue
            for y in range(8 * k, min(8 * k + 8, ny - 1)):
                if mixed[y] == 0:
                    continue
                if n == out.shape[0]:
                    out = _grow_rows(out, n)
                    length = _grow(length, n)
                out[n, 0] = x
                out[n, 1] = y
                length[n] = table[codes[y]]
                n += 1
    return _first_rows(out, n), _first(length, n)


@numba.njit(cache=True, nogil=True)
def _elements2d(m: NDArray[np.uint8], table: NDArray[np.float64]) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    if table.size == 0:
        return _boundary2d(m), np.empty(0, dtype=np.float64)
    return _surfels2d(m, table)


def surface_elements(
    m_padded: NDArray[np.uint8], table: NDArray[np.float64] | None
) -> tuple[NDArray[np.int64], NDArray[np.float64] | None, tuple[int, ...]]:
    """Surface points of a zero-padded mask: ``(coords (n, ndim), weights (n,) or None, shape of their grid)``.

    ``table`` None: boundary voxels (unit weights, grid = the padded mask). Otherwise the surface elements on voxel
    corners with weight ``table[code]`` (area in mm², contour length in 2D); their grid is one smaller per axis.
    """
    if table is None:
        return boundary_coords(m_padded), None, m_padded.shape
    grid = tuple(s - 1 for s in m_padded.shape)
    if m_padded.ndim == 3:
        c, w = _surfels3d(m_padded, table)
    elif m_padded.ndim == 2:
        c, w = _surfels2d(m_padded, table)
    else:
        raise ValueError("surface elements need 2-D or 3-D masks")
    return np.asarray(c), np.asarray(w), grid


# --- scores derived from directed distances (one implementation, used per pair and by the batch kernel) -----------
# Weights ``w`` of size 0 mean unit weights (boundary voxels); otherwise surfel areas, same length as ``d``.


@numba.njit(cache=True, nogil=True)
def _leaf_sum(a: NDArray[np.float64], lo: int, n: int) -> float:  # pragma: no cover - compiled
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - (n % 8):
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return float(res)


@numba.njit(cache=True, nogil=True)
def _pairwise_sum(a: NDArray[np.float64]) -> float:  # pragma: no cover - compiled
    # numpy's pairwise summation (``np.sum`` of a contiguous float64 array) reproduced bit for bit: blocks of at
    # most 128 summed with 8 accumulators, halves (rounded down to a multiple of 8) added recursively. Written with
    # an explicit stack because numba's on-disk cache does not support recursive functions.
    los = np.empty(64, dtype=np.int64)
    ns = np.empty(64, dtype=np.int64)
    stage = np.zeros(64, dtype=np.int64)  # 0: new, 1: left child pending, 2: right child pending
    lefts = np.empty(64, dtype=np.float64)
    sp = 0
    los[0] = 0
    ns[0] = a.size
    stage[0] = 0
    result = 0.0
    while sp >= 0:
        m = ns[sp]
        if m <= 128:
            result = _leaf_sum(a, los[sp], m)
            sp -= 1
            while sp >= 0:
                if stage[sp] == 1:
                    lefts[sp] = result
                    stage[sp] = 2
                    half = ns[sp] // 2
                    half -= half % 8
                    los[sp + 1] = los[sp] + half
                    ns[sp + 1] = ns[sp] - half
                    stage[sp + 1] = 0
                    sp += 1
                    break
                result = lefts[sp] + result
                sp -= 1
            continue
        stage[sp] = 1
        half = m // 2
        half -= half % 8
        los[sp + 1] = los[sp]
        ns[sp + 1] = half
        stage[sp + 1] = 0
        sp += 1
    return result


@numba.njit(cache=True, nogil=True)
def _counting_pass(
    keys: NDArray[np.int64], order: NDArray[np.int64], nbins: int
) -> NDArray[np.int64]:  # pragma: no cover - compiled
    # stable counting sort of ``order`` by keys[order] in [0, nbins)
    count = np.zeros(nbins + 1, dtype=np.int64)
    for i in range(order.size):
        count[keys[order[i]] + 1] += 1
    for b in range(nbins):
        count[b + 1] += count[b]
    out = np.empty(order.size, dtype=np.int64)
    for i in range(order.size):
        k = keys[order[i]]
        out[count[k]] = order[i]
        count[k] += 1
    return out


@numba.njit(cache=True, nogil=True)
def _radix_pass_bytes(
    bits: NDArray[np.uint64], order: NDArray[np.int64], keys: NDArray[np.int64]
) -> NDArray[np.int64]:  # pragma: no cover - compiled
    # stable LSD radix sort of ``order`` by the 8 bytes of bits[order]; bytes that are equal everywhere are skipped
    for byte in range(8):
        shift = np.uint64(8 * byte)
        first = np.int64((bits[0] >> shift) & np.uint64(255))
        same = True
        for i in range(bits.size):
            keys[i] = np.int64((bits[i] >> shift) & np.uint64(255))
            same = same and keys[i] == first
        if not same:
            order = _counting_pass(keys, order, 256)
    return order


@numba.njit(cache=True, nogil=True)
def _order_by_distance_then_weight(
    d: NDArray[np.float64], w: NDArray[np.float64]
) -> NDArray[np.int64]:  # pragma: no cover - compiled
    # Indices sorting (d, w) lexicographically, as Python's sort of (distance, area) tuples in surface-distance:
    # a stable LSD radix sort by the bytes of w, then of d (for values >= 0 the IEEE bits order like the values).
    # O(n), unlike two comparison sorts.
    keys = np.empty(d.size, dtype=np.int64)
    order = np.empty(d.size, dtype=np.int64)
    for i in range(d.size):
        order[i] = i
    order = _radix_pass_bytes(w.view(np.uint64), order, keys)
    return _radix_pass_bytes(d.view(np.uint64), order, keys)


@numba.njit(cache=True, nogil=True)
def _max(a: NDArray[np.float64]) -> float:  # pragma: no cover - compiled
    m = a[0]
    for i in range(1, a.size):
        m = max(m, a[i])
    return float(m)


@numba.njit(cache=True, nogil=True)
def _select(a: NDArray[np.float64], k: int) -> float:  # pragma: no cover - compiled
    # k-th smallest (0-based) by in-place quickselect (Hoare partition, middle pivot); afterwards every element at
    # an index > k is >= a[k]
    lo = 0
    hi = a.size - 1
    while lo < hi:
        pivot = a[(lo + hi) // 2]
        i = lo
        j = hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                tmp = a[i]
                a[i] = a[j]
                a[j] = tmp
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return float(a[k])


@numba.njit(cache=True, nogil=True)
def _percentile_linear(d: NDArray[np.float64], q: float) -> float:  # pragma: no cover - compiled
    # numpy's default (linear) percentile, bit for bit: virtual index (n - 1) q / 100, numpy's lerp
    n = d.size
    if n == 0:
        return np.nan
    vi = (n - 1) * (q / 100.0)
    if vi >= n - 1:
        return _max(d)
    prev = int(vi)  # floor: vi >= 0
    part = _first(d, n)
    a = _select(part, prev)
    b = part[prev + 1]
    for i in range(prev + 2, n):
        b = min(b, part[i])
    gamma = vi - prev
    diff = b - a
    if gamma >= 0.5:
        return float(b - diff * (1.0 - gamma))
    return float(a + diff * gamma)


@numba.njit(cache=True, nogil=True)
def _percentile_weighted(d: NDArray[np.float64], w: NDArray[np.float64], q: float) -> float:  # pragma: no cover
    # surface-distance's compute_robust_hausdorff, bit for bit: surfels ordered by (distance, area), the distance of
    # the first whose cumulative area fraction reaches q / 100 (np.searchsorted on np.cumsum(a) / np.sum(a))
    n = d.size
    if n == 0:
        return np.nan
    order = _order_by_distance_then_weight(d, w)
    ws = np.empty(n, dtype=np.float64)
    for i in range(n):
        ws[i] = w[order[i]]
    total = _pairwise_sum(ws)
    level = q / 100.0
    run = 0.0
    for i in range(n):
        run += ws[i]
        if run / total >= level:
            return float(d[order[i]])
    return float(d[order[n - 1]])


@numba.njit(cache=True, nogil=True)
def _concat(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:  # pragma: no cover
    out = np.empty(a.size + b.size, dtype=np.float64)
    for i in range(a.size):
        out[i] = a[i]
    for i in range(b.size):
        out[a.size + i] = b[i]
    return out


# The percentile of boundary voxels and of surfels are two compiled functions (not one with a branch) so that the
# default path does not compile the surfel sort: a kernel's first call compiles everything it can reach.


@numba.njit(cache=True, nogil=True)
def _percentile_voxels(
    d_pt: NDArray[np.float64], d_tp: NDArray[np.float64], q: float, pooled: bool
) -> float:  # pragma: no cover - compiled
    if pooled:
        return _percentile_linear(_concat(d_pt, d_tp), q)
    return max(_percentile_linear(d_pt, q), _percentile_linear(d_tp, q))


@numba.njit(cache=True, nogil=True)
def _percentile_surfels(
    d_pt: NDArray[np.float64],
    d_tp: NDArray[np.float64],
    w_p: NDArray[np.float64],
    w_t: NDArray[np.float64],
    q: float,
    pooled: bool,
) -> float:  # pragma: no cover - compiled
    if pooled:
        return _percentile_weighted(_concat(d_pt, d_tp), _concat(w_p, w_t), q)
    return max(_percentile_weighted(d_pt, w_p, q), _percentile_weighted(d_tp, w_t, q))


def score_percentile(
    d_pt: NDArray[np.float64],
    d_tp: NDArray[np.float64],
    w_p: NDArray[np.float64],
    w_t: NDArray[np.float64],
    q: float,
    pooled: bool,
) -> float:
    """Percentile distance: max of the directed percentiles, or the percentile of both directions pooled.

    Unit weights (``w`` of size 0): numpy's linear interpolation; surfel areas: surface-distance's rule.
    """
    if w_p.size == 0:
        return float(_percentile_voxels(d_pt, d_tp, q, pooled))
    return float(_percentile_surfels(d_pt, d_tp, w_p, w_t, q, pooled))


@numba.njit(cache=True, nogil=True)
def _weighted_sums(
    d: NDArray[np.float64], w: NDArray[np.float64], tol: float
) -> tuple[float, float, float]:  # pragma: no cover - compiled
    # (sum w d, sum w, sum w [d <= tol]); unit weights when w is empty
    s = 0.0
    t = 0.0
    h = 0.0
    if w.size == 0:
        for i in range(d.size):
            s += d[i]
            if d[i] <= tol:
                h += 1.0
        return s, float(d.size), h
    for i in range(d.size):
        s += w[i] * d[i]
        t += w[i]
        if d[i] <= tol:
            h += w[i]
    return s, t, h


@numba.njit(cache=True, nogil=True)
def score_means(
    d_pt: NDArray[np.float64], d_tp: NDArray[np.float64], w_p: NDArray[np.float64], w_t: NDArray[np.float64]
) -> tuple[float, float]:  # pragma: no cover - compiled
    """``(assd, masd)``: pooled mean distance, and the mean of the two directed means (weighted by surfel area)."""
    s1, t1, _ = _weighted_sums(d_pt, w_p, 0.0)
    s2, t2, _ = _weighted_sums(d_tp, w_t, 0.0)
    return (s1 + s2) / (t1 + t2), 0.5 * (s1 / t1 + s2 / t2)


@numba.njit(cache=True, nogil=True)
def score_nsd(
    d_pt: NDArray[np.float64], d_tp: NDArray[np.float64], w_p: NDArray[np.float64], w_t: NDArray[np.float64], tol: float
) -> float:  # pragma: no cover - compiled
    """Normalised surface Dice: fraction (by count or surfel area) of both surfaces within ``tol`` (``d <= tol``)."""
    _, t1, h1 = _weighted_sums(d_pt, w_p, tol)
    _, t2, h2 = _weighted_sums(d_tp, w_t, tol)
    return (h1 + h2) / (t1 + t2)


@numba.njit(cache=True, nogil=True)
def _bbox2d(m: NDArray[np.uint8], box: NDArray[np.int64]) -> None:  # pragma: no cover - compiled
    # grow box = (x0, x1, y0, y1) (inclusive) by the foreground of m
    nx, ny = m.shape
    for x in range(nx):
        acc = np.uint8(0)
        for y in range(ny):
            acc |= m[x, y]
        if acc == 0:
            continue
        box[0] = min(box[0], x)
        box[1] = max(box[1], x)
        first = 0
        while m[x, first] == 0:
            first += 1
        last = ny - 1
        while m[x, last] == 0:
            last -= 1
        box[2] = min(box[2], first)
        box[3] = max(box[3], last)


@numba.njit(cache=True, nogil=True)
def _nearest2d(
    src: NDArray[np.int64], grid: tuple[int, int], dst: NDArray[np.int64], spacing3: NDArray[np.float64], max_box: int
) -> tuple[NDArray[np.float64], int]:  # pragma: no cover - compiled
    marks = np.zeros((1, grid[0], grid[1]), dtype=np.uint8)
    for i in range(dst.shape[0]):
        marks[0, dst[i, 0], dst[i, 1]] = 1
    src3 = np.zeros((src.shape[0], 3), dtype=np.int64)
    for i in range(src.shape[0]):
        src3[i, 1] = src[i, 0]
        src3[i, 2] = src[i, 1]
    out = np.empty(src.shape[0], dtype=np.float64)
    unresolved = _local_nearest(src3, marks, spacing3, max_box, out)
    return out, unresolved


@numba.njit(cache=True, nogil=True)
def _batch2d(
    p: NDArray[np.uint8],
    t: NDArray[np.uint8],
    spacing3: NDArray[np.float64],
    table: NDArray[np.float64],
    q: float,
    tol: float,
    pooled: bool,
    max_box: int,
    scores: NDArray[np.float64],
    flags: NDArray[np.uint8],
) -> None:  # pragma: no cover - compiled
    n_img, nx, ny = p.shape
    box = np.empty(4, dtype=np.int64)
    for i in range(n_img):
        box[0] = nx
        box[1] = -1
        box[2] = ny
        box[3] = -1
        _bbox2d(p[i], box)
        _bbox2d(t[i], box)
        if box[1] < 0:
            flags[i, 0] = 1
            flags[i, 1] = 1
            continue
        h = box[1] - box[0] + 1
        w = box[3] - box[2] + 1
        cp = np.zeros((h + 2, w + 2), dtype=np.uint8)
        ct = np.zeros((h + 2, w + 2), dtype=np.uint8)
        for x in range(h):
            prow = p[i, box[0] + x]
            trow = t[i, box[0] + x]
            for y in range(w):
                cp[x + 1, y + 1] = prow[box[2] + y]
                ct[x + 1, y + 1] = trow[box[2] + y]
        bp, w_p = _elements2d(cp, table)
        bt, w_t = _elements2d(ct, table)
        if bp.shape[0] == 0 or bt.shape[0] == 0:
            flags[i, 0] = 1 if bp.shape[0] == 0 else 0
            flags[i, 1] = 1 if bt.shape[0] == 0 else 0
            continue
        grid = (h + 2, w + 2) if table.size == 0 else (h + 1, w + 1)
        d_pt, u1 = _nearest2d(bp, grid, bt, spacing3, max_box)
        d_tp, u2 = _nearest2d(bt, grid, bp, spacing3, max_box)
        if u1 + u2 > 0:
            flags[i, 2] = 1  # far points: the caller resolves this pair with a KD-tree
            continue
        scores[i, 0] = max(_max(d_pt), _max(d_tp))
        if table.size == 0:
            scores[i, 1] = _percentile_voxels(d_pt, d_tp, q, pooled)
        else:
            scores[i, 1] = _percentile_surfels(d_pt, d_tp, w_p, w_t, q, pooled)
        assd, masd = score_means(d_pt, d_tp, w_p, w_t)
        scores[i, 2] = assd
        scores[i, 3] = masd
        scores[i, 4] = score_nsd(d_pt, d_tp, w_p, w_t, tol)


def batch_surface_kernel(
    p: NDArray[np.uint8],
    t: NDArray[np.uint8],
    spacing: NDArray[np.float64],
    table: NDArray[np.float64] | None,
    q: float,
    tol: float,
    pooled: bool,
    max_box: int = 4096,
) -> tuple[NDArray[np.float64], NDArray[np.uint8]]:
    """Scores of N 2-D pairs ``(N, H, W)`` (0/1 uint8) in one compiled call.

    Returns ``scores (N, 5)`` = (HD, percentile HD, ASSD, MASD, NSD) and ``flags (N, 3)`` = (pred empty, target
    empty, needs the KD-tree fallback); rows with a flag set hold no scores.
    """
    n = p.shape[0]
    scores = np.full((n, 5), np.nan)
    flags = np.zeros((n, 3), dtype=np.uint8)
    tab = np.empty(0, dtype=np.float64) if table is None else np.ascontiguousarray(table, dtype=np.float64)
    sp3 = np.array([1.0, float(spacing[0]), float(spacing[1])])
    _batch2d(p, t, sp3, tab, float(q), float(tol), bool(pooled), max_box, scores, flags)
    return scores, flags
