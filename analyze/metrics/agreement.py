"""Agreement between two decision makers on the same images: error consistency and linear CKA.

**Error consistency** (Geirhos, Meding & Wichmann, NeurIPS 2020; model-vs-human's ``ErrorConsistency``) is
Cohen's kappa of per-image correctness: how much more often two observers are right or wrong on the same
images than two independent observers with their accuracies would be. With ``c_a, c_b`` in {0, 1}
(correct or not) on the images both decided, and weights ``w`` (1 for the plain estimate)::

    p_a = sum w c_a / sum w                p_b = sum w c_b / sum w
    c_obs = sum w [c_a == c_b] / sum w     (both right or both wrong)
    c_exp = p_a p_b + (1 - p_a)(1 - p_b)
    kappa = (c_obs - c_exp) / (1 - c_exp),  and kappa = 1 when c_obs = 1

(kappa is 0/0 when both are always right or always wrong; model-vs-human then reports 1, as here.)
Since ``[c_a == c_b] = 1 - c_a - c_b + 2 c_a c_b``, four weighted sums over images (``sum w``,
``sum w c_a``, ``sum w c_b``, ``sum w c_a c_b``) give every quantity, so one ``[B, n]`` product gives
all bootstrap replicates (``metrics.wsum``).

**Linear CKA** (Kornblith et al., ICML 2019) of pooled features ``X [n, d_x]``, ``Y [n, d_y]`` of the same
images, centred by their (weighted) means ``x~_i = x_i - sum_j w_j x_j / sum w``::

    CKA = ||X~^T W Y~||_F^2 / (||X~^T W X~||_F ||Y~^T W Y~||_F)          W = diag(w)

In the Gram form used here, ``K = X X^T`` and ``L = Y Y^T`` (any fixed centring of the features first), the
weighted HSIC is ``||X~^T W Y~||_F^2 = sum_ij w_i w_j K~_ij L~_ij``, which expands to::

    HSIC_w(K, L) = w^T (K o L) w - (2 / S) sum_i w_i (K w)_i (L w)_i + (w^T K w)(w^T L w) / S^2,   S = sum w

(``o`` the elementwise product; with ``w = 1`` this is ``tr(K H L H)``, ``H`` the centring matrix). A
weight of 0 leaves an image out, so the replicates of ``[B, n]`` bootstrap weights cost a product each.

An image drawn ``w_i > 1`` times must not be paired with its own copies: they would count as pairs of
perfectly matching images and, in every replicate, about double the upward bias the estimator has on n
images (the replicates would then sit above the value). Each copy keeps its own term ``K~_ii L~_ii``::

    HSIC*_w(K, L) = HSIC_w(K, L) - sum_i w_i (w_i - 1) K~_ii L~_ii,   K~_ii = K_ii - 2 (Kw)_i / S + w^T K w / S^2

which is ``HSIC_w`` itself for weights in {0, 1}: the plain estimate is the usual linear CKA.

>>> import numpy as np
>>> a = np.array([1, 1, 0, 0, 1]); b = np.array([1, 1, 0, 0, 0])
>>> {k: round(float(v), 4) for k, v in error_consistency(a, b).items()}
{'error_consistency': 0.6154, 'observed_consistency': 0.8, 'expected_consistency': 0.48}
>>> x = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0], [3.0, 1.0]])
>>> round(float(linear_cka(x, 2 * x + 1)), 6), round(float(linear_cka(x, x[:, :1])), 4)
(1.0, 0.9339)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import check_same_length, wsum

KAPPA_METRICS = ("error_consistency", "observed_consistency", "expected_consistency")


def consistency_columns(correct_a: np.ndarray, correct_b: np.ndarray) -> np.ndarray:
    """``[n, 4]`` per-image terms ``(1, c_a, c_b, c_a c_b)`` whose weighted sums give error consistency."""
    check_same_length(correct_a=correct_a, correct_b=correct_b)
    a = np.asarray(correct_a, dtype=np.float64)
    b = np.asarray(correct_b, dtype=np.float64)
    return np.stack([np.ones_like(a), a, b, a * b], axis=1)


def consistency_from_sums(sums: np.ndarray) -> dict[str, np.ndarray]:
    """Error consistency from the weighted sums of :func:`consistency_columns` (``[..., 4]``)."""
    sums = np.asarray(sums, dtype=np.float64)
    n, a, b, ab = (sums[..., i] for i in range(4))
    with np.errstate(invalid="ignore", divide="ignore"):
        p_a, p_b = a / n, b / n
        observed = (n - a - b + 2 * ab) / n
        expected = p_a * p_b + (1 - p_a) * (1 - p_b)
        kappa = np.where(observed >= 1.0, 1.0, (observed - expected) / (1.0 - expected))
    kappa = np.where(n > 0, kappa, np.nan)
    return {"error_consistency": kappa, "observed_consistency": observed, "expected_consistency": expected}


def error_consistency(correct_a: np.ndarray, correct_b: np.ndarray, weights=None) -> dict[str, np.ndarray]:
    """Cohen's kappa of two observers' per-image correctness on the same images (see the module docstring);
    per bootstrap row when ``weights`` is ``[B, n]``."""
    return consistency_from_sums(wsum(consistency_columns(correct_a, correct_b), weights))


def centred_gram(features: np.ndarray) -> np.ndarray:
    """``K = X X^T`` (float64) of features centred by their plain mean: a fixed shift, so the weighted
    centring of :func:`weighted_hsic` is unchanged, but the sums it takes no longer cancel."""
    x = np.asarray(features, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    return x @ x.T


@dataclass(frozen=True)
class HsicWeights:
    """Weights ``w`` (``[n]`` or ``[B, n]``, in the Gram matrices' float dtype) with what every HSIC under them
    shares: ``S = sum w`` (float64) and ``w (w - 1)``, the weight of an image's pairs with its own copies."""

    w: np.ndarray
    total: np.ndarray
    repeats: np.ndarray


@dataclass(frozen=True)
class GramSide:
    """One Gram matrix ``K`` under one :class:`HsicWeights`: ``K w`` and the centred diagonal ``K~_ii`` (in K's
    dtype), and ``w^T K w`` (float64). Every HSIC of ``K`` with another Gram matrix under the same weights
    reuses them."""

    weights: HsicWeights
    gram: np.ndarray
    kw: np.ndarray
    wkw: np.ndarray
    diagonal: np.ndarray


def hsic_weights(weights, n: int, dtype=np.float64) -> HsicWeights:
    """:class:`HsicWeights` of ``weights`` (``None``: all 1) over ``n`` images."""
    w = np.ones(n, dtype) if weights is None else np.asarray(weights).astype(dtype, copy=False)
    if w.shape[-1] != n:
        raise ValueError(f"weights cover {w.shape[-1]} images, the Gram matrices {n}")
    return HsicWeights(w, np.sum(w, axis=-1, dtype=np.float64), w * (w - 1))


def gram_side(k: np.ndarray, weights: HsicWeights) -> GramSide:
    """The :class:`GramSide` of the square Gram matrix ``k`` (its dtype: float32 halves the time) under ``weights``.
    The ``[B, n]`` terms stay in that dtype (a float64 scalar would promote them); every sum runs in float64."""
    k = np.asarray(k)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"a Gram matrix must be square, got shape {k.shape}")
    w = weights.w
    kw = w @ k
    wkw = np.sum(w * kw, axis=-1, dtype=np.float64)
    s = weights.total
    with np.errstate(invalid="ignore", divide="ignore"):
        diagonal = (np.diagonal(k).copy() - np.asarray(2.0 / s, k.dtype)[..., None] * kw  # (a copy: read once a row)
                    + np.asarray(wkw / s**2, k.dtype)[..., None])
    return GramSide(weights, k, kw, wkw, diagonal)


