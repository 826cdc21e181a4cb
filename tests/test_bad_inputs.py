"""Bad inputs through the CLI (issue 15): one error line, the right exit code, inputs unchanged, no partial output.

Every row runs a command the way a user would (typer's CliRunner on ``labelwise.cli.main.app``; a
:class:`~labelwise.errors.LabelwiseError` is what ``labelwise.cli.main.run`` prints as one ``error: ...`` line with
exit code 1, anything else is a traceback and fails the test), takes SHA-256 checksums of every input file before
and after, and checks that a refused command left no output (not even a hidden staging folder).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from labelwise.cli.main import app
from labelwise.data import Dataset
from labelwise.data.phantoms import make_phantom_dataset
from labelwise.errors import LabelwiseError
from labelwise.io import STALE_MARKER, read_image, write_image, write_json_atomic, write_label

runner = CliRunner()
SMOKE = ["--preset", "smoke", "--set", "train.progress=false", "--set", "tta=false"]


# ------------------------------------------------------------------------------------------------ helpers
@dataclass
class Outcome:
    """What the user sees: exit code and terminal output (with the line ``run()`` prints for a LabelwiseError)."""

    code: int
    output: str

    @property
    def errors(self) -> list[str]:
        return [line for line in self.output.splitlines() if line.startswith("error:")]


def cli(*args: object) -> Outcome:
    res = runner.invoke(app, [str(a) for a in args])
    exc = res.exception
    if exc is None or isinstance(exc, SystemExit):
        return Outcome(res.exit_code, res.output)
    if isinstance(exc, LabelwiseError):
        return Outcome(1, f"{res.output}error: {exc}\n")
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    raise AssertionError(f"a traceback instead of one error line:\n{tb}")


def refused(outcome: Outcome, *fragments: str) -> str:
    """Assert exit code 1 with exactly one ``error:`` line (no traceback) holding every fragment; return it."""
    assert outcome.code == 1, outcome.output
    assert "Traceback" not in outcome.output, outcome.output
    assert len(outcome.errors) == 1, outcome.output
    line = outcome.errors[0]
    for fragment in fragments:
        assert fragment in line, line
    return line


def checksums(*roots: Path | None) -> dict[str, str]:
    """SHA-256 and mode of every file under ``roots`` (files or folders)."""
    out: dict[str, str] = {}
    for root in roots:
        if root is None or not root.exists():
            continue
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = f"{hashlib.sha256(f.read_bytes()).hexdigest()} {oct(f.stat().st_mode)}"
    return out


def no_output(path: Path) -> None:
    """``path`` was not created, and no hidden staging sibling (``.<name>.partial-*``) is left either."""
    assert not path.exists(), f"{path} was written"
    assert not list(path.parent.glob(f".{path.name}.*")), list(path.parent.glob(f".{path.name}.*"))


@pytest.fixture(autouse=True)
def _umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


# ------------------------------------------------------------------------------------------------ fixtures
def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _folder_source(root: Path) -> Path:
    """Generic folder layout: three 8x10 cases, float64 .npy images, 0/255 PNG masks of one rater."""
    for i, case in enumerate(("a1", "a2", "a3")):
        (root / "images").mkdir(parents=True, exist_ok=True)
        np.save(root / "images" / f"{case}.npy", np.linspace(0, 1 + i, 80).reshape(8, 10))
        mask = np.zeros((8, 10), np.uint8)
        mask[2:5, 3 + i : 7] = 255
        _png(root / "labels" / f"{case}_expert.png", mask)
    return root


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bad_inputs")


@pytest.fixture(scope="module")
def ds(base: Path) -> Path:
    make_phantom_dataset(base / "ds", n_cases=5, raters=2, shape=(16, 16), seed=0)
    return base / "ds"


@pytest.fixture(scope="module")
def src(base: Path) -> Path:
    return _folder_source(base / "src")


@pytest.fixture(scope="module")
def run(base: Path, ds: Path) -> Path:
    out = cli("train", "supervised", "--data", ds, "--out", base / "run", *SMOKE)
    assert out.code == 0, out.output
    return base / "run"


@pytest.fixture(scope="module")
def pred(base: Path, ds: Path, run: Path) -> Path:
    out = cli("predict", "--run", run, "--data", ds, "--out", base / "pred", "--split", "all")
    assert out.code == 0, out.output
    return base / "pred"


@pytest.fixture(scope="module")
def evaluation(base: Path, ds: Path, pred: Path) -> Path:
    out = cli("evaluate", "--pred", pred, "--data", ds, "--out", base / "eval", "--split", "all", "--n-bootstrap", "0")
    assert out.code == 0, out.output
    return base / "eval"


# ------------------------------------------------------------------------------- outputs never touch inputs
Args = Callable[[dict[str, Path]], list[object]]
OVERLAP_ROWS: list[tuple[str, Args, str]] = [
    ("import SRC SRC", lambda p: ["data", "import", "folder", p["src"], "--out", p["src"]], "--out is the input"),
    (
        "import SRC SRC/x",
        lambda p: ["data", "import", "folder", p["src"], "--out", p["src"] / "x"],
        "lies inside the input",
    ),
    ("fuse DS --out DS", lambda p: ["fuse", "--data", p["ds"], "--out", p["ds"], "--overwrite"], "--out is the input"),
    ("fuse DS --out DS/x", lambda p: ["fuse", "--data", p["ds"], "--out", p["ds"] / "fused"], "lies inside"),
    (
        "split DS --out DS",
        lambda p: ["data", "split", "--data", p["ds"], "--out", p["ds"], "--folds", "2", "--fold", "0", "--overwrite"],
        "--out is the input",
    ),
    (
        "predict --out RUN",
        lambda p: ["predict", "--run", p["run"], "--data", p["ds"], "--out", p["run"]],
        "is the input",
    ),
    (
        "predict --out DS/x",
        lambda p: ["predict", "--run", p["run"], "--data", p["ds"], "--out", p["ds"] / "p"],
        "lies inside",
    ),
    (
        "evaluate --out PRED",
        lambda p: ["evaluate", "--pred", p["pred"], "--data", p["ds"], "--out", p["pred"]],
        "is the input",
    ),
    (
        "evaluate --out PARENT",
        lambda p: ["evaluate", "--pred", p["pred"], "--data", p["ds"], "--out", p["pred"].parent],
        "contains the input",
    ),
    (
        "qa --out MASKS",
        lambda p: ["qa", "--run", p["run"], "--data", p["ds"], "--masks", p["pred"], "--out", p["pred"]],
        "is the input",
    ),
    (
        "pseudo-label --out PRED",
        lambda p: ["pseudo-label", "--pred", p["pred"], "--data", p["ds"], "--out", p["pred"], "--overwrite"],
        "is the input",
    ),
    (
        "report --out EVAL/x",
        lambda p: ["report", p["eval"], "--data", p["ds"], "--out", p["eval"] / "report.html"],
        "lies inside",
    ),
]


@pytest.mark.parametrize(("name", "args", "message"), OVERLAP_ROWS, ids=[r[0] for r in OVERLAP_ROWS])
def test_output_overlapping_an_input_is_refused(
    name: str, args: Args, message: str, ds: Path, src: Path, run: Path, pred: Path, evaluation: Path
) -> None:
    paths = {"ds": ds, "src": src, "run": run, "pred": pred, "eval": evaluation}
    before = checksums(*paths.values())
    refused(cli(*args(paths)), message)
    assert checksums(*paths.values()) == before
    for extra in (src / "x", ds / "fused", ds / "p", evaluation / "report.html"):
        no_output(extra)


def test_output_through_a_link_to_an_input_is_refused(ds: Path, tmp_path: Path) -> None:
    link = tmp_path / "looks-new"
    link.symlink_to(ds, target_is_directory=True)
    before = checksums(ds)
    refused(cli("fuse", "--data", ds, "--out", link, "--overwrite"), "is the input")
    assert checksums(ds) == before


def test_import_into_its_own_source_keeps_the_originals(src: Path) -> None:
    """Bug 1: `data import folder SRC SRC` exited 0 and rewrote the originals (float64 -> float32, 0/255 -> 0/1)."""
    before = checksums(src)
    refused(cli("data", "import", "folder", src, "--out", src), "--out is the input")
    assert checksums(src) == before
    assert np.load(src / "images" / "a1.npy").dtype == np.float64


def test_failed_overwrite_keeps_the_previous_dataset(src: Path, tmp_path: Path) -> None:
    """Bug 2: an --overwrite import that fails on a bad file had already deleted the previous dataset."""
    dest = tmp_path / "ds"
    assert cli("data", "import", "folder", src, "--out", dest).code == 0
    before = checksums(dest)
    bad = _folder_source(tmp_path / "bad")
    (bad / "images" / "a2.npy").write_bytes(b"not an array")
    refused(cli("data", "import", "folder", bad, "--out", dest, "--overwrite"), "a2.npy")
    assert checksums(dest) == before
    assert not list(tmp_path.glob(".ds.*"))
    # a complete import does replace it, and the files are readable by the group (umask 022: 0o644)
    assert cli("data", "import", "folder", src, "--out", dest, "--overwrite").code == 0
    assert len(Dataset(dest)) == 3


def test_fuse_over_its_source_keeps_images_and_labels(ds: Path, tmp_path: Path) -> None:
    """Bug 3: `fuse DS --out DS --overwrite` deleted the source images and labels."""
    copy = tmp_path / "ds"
    shutil.copytree(ds, copy)
    before = checksums(copy)
    refused(cli("fuse", "--data", copy, "--out", copy, "--overwrite"), "--out is the input")
    assert checksums(copy) == before
    # --overwrite of a real earlier fusion replaces it only when the new one is complete
    out = tmp_path / "fused"
    assert cli("fuse", "--data", copy, "--out", out).code == 0
    refused(cli("fuse", "--data", copy, "--out", out), "already exists")
    assert cli("fuse", "--data", copy, "--out", out, "--overwrite", "--method", "mean").code == 0
    assert json.loads((out / "fusion.json").read_text(encoding="utf-8"))["method"] == "mean"


@pytest.mark.parametrize("bad_id", ["../../X", "<b>x</b>", "a..b", ".hidden"])
def test_unsafe_case_ids_are_reported_and_never_written(bad_id: str, ds: Path, run: Path, tmp_path: Path) -> None:
    """Bug 4: a case id such as ../../X passed `data check`, and predict/fuse then wrote outside --out."""
    copy = tmp_path / "deep" / "er" / "ds"
    shutil.copytree(ds, copy)
    manifest = json.loads((copy / "dataset.json").read_text(encoding="utf-8"))
    manifest["cases"][0]["id"] = bad_id
    (copy / "dataset.json").write_text(json.dumps(manifest), encoding="utf-8")
    before = checksums(tmp_path)
    check = cli("data", "check", "--data", copy)
    assert check.code == 1 and f"case id {bad_id!r} must match" in check.output, check.output
    refused(cli("predict", "--run", run, "--data", copy, "--out", copy.parent / "pred", "--split", "all"), "case id")
    refused(cli("fuse", "--data", copy, "--out", copy.parent / "fused"), "case id")
    assert checksums(tmp_path) == before  # nothing written anywhere, inside or outside --out


def test_unsafe_rater_id_from_a_file_name_is_reported(tmp_path: Path) -> None:
    src = _folder_source(tmp_path / "src")
    shutil.copy(src / "labels" / "a1_expert.png", src / "labels" / "a1_dr smith.png")
    refused(cli("data", "import", "folder", src, "--out", tmp_path / "ds"), "a1_dr smith.png", "rater id 'dr smith'")
    no_output(tmp_path / "ds")


def test_propagate_refuses_to_overwrite_its_input(tmp_path: Path) -> None:
    """Bug 5: `propagate VOL --labels L --out L` silently overwrote its input."""
    vol, lab = tmp_path / "vol.nii.gz", tmp_path / "lab.nii.gz"
    write_image(vol, np.random.default_rng(0).random((1, 12, 12, 6)).astype(np.float32))
    mask = np.zeros((12, 12, 6), np.uint8)
    mask[3:8, 3:8, 2] = 1
    write_label(lab, mask)
    before = checksums(vol, lab)
    refused(cli("propagate", vol, "--labels", lab, "--out", lab), "--out is the input")
    refused(cli("propagate", vol, "--labels", lab, "--out", vol), "--out is the input")
    out = tmp_path / "filled.nii.gz"
    refused(cli("propagate", vol, "--labels", lab, "--out", out, "--probs", out), "--probs is the input")
    assert checksums(vol, lab) == before
    no_output(out)


# ------------------------------------------------------------------------------ wrong results without a word
def test_multiclass_map_among_0_255_masks_is_an_error_naming_the_file(tmp_path: Path) -> None:
    """One 0/1/7 label map among 0/255 masks imported as 256 classes, the masks becoming class_255."""
    src = _folder_source(tmp_path / "src")
    multi = np.zeros((8, 10), np.uint8)
    multi[1:3, 1:3], multi[5:7, 5:7] = 1, 7
    _png(src / "labels" / "a2_resident.png", multi)
    refused(cli("data", "import", "folder", src, "--out", tmp_path / "ds"), "a2_resident.png", "0/255 binary masks")
    no_output(tmp_path / "ds")
    # with the classes given, the rule is clear: 0/255 masks need two classes, so value 255 is out of range
    (src / "classes.txt").write_text("\n".join(["background", *(f"c{i}" for i in range(1, 8))]) + "\n")
    out = cli("data", "import", "folder", src, "--out", tmp_path / "ds")
    refused(out, "3 problem(s) in the folder layout")  # one line per problem follows the error line
    assert "a1_expert.png: label values [255] outside the 8 classes" in out.output
    # every map 0/255: binary, read as 0/1
    (src / "classes.txt").unlink()
    (src / "labels" / "a2_resident.png").unlink()
    assert cli("data", "import", "folder", src, "--out", tmp_path / "ok").code == 0
    assert Dataset(tmp_path / "ok").class_names == ("background", "foreground")
    assert int(Dataset(tmp_path / "ok").load("a1").raters.max()) == 1


def test_evaluate_refuses_probabilities_outside_0_1(ds: Path, pred: Path, tmp_path: Path) -> None:
    """Probability maps outside [0, 1] changed ECE and soft Dice with exit code 0."""
    bad = tmp_path / "pred"
    shutil.copytree(pred, bad)
    probs = bad / "case004_probs.nii.gz"
    img = read_image(probs, 2)
    write_image(probs, img.array * 1.7 - 0.2, img.spacing_mm, img.affine)
    out = cli("evaluate", "--pred", bad, "--data", ds, "--out", tmp_path / "eval", "--n-bootstrap", "0")
    refused(out, "1 case(s) failed")
    failure = json.loads((tmp_path / "eval" / "summary.json").read_text(encoding="utf-8"))["failures"]["case004"]
    assert failure.startswith(str(probs)) and "outside [0, 1]" in failure


@pytest.mark.parametrize("lr", [".inf", ".nan", "-.inf"])
def test_non_finite_learning_rate_is_refused_before_a_run_folder_exists(lr: str, ds: Path, tmp_path: Path) -> None:
    """lr=.inf 'trained' with NaN weights; lr=.nan gave a traceback and a run folder that blocked the rerun."""
    refused(cli("train", "supervised", "--data", ds, "--out", tmp_path / "run", "--set", f"train.lr={lr}"), "lr")
    no_output(tmp_path / "run")


def test_run_folder_without_trained_state_is_started_again(ds: Path, tmp_path: Path) -> None:
    """A run that stopped before its first checkpoint does not block the corrected command."""
    from labelwise.engine import RunDir
    from labelwise.errors import ConfigError

    rd = RunDir(tmp_path / "run")
    data = Dataset(ds)
    assert rd.prepare("supervised", {"lr": 1.0}, data) is False
    (rd.path / "logs").mkdir()
    assert rd.prepare("supervised", {"lr": 0.1}, data) is False  # restarted, with a warning
    assert rd.read_config()[1] == {"lr": 0.1} and not (rd.path / "logs").exists()
    (rd.path / "checkpoint.safetensors").write_bytes(b"state")
    with pytest.raises(ConfigError, match="different config"):
        rd.prepare("supervised", {"lr": 1.0}, data)


def test_predict_warns_about_an_unfinished_run(run: Path, ds: Path, tmp_path: Path) -> None:
    """predict from a killed, unfinished run gave exit code 0 without saying the weights are not final."""
    killed = tmp_path / "run"
    shutil.copytree(run, killed)
    meta = json.loads((killed / "meta.json").read_text(encoding="utf-8"))
    write_json_atomic(killed / "meta.json", {**meta, "status": "running"})
    out = cli("predict", "--run", killed, "--data", ds, "--out", tmp_path / "pred")
    assert out.code == 0, out.output
    said = " ".join(out.output.split())  # the log handler wraps long lines
    assert "training did not finish (meta.json status 'running')" in said and "not the final ones" in said
    finished = cli("predict", "--run", run, "--data", ds, "--out", tmp_path / "pred2")
    assert finished.code == 0 and "did not finish" not in finished.output


# ------------------------------------------------------------------------------ one line, not a traceback
def test_cases_csv_row_with_an_extra_cell(tmp_path: Path) -> None:
    src = _folder_source(tmp_path / "src")
    (src / "cases.csv").write_text("case,split\na1,train\na2,val,surplus\na3,test\n", encoding="utf-8")
    refused(
        cli("data", "import", "folder", src, "--out", tmp_path / "ds"), "cases.csv", "line 3: 3 cells, the header has 2"
    )
    no_output(tmp_path / "ds")


def test_report_with_a_non_numeric_quality_column(ds: Path, evaluation: Path, tmp_path: Path) -> None:
    qa = tmp_path / "quality.csv"
    qa.write_text("case,structure,source,predicted_dice\ncase000,organ,a,0.8\ncase001,organ,a,high\n")
    refused(cli("report", evaluation, "--data", ds, "--qa", qa, "--out", tmp_path / "r.html"), "line 3", "'high'")
    no_output(tmp_path / "r.html")


def test_predict_on_an_unusable_device(run: Path, ds: Path, tmp_path: Path) -> None:
    import torch

    device = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"
    refused(cli("predict", "--run", run, "--data", ds, "--out", tmp_path / "pred", "--device", device), "--device")
    refused(
        cli("predict", "--run", run, "--data", ds, "--out", tmp_path / "pred", "--device", "gpu0"), "not a torch device"
    )
    no_output(tmp_path / "pred")


def test_qa_with_a_run_that_is_not_a_sentinel(run: Path, ds: Path, tmp_path: Path) -> None:
    out = cli("qa", "--run", run, "--data", ds, "--raters", "--out", tmp_path / "qa")
    refused(out, "this run is a 'supervised' model, not a sentinel model")
    no_output(tmp_path / "qa")


def test_one_error_line_and_exit_code_from_the_real_entry_point(src: Path) -> None:
    """The console script (``labelwise.cli.main:run``), in its own process: one line on stderr, exit code 1."""
    before = checksums(src)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from labelwise.cli.main import run; run()",
            "data",
            "import",
            "folder",
            src,
            "--out",
            src,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "--out is the input" in lines[0], proc.stderr
    assert checksums(src) == before


# ------------------------------------------------------------------------------ processes and stale results
_SLOW_EVALUATION = r"""
import os, sys, time
import labelwise.evaluation.runner as ev

