"""CPU-only analysis of a logits store: metrics, studies, report. Never imports torch."""
from importlib import import_module

_EXPORTS = {"build_report": ".report", "AnalysisError": ".store", "RunKey": ".store", "StoreReader": ".store",
            "open_store": ".store"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """The exports, imported on first use: a figure worker imports ``analyze.figures`` alone, not the whole analysis
    (about 0.8 processor-seconds of each report's start)."""
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
