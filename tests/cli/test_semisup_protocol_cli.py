"""The k-labelled-slice protocol through the CLI on a tiny 3D phantom (docs/semisupervised.md, "Through the CLI").

supervised (``cps_weight=0``) and ``cps`` runs trained on k labelled slices, ``labelwise predict``, training-free
``labelwise propagate`` from the same k slices, and ``labelwise evaluate --slices held-out:RUN`` on the held-out
labelled slices.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from labelwise.cli.main import app
from labelwise.data import DatasetWriter
from labelwise.data.phantoms import make_phantom

LABELLED = tuple(range(3, 13))


def _invoke(*args: str) -> str:
    r = CliRunner().invoke(app, list(args))
    assert r.exit_code == 0, r.output
    return r.output


def _dataset(root: Path) -> tuple[Path, Path]:
    p = make_phantom(0, spatial_dims=3, shape=(32, 32, 16), raters=0)
    truth = p.truth.copy()
    truth[..., [z for z in range(16) if z not in LABELLED]] = 0
    w = DatasetWriter(root, "phantom3d", 3, p.class_names, rater_ids=("r1",))
    w.add_case("vol", p.image, {"r1": truth}, p.spacing_mm, split="train", labelled_slices=LABELLED)
    w.finish()
    case = json.loads((root / "dataset.json").read_text(encoding="utf-8"))["cases"][0]
    return root / case["image"], root / case["labels"]["r1"]


def test_k_slice_protocol_through_the_cli(tmp_path: Path) -> None:
    data = tmp_path / "ds"
    image, labels = _dataset(data)
    smoke = ("--preset", "smoke", "--set", "train_slices=3", "--set", "train.progress=false")
    # the cps run also stacks CT windows (3 network channels from the 1-channel dataset): predict must accept it
    for name, weight, windows in (("sup", "0", "false"), ("cps", "0.1", "true")):
        run = tmp_path / name
        _invoke("train", "cps", "--data", str(data), "--out", str(run), *smoke, "--set", f"cps_weight={weight}",
                "--set", f"ct_windows={windows}")  # fmt: skip
        _invoke(
            "predict", "--run", str(run), "--data", str(data), "--split", "all", "--out", str(tmp_path / f"pred_{name}")
        )
    train = json.loads((tmp_path / "cps" / "plan.json").read_text(encoding="utf-8"))["train_slices"]["vol"]
    meta = json.loads((tmp_path / "cps" / "meta.json").read_text(encoding="utf-8"))
    assert meta["train_slices"] == {"vol": train} and len(train) == 3
    (tmp_path / "pred_prop").mkdir()
    slices = ",".join(map(str, train))
    _invoke("propagate", str(image), "--labels", str(labels), "--slices", slices, "--allow-empty",
            "--out", str(tmp_path / "pred_prop" / "vol.nii.gz"))  # fmt: skip
    held_out = [z for z in LABELLED if z not in train]
    dice = {}
    for name in ("sup", "cps", "prop"):
        out = tmp_path / f"eval_{name}"
        _invoke("evaluate", "--pred", str(tmp_path / f"pred_{name}"), "--data", str(data), "--out", str(out),
                "--split", "all", "--metrics", "dice,nsd", "--tolerance-mm", "2", "--n-bootstrap", "0",
                "--slices", f"held-out:{tmp_path / 'cps'}")  # fmt: skip
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        assert summary["n_scored"] == 1
        assert summary["slices"]["cases"] == {"vol": held_out}
        dice[name] = summary["metrics"]["dice"]["organ"]["r1"]["mean"]
        assert 0.0 <= dice[name] <= 1.0
        assert summary["metrics"]["nsd"]["organ"]["r1"]["n"] == 1
    assert dice["prop"] > 0.8  # propagating 3 true slices through a smooth phantom is nearly exact
    # explicit indices give the same held-out rows
    out = tmp_path / "eval_prop_explicit"
    explicit = ",".join(map(str, held_out))
    _invoke("evaluate", "--pred", str(tmp_path / "pred_prop"), "--data", str(data), "--out", str(out),
            "--split", "all", "--metrics", "dice", "--n-bootstrap", "0", "--slices", explicit)  # fmt: skip
    again = json.loads((out / "summary.json").read_text(encoding="utf-8"))["metrics"]["dice"]["organ"]["r1"]["mean"]
    assert np.isclose(again, dice["prop"])
    r = CliRunner().invoke(app, ["evaluate", "--pred", str(tmp_path / "pred_prop"), "--data", str(data), "--out",
                                 str(tmp_path / "bad"), "--split", "all", "--slices", "3,99"])  # fmt: skip
    assert r.exit_code == 1
