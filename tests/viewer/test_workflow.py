"""The viewer as a place to work (issue 19 item 6): the `labelwise next` queue, the "changed since last model"
filter, propagation proposals accepted or discarded slice by slice, and undo of a saved version."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
from starlette.testclient import TestClient

from labelwise.data import DatasetWriter
from labelwise.data.review import CorrectionVersion
from labelwise.viewer import ReviewStore, ViewerState, create_app
from labelwise.viewer.app import TOKEN_HEADER, painted_slices, parse_since, slice_confidence

ORIGIN = "http://127.0.0.1:8765"
EVIL = "http://evil.example"


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    """Four 12 x 10 x 6 volumes with two raters; vol3's raters disagree most, vol4's image is vol1's."""
    rng = np.random.default_rng(0)
    w = DatasetWriter(tmp_path / "ds", "workflow-test", 3, ["background", "organ"], ["r1", "r2"])
    vol = np.zeros((12, 10, 6), dtype=np.int16)
    vol[3:8, 2:7, 1:5] = 1
    image = rng.random((1, 12, 10, 6)).astype("f4") + 2 * vol[None]
    for i, shift in enumerate([0, 1, 3, 0], start=1):
        other = np.roll(vol, shift, axis=0)
        img = image if i in (1, 4) else rng.random((1, 12, 10, 6)).astype("f4") + 2 * vol[None]
        w.add_case(f"vol{i}", img, {"r1": vol, "r2": other}, spacing_mm=(1.0, 1.0, 2.5))
    w.finish()
    return tmp_path / "ds"


def _client(app: object) -> TestClient:
    return TestClient(app, base_url=ORIGIN, headers={TOKEN_HEADER: app.state.token})  # type: ignore[arg-type,attr-defined]


@pytest.fixture()
def client(dataset: Path) -> Iterator[TestClient]:
    with _client(create_app(ViewerState(dataset))) as c:
        yield c


def _paint(client: TestClient, case: str, z: int, rows: slice, base: str = "empty") -> dict[str, object]:
    mask = np.zeros((12, 10), dtype=np.uint8)
    mask[rows, 1:8] = 1
    data = base64.b64encode(mask.tobytes()).decode()
    payload = {"slice": z, "width": 10, "height": 12, "data": data, "base": base, "user": "ana"}
    res = client.post(f"/api/cases/{case}/correction", json=payload, headers={"Origin": ORIGIN})
    assert res.status_code == 200, res.text
    return dict(res.json())


# ----------------------------------------------------------------------------------------------- the queue
def test_next_queue_switches_strategy_and_gives_reasons(client: TestClient) -> None:
    info = client.get("/api/info").json()
    assert info["strategies"] == ["disagreement", "diversity", "mix", "random"]  # no qa table, no predictions
    assert info["default_strategy"] == "mix" and info["run"] is None

    worst = client.get("/api/next?strategy=disagreement&n=2").json()
    assert worst["format"] == "labelwise-next" and worst["strategy"] == "disagreement"
    assert [c["case"] for c in worst["cases"]] == ["vol3", "vol2"]  # rolled by 3 rows, then by 1
    assert all("pairwise Dice" in c["reason"] for c in worst["cases"])

    diverse = client.get("/api/next?strategy=diversity&n=4").json()
    assert diverse["strategy"] == "diversity" and len(diverse["cases"]) == 4
    assert diverse["cases"][-1]["case"] in ("vol1", "vol4")  # a duplicate image comes last
    assert "image-feature distance" in diverse["cases"][-1]["reason"]
    assert client.get("/api/next").json()["strategy"] == "mix"

    # a reviewed case leaves the queue, unless asked for
    assert client.post("/api/cases/vol3/review", json={"decision": "accept"}).is_success
    after = client.get("/api/next?strategy=disagreement&n=4").json()
    assert "vol3" not in [c["case"] for c in after["cases"]] and after["skipped_reviewed"] == ["vol3"]
    every = client.get("/api/next?strategy=disagreement&n=4&include_reviewed=1").json()
    assert every["cases"][0]["case"] == "vol3"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("strategy=quality", "not available"),  # no --qa
        ("strategy=uncertainty", "not available"),  # no --pred
        ("strategy=nonsense", "not available"),
        ("n=0", "n must be"),
        ("n=abc", "n must be"),
        ("n=100000", "n must be"),
        ("include_reviewed=maybe", "include_reviewed"),
    ],
)
def test_next_refuses_bad_queries(client: TestClient, query: str, message: str) -> None:
    res = client.get(f"/api/next?{query}")
    assert res.status_code == 422 and message in res.json()["error"]


def test_next_uses_the_viewers_qa_table(dataset: Path, tmp_path: Path) -> None:
    qa = tmp_path / "quality.csv"
    qa.write_text("case,structure,source,predicted_dice\nvol2,organ,r1,0.35\nvol1,organ,r1,0.9\n", encoding="utf-8")
    with _client(create_app(ViewerState(dataset, qa_csv=qa))) as c:
        assert "quality" in c.get("/api/info").json()["strategies"]
        res = c.get("/api/next?strategy=quality&n=5").json()
        assert [p["case"] for p in res["cases"]] == ["vol2", "vol1"]
        assert "0.350" in res["cases"][0]["reason"]


