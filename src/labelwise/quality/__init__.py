"""Label-quality review: score masks with a trained Quality Sentinel, rank them, evaluate against a reference."""

from __future__ import annotations

from labelwise.quality.qa import QAResult, QARow, run_qa, write_qa

__all__ = ["QAResult", "QARow", "run_qa", "write_qa"]
