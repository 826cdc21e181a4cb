"""Every importer on a tiny layout built in code, and on broken input (clear DataError naming the file)."""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from labelwise.data import Dataset
from labelwise.data.check import check_dataset
from labelwise.data.importers import ImportOptions, import_dataset, importers
from labelwise.data.importers.mni152 import label_from_probabilities
from labelwise.errors import ConfigError, DataError

RNG = np.random.default_rng(0)


def _nii(path: Path, data: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    full = [*spacing, *([1.0] * (3 - len(spacing)))]
    nib.save(nib.Nifti1Image(data, np.diag([*full, 1.0])), str(path))
    return path


def _png(path: Path, data: np.ndarray, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data).save(path, format=fmt)
    return path


def _imported_ok(dest: Path) -> Dataset:
    report = check_dataset(dest)
    assert report.ok, report.problems
    return Dataset(dest)


def test_registry_lists_every_layout() -> None:
    assert importers.available() == [
        "folder",
        "lidc-probunet",
        "medical-matting",
        "mni152",
        "msd",
        "nifti-partial",
        "nnunet",
        "ph2",
        "qubiq",
        "riga",
    ]
    with pytest.raises(ConfigError, match="unknown importer 'nope'"):
        import_dataset("nope", ".", "x")


# ----------------------------------------------------------------------------------------- pickles


def _mm_cases(n: int, raters: int = 3) -> dict:
    out = {}
    for i in range(n):
        key = f"case{i + 1:02d}"
        masks = [(RNG.random((8, 8)) > 0.5).astype(np.uint8) for _ in range(raters)]
        out[key] = {
            "series_uid": key,
            "image": RNG.integers(0, 250, (8, 8), dtype=np.uint8),
            "masks": masks,
            "alpha": np.zeros((8, 8), np.uint8),
        }
    return out


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return path


def test_medical_matting(tmp_path: Path) -> None:
    data = _mm_cases(20)
    src = _zip(tmp_path / "brain_growth_alpha.zip", {"brain_growth_alpha.pkl": pickle.dumps(data)})
    m = import_dataset("medical-matting", src, tmp_path / "ds")
    assert (m.name, len(m.cases), m.rater_ids) == ("brain_growth", 20, ("rater1", "rater2", "rater3"))
    assert [sum(c.split == s for c in m.cases) for s in ("train", "val", "test")] == [13, 3, 4]
    ds = _imported_ok(tmp_path / "ds")
    case = ds["case07"]
    np.testing.assert_array_equal(case.image[0], data["case07"]["image"])
    np.testing.assert_array_equal(case.raters, np.stack(data["case07"]["masks"]))
    # the same seed gives the same split; another seed another one
    again = import_dataset("medical-matting", src, tmp_path / "ds2")
    other = import_dataset("medical-matting", src, tmp_path / "ds3", ImportOptions(seed=1))
    assert [c.split for c in again.cases] == [c.split for c in m.cases] != [c.split for c in other.cases]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_medical_matting_refuses_malicious_pickle(tmp_path: Path) -> None:
    data = _mm_cases(2)
    data["case02"]["image"] = _Evil()
    src = _zip(tmp_path / "evil.zip", {"evil.pkl": pickle.dumps(data)})
    with pytest.raises(DataError, match=r"evil\.zip:evil\.pkl: refused to unpickle .*system"):
        import_dataset("medical-matting", src, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_medical_matting_broken(tmp_path: Path) -> None:
    two = _zip(tmp_path / "two.zip", {"a.pkl": b"", "b.pkl": b""})
    with pytest.raises(DataError, match=r"two\.zip: zip holds 2 pickles"):
        import_dataset("medical-matting", two, tmp_path / "a")
    (tmp_path / "trunc.zip").write_bytes(two.read_bytes()[:30])
    with pytest.raises(DataError, match=r"trunc\.zip: cannot read zip"):
        import_dataset("medical-matting", tmp_path / "trunc.zip", tmp_path / "b")
    data = _mm_cases(3)
    data["case02"]["masks"][1] = np.zeros((7, 8), np.uint8)
    bad = _zip(tmp_path / "bad.zip", {"bad.pkl": pickle.dumps(data)})
    with pytest.raises(DataError, match=r"bad\.zip\['case02'\]: mask 1 has shape \(7, 8\)"):
        import_dataset("medical-matting", bad, tmp_path / "c")
    data = _mm_cases(3)
    data["case03"]["masks"][0] = np.full((8, 8), 2, np.uint8)
    bad3 = _zip(tmp_path / "bad3.zip", {"bad3.pkl": pickle.dumps(data)})
    with pytest.raises(DataError, match=r"case03'\]\['masks'\]\[0\]: binary mask has values \[2\]"):
        import_dataset("medical-matting", bad3, tmp_path / "d")
    with pytest.raises(DataError, match=r"x\.txt: expected a \.zip"):
        (tmp_path / "x.txt").write_text("x")
        import_dataset("medical-matting", tmp_path / "x.txt", tmp_path / "e")
    for d in "abcde":
        assert not (tmp_path / d).exists()


def test_lidc_probunet_groups_series(tmp_path: Path) -> None:
    src = tmp_path / "lidc"
    src.mkdir()
    for part in range(2):
        chunk = {}
        for s in range(10):
            for k in range(3):
                name = f"LIDC-IDRI-{part}{s:03d}_slice{k}.png"
                masks = [(RNG.random((6, 6)) > 0.7).astype(np.float32) for _ in range(4)]
                chunk[name] = {
                    "image": RNG.random((6, 6)).astype(np.float32),
                    "masks": masks,
                    "series_uid": f"1.2.{part}.{s}",
                }
        (src / f"data_lidc_{part}.pickle").write_bytes(pickle.dumps(chunk, protocol=4))
    m = import_dataset("lidc-probunet", src, tmp_path / "ds")
    assert len(m.cases) == 60 and len(m.rater_ids) == 4 and m.class_names == ("background", "lesion")
    by_series: dict[str, set] = {}
    for c in m.cases:
        series = c.id.split("_slice")[0]
        by_series.setdefault(series, set()).add(c.split)
    assert all(len(v) == 1 for v in by_series.values())  # a scan never straddles two splits
    assert sorted(c.split for c in m.cases).count("train") == 14 * 3  # 70 % of 20 series
    case = Dataset(tmp_path / "ds")[m.cases[0].id]
    assert case.image.dtype == np.float32 and case.raters.shape == (4, 6, 6)
    _imported_ok(tmp_path / "ds")


def test_lidc_probunet_broken(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no \.pickle files"):
        import_dataset("lidc-probunet", tmp_path / "empty", tmp_path / "a")
    lst = tmp_path / "list.pickle"
    lst.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(DataError, match=r"list\.pickle: pickle holds a list"):
        import_dataset("lidc-probunet", lst, tmp_path / "b")
    bad = tmp_path / "bad.pickle"
    bad.write_bytes(pickle.dumps({"s1": {"image": np.zeros((2, 3, 4)), "masks": []}}))
    with pytest.raises(DataError, match="no entry has any mask"):
        import_dataset("lidc-probunet", bad, tmp_path / "c")


# ----------------------------------------------------------------------------------------- QUBIQ


def _qubiq(root: Path, cases: int = 5, raters: int = 3, tasks: int = 1) -> Path:
    for i in range(1, cases + 1):
        d = root / f"case{i:02d}"
        _nii(d / "image.nii.gz", RNG.random((10, 12)).astype(np.float32), (0.5, 0.5))
        for t in range(1, tasks + 1):
            for j in range(1, raters + 1):
                _nii(d / f"task{t:02d}_seg{j:02d}.nii.gz", (RNG.random((10, 12)) > 0.5).astype(np.uint8), (0.5, 0.5))
    return root


def test_qubiq(tmp_path: Path) -> None:
    src = _qubiq(tmp_path / "brain-growth", cases=39, raters=7)
    m = import_dataset("qubiq", src, tmp_path / "ds")
    assert m.name == "qubiq-brain-growth-task01" and len(m.rater_ids) == 7 and m.spatial_dims == 2
    assert [sum(c.split == s for c in m.cases) for s in ("train", "val", "test")] == [25, 6, 8]
    case = _imported_ok(tmp_path / "ds")["case03"]
    assert case.spacing_mm == (0.5, 0.5)
    expected = np.asarray(nib.load(str(src / "case03" / "task01_seg05.nii.gz")).dataobj)
    np.testing.assert_array_equal(case.raters[4], expected)


def test_qubiq_tasks_and_missing_rater(tmp_path: Path) -> None:
    src = _qubiq(tmp_path / "prostate", cases=3, raters=2, tasks=2)
    with pytest.raises(ConfigError, match=r"holds tasks \['task01', 'task02'\]; choose one with --task"):
        import_dataset("qubiq", src, tmp_path / "a")
    m = import_dataset("qubiq", src, tmp_path / "b", ImportOptions(task="task02"))
    assert m.name == "qubiq-prostate-task02"
    (src / "case02" / "task01_seg02.nii.gz").unlink()
    with pytest.raises(DataError, match=r"case02/task01_seg02\.nii\.gz: missing rater file"):
        import_dataset("qubiq", src, tmp_path / "c", ImportOptions(task="task01"))
    assert not (tmp_path / "c").exists()


def test_qubiq_shape_mismatch_and_corrupt(tmp_path: Path) -> None:
    src = _qubiq(tmp_path / "kidney", cases=2, raters=2)
    _nii(src / "case02" / "task01_seg01.nii.gz", np.zeros((10, 11), np.uint8))
    with pytest.raises(DataError, match=r"case02/task01_seg01\.nii\.gz: shape \(10, 11\) differs"):
        import_dataset("qubiq", src, tmp_path / "a")
    (src / "case02" / "task01_seg01.nii.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match=r"case02/task01_seg01\.nii\.gz: cannot read NIfTI"):
        import_dataset("qubiq", src, tmp_path / "b")


# ----------------------------------------------------------------------------------------- RIGA


def _riga(root: Path, subsets=("BinRushed", "MESSIDOR"), n: int = 4, raters: int = 6) -> Path:
    for sub in subsets:
        for i in range(n):
            _png(root / sub / "images" / f"image{i}.png", RNG.integers(0, 255, (9, 10, 3), dtype=np.uint8))
            for r in range(1, raters + 1):
                mask = np.zeros((9, 10), np.uint8)
                mask[2:7, 2:8] = 128
                mask[3:5, 3 + r % 2 : 6] = 255
                _png(root / sub / f"Rater{r}" / f"image{i}.png", mask)
    return root


def test_riga(tmp_path: Path) -> None:
    src = _riga(tmp_path / "RIGA", subsets=("BinRushed", "Magrabia", "MESSIDOR"), n=10)
    m = import_dataset("riga", src, tmp_path / "ds")
    assert len(m.cases) == 30 and m.rater_ids == tuple(f"rater{r}" for r in range(1, 7))
    assert m.class_names == ("background", "disc", "cup")
    split = {c.id: c.split for c in m.cases}
    assert all(split[f"MESSIDOR_image{i}"] == "test" for i in range(10))
    assert [sum(s == k for s in split.values()) for k in ("train", "val", "test")] == [18, 2, 10]
    case = _imported_ok(tmp_path / "ds")["Magrabia_image3"]
    assert case.image.shape == (3, 9, 10)
    assert sorted(np.unique(case.raters).tolist()) == [0, 1, 2]
    assert int((case.raters[0] == 2).sum()) == 2 * 2  # rater 1: rows 3..4, cols 4..5


def test_riga_broken(tmp_path: Path) -> None:
    src = _riga(tmp_path / "a", subsets=("BinRushed",), n=2)
    (src / "BinRushed" / "Rater4" / "image1.png").unlink()
    with pytest.raises(DataError, match=r"Rater4/image1\.\*: missing mask of rater rater4 for image image1\.png"):
        import_dataset("riga", src, tmp_path / "ds")
    src = _riga(tmp_path / "b", subsets=("BinRushed",), n=2)
    _png(src / "BinRushed" / "Rater2" / "image0.png", np.full((9, 10), 77, np.uint8))
    with pytest.raises(DataError, match=r"Rater2/image0\.png: mask values \[77\]"):
        import_dataset("riga", src, tmp_path / "ds")
    with pytest.raises(DataError, match="no folder with an 'images' folder"):
        import_dataset("riga", tmp_path / "b" / "BinRushed" / "Rater1", tmp_path / "ds")


# ----------------------------------------------------------------------------------------- PH2


def _ph2(root: Path, per_class: int = 5) -> Path:
    rows = ["Name\tClinical Diagnosis\tAsymmetry"]
    k = 0
    for diag in (0, 1, 2):
        for _ in range(per_class):
            k += 1
            name = f"IMD{k:03d}"
            rows.append(f"{name}\t{diag}\t0")
            base = root / "PH2 Dataset images" / name
            _png(base / f"{name}_Dermoscopic_Image" / f"{name}.bmp", RNG.integers(0, 255, (6, 7, 3), dtype=np.uint8))
            mask = np.zeros((6, 7), bool)
            mask[1 : 2 + diag, 2:5] = True
            _png(base / f"{name}_lesion" / f"{name}_lesion.bmp", mask, fmt="BMP")
    rows += ["IMD999\t1\t0", "", "Legends", "A  - A\t\t"]  # a row without images and legend lines
    (root / "PH2_dataset.txt").write_text("\r\n".join(rows))
    return root


def test_ph2(tmp_path: Path) -> None:
    src = _ph2(tmp_path / "ph2")
    m = import_dataset("ph2", src, tmp_path / "ds")
    assert len(m.cases) == 15 and m.image_label_names == ("diagnosis", "lesion")
    for diag in (0, 1, 2):
        splits = [c.split for c in m.cases if c.image_labels["diagnosis"] == diag]
        assert sorted(splits) == ["test", "train", "train", "train", "val"]  # 60/20/20 within each class
    case = _imported_ok(tmp_path / "ds")["IMD011"]
    assert case.image_labels == {"diagnosis": 2, "lesion": 1}
    assert int(case.raters[0].sum()) == 3 * 3


def test_ph2_broken(tmp_path: Path) -> None:
    src = _ph2(tmp_path / "a", per_class=1)
    (src / "PH2 Dataset images" / "IMD002" / "IMD002_lesion" / "IMD002_lesion.bmp").unlink()
    with pytest.raises(DataError, match=r"IMD002_lesion\.bmp: lesion mask of IMD002 not found"):
        import_dataset("ph2", src, tmp_path / "ds")
    src = _ph2(tmp_path / "b", per_class=1)
    (src / "PH2_dataset.txt").write_text("Name\tClinical Diagnosis\nIMD001\t0\n")
    with pytest.raises(DataError, match=r"IMD002\.bmp: IMD002 has no row in PH2_dataset\.txt"):
        import_dataset("ph2", src, tmp_path / "ds")
    (src / "PH2_dataset.txt").write_text("Name\tClinical Diagnosis\nIMD001\t7\n")
    with pytest.raises(DataError, match=r"PH2_dataset\.txt: IMD001: clinical diagnosis 7"):
        import_dataset("ph2", src, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


# ----------------------------------------------------------------------------------------- partial NIfTI


def _partial(root: Path, with_spec: bool) -> tuple[Path, np.ndarray]:
    vol = RNG.integers(-1000, 1000, (5, 4, 12)).astype(np.int16)
    seg = RNG.integers(0, 4, (5, 4, 3)).astype(np.uint8)
    if with_spec:
        _nii(root / "ct.nii.gz", vol, (2.0, 2.0, 3.0))
        _nii(root / "seg.nii.gz", seg, (2.0, 2.0, 3.0))
        spec = {"image": "ct.nii.gz", "raters": {"a": "seg.nii.gz"}, "slice_start": 7}
        (root / "partial.json").write_text(json.dumps(spec))
        (root / "classes.json").write_text(json.dumps({"1": "liver", "3": "spleen"}))
    else:  # TotalSegmentator names, offset found from the cropped reference
        _nii(root / "example_ct.nii.gz", vol, (2.0, 2.0, 3.0))
        _nii(root / "example_ct_sm.nii.gz", vol[..., 7:10], (2.0, 2.0, 3.0))
        _nii(root / "example_seg.nii.gz", seg, (2.0, 2.0, 3.0))
        _nii(root / "example_seg_fast.nii.gz", seg, (2.0, 2.0, 3.0))
        (root / "class_map.json").write_text(json.dumps({"total": {"1": "liver", "3": "spleen"}, "mr": {"1": "x"}}))
    return root, seg


@pytest.mark.parametrize("with_spec", [False, True])
def test_nifti_partial(tmp_path: Path, with_spec: bool) -> None:
    src, seg = _partial(tmp_path / "ts", with_spec)
    opts = ImportOptions(class_names=("background", "liver", "class_2", "spleen")) if with_spec else ImportOptions()
    m = import_dataset("nifti-partial", src, tmp_path / "ds", opts)
    assert m.class_names == ("background", "liver", "class_2", "spleen")
    rec = m.cases[0]
    assert rec.labelled_slices == (7, 8, 9) and rec.split == "train"
    case = _imported_ok(tmp_path / "ds")[rec.id]
    assert case.raters.shape[1:] == (5, 4, 12) and case.spacing_mm == (2.0, 2.0, 3.0)
    np.testing.assert_array_equal(case.raters[0][..., 7:10], seg)
    assert not case.raters[0][..., :7].any() and not case.raters[0][..., 10:].any()


def test_nifti_partial_broken(tmp_path: Path) -> None:
    src, _ = _partial(tmp_path / "ts", with_spec=False)
    with pytest.raises(DataError, match=r"class_map\.json: class map has no key 'nope'"):
        import_dataset("nifti-partial", src, tmp_path / "a", ImportOptions(task="nope"))
    with pytest.raises(DataError, match=r"example_seg\.nii\.gz: label values 0\.\.3 outside the 2 classes"):
        import_dataset("nifti-partial", src, tmp_path / "b", ImportOptions(task="mr"))
    _nii(src / "example_ct_sm.nii.gz", np.zeros((5, 4, 3), np.int16) + 5000)
    with pytest.raises(DataError, match=r"example_ct_sm\.nii\.gz: reference image does not match"):
        import_dataset("nifti-partial", src, tmp_path / "c")
    _nii(src / "example_ct.nii.gz", np.zeros((5, 4, 12, 2), np.int16))  # 4D where 3D is expected
    with pytest.raises(DataError, match=r"example_ct\.nii\.gz: .*2 channels of 3D; expected 1 channel"):
        import_dataset("nifti-partial", src, tmp_path / "d")
    for d in "abcd":
        assert not (tmp_path / d).exists()


# ----------------------------------------------------------------------------------------- MNI152


def test_label_from_probabilities_by_hand() -> None:
    gm = np.array([0.6, 0.2, 0.5, 0.3, 0.0])
    wm = np.array([0.3, 0.7, 0.5, 0.3, 0.0])
    # bg = 0.1, 0.1, 0.0, 0.4, 1.0 -> gm wins 0.6; wm 0.7; tie gm/wm at 0.5 -> gm; max 0.4 < 0.5 -> bg; bg
    assert label_from_probabilities(gm, wm).tolist() == [1, 2, 1, 0, 0]


def test_mni152(tmp_path: Path) -> None:
    src = tmp_path / "mni"
    gm = np.array([[[0, 128, 127, 200]]], np.uint8)
    wm = np.array([[[0, 127, 0, 55]]], np.uint8)
    _nii(src / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz", np.array([[[1, 2, 3, 4]]], np.uint8))
    _nii(src / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz", gm)
    _nii(src / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz", wm)
    m = import_dataset("mni152", src, tmp_path / "ds")
    assert m.class_names == ("background", "gray_matter", "white_matter") and m.rater_ids == ("p50",)
    case = _imported_ok(tmp_path / "ds")["mni152"]
    assert case.raters[0].ravel().tolist() == [0, 1, 0, 1]  # 128/255 >= 0.5 > 127/255
    soft = np.asarray(nib.load(str(tmp_path / "ds" / "soft" / "mni152_gm.nii.gz")).dataobj)
    np.testing.assert_allclose(soft.ravel(), gm.ravel() / 255.0, rtol=1e-6)
    (src / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz").unlink()
    with pytest.raises(DataError, match=r"mni_icbm152_wm_tal_nlin_sym_09a_converted\.nii\.gz: file not found"):
        import_dataset("mni152", src, tmp_path / "ds2")


# ----------------------------------------------------------------------------------------- generic folder


def _folder(root: Path) -> Path:
    for case in ("pat_1", "pat_1_b", "pat2"):  # "pat_1" is a prefix of "pat_1_b": longest match wins
        _png(root / "images" / f"{case}.png", RNG.integers(0, 255, (6, 8), dtype=np.uint8))
    m = np.zeros((6, 8), np.uint8)
    m[1:3, 1:4] = 255
    _png(root / "labels" / "pat_1_alice.png", m)  # 0/255 mask
    _png(root / "labels" / "pat_1_b_alice.png", (m > 0).astype(np.uint8))
    _png(root / "labels" / "pat_1_b_bob.png", np.zeros((6, 8), np.uint8))
    (root / "cases.csv").write_text("case,split,lesion\npat_1,train,1\npat_1_b,val,1\npat2,test,\n")
    return root


def test_folder(tmp_path: Path) -> None:
    src = _folder(tmp_path / "mine")
    m = import_dataset("folder", src, tmp_path / "ds")
    assert m.rater_ids == ("alice", "bob") and m.class_names == ("background", "foreground")
    assert m.image_label_names == ("lesion",)
    recs = {c.id: c for c in m.cases}
    assert set(recs["pat_1_b"].labels) == {"alice", "bob"} and set(recs["pat_1"].labels) == {"alice"}
    assert recs["pat2"].labels == {} and recs["pat2"].image_labels == {} and recs["pat2"].split == "test"
    ds = _imported_ok(tmp_path / "ds")
    assert int(ds["pat_1"].raters[0].max()) == 1 and int(ds["pat_1"].raters[0].sum()) == 6
    assert ds["pat2"].num_raters == 0


def test_folder_classes_txt_and_seeded_split(tmp_path: Path) -> None:
    src = tmp_path / "mc"
    for i in range(10):
        _nii(src / "images" / f"c{i}.nii.gz", RNG.random((4, 4, 3)).astype(np.float32), (1.0, 1.0, 2.5))
        _nii(src / "labels" / f"c{i}_r1.nii.gz", RNG.integers(0, 3, (4, 4, 3)).astype(np.uint8), (1.0, 1.0, 2.5))
    (src / "classes.txt").write_text("background\nliver\ntumour\n")
    m = import_dataset("folder", src, tmp_path / "ds")
    assert m.spatial_dims == 3 and m.class_names == ("background", "liver", "tumour")
    assert sorted(c.split for c in m.cases) == ["test"] + ["train"] * 7 + ["val"] * 2  # 7 / 1.5 / 1.5 -> 7 / 2 / 1
    assert Dataset(tmp_path / "ds")["c3"].spacing_mm == (1.0, 1.0, 2.5)
    _imported_ok(tmp_path / "ds")


def test_folder_lists_all_problems(tmp_path: Path) -> None:
    src = _folder(tmp_path / "bad")
    (src / "classes.txt").write_text("background\nlesion\n")
    _png(src / "labels" / "pat2_alice.png", np.full((6, 8), 3, np.uint8))  # value outside the 2 classes
    _png(src / "labels" / "ghost_alice.png", np.zeros((6, 8), np.uint8))  # no image ghost
    _png(src / "labels" / "pat_1_bob.png", np.zeros((5, 8), np.uint8))  # wrong shape
    (src / "images" / "notes.txt").write_text("hello")  # wrong extension
    (src / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError) as info:
        import_dataset("folder", src, tmp_path / "ds")
    msg = str(info.value)
    assert "5 problem(s)" in msg
    for needle in (
        "pat2_alice.png: label values [3] outside the 2 classes",
        "ghost_alice.png: label file matches no image",
        "pat_1_bob.png: label shape (5, 8) differs from image shape (6, 8)",
        "notes.txt: unsupported file in images/",
        "broken.png: cannot read image",
    ):
        assert needle in msg
    assert not (tmp_path / "ds").exists()


def test_folder_bad_csv(tmp_path: Path) -> None:
    src = _folder(tmp_path / "csv")
    (src / "cases.csv").write_text("case,split,grade\npat_1,training,1\nnobody,train,0\npat2,test,high\n")
    with pytest.raises(DataError) as info:
        import_dataset("folder", src, tmp_path / "ds")
    msg = str(info.value)
    assert "line 2: split 'training'" in msg and "line 3: case 'nobody' has no image" in msg
    assert "line 4: grade='high' is not an integer" in msg


def test_existing_dataset_needs_overwrite(tmp_path: Path) -> None:
    src = _folder(tmp_path / "mine")
    import_dataset("folder", src, tmp_path / "ds")
    with pytest.raises(DataError, match="a dataset already exists here"):
        import_dataset("folder", src, tmp_path / "ds")
    import_dataset("folder", src, tmp_path / "ds", ImportOptions(overwrite=True))
    _imported_ok(tmp_path / "ds")


def test_failed_import_into_existing_folder_leaves_no_manifest(tmp_path: Path) -> None:
    dest = tmp_path / "keep"
    dest.mkdir()
    (dest / "mine.txt").write_text("user file")
    src = _folder(tmp_path / "bad")
    _png(src / "labels" / "pat2_alice.png", np.full((6, 8), 9, np.uint8))
    (src / "classes.txt").write_text("background\nlesion\n")
    with pytest.raises(DataError):
        import_dataset("folder", src, dest)
    assert (dest / "mine.txt").read_text(encoding="utf-8") == "user file" and not (dest / "dataset.json").exists()
