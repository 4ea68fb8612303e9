"""Per-sample summaries of a block of logits, softmax in float64.

For logits ``z`` (restricted to a class subset ``S`` when given): ``p_j = exp(z_j - max z) / sum_k exp(z_k - max z)``.
``confidence = max_j p_j = 1 / sum_k exp(z_k - max z)``; ``p_true = p_label`` (NaN when the label is not in ``S``).
"""
from __future__ import annotations

import numpy as np


def stable_exp(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(exp(z - max z), sum)`` in float64, row-wise."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
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
        logits = logits[:, subset]
    e, s = stable_exp(logits)
    arg = e.argmax(axis=1)
    pred = arg if subset is None else np.asarray(subset)[arg]
    if subset is None:
        col = label
        known = (label >= 0) & (label < logits.shape[1])
    else:
        pos = np.searchsorted(subset, label)
        pos = np.clip(pos, 0, len(subset) - 1)
        known = (label >= 0) & (np.asarray(subset)[pos] == label)
        col = pos
    rows = np.arange(len(logits))
    p_true = np.where(known, e[rows, np.where(known, col, 0)] / s, np.nan)
    return {"pred": pred.astype(np.int32), "confidence": 1.0 / s, "p_true": p_true}
