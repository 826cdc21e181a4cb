"""The local web viewer: a Starlette app over one dataset (+ predictions, + a QA table).

Only ids from the manifest and layer names from a fixed vocabulary reach the file system, so no request can read
outside the dataset and prediction folders. Bodies are capped (``MAX_BODY_BYTES``); writes go through
:class:`~labelwise.viewer.store.ReviewStore` (atomic, locked).

API (JSON unless noted)::

    GET  /api/info                             dataset name, classes, raters, what is loaded
    GET  /api/cases                            case list with split, raters, image labels, QA score, last review
    GET  /api/queue                            QA review queue, worst predicted quality first
    GET  /api/cases/{id}                       shape, spacing, slice count, available layers, versions, reviews
    GET  /api/cases/{id}/slice/{z}.png?layer=  one slice as PNG (image: grey/RGB; label layers: class index)
    POST /api/cases/{id}/review                {"decision": "accept"|"reject"|"flag", "comment", "user"}
    POST /api/cases/{id}/correction            {"slice", "width", "height", "data": base64 uint8, "base", "user"}
    POST /api/cases/{id}/propagate             {"slice", "extent", "user"}: propagate the saved corrections to the
                                               unpainted slices within ``extent`` (default 10) of ``slice``

Layers: ``image``, ``rater/<id>``, ``consensus`` (majority vote), ``pred``, ``prob`` (foreground probability x255),
``sample/<k>``, ``predrater/<k>``, ``uncertainty`` (x255 of its max), ``correction`` (latest saved version).
"""

from __future__ import annotations

import base64
import binascii
import csv
import functools
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from labelwise.data import Case, Dataset
from labelwise.errors import LabelwiseError
from labelwise.viewer.store import ReviewStore

__all__ = ["MAX_BODY_BYTES", "ViewerState", "create_app"]

logger = logging.getLogger(__name__)
MAX_BODY_BYTES = 16 * 1024 * 1024
STATIC = Path(__file__).with_name("static")


