"""Per-sample summaries of a block of logits, softmax in float64.

For logits ``z`` (restricted to a class subset ``S`` when given): ``p_j = exp(z_j - max z) / sum_k exp(z_k - max z)``.
``confidence = max_j p_j = 1 / sum_k exp(z_k - max z)``; ``p_true = p_label`` (NaN when the label is not in ``S``).
"""
from __future__ import annotations

import threading

import numpy as np

_local = threading.local()


def _buffer(shape: tuple[int, int]) -> np.ndarray:
    """A float64 scratch buffer per thread, reused across blocks: fresh 80 MB allocations cost more
    (page faults) than the arithmetic."""
    buf = getattr(_local, "buf", None)
    if buf is None or buf.size < shape[0] * shape[1]:
        buf = _local.buf = np.empty(shape[0] * shape[1])
    return buf[: shape[0] * shape[1]].reshape(shape)


def stable_exp(logits: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(exp(z - max z), sum)`` in float64, row-wise. The max is exact in the logits' own dtype."""
    logits = np.asarray(logits)
    z = np.empty(logits.shape) if out is None else out
    with np.errstate(invalid="ignore"):  # NaN / inf rows give a NaN sum, which callers read as invalid
        np.subtract(logits, logits.max(axis=1, keepdims=True), out=z, dtype=np.float64)
        np.exp(z, out=z)
        return z, z.sum(axis=1)


def softmax(logits: np.ndarray) -> np.ndarray:
    e, s = stable_exp(logits)
    return e / s[:, None]


def summarize(logits: np.ndarray, label: np.ndarray, subset: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``pred`` (index in the full label space), ``confidence`` and ``p_true`` of each row."""
    logits = np.asarray(logits)
    label = np.asarray(label)
    if subset is not None:
        subset = np.asarray(subset)
        logits = logits[:, subset]
    e, s = stable_exp(logits, _buffer(logits.shape))
    # exp is monotonic, so the argmax of the logits is the argmax of the probabilities (first of ties alike).
    arg = logits.argmax(axis=1)
    pred = arg if subset is None else subset[arg]
    if subset is None:
        col = label
        known = (label >= 0) & (label < logits.shape[1])
    else:
        col = np.clip(np.searchsorted(subset, label), 0, len(subset) - 1)
        known = (label >= 0) & (subset[col] == label)
    rows = np.arange(len(logits))
    p_true = np.where(known, e[rows, np.where(known, col, 0)] / s, np.nan)
    return {"pred": pred.astype(np.int32), "confidence": 1.0 / s, "p_true": p_true}
