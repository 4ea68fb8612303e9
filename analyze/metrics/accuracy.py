"""Top-1 accuracy, with class subsets and multi-label ground truth.

- Subset top-1: ``pred = S[argmax_j logits[:, S_j]]``, the argmax over the subset's columns only.
- Multi-label top-1 (ImageNet-ReaL, ImageNet-Hard): correct iff ``pred`` is in the image's label set;
  ReaL images with an empty set are excluded (``label_sets`` row all ``-1`` -> not counted).
- ``accuracy = sum_i w_i c_i / sum_i w_i``.
"""
from __future__ import annotations

import numpy as np

from . import check_same_length, wmean


def subset_argmax(logits: np.ndarray, subset: np.ndarray | None = None) -> np.ndarray:
    """Predicted class index in the full label space, the argmax taken over ``subset`` columns only."""
    logits = np.asarray(logits)
    if subset is None:
        return logits.argmax(axis=1)
    subset = np.asarray(subset)
    return subset[logits[:, subset].argmax(axis=1)]


def correct_single(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    check_same_length(pred=pred, label=label)
    return np.asarray(pred) == np.asarray(label)


def correct_multi(pred: np.ndarray, label_sets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(correct, counted)`` for label sets padded with -1: ``[n, k]``; rows with no label are not counted."""
    label_sets = np.asarray(label_sets)
    if label_sets.ndim != 2:
        raise ValueError(f"label_sets must be [sample, slot] padded with -1, got shape {label_sets.shape}")
    check_same_length(pred=pred, label_sets=label_sets)
    pred = np.asarray(pred)
    counted = np.zeros(len(label_sets), bool)
    correct = np.zeros(len(label_sets), bool)
    for slot in label_sets.T:  # a few slots: a pass per slot beats numpy's reduction over a short axis
        counted |= slot >= 0
        correct |= slot == pred
    return correct & counted, counted


def accuracy(correct: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Fraction correct (per bootstrap row when ``weights`` is ``[B, n]``)."""
    return wmean(np.asarray(correct, dtype=np.float64), weights)