# ----------------------------------------------------------------------------------------------- changed since
def _run(tmp_path: Path, when: float) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "meta.json").write_text(json.dumps({"format": "labelwise-run", "status": "finished"}), encoding="utf-8")
    os.utime(run / "meta.json", (when, when))
    return run


def test_changed_since_the_last_model(dataset: Path, tmp_path: Path) -> None:
    store = ReviewStore(dataset)
    before = store.add_review("vol1", "accept", user="ana")
    run = _run(tmp_path, parse_since(before["time"]).timestamp() + 0.001)  # trained right after vol1's review
    time.sleep(0.02)
    with _client(create_app(ViewerState(dataset, run_dir=run))) as c:
        info = c.get("/api/info").json()
        assert info["run"] == str(run) and info["run_trained_at"]
        _paint(c, "vol2", 2, slice(2, 9))
        assert c.post("/api/cases/vol3/review", json={"decision": "reject", "user": "bob"}).is_success
        res = c.get("/api/changed").json()
        assert res["source"] == "run"
        assert [(r["case"], r["status"]) for r in res["cases"]] == [("vol2", "corrected"), ("vol3", "rejected")]
        assert res["cases"][0]["change"].startswith("correction v1") and res["cases"][1]["change"] == "reject by bob"
        assert res["cases"][1]["labels"] == "none"  # set aside: the next training will not read it

        # a date instead of the run: everything since 2000, nothing since next year
        assert len(c.get("/api/changed?since=2000-01-01").json()["cases"]) == 3
        year = datetime.now().year + 1
        assert c.get(f"/api/changed?since={year}-01-01T00:00").json()["cases"] == []
        bad = c.get("/api/changed?since=yesterday")
        assert bad.status_code == 422 and "ISO date" in bad.json()["error"]


def test_changed_without_a_run_needs_a_date(client: TestClient) -> None:
    res = client.get("/api/changed")
    assert res.status_code == 422 and "--run" in res.json()["error"]


def test_run_without_meta_is_refused_at_start(dataset: Path, tmp_path: Path) -> None:
    from labelwise.errors import DataError

    with pytest.raises(DataError, match=r"meta\.json"):
        ViewerState(dataset, run_dir=tmp_path)


# ----------------------------------------------------------------------------------------------- propagation
def test_propagation_proposal_is_accepted_and_undone_slice_by_slice(client: TestClient, dataset: Path) -> None:
    _paint(client, "vol1", 2, slice(2, 9))
    store = ReviewStore(dataset)
    res = client.post("/api/cases/vol1/propagate", json={"slice": 2, "extent": 2, "preview": True})
    assert res.status_code == 200, res.text
    proposal = res.json()
    assert [s["slice"] for s in proposal["slices"]] == [0, 1, 3, 4] and proposal["anchors"] == [2]
    assert all(0.0 <= s["confidence"] <= 1.0 for s in proposal["slices"])
    assert proposal["slices"][1]["foreground"] > 0  # the painted shape reaches the next slice
    assert len(store.versions("vol1")) == 1, "a preview writes nothing"
    pid = proposal["proposal"]
    shown = client.get(f"/api/cases/vol1/slice/1.png?layer=proposal/{pid}")
    assert shown.status_code == 200
    assert client.get(f"/api/cases/vol1/slice/2.png?layer=proposal/{pid}").status_code == 404  # painted: not proposed
    assert client.get("/api/cases/vol1/slice/1.png?layer=proposal/0000").status_code == 404

    accepted = client.post("/api/cases/vol1/propagate/accept", json={"proposal": pid, "slices": [1], "user": "ana"})
    assert accepted.status_code == 200, accepted.text
    body = accepted.json()
    assert body["version"] == 2 and body["action"] == "propagate" and body["slices"] == [1]
    assert body["remaining"] == [0, 3, 4]
    v1, v2 = store.read(store.versions("vol1")[0]), store.latest("vol1")
    assert v2 is not None and v2[..., 1].sum() > 0 and v1[..., 1].sum() == 0
    assert (v2[..., [0, 2, 3, 4, 5]] == v1[..., [0, 2, 3, 4, 5]]).all(), "only the accepted slice changed"

    discarded = client.post("/api/cases/vol1/propagate/discard", json={"proposal": pid, "slices": [3]})
    assert discarded.json()["remaining"] == [0, 4] and len(store.versions("vol1")) == 2
    again = client.post("/api/cases/vol1/propagate/accept", json={"proposal": pid, "slices": [3]})
    assert again.status_code == 422 and "not in the proposal" in again.json()["error"]

    # undo the accepted slice: a new version restoring v1
    undo = client.post("/api/cases/vol1/revert", json={"version": 2, "user": "ana"})
    assert undo.status_code == 200, undo.text
    assert undo.json()["version"] == 3 and undo.json()["base"] == "revert of v0002"
    assert undo.json()["action"] == "revert"  # a revert is its own action in the store, not a paint
    v3 = store.latest("vol1")
    assert v3 is not None and (v3 == v1).all()
    stale = client.post("/api/cases/vol1/revert", json={"version": 2})
    assert stale.status_code == 409 and "not the latest" in stale.json()["error"]
    # redo: undoing the undo brings the accepted slice back
    assert client.post("/api/cases/vol1/revert", json={"version": 3}).is_success
    v4 = store.latest("vol1")
    assert v4 is not None and (v4 == v2).all()


