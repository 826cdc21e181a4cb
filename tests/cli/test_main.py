"""One CLI dialect and one error path: exit codes, deprecated spellings, ``--split``/``--classes``, entry points."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tests.cli.helpers import Outcome, labelwise
from tests.engine.tinydata import disc_dataset
from typer.testing import CliRunner

from labelwise.cli.common import REMOVED_IN, class_indices, setup_logging
from labelwise.data import Dataset, DatasetWriter
from labelwise.data.phantoms import make_phantom_dataset
from labelwise.errors import UsageError
from labelwise.io import Prediction, PredictionIndex, read_label, write_image, write_label, write_prediction

SMOKE = ["--preset", "smoke", "--set", "train.progress=false", "--set", "tta=false"]


def one_error(outcome: Outcome, code: int, *fragments: str) -> str:
    """Assert exit ``code`` with exactly one ``error:`` line (no traceback) holding every fragment; return it."""
    assert outcome.code == code, outcome.output
    assert "Traceback" not in outcome.output, outcome.output
    assert len(outcome.errors) == 1, outcome.output
    for fragment in fragments:
        assert fragment in outcome.errors[0], outcome.errors[0]
    return outcome.errors[0]


def warned(outcome: Outcome, old: str, new: str) -> None:
    """Assert the one-line deprecation warning for ``old`` -> ``new``."""
    line = f"warning: '{old}' is deprecated; use '{new}' (removed in {REMOVED_IN})"
    assert line in outcome.warnings, outcome.output


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "ph"
    make_phantom_dataset(root, n_cases=6, raters=2, seed=3)
    return root


@pytest.fixture(scope="module")
def train_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3D dataset with one case, in the train split only."""
    root = tmp_path_factory.mktemp("cli") / "ds"
    w = DatasetWriter(root, "u", 3, ("background", "liver", "kidney"), ("gt",))
    w.add_case("a", np.zeros((1, 6, 6, 4), np.float32), None, (1.0, 1.0, 1.0), split="train")
    w.finish()
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sup")
    ds = disc_dataset(root / "ds", n_train=3, n_val=1, n_test=2, size=16)
    res = labelwise("train", "supervised", "--data", ds.root, "--out", root / "run", *SMOKE)
    assert res.code == 0, res.output
    return ds.root, root / "run"