def hsic_of_sides(a: GramSide, b: GramSide, both: np.ndarray | None = None) -> np.ndarray:
    """``HSIC*_w(K, L)`` of the module docstring from the sides of ``K`` and ``L`` under the same weights;
    ``both``: ``K o L`` when already formed (the value and the replicates of a pair share it)."""
    if a.gram.shape != b.gram.shape:
        raise ValueError(f"Gram matrices must be of one shape, got {a.gram.shape} and {b.gram.shape}")
    if a.weights is not b.weights:
        raise ValueError("the two Gram matrices' sides were taken under different weights")
    weights = a.weights
    w, s = weights.w, weights.total
    both = a.gram * b.gram if both is None else both
    first = np.sum((w @ both) * w, axis=-1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        hsic = first - 2.0 / s * np.sum(w * a.kw * b.kw, axis=-1, dtype=np.float64) + a.wkw * b.wkw / s**2
        return hsic - np.sum(weights.repeats * a.diagonal * b.diagonal, axis=-1, dtype=np.float64)


def weighted_hsic(k: np.ndarray, l: np.ndarray, weights=None) -> np.ndarray:
    """``HSIC*_w(K, L)`` of the module docstring for weights ``None`` (all 1), ``[n]`` or ``[B, n]``."""
    k, l = np.asarray(k), np.asarray(l)
    if k.shape != l.shape or k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"Gram matrices must be square and of one shape, got {k.shape} and {l.shape}")
    dtype = np.result_type(k.dtype, l.dtype, np.float32, np.float32 if weights is None else np.asarray(weights).dtype)
    hw = hsic_weights(weights, len(k), dtype)
    return hsic_of_sides(gram_side(k.astype(dtype, copy=False), hw), gram_side(l.astype(dtype, copy=False), hw))


def cka_from_hsic(xy: np.ndarray, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """``HSIC(X, Y) / sqrt(HSIC(X, X) HSIC(Y, Y))``; NaN where either self-similarity is 0 (constant features)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        denominator = np.sqrt(np.asarray(xx, dtype=np.float64) * np.asarray(yy, dtype=np.float64))
        return np.where(denominator > 0, np.asarray(xy, dtype=np.float64) / denominator, np.nan)


def linear_cka(x: np.ndarray, y: np.ndarray, weights=None) -> np.ndarray:
    """Linear CKA of two feature matrices of the same images (rows); per bootstrap row for ``[B, n]`` weights."""
    check_same_length(x=x, y=y)
    k, l = centred_gram(x), centred_gram(y)
    return cka_from_hsic(weighted_hsic(k, l, weights), weighted_hsic(k, k, weights), weighted_hsic(l, l, weights))