def slow(*args, **kwargs):
    open(os.path.join(sys.argv[3], str(os.getpid())), "w").close()
    time.sleep(300)

ev.evaluate_case = slow
ev.evaluate_folder(sys.argv[1], sys.argv[2], split=None, workers=2)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=["KILL", "TERM", "INT"])
def test_evaluate_workers_die_with_their_parent(sig: signal.Signals, ds: Path, pred: Path, tmp_path: Path) -> None:
    """Killing `evaluate --workers 2` orphaned both worker processes (~290 MB each)."""
    pids = tmp_path / "pids"
    pids.mkdir()
    parent = subprocess.Popen(
        [sys.executable, "-c", _SLOW_EVALUATION, str(pred), str(ds), str(pids)], stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 90
        while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.1)
        workers = [int(p.name) for p in pids.iterdir()]
        assert len(workers) == 2, parent.stderr.read().decode() if parent.poll() is not None else "no workers"
        parent.send_signal(sig)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [w for w in workers if _alive(w)], "worker processes outlived evaluate"
    finally:
        if parent.poll() is None:
            parent.kill()
        for w in [int(p.name) for p in pids.iterdir()]:
            if _alive(w):
                os.kill(w, signal.SIGKILL)


def test_interrupted_evaluate_marks_the_old_results_stale(
    ds: Path, pred: Path, evaluation: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interrupted evaluate into an existing --out left the old results with nothing saying the run failed."""
    import labelwise.evaluation as ev

    out = tmp_path / "eval"
    shutil.copytree(evaluation, out)
    before = checksums(out)

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ev, "evaluate_folder", interrupted)
    assert cli("evaluate", "--pred", pred, "--data", ds, "--out", out).code != 0
    assert (out / STALE_MARKER).is_file()
    assert {k: v for k, v in checksums(out).items() if STALE_MARKER not in k} == before
    assert not list(tmp_path.glob(".eval.*"))
    refused(cli("report", out, "--data", ds, "--out", tmp_path / "r.html"), STALE_MARKER)
    monkeypatch.undo()
    assert cli("evaluate", "--pred", pred, "--data", ds, "--out", out, "--split", "all", "--n-bootstrap", "0").code == 0
    assert not (out / STALE_MARKER).exists() and (out / "summary.json").is_file()


def test_evaluate_refuses_to_replace_a_folder_of_other_files(ds: Path, pred: Path, tmp_path: Path) -> None:
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep me")
    refused(cli("evaluate", "--pred", pred, "--data", ds, "--out", mine), "is not a labelwise evaluation")
    assert (mine / "thesis.tex").read_text() == "keep me"


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_created_files_honour_the_umask(umask: int, src: Path, tmp_path: Path) -> None:
    """Every atomically written file got mode 0600 (mkstemp), so a lab group could not read a shared dataset."""
    os.umask(umask)
    dest = tmp_path / "ds"
    assert cli("data", "import", "folder", src, "--out", dest).code == 0
    files = [p for p in dest.rglob("*") if p.is_file()]
    assert files and {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o666 & ~umask)}
    folders = [dest, *(p for p in dest.rglob("*") if p.is_dir())]
    assert {oct(p.stat().st_mode & 0o777) for p in folders} == {oct(0o777 & ~umask)}