def test_accept_refuses_a_slice_painted_after_the_proposal(client: TestClient) -> None:
    _paint(client, "vol1", 2, slice(2, 9))
    pid = client.post("/api/cases/vol1/propagate", json={"slice": 2, "extent": 2, "preview": True}).json()["proposal"]
    _paint(client, "vol1", 3, slice(4, 6), base="correction")
    res = client.post("/api/cases/vol1/propagate/accept", json={"proposal": pid, "slices": [3, 4]})
    assert res.status_code == 409 and "[3]" in res.json()["error"]
    assert client.post("/api/cases/vol1/propagate/accept", json={"proposal": pid, "slices": [4]}).is_success
    bad = client.post("/api/cases/vol2/propagate/accept", json={"proposal": pid, "slices": [0]})
    assert bad.status_code == 404  # a proposal belongs to its case
    assert client.post("/api/cases/vol1/propagate/accept", json={"proposal": pid, "slices": []}).status_code == 422
    assert client.post("/api/cases/vol1/propagate", json={"slice": 2, "preview": "yes"}).status_code == 422


def test_undo_of_the_first_version_restores_its_base(client: TestClient, dataset: Path) -> None:
    _paint(client, "vol1", 2, slice(0, 2), base="rater/r1")
    res = client.post("/api/cases/vol1/revert", json={"version": 1, "user": "ana"})
    assert res.status_code == 200, res.text
    restored = ReviewStore(dataset).latest("vol1")
    r1 = np.zeros((12, 10, 6), dtype=np.int16)
    r1[3:8, 2:7, 1:5] = 1
    assert restored is not None and (restored == r1).all()
    nothing = client.post("/api/cases/vol2/revert", json={"version": 1})
    assert nothing.status_code == 422 and "no saved version" in nothing.json()["error"]


def test_painted_slices_follow_paint_propagate_and_revert() -> None:
    def v(n: int, slices: tuple[int, ...], action: str = "paint", base: str = "empty") -> CorrectionVersion:
        return CorrectionVersion("c", n, f"corrections/c/v{n:04d}.nii.gz", "u", "t", slices, action, base, n)

    history = [v(1, (2,)), v(2, (1, 3), "propagate"), v(3, (3,))]
    assert painted_slices(history) == {2, 3}
    assert painted_slices([*history, v(4, (3,), "revert", "revert of v0003")]) == {2}  # undoing the paint of slice 3
    assert painted_slices([*history, v(4, (3,), base="revert of v0003")]) == {2}  # a revert saved as a paint (older)
    assert painted_slices([*history, v(4, (3,), "propagate")]) == {2}


def test_slice_confidence_scores_the_uncertain_region() -> None:
    certain = np.zeros((2, 4, 4), dtype=np.float32)
    certain[0] = 1.0
    assert slice_confidence(certain) == (1.0, 0)  # plain background: nothing to doubt
    mixed = certain.copy()
    mixed[:, :2, :2] = 0.5  # four voxels at a coin flip
    confidence, foreground = slice_confidence(mixed)
    assert confidence == pytest.approx(0.5) and foreground == 0  # ties go to background


# ----------------------------------------------------------------------------------------------- the guard
@pytest.mark.parametrize("url", ["/api/next", "/api/changed?since=2000-01-01"])
def test_new_reads_need_the_token(dataset: Path, url: str) -> None:
    app = create_app(ViewerState(dataset))
    with TestClient(app, base_url=ORIGIN) as bare:
        assert bare.get(url).status_code == 403
        assert bare.get(url, headers={"Host": "evil.example:8765"}).status_code == 403


@pytest.mark.parametrize("route", ["propagate/accept", "propagate/discard", "revert"])
def test_new_writes_refuse_foreign_origin(client: TestClient, dataset: Path, route: str) -> None:
    _paint(client, "vol1", 2, slice(2, 9))
    pid = client.post("/api/cases/vol1/propagate", json={"slice": 2, "extent": 1, "preview": True}).json()["proposal"]
    payload = {"proposal": pid, "slices": [1], "version": 1}
    for origin in (EVIL, "null"):
        res = client.post(f"/api/cases/vol1/{route}", json=payload, headers={"Origin": origin})
        assert res.status_code == 403 and "cross-origin" in res.json()["error"]
    text = client.post(f"/api/cases/vol1/{route}", content=json.dumps(payload), headers={"Content-Type": "text/plain"})
    assert text.status_code == 415
    assert len(ReviewStore(dataset).versions("vol1")) == 1, "a refused write wrote a version"
    ok = client.post(f"/api/cases/vol1/{route}", json=payload, headers={"Origin": ORIGIN})
    assert ok.status_code == 200, ok.text
