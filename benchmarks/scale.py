"""Cohort scale: ``labelwise evaluate`` on N synthetic 3D cases, one process vs workers vs Dask vs parts.

Run: ``python benchmarks/scale.py --cases 1000 [--cases 10000] [--shape 64,64,48] [--root /tmp/lw_scale]``.

Writes N label/prediction pairs once (an ellipsoid "organ" of random size and position per case, the prediction a
shifted, resized copy; image, label and prediction as NIfTI), then times the same ``labelwise evaluate`` command
(Dice, HD95, NSD; no bootstrap) run as a fresh process in each configuration:

* ``1 process``: the plain single-process run;
* ``--workers 2``: two local worker processes;
* ``local:1`` / ``local:2``: a Dask ``LocalCluster`` of 1 / 2 worker processes (cluster start-up included);
* ``2 parts``: ``--num-parts 2`` run as two processes at once, then ``labelwise evaluate merge``.

For each: wall time, cases per second, and the peak resident memory of the client process (``ru_maxrss`` of the
process that runs the command; worker processes are not counted: they hold one case at a time). Prints one JSON
line per run and the ratios against the targets of issue 20. Everything the command writes goes under ``--root``.

A user's first ``evaluate`` after install (issue 20, 4c): ``--cold-cache`` gives every run an empty numba cache
(``NUMBA_CACHE_DIR``), so it compiles the metric kernels as a fresh install does; ``--source DIR`` runs the
labelwise package found in ``DIR`` instead (e.g. an older version from ``git archive``), for a before/after in
the same conditions::

    python benchmarks/scale.py --cases 6 --shape 256,256,160 --configs "1 process" --cold-cache
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RUNNER = (
    "import json, resource, sys, time\n"
    "from labelwise.cli.main import main\n"
    "t = time.perf_counter()\n"
    "code = main(sys.argv[1:])\n"
    "wall = time.perf_counter() - t\n"
    "rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
    "print('SCALE ' + json.dumps({'code': code, 'wall_s': wall, 'rss_mib': rss}))\n"
)


def make_cohort(root: Path, n: int, shape: tuple[int, int, int], seed: int = 0) -> tuple[Path, Path]:
    """Write ``n`` cases (image, one rater label) and a prediction folder of label maps, once."""
    from labelwise.data import DatasetWriter
    from labelwise.io import write_label

    data, pred = root / f"data-{n}", root / f"pred-{n}"
    if (data / "dataset.json").is_file() and pred.is_dir():
        return data, pred
    rng = np.random.default_rng(seed)
    spacing = (1.5, 1.5, 2.5)  # mm: a down-sampled abdominal CT
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1).astype(np.float32)
    w = DatasetWriter(data, f"scale-{n}", 3, ("background", "organ"), rater_ids=("r1",))
    pred.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*spacing, 1.0])

    def blob(center: np.ndarray, radii: np.ndarray) -> np.ndarray:
        inside: np.ndarray = (((grid - center) / radii) ** 2).sum(-1) <= 1.0
        return inside

    for i in range(n):
        cid = f"case{i:05d}"
        center = rng.uniform(0.35, 0.65, 3) * np.array(shape)
        radii = rng.uniform(0.12, 0.3, 3) * np.array(shape)  # organ of 2-14% of the volume (kidney to liver)
        label = blob(center, radii).astype(np.uint8)
        image = (rng.normal(size=(1, *shape)) * 20 + label * 60).astype(np.float32)
        w.add_case(cid, image, raters={"r1": label}, spacing_mm=spacing, split="test")
        guess = blob(center + rng.normal(0, 1.5, 3), radii * rng.uniform(0.9, 1.1, 3)).astype(np.uint8)
        write_label(pred / f"{cid}.nii.gz", guess, spacing, affine)
    w.finish()
    return data, pred


ENV: dict[str, str] = {}
"""Extra environment of every command (``--cold-cache``, ``--source``)."""


def _env() -> dict[str, str]:
    import os
    import tempfile

    env = dict(os.environ, **ENV)
    if env.pop("SCALE_COLD_CACHE", None):
        env["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="lw-numba-")  # empty: compile as after install
    return env


def run(args: list[str]) -> dict[str, Any]:
    """One ``labelwise ARGS`` in a fresh process: exit code, wall time and the client's peak RSS."""
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, *args], capture_output=True, text=True, check=False, env=_env()
    )
    for line in proc.stdout.splitlines():
        if line.startswith("SCALE "):
            return dict(json.loads(line[6:]))
    raise RuntimeError(f"labelwise {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def run_parts(base: list[str], n_parts: int) -> dict[str, Any]:
    """``n_parts`` processes at once, then the merge; wall time of the whole, the largest client RSS."""
    t = time.perf_counter()
    env = _env()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RUNNER, *base, "--num-parts", str(n_parts), "--part-id", str(k)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for k in range(n_parts)
    ]
    outs = [p.communicate()[0] for p in procs]
    rss = [json.loads(line[6:])["rss_mib"] for o in outs for line in o.splitlines() if line.startswith("SCALE ")]
    out = base[base.index("--out") + 1]
    merged = run(["evaluate", "merge", "--out", out])
    return {"code": merged["code"], "wall_s": time.perf_counter() - t, "rss_mib": max([*rss, merged["rss_mib"]])}


