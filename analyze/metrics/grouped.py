"""Accuracy (or any per-sample mean) per group value: PUG-ImageNet factors, ImageNet-C cells, transforms.

    mean_g = sum_{i in g} w_i x_i / sum_{i in g} w_i
"""
from __future__ import annotations

import numpy as np

from . import check_same_length, group_sums


def group_means(values: np.ndarray, groups: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(group_keys, means)`` with ``means [G]`` or ``[B, G]``; ``groups [n]`` any sortable labels."""
    check_same_length(values=values, groups=groups)
    keys, inverse = np.unique(np.asarray(groups), return_inverse=True)
    return keys, coded_group_means(values, inverse, len(keys), weights)


def coded_group_means(values: np.ndarray, codes: np.ndarray, n_groups: int,
                      weights: np.ndarray | None = None) -> np.ndarray:
    """``means [n_groups]`` or ``[B, n_groups]`` of groups given as codes ``0 .. n_groups - 1`` (codes found once
    serve many calls)."""
    check_same_length(values=values, codes=codes)
    sums = group_sums(codes, n_groups, [values], weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums[..., n_groups:] / sums[..., :n_groups]
