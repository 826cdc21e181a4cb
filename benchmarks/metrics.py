"""Benchmark labelwise.metrics against MONAI, DeepMind surface-distance and medpy on the same masks.

Usage:
    python benchmarks/metrics.py                       # quick: 128^3 and a batch of 64 2D 256x256
    python benchmarks/metrics.py --sizes 128,256,512x512x300,batch2d --repeats 3
    python benchmarks/metrics.py --first-call          # fresh processes, empty numba cache (first use after install)
    python benchmarks/metrics.py --roofline            # Dice at 256^3 against memory-bandwidth probes

Masks are smooth organ-like blobs (an ellipsoid with low-order harmonic bumps) and a perturbed copy (shifted by
about a voxel, radii scaled by +-3%): Dice about 0.9, like a good prediction. Each tool is timed on warm calls
(median of ``--repeats`` rounds after one first call; the tools are timed round-robin so that load from
other processes hits them alike); labelwise's first (cold) call, which loads the numba cache or
compiles, is reported separately. Memory: peak extra resident memory during the call (VmHWM after resetting it
through /proc/self/clear_refs, Linux) and the tracemalloc peak (numpy allocations only).

HD95 definitions: labelwise and MONAI use the max of the two directed 95th percentiles; medpy pools both
directions (its HD95 differs slightly); surface-distance uses area-weighted corner surfels (differs by about half
a voxel). Values are printed so the differences are visible; "identical" is checked against MONAI. The rows
``labelwise (surfels)`` use ``surface="surfels"``, surface-distance's definition: their values equal
surface-distance's and their speed-up is computed against surface-distance only. On the 2D batch, labelwise
computes HD95 and NSD of the whole stack with ``batch_surface_scores`` (one compiled call).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SIZES: dict[str, tuple[tuple[int, ...], tuple[float, ...]]] = {
    "128": ((128, 128, 128), (0.9, 0.9, 1.5)),
    "256": ((256, 256, 256), (0.8, 0.8, 1.5)),
    "512x512x300": ((512, 512, 300), (0.8, 0.8, 2.5)),
    "batch2d": ((64, 256, 256), (0.7, 0.7)),
}
TOL_MM = 1.0


def organ_pair(shape: tuple[int, ...], spacing: tuple[float, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(pred, target)`` bool masks: a smooth blob and a perturbed copy."""
    rng = np.random.default_rng(seed)
    nd = len(shape)
    sp = np.asarray(spacing)
    ext = np.asarray(shape) * sp
    centre = ext * (0.5 + rng.uniform(-0.05, 0.05, nd))
    radii = ext * 0.5 * rng.uniform(0.7, 1.0, nd) / 2
    lo = np.maximum(((centre - radii * 1.4) / sp).astype(int), 0)
    hi = np.minimum(((centre + radii * 1.4) / sp).astype(int) + 1, shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    out = []
    phase = rng.uniform(0, 6, nd)
    for i in range(2):
        c = centre + (0 if i == 0 else rng.normal(0, 1.0, nd) * sp)
        r = radii * (1 if i == 0 else rng.uniform(0.97, 1.03, nd))
        grids = np.ogrid[box]
        x = [(g * s - cc) / rr for g, s, cc, rr in zip(grids, sp, c, r, strict=True)]
        bump = sum(0.12 * np.sin(3 * x[k] + phase[k]) * np.cos(2 * x[(k + 1) % nd] + phase[k]) for k in range(nd))
        m = np.zeros(shape, bool)
        m[box] = sum(v**2 for v in x) < (1 + bump) ** 2
        out.append(m)
    return out[1], out[0]


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def _trim() -> None:
    """Return freed heap memory to the OS so that the next call's peak shows up in VmHWM (glibc only)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def memory(fn: Callable[[], Any]) -> dict[str, float]:
    """Peak extra resident memory (VmHWM after a reset, Linux) and tracemalloc peak of one call, in MiB."""
    gc.collect()
    _trim()
    rss_peak = float("nan")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        base = _rss_kib("VmRSS:")
        fn()
        rss_peak = (_rss_kib("VmHWM:") - base) / 1024
    except OSError:
        pass
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"rss": rss_peak, "py": peak / 2**20}


def tools(
    pred: np.ndarray, target: np.ndarray, spacing: tuple[float, ...], batch: bool
) -> dict[str, Callable[[], Any]]:
    """Closures computing Dice, HD95 and NSD with each library on the same masks."""
    import torch
    from medpy.metric import binary as mb
    from monai.metrics.hausdorff_distance import compute_hausdorff_distance
    from monai.metrics.meandice import compute_dice
    from monai.metrics.surface_dice import compute_surface_dice

    import labelwise.metrics as lw

    try:
        import surface_distance as sdl
    except ImportError:  # pragma: no cover
        sdl = None

    pairs = [(pred[i], target[i]) for i in range(pred.shape[0])] if batch else [(pred, target)]
    tp = torch.from_numpy(pred[:, None] if batch else pred[None, None]).float()
    tt = torch.from_numpy(target[:, None] if batch else target[None, None]).float()
    oh_p = torch.cat([1 - tp, tp], 1)
    oh_t = torch.cat([1 - tt, tt], 1)
    sp = list(spacing)

    def each(f: Callable[[np.ndarray, np.ndarray], float]) -> Callable[[], float]:
        return lambda: float(np.mean([f(p, t) for p, t in pairs]))

    def lw_both(p: np.ndarray, t: np.ndarray) -> float:
        sd = lw.surface_distances(p, t, spacing)
        return sd.hausdorff_percentile(95) + 0 * sd.nsd(TOL_MM)

    def lw_surfels(metric: str) -> Callable[[np.ndarray, np.ndarray], float]:
        def f(p: np.ndarray, t: np.ndarray) -> float:
            sd = lw.surface_distances(p, t, spacing, surface="surfels")
            return sd.hausdorff_percentile(95) if metric == "hd95" else sd.nsd(TOL_MM)

        return f

    def lw_batch(field: str, surface: str = "voxels") -> Callable[[], float]:
        def f() -> float:
            s = lw.batch_surface_scores(pred, target, spacing, tolerance_mm=TOL_MM, surface=surface)  # type: ignore[arg-type]
            return float(np.mean(getattr(s, field)))

        return f

    def sd_hd95(p: np.ndarray, t: np.ndarray) -> float:
        return float(sdl.compute_robust_hausdorff(sdl.compute_surface_distances(t, p, spacing), 95))

    def sd_nsd(p: np.ndarray, t: np.ndarray) -> float:
        return float(sdl.compute_surface_dice_at_tolerance(sdl.compute_surface_distances(t, p, spacing), TOL_MM))

    out: dict[str, Callable[[], Any]] = {
        "dice/labelwise": (
            (lambda: float(lw.overlap_from_counts(lw.batch_confusion(pred, target), "dice").mean()))
            if batch
            else (lambda: lw.dice(pred, target))
        ),
        "dice/monai": lambda: float(compute_dice(tp, tt).mean()),
        "dice/medpy": each(mb.dc),
        "hd95/labelwise": (
            lw_batch("hausdorff_percentile") if batch else each(lambda p, t: lw.hausdorff_percentile(p, t, spacing))
        ),
        "hd95/monai": lambda: float(compute_hausdorff_distance(tp, tt, percentile=95, spacing=sp).mean()),
        "hd95/medpy": each(lambda p, t: mb.hd95(p, t, spacing)),
        "nsd/labelwise": lw_batch("nsd") if batch else each(lambda p, t: lw.nsd(p, t, spacing, tolerance_mm=TOL_MM)),
        "nsd/monai": lambda: float(compute_surface_dice(oh_p, oh_t, [TOL_MM], spacing=sp).mean()),
        "hd95+nsd/labelwise (one surface pass)": each(lw_both),
        "hd95/labelwise (surfels)": (
            lw_batch("hausdorff_percentile", "surfels") if batch else each(lw_surfels("hd95"))
        ),
        "nsd/labelwise (surfels)": lw_batch("nsd", "surfels") if batch else each(lw_surfels("nsd")),
    }
    if batch:
        out["hd95+nsd/labelwise (per-image loop)"] = each(lw_both)
    if sdl is not None:
        out["dice/surface-distance"] = each(lambda p, t: float(sdl.compute_dice_coefficient(t, p)))
        out["hd95/surface-distance"] = each(sd_hd95)
        out["nsd/surface-distance"] = each(sd_nsd)
    return out


def run(size: str, repeats: int, skip: set[str]) -> list[dict[str, Any]]:
    """Benchmark one size; returns result rows.

    Tools are timed round-robin (one call of each tool per round, ``repeats`` rounds) so that load from other
    processes on a shared machine hits every tool alike; the median per tool is reported.
    """
    shape, spacing = SIZES[size]
    batch = size == "batch2d"
    if batch:
        pairs = [organ_pair(shape[1:], spacing, seed=i) for i in range(shape[0])]
        pred = np.stack([p for p, _ in pairs])
        target = np.stack([t for _, t in pairs])
    else:
        pred, target = organ_pair(shape, spacing)
    selected = {}
    for name, fn in tools(pred, target, spacing, batch).items():
        metric, lib = name.split("/", 1)
        short = lib.split(" ")[0]
        if short not in skip and f"{metric}/{short}" not in skip:
            selected[name] = fn
    rows: dict[str, dict[str, Any]] = {}
    times: dict[str, list[float]] = {name: [] for name in selected}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, fn in selected.items():  # first (cold) call
            gc.collect()
            t0 = time.perf_counter()
            value = fn()
            rows[name] = {"value": value, "first": time.perf_counter() - t0}
        for _ in range(repeats):
            for name, fn in selected.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        for name, fn in selected.items():
            rows[name].update(memory(fn))
    out = []
    for name, r in rows.items():
        metric, lib = name.split("/", 1)
        r.update(size=size, metric=metric, lib=lib, warm=statistics.median(times[name]))
        out.append(r)
        print(
            f"  {size:12s} {name:40s} first {r['first']:8.4f}s  warm {r['warm']:8.4f}s  "
            f"+RSS {r['rss']:8.1f} MiB  tracemalloc {r['py']:8.1f} MiB  value {r['value']:.6f}",
            flush=True,
        )
    return out


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table with ratios to the fastest peer per size x metric."""
    lines = [
        "| size | metric | library | warm s | first s | speed-up vs fastest peer | +RSS MiB | tracemalloc MiB "
        "| value |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        surfels = "surfels" in r["lib"]
        peers = [
            x["warm"]
            for x in rows
            if x["size"] == r["size"]
            and x["metric"] == r["metric"]
            and not x["lib"].startswith("labelwise")
            and (x["lib"] == "surface-distance" or not surfels)
        ]
        ratio = f"{min(peers) / r['warm']:.1f}x" if peers and r["lib"].startswith("labelwise") else ""
        lines.append(
            f"| {r['size']} | {r['metric']} | {r['lib']} | {r['warm']:.4f} | {r['first']:.4f} | {ratio} "
            f"| {r['rss']:.1f} | {r['py']:.1f} | {r['value']:.6f} |"
        )
    return "\n".join(lines)


FIRST_CALL = """
import sys, time, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {bench!r})
from metrics import organ_pair
pred, target = organ_pair((256, 256, 256), (0.8, 0.8, 1.5))
t0 = time.perf_counter()
if {tool!r} == "monai":
    import torch
    torch.set_num_threads(1)
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice
    tp, tt = torch.from_numpy(pred[None, None]).float(), torch.from_numpy(target[None, None]).float()
    t1 = time.perf_counter()
    compute_hausdorff_distance(tp, tt, percentile=95, spacing=[0.8, 0.8, 1.5])
    compute_surface_dice(torch.cat([1 - tp, tp], 1), torch.cat([1 - tt, tt], 1), [1.0], spacing=[0.8, 0.8, 1.5])
else:
    import labelwise.metrics as lw
    t1 = time.perf_counter()
    sd = lw.surface_distances(pred, target, (0.8, 0.8, 1.5))
    sd.hausdorff_percentile(95), sd.nsd(1.0)
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def first_call() -> None:
    """HD95 + NSD at 256^3 (anisotropic) in fresh processes: import and first call, empty vs built numba cache."""
    import os
    import subprocess
    import sys
    import tempfile

    bench = str(Path(__file__).resolve().parent)
    print("| tool | numba cache | import s | first call s | import + first call s |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as cache:
        for tool, label in (("labelwise", "empty"), ("labelwise", "built"), ("monai", "-")):
            env = dict(os.environ, NUMBA_CACHE_DIR=cache)
            code = FIRST_CALL.format(bench=bench, tool=tool)
            res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            imp, call = (float(x) for x in res.stdout.split())
            print(f"| {tool} | {label} | {imp:.2f} | {call:.2f} | {imp + call:.2f} |", flush=True)


def roofline(repeats: int) -> None:
    """Dice at 256^3 against the memory floor: the same bytes read by the cheapest numpy passes."""
    from medpy.metric import binary as mb

    import labelwise.metrics as lw

    pred, target = organ_pair((256, 256, 256), (0.8, 0.8, 1.5))
    buf = np.empty_like(pred)
    wp, wt = pred.view(np.uint64), target.view(np.uint64)
    probes: dict[str, Callable[[], Any]] = {
        "labelwise dice (one fused pass, reads a and b)": lambda: lw.dice(pred, target),
        "medpy dc (a & b temp, 3 count_nonzero)": lambda: mb.dc(pred, target),
        "np.count_nonzero(a & b) (one pass + temp)": lambda: np.count_nonzero(pred & target),
        "read floor: count_nonzero of a and b as uint64": lambda: (np.count_nonzero(wp), np.count_nonzero(wt)),
        "copy a -> buf (read 16 MiB + write 16 MiB)": lambda: np.copyto(buf, pred),
    }
    nbytes = 2 * pred.nbytes
    print(f"256^3 bool masks, {pred.nbytes / 2**20:.0f} MiB each")
    print("| operation | median s | GB/s over 2 masks (32 MiB) |")
    print("|---|---|---|")
    for name, fn in probes.items():
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        print(f"| {name} | {med:.4f} | {nbytes / med / 1e9:.1f} |", flush=True)


def main() -> None:
    """Parse arguments, run the sizes, print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="128,batch2d", help=f"comma-separated, from {', '.join(SIZES)}")
    ap.add_argument("--repeats", type=int, default=3, help="warm calls per tool (median reported)")
    ap.add_argument(
        "--skip",
        default="",
        help="comma-separated libraries (monai, medpy, surface-distance) or metric/library pairs (hd95/medpy) to skip",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--first-call", action="store_true", help="time import + first call in fresh processes")
    ap.add_argument("--roofline", action="store_true", help="Dice at 256^3 against memory-bandwidth probes")
    args = ap.parse_args()
    if args.first_call:
        first_call()
        return
    if args.roofline:
        roofline(max(args.repeats, 9))
        return
    import torch

    torch.set_num_threads(args.threads)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    rows: list[dict[str, Any]] = []
    for size in args.sizes.split(","):
        print(f"size {size}: {SIZES[size]}", flush=True)
        rows += run(size.strip(), args.repeats, skip)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
