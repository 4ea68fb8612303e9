"""Metric functions: pure functions over per-sample arrays.

Every statistic takes optional bootstrap ``weights``: ``None`` gives the plain estimate; an array of shape
``[n]`` or ``[B, n]`` (one row per bootstrap replicate) gives the weighted estimate for each row. Writing each
statistic as a ratio of weighted sums over samples lets one weight matrix serve every metric of a dataset,
which makes differences between models paired by construction.
"""
from __future__ import annotations

import numpy as np


def wsum(x: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Sum over the sample axis (axis 0 of ``x``): ``x [n, ...]`` -> ``[...]`` or ``[B, ...]`` with weights."""
    x = np.asarray(x)
    if weights is None:
        return x.sum(axis=0, dtype=np.float64)
    flat = x.reshape(len(x), -1).astype(np.float32, copy=False)
    out = np.asarray(weights, dtype=np.float32) @ flat
    return out.reshape(out.shape[:-1] + x.shape[1:]).astype(np.float64)


def wmean(x: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted mean over samples; NaN where the weights sum to zero."""
    x = np.asarray(x, dtype=np.float64)
    flat = x.reshape(len(x), -1)
    # The weight total rides along as one more column: one pass over the weight matrix, not two.
    sums = wsum(np.concatenate([np.ones((len(x), 1)), flat], axis=1), weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums[..., 1:] / sums[..., :1]
    return means.reshape(means.shape[:-1] + x.shape[1:])


def check_same_length(**arrays: np.ndarray) -> int:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"per-sample arrays differ in length: {lengths}")
    return next(iter(lengths.values()))