# ------------------------------------------------------------------------------------------------ entry points
@pytest.mark.parametrize("module", ["labelwise.cli", "labelwise.cli.main"])
def test_python_m_entry_points_answer(module: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, encoding="utf-8", timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout and "predict" in proc.stdout


def test_main_returns_the_exit_code_and_prints_one_line(train_only: Path) -> None:
    res = labelwise("data", "check", "--data", train_only.parent / "missing")
    one_error(res, 1, "missing")
    assert res.stdout == ""


# ------------------------------------------------------------------------------------------------ exit codes
def test_bad_option_value_exits_2(phantoms: Path, tmp_path: Path) -> None:
    for args in (["--method", "median"], ["--tie", "undecided"]):
        res = labelwise("fuse", "--data", phantoms, "--out", tmp_path / "x", *args)
        assert res.code == 2, res.output
        assert args[0] in res.stderr
    assert not (tmp_path / "x").exists()


def test_missing_dataset_folder_exits_1(tmp_path: Path) -> None:
    for args in (
        ["data", "check", "--data", tmp_path / "nope"],
        ["fuse", "--data", tmp_path / "nope", "--out", tmp_path / "x"],
        ["view", "--data", tmp_path / "nope"],
    ):
        one_error(labelwise(*args), 1, "nope")


def test_failed_case_exits_1(tmp_path: Path) -> None:
    root = tmp_path / "ph"
    ds = make_phantom_dataset(root, n_cases=4, raters=3, seed=2)
    bad = ds.manifest.cases[1]
    (root / bad.labels["tight"]).write_bytes(b"not a nifti file")
    res = labelwise("fuse", "--data", root, "--out", tmp_path / "out")
    one_error(res, 1, "1 case(s) failed")
    assert bad.id in res.stderr


def test_unknown_split_is_a_usage_error_listing_the_dataset_splits(train_only: Path, tmp_path: Path) -> None:
    res = labelwise(
        "evaluate", "--pred", tmp_path / "p", "--data", train_only, "--out", tmp_path / "e", "--split", "val"
    )
    one_error(res, 2, "--split 'val' is not a split of", "its splits: train, all")
    res = labelwise("evaluate", "--pred", tmp_path / "p", "--data", train_only, "--out", tmp_path / "e", "--split", "x")
    one_error(res, 2, "its splits: train, all")
    assert not (tmp_path / "e").exists()


def test_old_and_new_spelling_together_or_neither_is_a_usage_error(phantoms: Path, tmp_path: Path) -> None:
    res = labelwise("fuse", phantoms, "--data", phantoms, "--out", tmp_path / "x")
    one_error(res, 2, "give --data once")
    res = labelwise("fuse", "--out", tmp_path / "x")
    one_error(res, 2, "missing option --data", "labelwise fuse --data DATASET")
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------------ predict
def test_predict_option_the_method_does_not_take_is_one_usage_line(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = trained
    res = labelwise("predict", "--run", run, "--data", data, "--out", tmp_path / "p", "--samples", "4")
    one_error(res, 2, "method 'supervised' takes no prediction option 'samples'; it takes: tta")
    assert not (tmp_path / "p").exists()  # refused before anything is written


def test_predict_with_run_and_old_positional(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = trained
    res = labelwise("predict", "--run", run, "--data", data, "--out", tmp_path / "new", "--no-tta")
    assert res.code == 0 and not res.warnings, res.output
    res = labelwise("predict", run, "--data", data, "--out", tmp_path / "old")
    assert res.code == 0, res.output
    warned(res, "labelwise predict RUN", "labelwise predict --run RUN")
    assert len(res.warnings) == 1
    for name in ("new", "old"):
        assert PredictionIndex.load(tmp_path / name).cases == Dataset(data).split_ids("test")
    res = labelwise("predict", "--run", run, "--data", data, "--out", tmp_path / "x", "--split", "nope")
    one_error(res, 2, "its splits: train, val, test, all")


def test_predict_failed_case_exits_1(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = trained
    copy = tmp_path / "ds"
    shutil.copytree(data, copy)
    ds = Dataset(copy)
    bad = ds.split_ids("test")[0]
    (copy / ds.record(bad).image).write_bytes(b"not an image")
    res = labelwise("predict", "--run", run, "--data", copy, "--out", tmp_path / "p")
    one_error(res, 1, "1 case(s) failed", bad)
    assert PredictionIndex.load(tmp_path / "p").cases == ds.split_ids("test")[1:]


# ------------------------------------------------------------------------------------------------ old spellings
def test_old_dataset_positionals_warn_and_work(phantoms: Path, tmp_path: Path) -> None:
    res = labelwise("data", "check", phantoms)
    assert res.code == 0, res.output
    warned(res, "labelwise data check DATASET", "labelwise data check --data DATASET")
    res = labelwise("data", "stats", phantoms, "--json", tmp_path / "s.json")
    assert res.code == 0 and (tmp_path / "s.json").is_file(), res.output
    warned(res, "labelwise data stats DATASET", "labelwise data stats --data DATASET")
    warned(res, "labelwise data stats --json FILE", "labelwise data stats --out FILE")
    res = labelwise("fuse", phantoms, "--out", tmp_path / "fused")
    assert res.code == 0 and Dataset(tmp_path / "fused").rater_ids == ("fused",), res.output
    warned(res, "labelwise fuse DATASET", "labelwise fuse --data DATASET")
    res = labelwise("data", "split", phantoms, "--out", tmp_path / "f0", "--folds", "2", "--fold", "0")
    assert res.code == 0 and (tmp_path / "f0" / "dataset.json").is_file(), res.output
    warned(res, "labelwise data split DATASET", "labelwise data split --data DATASET")
    res = labelwise("view", phantoms, "--host", "0.0.0.0")
    one_error(res, 1, "--allow-remote")
    warned(res, "labelwise view DATASET", "labelwise view --data DATASET")


def test_old_import_and_export_positionals_warn_and_work(phantoms: Path, tmp_path: Path) -> None:
    ds = Dataset(phantoms)
    src = tmp_path / "model_out"
    src.mkdir()
    for rec in ds.manifest.cases:
        shutil.copy(phantoms / rec.labels[ds.rater_ids[0]], src / f"{rec.id}.nii.gz")
    copy = tmp_path / "ds"
    shutil.copytree(phantoms, copy)
    res = labelwise("data", "import-rater", copy, src, "--name", "model")
    assert res.code == 0 and "model" in Dataset(copy).rater_ids, res.output
    warned(res, "labelwise data import-rater DATASET SRC", "labelwise data import-rater SRC --data DATASET")
    res = labelwise("data", "import-rater", src, "--data", copy, "--name", "model2")
    assert res.code == 0 and not res.warnings and "model2" in Dataset(copy).rater_ids, res.output
    res = labelwise("data", "export", "nnunet", phantoms, tmp_path / "raw", "--labels", "rater:" + ds.rater_ids[0],
                    "--id", "7")  # fmt: skip
    assert res.code == 0 and list((tmp_path / "raw").iterdir()), res.output
    warned(res, "labelwise data export nnunet DATASET DEST", "labelwise data export nnunet --data DATASET --out DEST")
    folder = next((tmp_path / "raw").iterdir())
    res = labelwise("data", "import", "nnunet", folder, tmp_path / "back")
    assert res.code == 0 and len(Dataset(tmp_path / "back")) == len(ds), res.output
    warned(res, "labelwise data import FORMAT SRC DEST", "labelwise data import FORMAT SRC --out DEST")
    res = labelwise("export", "dicom-seg", tmp_path / "no_pred", "--data", phantoms, "--out", tmp_path / "seg")
    assert res.code != 0 and "Traceback" not in res.output
    warned(res, "labelwise export dicom-seg PRED", "labelwise export dicom-seg --pred PRED")


def test_old_run_options_warn(phantoms: Path, tmp_path: Path) -> None:
    res = labelwise("qa", "--model", tmp_path / "no_run", "--data", phantoms, "--raters", "--out", tmp_path / "qa")
    one_error(res, 1)
    warned(res, "labelwise qa --model RUN", "labelwise qa --run RUN")
    img = np.zeros((1, 8, 8, 4), np.float32)
    lab = np.zeros((8, 8, 4), np.int16)
    lab[2:5, 2:5, 1] = 1
    write_image(tmp_path / "img.nii.gz", img, (1.0, 1.0, 1.0))
    write_label(tmp_path / "lab.nii.gz", lab, (1.0, 1.0, 1.0))
    args = ["propagate", tmp_path / "img.nii.gz", "--labels", tmp_path / "lab.nii.gz", "--out", tmp_path / "o.nii.gz"]
    res = labelwise(*args, "--model", tmp_path / "no_run")
    one_error(res, 1)
    warned(
        res,
        "labelwise propagate VOLUME --labels LABELS --model RUN --out OUT",
        "labelwise propagate VOLUME --labels LABELS --run RUN --out OUT",
    )


def test_pseudo_label_old_positionals_and_samples_switch(tmp_path: Path) -> None:
    w = DatasetWriter(tmp_path / "ds", "u", 3, ("background", "organ"), ("gt",))
    w.add_case("a", np.zeros((1, 6, 6, 4), np.float32), None, (1.0, 1.0, 1.0), split="train")
    w.finish()
    lab = np.zeros((6, 6, 4), np.uint8)
    lab[1:4, 1:4] = 1
    for name in ("p1", "p2"):
        onehot = np.stack([lab == 0, lab == 1]).astype(np.float32)
        write_prediction(tmp_path / name, "a", Prediction(probs=onehot), (1.0, 1.0, 1.0), np.eye(4))
        PredictionIndex("cps", ("background", "organ"), (), ["a"]).save(tmp_path / name)
    common = ["--data", tmp_path / "ds", "--chunk", "2"]
    new = labelwise("pseudo-label", "--pred", tmp_path / "p1", "--pred", tmp_path / "p2", "--with-samples",
                    *common, "--out", tmp_path / "new")  # fmt: skip
    assert new.code == 0 and not new.warnings, new.output
    old = labelwise("pseudo-label", tmp_path / "p1", tmp_path / "p2", "--samples", *common, "--out", tmp_path / "old")
    assert old.code == 0, old.output
    warned(old, "labelwise pseudo-label PRED_DIR...", "labelwise pseudo-label --pred PRED_DIR [--pred ...]")
    warned(old, "labelwise pseudo-label --samples", "labelwise pseudo-label --with-samples")
    assert new.stdout.replace(str(tmp_path / "new"), "") == old.stdout.replace(str(tmp_path / "old"), "")


# ------------------------------------------------------------------------------------------------ --classes
def test_classes_take_names_or_values() -> None:
    names = ("background", "liver", "kidney")
    assert class_indices("kidney,liver", names) == (2, 1)
    assert class_indices("2, 1", names) == (2, 1)
    assert class_indices("5,1", None) == (5, 1)
    for bad, match in (("spleen", "unknown class 'spleen'"), ("", "comma-separated"), ("liver,", "comma-separated")):
        with pytest.raises(UsageError, match=match):
            class_indices(bad, names)
    with pytest.raises(UsageError, match="no class names known"):
        class_indices("liver", None)
    with pytest.raises(UsageError, match="ambiguous"):
        class_indices("2", ("background", "2", "x"))  # the class named "2" has value 1
    assert class_indices("1", ("background", "1")) == (1,)  # name and value agree


def test_propagate_classes_by_name_with_data(train_only: Path, tmp_path: Path) -> None:
    img = np.zeros((1, 8, 8, 4), np.float32)
    lab = np.zeros((8, 8, 4), np.int16)
    lab[1:3, 1:3, 1] = 1
    lab[5:7, 5:7, 1] = 2
    img[0][lab > 0] = 1.0
    write_image(tmp_path / "img.nii.gz", img, (1.0, 1.0, 1.0))
    write_label(tmp_path / "lab.nii.gz", lab, (1.0, 1.0, 1.0))
    args = ["propagate", tmp_path / "img.nii.gz", "--labels", tmp_path / "lab.nii.gz"]
    by_name = labelwise(*args, "--out", tmp_path / "n.nii.gz", "--classes", "kidney", "--data", train_only)
    by_value = labelwise(*args, "--out", tmp_path / "v.nii.gz", "--classes", "2")
    assert by_name.code == 0 and by_value.code == 0, by_name.output + by_value.output
    by_name_map = read_label(tmp_path / "n.nii.gz", 3).array
    np.testing.assert_array_equal(by_name_map, read_label(tmp_path / "v.nii.gz", 3).array)
    assert set(np.unique(by_name_map)) == {0, 2}
    one_error(labelwise(*args, "--out", tmp_path / "x.nii.gz", "--classes", "kidney"), 2, "--classes")


# ------------------------------------------------------------------------------------------------ choices
def test_enum_choices_match_the_registries() -> None:
    from labelwise.cli.data import ImportFormat
    from labelwise.cli.evaluate import EmptyConvention
    from labelwise.cli.fuse import FusionRule
    from labelwise.data.importers import importers
    from labelwise.labels.fusion import fusion_rules
    from labelwise.metrics.conventions import CONVENTIONS

    assert sorted(f.value for f in ImportFormat) == sorted(importers.available())
    assert sorted(r.value for r in FusionRule) == sorted(fusion_rules.available())
    assert sorted(e.value for e in EmptyConvention) == sorted(CONVENTIONS)


def test_library_logs_go_to_stderr() -> None:
    runner = CliRunner()
    with runner.isolation() as (stdout, stderr, _output):
        setup_logging(False)
        logging.getLogger("labelwise.test").warning("a warning for the user")
        sys.stdout.flush()
        sys.stderr.flush()
        out, err = stdout.getvalue().decode(), stderr.getvalue().decode()
    logging.basicConfig(force=True)
    assert "a warning for the user" in err and "a warning for the user" not in out
