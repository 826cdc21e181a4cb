"""The numpy-only unpickler: data loads, code execution and other classes are refused."""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from labelwise.errors import DataError
from labelwise.io import load_pickle, loads_pickle


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


class _Plain:
    pass


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_payload_round_trips(protocol: int) -> None:
    data = {
        "case01": {
            "image": np.arange(6, dtype=np.uint8).reshape(2, 3),
            "masks": [np.eye(2, dtype=np.uint8), np.zeros((2, 2), np.float32)],
            "series_uid": "case01",
            "scalar": np.float64(2.5),
            "meta": (1, 2.0, None, True, b"raw"),
        },
        "ordered": OrderedDict(a=1),
    }
    out = loads_pickle(pickle.dumps(data, protocol=protocol))
    np.testing.assert_array_equal(out["case01"]["image"], data["case01"]["image"])
    assert out["case01"]["masks"][1].dtype == np.float32
    assert out["case01"]["scalar"] == 2.5 and out["case01"]["meta"][-1] == b"raw"
    assert out["ordered"] == {"a": 1}


def test_code_execution_refused(tmp_path: Path) -> None:
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps({"image": _Evil()}))
    with pytest.raises(DataError, match=r"evil\.pkl: refused to unpickle (posix|os|nt)\.system"):
        load_pickle(p)


def test_other_classes_refused() -> None:
    with pytest.raises(DataError, match=r"x\.pkl: refused to unpickle .*_Plain"):
        loads_pickle(pickle.dumps(_Plain()), "x.pkl")
    with pytest.raises(DataError, match=r"refused to unpickle builtins\.eval"):
        loads_pickle(pickle.dumps(eval), "y.pkl")


def test_truncated_and_missing(tmp_path: Path) -> None:
    blob = pickle.dumps({"a": np.zeros(100)})
    with pytest.raises(DataError, match=r"t\.pkl: truncated or corrupt pickle"):
        loads_pickle(blob[: len(blob) // 2], "t.pkl")
    with pytest.raises(DataError, match="truncated or corrupt pickle"):
        loads_pickle(b"\x80\x05garbage", "g.pkl")
    with pytest.raises(DataError, match=r"nope\.pkl: file not found"):
        load_pickle(tmp_path / "nope.pkl")
