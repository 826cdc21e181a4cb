"""Regenerate the results tables: run (or resume) each table, write its JSON record, re-render docs/results.md.

    python benchmarks/results/run.py [TABLE ...] [--quick] [--out DIR] [--work DIR] [--docs FILE] [--data DIR]

Each table (``benchmarks/results/tables/``) does its work through labelwise's public API and returns a record
body; this runner adds the provenance (git commit and dirty flag, wall and CPU time, machine, date, config hash),
counts the looks at the test split (``docs/protocol.md``), writes ``<out>/<table>.json`` atomically and replaces
the block ``<!-- results:TABLE -->`` ... ``<!-- /results:TABLE -->`` of the docs file with ``render(record)``.

Without TABLE names every registered table runs; a table of ``UNREGISTERED`` (no full-run record yet) runs only
when named. Its first full run into ``docs/results`` is followed by moving it to the registered tables.

``--quick`` is a smoke run on 3 images per split into a temporary folder (never ``docs/``): its records and a
``results.md`` holding only its blocks go to ``--out`` (default: a new temp folder, printed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.results.common import write_json  # noqa: E402
from benchmarks.results.tables import TABLES, UNREGISTERED, Context, get  # noqa: E402

PROVENANCE_FIELDS = ("git_commit", "git_dirty", "wall_s", "cpu_s", "machine", "date", "command")
RECORD_FIELDS = (
    "table",
    "schema",
    "config",
    "config_hash",
    "seeds",
    "splits",
    "rows",
    "per_case",
    "looks",
    "provenance",
    "quick",
)


def block_pattern(name: str) -> re.Pattern[str]:
    """Regex of the marker block of table ``name``; group 1 is the rendered text."""
    n = re.escape(name)
    return re.compile(rf"<!-- results:{n} -->\n(?:(.*?)\n)?<!-- /results:{n} -->", re.S)


def blocks(text: str) -> dict[str, str]:
    """Every marker block of a Markdown text: table name -> rendered text."""
    return {
        m.group(1): m.group(2) or ""
        for m in re.finditer(r"<!-- results:(\S+) -->\n(?:(.*?)\n)?<!-- /results:\1 -->", text, re.S)
    }


def config_hash(cfg: Any) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()


def _git(*args: str) -> str | None:
    try:
        res = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip()


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": None,
        "gpu": None,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        # CPU results can move between machines with the same seed: the kernel set and thread count explain some
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def previous_record(name: str, out: Path, *, quick: bool, records: Path = REPO / "docs" / "results") -> Any:
    """The record whose looks log a new run of ``name`` continues: the one in ``out``, else (a full run whose
    ``--out`` holds none, e.g. a run into a scratch folder) the committed record in ``records``; None if neither."""
    for path in (out / f"{name}.json", *(() if quick else (records / f"{name}.json",))):
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    return None


def _looks(body: dict[str, Any], previous: dict[str, Any] | None, entry: dict[str, Any]) -> dict[str, Any]:
    if previous is not None:
        log = list(previous["looks"]["log"])
    else:
        log = list(body.get("prior_looks", []))
    has_test = any(s["role"] == "test" for s in body["splits"].values())
    if has_test:
        log.append(entry)
    real = [e for e in log if not e.get("quick")]
    return {
        "log": log,
        "test_looks_this_version": sum(e.get("config_hash") == entry["config_hash"] for e in real),
        "test_looks_total": len(real),
    }


def render_into(docs: Path, name: str, text: str) -> None:
    """Replace (or append) the marker block of ``name`` in ``docs`` with ``text``, atomically."""
    block = f"<!-- results:{name} -->\n{text}\n<!-- /results:{name} -->"
    old = docs.read_text(encoding="utf-8") if docs.is_file() else ""
    pat = block_pattern(name)
    new = pat.sub(lambda _m: block, old, count=1) if pat.search(old) else old.rstrip("\n") + "\n\n" + block + "\n"
    tmp = docs.with_name(f".{docs.name}.tmp")
    tmp.write_text(new if old else new.lstrip("\n"), encoding="utf-8")
    os.replace(tmp, docs)


HEADLINES = "headlines"


def headlines(records: Path) -> str:
    """The per-capability headline bullets, from every record in ``records`` whose table defines ``headline``.

    Rendered into the ``<!-- results:headlines -->`` block of ``docs/results.md`` and of ``README.md``, so the
    numbers there come from the records too.
    """
    lines = []
    for name in TABLES:
        path = records / f"{name}.json"
        if not path.is_file():
            continue
        table = get(name)
        if hasattr(table, "headline"):
            text = table.headline(json.loads(path.read_text(encoding="utf-8")))
            if text:
                lines.append(text)
    return "\n".join(lines) if lines else "(no results record yet)"


def render_headlines(records: Path, docs: list[Path]) -> None:
    """Re-render the headline block of each file in ``docs`` that has one (or of the first, appended)."""
    text = headlines(records)
    for i, path in enumerate(docs):
        if (path.is_file() and block_pattern(HEADLINES).search(path.read_text(encoding="utf-8"))) or i == 0:
            render_into(path, HEADLINES, text)


def run_table(name: str, ctx: Context, out: Path, docs: Path, argv: list[str]) -> dict[str, Any]:
    table = get(name)
    # the code that runs is the code at the start: read the commit before the (hours-long) run
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain")
    wall0, cpu0 = time.perf_counter(), time.process_time()
    body = table.run(ctx)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    cfg_hash = config_hash(body["config"])
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    path = out / f"{name}.json"
    previous = previous_record(name, out, quick=ctx.quick)
    entry = {
        "date": date,
        "git_commit": commit,
        "config_hash": cfg_hash,
        "table": name,
        "split": "test",
        "quick": ctx.quick,
        "note": "benchmarks/results/run.py",
    }
    record = {k: v for k, v in body.items() if k != "prior_looks"}
    record.update(
        {
            "table": name,
            "schema": 1,
            "quick": ctx.quick,
            "config_hash": cfg_hash,
            "looks": _looks(body, previous, entry),
            "provenance": {
                "git_commit": commit,
                "git_dirty": bool(status) if status is not None else None,
                "wall_s": round(wall, 2),
                "cpu_s": round(cpu, 2),
                "machine": machine(),
                "date": date,
                "command": "python benchmarks/results/run.py " + " ".join(argv),
            },
        }
    )
    write_json(path, record)
    render_into(docs, name, table.render(record))
    return record


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "tables",
        nargs="*",
        metavar="TABLE",
        help=f"tables to run (default all registered: {', '.join(TABLES)}; by name only, no full-run record yet: "
        f"{', '.join(UNREGISTERED)})",
    )
    p.add_argument("--quick", action="store_true", help="smoke run on 3 images per split into a temp --out")
    p.add_argument("--out", type=Path, help="folder of the JSON records (default docs/results; quick: a temp dir)")
    p.add_argument("--work", type=Path, help="work folder; finished steps there are reused (default <out>/../work)")
    p.add_argument(
        "--docs", type=Path, help="Markdown file to render into (default docs/results.md; quick: <out>/results.md)"
    )
    p.add_argument(
        "--render-only",
        action="store_true",
        help="re-render the docs blocks from the existing records (no run, no new look)",
    )
    p.add_argument("--data", type=Path, help="real data folder (default $LABELWISE_DATA or ../shared/data)")
    args = p.parse_args(argv)
    names = args.tables or list(TABLES)
    unknown = [n for n in names if n not in TABLES and n not in UNREGISTERED]
    if unknown:
        p.error(f"unknown table(s) {', '.join(unknown)}; known: {', '.join([*TABLES, *UNREGISTERED])}")
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="labelwise-results-")) if args.quick else REPO / "docs" / "results"
    out = args.out.resolve()
    if args.quick and out == (REPO / "docs" / "results").resolve():
        p.error("--quick never writes into docs/results; give another --out")
    docs = (args.docs or (out / "results.md" if args.quick else REPO / "docs" / "results.md")).resolve()
    if args.quick and docs == (REPO / "docs" / "results.md").resolve():
        p.error("--quick never renders into docs/results.md; give another --docs")
    work = args.work or (out / "work" if args.quick else Path(tempfile.gettempdir()) / "labelwise-results-work")
    if args.render_only:
        for name in names:
            record = json.loads((out / f"{name}.json").read_text(encoding="utf-8"))
            render_into(docs, name, get(name).render(record))
            print(f"{name}: rendered {out / (name + '.json')} into {docs}")
        render_headlines(out, _headline_docs(docs, args.quick))
        return 0
    data = args.data or Path(os.environ.get("LABELWISE_DATA") or REPO.parent / "shared" / "data")
    if not data.is_dir():
        print(f"error: {data}: real data folder not found (set --data or LABELWISE_DATA)", file=sys.stderr)
        return 1
    for name in names:
        t0 = time.perf_counter()
        ctx = Context(work=work.resolve() / name, data=data.resolve(), quick=args.quick)
        run_table(name, ctx, out, docs, argv)
        print(f"{name}: {out / (name + '.json')} and {docs} ({time.perf_counter() - t0:.1f} s)")
        render_headlines(out, _headline_docs(docs, args.quick))
    return 0


def _headline_docs(docs: Path, quick: bool) -> list[Path]:
    """The results page, plus the README when the page is the repository's own."""
    if quick or docs != (REPO / "docs" / "results.md").resolve():
        return [docs]
    return [docs, REPO / "README.md"]


if __name__ == "__main__":
    raise SystemExit(main())
