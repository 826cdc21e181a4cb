"""Local web viewer: case list and QA review queue, overlays, review decisions, slice correction + propagation."""

from __future__ import annotations

from labelwise.data.review import ReviewStore  # re-exported for now: the store lives in labelwise.data.review
from labelwise.viewer.app import MAX_BODY_BYTES, ViewerState, create_app

__all__ = ["MAX_BODY_BYTES", "ReviewStore", "ViewerState", "create_app"]
