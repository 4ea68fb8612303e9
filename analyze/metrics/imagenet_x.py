"""ImageNet-X error ratios.

For each factor ``f`` (the image's top factor, prototypes filtered):

    error_ratio_f = (1 - acc_f) / (1 - acc_all)

with ``acc_f`` the accuracy over annotated images whose top factor is ``f`` and ``acc_all`` the accuracy over
all annotated images.
"""
from __future__ import annotations

import numpy as np

from . import check_same_length, wsum


def error_ratios(correct: np.ndarray, factors: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """``[factor]`` (or ``[B, factor]``) error ratios from ``correct [n]`` and one-hot ``factors [n, F]``."""
    factors = np.asarray(factors, dtype=np.float64)
    if factors.ndim != 2:
        raise ValueError(f"factors must be [image, factor], got shape {factors.shape}")
    check_same_length(correct=correct, factors=factors)
    hit = np.asarray(correct, dtype=np.float64)
    if weights is None:  # the point estimate: the same sums without the [n, 2F + 2] table (integers: exact either way)
        sums = np.concatenate([factors.sum(axis=0), hit @ factors, [len(hit), hit.sum()]])
    else:
        stacked = np.concatenate([factors, factors * hit[:, None], np.ones((len(hit), 1)), hit[:, None]], axis=1)
        sums = wsum(stacked, weights)
    n_f = factors.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        acc_f = sums[..., n_f:2 * n_f] / sums[..., :n_f]
        acc_all = sums[..., -1] / sums[..., -2]
        return (1.0 - acc_f) / (1.0 - acc_all)[..., None]