CONFIGS: dict[str, list[str]] = {
    "1 process": [],
    "--workers 2": ["--workers", "2"],
    "local:1": ["--scheduler", "local:1"],
    "local:2": ["--scheduler", "local:2"],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, action="append", help="cohort sizes (repeatable); default 1000")
    ap.add_argument("--shape", default="64,64,48", help="volume shape of every case")
    ap.add_argument("--root", type=Path, default=Path("/tmp/lw_scale"))
    ap.add_argument("--metrics", default="dice,hd95,nsd")
    ap.add_argument("--configs", default="1 process,--workers 2,local:1,local:2,2 parts")
    ap.add_argument("--cold-cache", action="store_true", help="each run with an empty numba cache (first use)")
    ap.add_argument("--source", type=Path, help="a folder holding the labelwise package to run instead")
    args = ap.parse_args()
    if args.cold_cache:
        ENV["SCALE_COLD_CACHE"] = "1"
    if args.source is not None:
        ENV["PYTHONPATH"] = str(args.source.resolve())
    shape = tuple(int(s) for s in args.shape.split(","))
    assert len(shape) == 3
    chosen = [c.strip() for c in args.configs.split(",")]
    results: dict[tuple[int, str], dict[str, Any]] = {}
    for n in args.cases or [1000]:
        t = time.perf_counter()
        data, pred = make_cohort(args.root, n, shape)
        print(json.dumps({"cohort": n, "shape": shape, "written_s": round(time.perf_counter() - t, 1)}), flush=True)
        for name in chosen:
            out = args.root / f"eval-{n}-{name.replace(' ', '_').replace(':', '').replace('--', '')}"
            shutil.rmtree(out, ignore_errors=True)  # no earlier parts or journal: nothing may be skipped
            (out.parent / f".{out.name}.journal.jsonl").unlink(missing_ok=True)
            base = ["evaluate", "--pred", str(pred), "--data", str(data), "--out", str(out), "--split", "all"]
            base += ["--metrics", args.metrics, "--n-bootstrap", "0"]
            res = run_parts(base, 2) if name == "2 parts" else run([*base, *CONFIGS[name]])
            res.update(cases=n, config=name, cases_per_s=n / res["wall_s"], cold_cache=bool(args.cold_cache))
            results[(n, name)] = res
            print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in res.items()}), flush=True)
    for n in args.cases or [1000]:
        r = {name: results[(n, name)]["cases_per_s"] for name in chosen if (n, name) in results}
        ratios: dict[str, float] = {}
        if "local:2" in r and "local:1" in r:
            ratios["local:2 / local:1 (target >= 1.8)"] = r["local:2"] / r["local:1"]
        if "local:1" in r and "1 process" in r:
            ratios["local:1 / 1 process (target >= 0.85)"] = r["local:1"] / r["1 process"]
        if "--workers 2" in r and "1 process" in r:
            ratios["--workers 2 / 1 process"] = r["--workers 2"] / r["1 process"]
        if "2 parts" in r and "1 process" in r:
            ratios["2 parts / 1 process"] = r["2 parts"] / r["1 process"]
        print(json.dumps({"cases": n, **{k: round(v, 3) for k, v in ratios.items()}}), flush=True)
    sizes = sorted({n for n, _ in results})
    if len(sizes) > 1:
        for name in chosen:
            if all((n, name) in results for n in sizes):
                rss = [round(results[(n, name)]["rss_mib"], 1) for n in sizes]
                print(json.dumps({"config": name, "client_rss_mib_by_cases": dict(zip(sizes, rss, strict=True))}))


if __name__ == "__main__":
    main()
