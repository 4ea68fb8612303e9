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
    sums = group_sums(inverse, len(keys), [values], weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        return keys, sums[..., len(keys):] / sums[..., :len(keys)]
