"""Shape bias on cue-conflict images (Geirhos et al., 2019).

The 16-way decision is the category whose member ImageNet classes have the highest MEAN softmax
probability (softmax over all 1000 classes). Images whose shape and texture categories coincide are dropped.
Over the rest:

    shape_fraction   = #(decision == shape) / n
    texture_fraction = #(decision == texture) / n
    shape_bias       = #(decision == shape) / (#(decision == shape) + #(decision == texture))
"""
from __future__ import annotations

import numpy as np

from . import check_same_length, wsum


def category_probabilities(probs: np.ndarray, categories: list[np.ndarray]) -> np.ndarray:
    """``[n, C]`` mean probability of each category's member classes, from softmax ``probs [n, 1000]``."""
    return np.stack([np.asarray(probs)[:, idx].mean(axis=1) for idx in categories], axis=1)


def shape_texture_hits(decision: np.ndarray, shape: np.ndarray, texture: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(shape_hit, texture_hit, kept)``: kept drops the shape == texture images."""
    check_same_length(decision=decision, shape=shape, texture=texture)
    decision, shape, texture = map(np.asarray, (decision, shape, texture))
    kept = shape != texture
    return (decision == shape) & kept, (decision == texture) & kept, kept


def shape_bias(decision: np.ndarray, shape: np.ndarray, texture: np.ndarray,
               weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``shape_bias``, ``shape_fraction`` and ``texture_fraction`` (per bootstrap row with ``[B, n]`` weights)."""
    shape_hit, texture_hit, kept = shape_texture_hits(decision, shape, texture)
    s, t, k = np.moveaxis(wsum(np.stack([shape_hit, texture_hit, kept], axis=1).astype(np.float64), weights), -1, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"shape_bias": s / (s + t), "shape_fraction": s / k, "texture_fraction": t / k}


def shape_bias_per_category(decision, shape, texture, n_categories: int) -> np.ndarray:
    """Shape bias among the images of each shape category: ``[category]``, NaN where undefined."""
    shape = np.asarray(shape)
    out = np.full(n_categories, np.nan)
    for c in range(n_categories):
        rows = shape == c
        if rows.any():
            out[c] = shape_bias(np.asarray(decision)[rows], shape[rows], np.asarray(texture)[rows])["shape_bias"]
    return out