class ViewerState:
    """Everything the viewer serves, loaded lazily and cached per case.

    Args:
        dataset: Dataset folder.
        pred_dir: Optional prediction folder (``labelwise predict`` layout).
        qa_csv: Optional ``quality.csv`` from ``labelwise qa``.

    """

    def __init__(self, dataset: str | Path, pred_dir: str | Path | None = None, qa_csv: str | Path | None = None):
        self.dataset = Dataset(dataset)
        self.pred_dir = Path(pred_dir) if pred_dir else None
        self.store = ReviewStore(self.dataset.root)
        self.qa = self._read_qa(Path(qa_csv)) if qa_csv else []
        self.case = functools.lru_cache(maxsize=8)(self._load_case)
        self.prediction = functools.lru_cache(maxsize=8)(self._load_prediction)
        self._windows: dict[str, tuple[float, float]] = {}

    @staticmethod
    def _read_qa(path: Path) -> list[dict[str, Any]]:
        if not path.is_file():
            raise LabelwiseError(f"{path}: QA table not found")
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        if rows and not {"case", "predicted_dice"} <= set(rows[0]):
            raise LabelwiseError(f"{path}: QA table needs columns 'case' and 'predicted_dice'")
        for row in rows:
            row["predicted_dice"] = float(row["predicted_dice"])
        return sorted(rows, key=lambda r: r["predicted_dice"])

    def _load_case(self, case_id: str) -> Case:
        return self.dataset.load(case_id)

    def _load_prediction(self, case_id: str) -> Any:
        from labelwise.io import read_prediction

        if self.pred_dir is None or not (self.pred_dir / f"{case_id}.nii.gz").exists():
            return None
        return read_prediction(self.pred_dir, case_id, self.dataset.spatial_dims)

    def layers(self, case_id: str) -> list[str]:
        """Layer names available for ``case_id``."""
        case = self.case(case_id)
        names = ["image"] + [f"rater/{r}" for r in case.rater_ids]
        if case.num_raters > 1:
            names.append("consensus")
        pred = self.prediction(case_id)
        if pred is not None:
            names += ["pred", "prob"]
            names += [f"sample/{k}" for k in range(0 if pred.samples is None else len(pred.samples))]
            names += [f"predrater/{k}" for k in range(0 if pred.raters is None else len(pred.raters))]
            if pred.uncertainty is not None:
                names.append("uncertainty")
        if self.store.versions(case_id):
            names.append("correction")
        return names

    def volume(self, case_id: str, layer: str) -> np.ndarray:
        """The ``(*spatial)`` array behind a label/map layer (not ``image``)."""
        case = self.case(case_id)
        kind, _, key = layer.partition("/")
        pred = self.prediction(case_id)
        if kind == "rater" and key in case.rater_ids:
            rater: np.ndarray = case.raters[case.rater_ids.index(key)]
            return rater
        if kind == "consensus" and case.num_raters:
            from labelwise.labels import majority_vote

            return np.asarray(majority_vote(case.raters))
        if kind == "correction":
            latest = self.store.latest(case_id, case.spatial_dims)
            if latest is not None:
                return latest
        if pred is not None:
            if kind == "pred":
                label: np.ndarray = np.asarray(pred.label)
                return label
            if kind == "prob":
                fg = pred.probs[1:].sum(axis=0) if pred.probs.shape[0] > 1 else pred.probs[0]
                prob: np.ndarray = np.clip(np.rint(fg * 255), 0, 255).astype(np.uint8)
                return prob
            if kind == "uncertainty" and pred.uncertainty is not None:
                u = pred.uncertainty
                unc: np.ndarray = np.clip(np.rint(255 * u / max(float(u.max()), 1e-6)), 0, 255).astype(np.uint8)
                return unc
            stack = pred.samples if kind == "sample" else pred.raters if kind == "predrater" else None
            if stack is not None and key.isdigit() and int(key) < len(stack):
                member: np.ndarray = np.asarray(stack[int(key)])
                return member
        raise KeyError(layer)

    def slice_png(self, case_id: str, z: int, layer: str) -> bytes:
        """PNG bytes of slice ``z`` of ``layer`` (``z`` must be 0 for 2D)."""
        from PIL import Image

        case = self.case(case_id)
        depth = 1 if case.spatial_dims == 2 else case.spatial_shape[-1]
        if not 0 <= z < depth:
            raise KeyError(f"slice {z}")
        if layer == "image":
            img = case.image if case.spatial_dims == 2 else case.image[..., z]
            if case_id not in self._windows:
                self._windows[case_id] = _window(case)
            lo, hi = self._windows[case_id]
            arr = np.clip((img - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
            pil = Image.fromarray(np.moveaxis(arr[:3], 0, -1) if arr.shape[0] >= 3 else arr[0])
        else:
            vol = self.volume(case_id, layer)
            sl = vol if case.spatial_dims == 2 else vol[..., z]
            pil = Image.fromarray(np.clip(sl, 0, 255).astype(np.uint8))
        buf = io.BytesIO()
        pil.save(buf, format="PNG")
        return buf.getvalue()


def _window(case: Case) -> tuple[float, float]:
    """1st/99th intensity percentiles of the whole case (one window for every slice)."""
    lo, hi = np.percentile(case.image, [1, 99])
    return float(lo), float(hi)


def create_app(state: ViewerState) -> Any:
    """Build the Starlette application for ``state``."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
    from starlette.types import ASGIApp, Receive, Scope, Send

    class BodyLimit:
        """Refuse bodies over MAX_BODY_BYTES (declared or streamed)."""

        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await self.app(scope, receive, send)
                return
            declared = dict(scope.get("headers", [])).get(b"content-length")
            if declared is not None and int(declared) > MAX_BODY_BYTES:
                await JSONResponse({"error": "request body too large"}, status_code=413)(scope, receive, send)
                return
            seen = 0

            async def limited() -> Any:
                nonlocal seen
                message = await receive()
                seen += len(message.get("body", b""))
                if seen > MAX_BODY_BYTES:
                    raise ValueError("request body too large")
                return message

            await self.app(scope, limited, send)

    def known_case(request: Request) -> str:
        case_id = request.path_params["case_id"]
        if case_id not in state.dataset.ids:
            raise KeyError(case_id)
        return str(case_id)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def info(request: Request) -> Response:
        ds = state.dataset
        return JSONResponse(
            {
                "name": ds.name,
                "spatial_dims": ds.spatial_dims,
                "class_names": list(ds.class_names),
                "rater_ids": list(ds.rater_ids),
                "has_predictions": state.pred_dir is not None,
                "has_qa": bool(state.qa),
            }
        )

    async def cases(request: Request) -> Response:
        reviews = state.store.reviews()
        qa_by_case: dict[str, float] = {}
        for row in state.qa:
            qa_by_case[row["case"]] = min(row["predicted_dice"], qa_by_case.get(row["case"], 1.0))
        out = []
        for rec in state.dataset.manifest.cases:
            last = reviews.get(rec.id, [])
            out.append(
                {
                    "id": rec.id,
                    "split": rec.split,
                    "raters": list(rec.labels),
                    "image_labels": rec.image_labels,
                    "quality": qa_by_case.get(rec.id),
                    "review": last[-1]["decision"] if last else None,
                }
            )
        return JSONResponse(out)

    async def queue(request: Request) -> Response:
        reviews = state.store.reviews()
        return JSONResponse(
            [{**row, "review": (reviews.get(row["case"]) or [{}])[-1].get("decision")} for row in state.qa]
        )

    async def case_meta(request: Request) -> Response:
        try:
            case_id = known_case(request)
            case = state.case(case_id)
            layers = state.layers(case_id)
        except KeyError:
            return error(404, "unknown case")
        except LabelwiseError as exc:
            return error(422, str(exc))
        return JSONResponse(
            {
                "id": case_id,
                "shape": list(case.spatial_shape),
                "spacing_mm": list(case.spacing_mm),
                "channels": int(case.image.shape[0]),
                "slices": 1 if case.spatial_dims == 2 else case.spatial_shape[-1],
                "labelled_slices": list(case.labelled_slices) if case.labelled_slices is not None else None,
                "layers": layers,
                "image_labels": case.image_labels,
                "versions": [v.__dict__ for v in state.store.versions(case_id)],
                "reviews": state.store.reviews().get(case_id, []),
            }
        )

    async def slice_png(request: Request) -> Response:
        try:
            case_id = known_case(request)
            z = int(request.path_params["z"])
            layer = request.query_params.get("layer", "image")
            png = state.slice_png(case_id, z, layer)
        except (KeyError, ValueError):
            return error(404, "unknown case, slice or layer")
        except LabelwiseError as exc:
            return error(422, str(exc))
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    async def body(request: Request) -> dict[str, Any]:
        payload = await request.json()
        if not isinstance(payload, dict):
            raise ValueError("expected a JSON object")
        return payload

    async def review(request: Request) -> Response:
        try:
            case_id = known_case(request)
            payload = await body(request)
            entry = state.store.add_review(
                case_id,
                str(payload.get("decision")),
                str(payload.get("comment", "")),
                str(payload.get("user", "anonymous")),
            )
        except KeyError:
            return error(404, "unknown case")
        except (ValueError, LabelwiseError) as exc:
            return error(422, str(exc))
        return JSONResponse(entry)

    def _base(case_id: str, base_name: str) -> np.ndarray:
        case = state.case(case_id)
        try:
            return state.volume(case_id, base_name)
        except KeyError:
            return np.zeros(case.spatial_shape, dtype=np.int16)

    async def correction(request: Request) -> Response:
        try:
            case_id = known_case(request)
            payload = await body(request)
            case = state.case(case_id)
            z = int(payload["slice"])
            h, w = int(payload["height"]), int(payload["width"])
            raw = base64.b64decode(str(payload["data"]), validate=True)
            if len(raw) != h * w:
                raise ValueError(f"data has {len(raw)} bytes, expected {h}x{w}")
            mask = np.frombuffer(raw, dtype=np.uint8).reshape(h, w).astype(np.int16)
            if mask.max(initial=0) >= len(case.class_names):
                raise ValueError(f"label {int(mask.max())} is not a class (0..{len(case.class_names) - 1})")
            base_name = str(payload.get("base", "correction"))
            entry = state.store.save_slices(
                case_id,
                _base(case_id, base_name),
                base_name,
                {z: mask},
                case.spacing_mm,
                case.affine,
                user=str(payload.get("user", "anonymous")),
            )
        except KeyError as exc:
            return error(404 if "case" in str(exc) or exc.args == () else 422, f"missing or unknown {exc}")
        except (ValueError, binascii.Error, LabelwiseError) as exc:
            return error(422, str(exc))
        return JSONResponse(entry.__dict__)

    async def propagate(request: Request) -> Response:
        try:
            case_id = known_case(request)
            payload = await body(request)
            case = state.case(case_id)
            if case.spatial_dims != 3:
                raise ValueError("propagation needs a 3D case")
            z = int(payload["slice"])
            extent = int(payload.get("extent", 10))
            if extent < 1:
                raise ValueError("extent must be >= 1 slice")
            latest = state.store.latest(case_id, 3)
            if latest is None:
                raise ValueError("save a corrected slice first")
            painted = {s for v in state.store.versions(case_id) if v.action == "paint" for s in v.slices}
            if z not in painted:
                raise ValueError(f"slice {z} has no saved correction; paint and save it first")
            from labelwise.methods.propagation import propagate as propagate_volume

            anchors = {s: latest[..., s] for s in sorted(painted)}
            result = propagate_volume(case.image, anchors, num_classes=len(case.class_names), allow_empty=True)
            depth = latest.shape[-1]
            targets = [k for k in range(max(0, z - extent), min(depth, z + extent + 1)) if k not in painted]
            slices = {k: result.labels[..., k].astype(np.int16) for k in targets}
            entry = state.store.save_slices(
                case_id,
                latest,
                "correction",
                slices,
                case.spacing_mm,
                case.affine,
                user=str(payload.get("user", "anonymous")),
                action="propagate",
            )
        except KeyError as exc:
            return error(404, f"unknown {exc}")
        except (ValueError, LabelwiseError) as exc:
            return error(422, str(exc))
        return JSONResponse(entry.__dict__)

    routes = [
        Route("/", index),
        Route("/api/info", info),
        Route("/api/cases", cases),
        Route("/api/queue", queue),
        Route("/api/cases/{case_id}", case_meta),
        Route("/api/cases/{case_id}/slice/{z:int}.png", slice_png),
        Route("/api/cases/{case_id}/review", review, methods=["POST"]),
        Route("/api/cases/{case_id}/correction", correction, methods=["POST"]),
        Route("/api/cases/{case_id}/propagate", propagate, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(BodyLimit)])
