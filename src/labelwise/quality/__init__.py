"""Label-quality review: score masks with a trained Quality Sentinel, rank them, choose the next cases to review."""

from __future__ import annotations

from labelwise.quality.qa import QAResult, QARow, merge_qa_parts, run_qa, write_qa
from labelwise.quality.select import Selection, select_cases

__all__ = ["QAResult", "QARow", "Selection", "merge_qa_parts", "run_qa", "select_cases", "write_qa"]
