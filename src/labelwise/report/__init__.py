"""Figures and self-contained HTML reports."""

from __future__ import annotations

from labelwise.report.html import MethodResult, build_report, case_panels, load_evaluation, rounds_section

__all__ = ["MethodResult", "build_report", "case_panels", "load_evaluation", "rounds_section"]
