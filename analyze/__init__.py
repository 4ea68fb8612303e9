"""CPU-only analysis of a logits store: metrics, studies, report. Never imports torch."""
from .report import build_report
from .store import AnalysisError, RunKey, StoreReader, open_store

__all__ = ["AnalysisError", "RunKey", "StoreReader", "build_report", "open_store"]
