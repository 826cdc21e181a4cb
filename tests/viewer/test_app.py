from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
from PIL import Image
from starlette.testclient import TestClient

from labelwise.data import DatasetWriter
from labelwise.viewer import MAX_BODY_BYTES, ReviewStore, ViewerState, create_app
from labelwise.viewer.app import TOKEN_HEADER

BASE_URL = "http://127.0.0.1:8765"  # the default bind, so the Host header is the one a browser would send


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    w = DatasetWriter(tmp_path / "ds", "viewer-test", 3, ["background", "organ"], ["r1", "r2"])
    vol = np.zeros((12, 10, 6), dtype=np.int16)
    vol[3:8, 2:7, 1:5] = 1
    w.add_case("vol1", rng.random((1, 12, 10, 6)).astype("f4"), {"r1": vol, "r2": vol}, spacing_mm=(1.0, 1.0, 2.5))
    w.add_case("vol2", rng.random((1, 12, 10, 6)).astype("f4"), {"r1": vol}, spacing_mm=(1.0, 1.0, 2.5), split="test")
    w.finish()
    return tmp_path / "ds"


@pytest.fixture()
def client(dataset: Path) -> Iterator[TestClient]:
    app = create_app(ViewerState(dataset))
    with TestClient(app, base_url=BASE_URL, headers={TOKEN_HEADER: app.state.token}) as client:
        yield client


def _png(client: TestClient, url: str) -> np.ndarray:
    res = client.get(url)
    assert res.status_code == 200, res.text
    assert res.headers["content-type"] == "image/png"
    return np.array(Image.open(io.BytesIO(res.content)))


def test_lists_cases_and_serves_slices(client: TestClient) -> None:
    cases = client.get("/api/cases").json()
    assert [c["id"] for c in cases] == ["vol1", "vol2"]
    meta = client.get("/api/cases/vol1").json()
    assert meta["shape"] == [12, 10, 6] and meta["slices"] == 6
    assert meta["layers"][:3] == ["image", "rater/r1", "rater/r2"]
    image = _png(client, "/api/cases/vol1/slice/2.png?layer=image")
    assert image.shape == (12, 10)
    rater = _png(client, "/api/cases/vol1/slice/2.png?layer=rater/r1")
    assert rater.sum() == 25 and rater[3, 2] == 1  # the 5x5 square of class 1
    assert client.get("/").status_code == 200
    assert "labelwise" in client.get("/static/app.js").text


@pytest.mark.parametrize(
    "url",
    [
        "/api/cases/nope",
        "/api/cases/vol1/slice/99.png",
        "/api/cases/vol1/slice/0.png?layer=../../dataset.json",
        "/api/cases/vol1/slice/0.png?layer=rater/../../x",
        "/api/cases/..%2F..%2Fdataset.json",
        "/static/../dataset.json",
        "/static/%2e%2e/%2e%2e/data/dataset.py",
    ],
)
def test_refuses_unknown_and_traversal(client: TestClient, url: str) -> None:
    res = client.get(url)
    assert res.status_code == 404
    assert b"labelwise-dataset" not in res.content


def test_review_is_saved_and_validated(client: TestClient, dataset: Path) -> None:
    res = client.post("/api/cases/vol2/review", json={"decision": "reject", "comment": "leak", "user": "ana"})
    assert res.status_code == 200
    assert client.post("/api/cases/vol2/review", json={"decision": "maybe"}).status_code == 422
    assert ReviewStore(dataset).reviews()["vol2"][0]["comment"] == "leak"
    assert [c["review"] for c in client.get("/api/cases").json()] == [None, "reject"]


def _slice_payload(z: int, value: int, user: str) -> dict[str, object]:
    mask = np.zeros((12, 10), dtype=np.uint8)
    mask[z : z + 2, :] = value
    return {
        "slice": z,
        "width": 10,
        "height": 12,
        "data": base64.b64encode(mask.tobytes()).decode(),
        "base": "rater/r1",
        "user": user,
    }


def test_correction_creates_versions_and_keeps_originals(client: TestClient, dataset: Path) -> None:
    before = (dataset / "labels" / "vol1_r1.nii.gz").read_bytes()
    res = client.post("/api/cases/vol1/correction", json=_slice_payload(1, 1, "ana"))
    assert res.status_code == 200 and res.json()["version"] == 1
    saved = _png(client, "/api/cases/vol1/slice/1.png?layer=correction")
    assert saved[1:3].all() and saved[0].sum() == 0
    untouched = _png(client, "/api/cases/vol1/slice/2.png?layer=correction")
    assert untouched.sum() == 25  # other slices come from the base rater
    assert (dataset / "labels" / "vol1_r1.nii.gz").read_bytes() == before
    bad = _slice_payload(1, 7, "ana")  # class 7 does not exist
    assert client.post("/api/cases/vol1/correction", json=bad).status_code == 422
    short = {**_slice_payload(1, 1, "ana"), "width": 3}
    assert client.post("/api/cases/vol1/correction", json=short).status_code == 422


def test_concurrent_saves_lose_no_edit(client: TestClient, dataset: Path) -> None:
    errors: list[int] = []

    def save(z: int) -> None:
        res = client.post("/api/cases/vol1/correction", json=_slice_payload(z, 1, f"tab{z}"))
        if res.status_code != 200:
            errors.append(res.status_code)

    threads = [threading.Thread(target=save, args=(z,)) for z in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    store = ReviewStore(dataset)
    assert [v.version for v in store.versions("vol1")] == [1, 2, 3, 4, 5, 6]
    final = store.latest("vol1", 3)
    assert final is not None
    for z in range(6):
        assert final[z : z + 2, :, z].all(), f"edit of slice {z} was lost"


def test_body_limit(client: TestClient) -> None:
    res = client.post(
        "/api/cases/vol1/review", content=b"x" * (MAX_BODY_BYTES + 1), headers={"content-type": "application/json"}
    )
    assert res.status_code == 413


def test_cli_refuses_remote_bind_without_flag(dataset: Path) -> None:
    from tests.cli.helpers import labelwise

    res = labelwise("view", "--data", str(dataset), "--host", "0.0.0.0")
    assert res.code == 1
    assert "--allow-remote" in res.output


def test_propagate_fills_neighbours_from_saved_corrections(client: TestClient, dataset: Path) -> None:
    assert client.post("/api/cases/vol1/propagate", json={"slice": 2}).status_code == 422  # nothing saved yet
    mask = np.zeros((12, 10), dtype=np.uint8)
    mask[2:9, 1:8] = 1
    payload = {
        "slice": 2,
        "width": 10,
        "height": 12,
        "data": base64.b64encode(mask.tobytes()).decode(),
        "base": "empty",
    }
    assert client.post("/api/cases/vol1/correction", json=payload).status_code == 200
    res = client.post("/api/cases/vol1/propagate", json={"slice": 2, "extent": 2, "user": "ana"})
    assert res.status_code == 200, res.text
    assert res.json()["action"] == "propagate" and res.json()["slices"] == [0, 1, 3, 4]
    final = ReviewStore(dataset).latest("vol1", 3)
    assert final is not None
    assert (final[..., 2] == mask).all()  # the painted slice is kept exactly
    assert final[..., 1].sum() > 0 and final[..., 3].sum() > 0  # neighbours received labels
    assert final[..., 5].sum() == 0  # outside the extent: unchanged (empty base)
