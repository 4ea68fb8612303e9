"""Expected calibration error, reliability diagram and confidence histogram.

Confidence is the maximum softmax probability (softmax in float64 over the logits, or over the class
subset's logits). With ``M = 15`` equal-width bins, sample ``i`` falls in bin ``m`` iff
``m/M < conf_i <= (m+1)/M`` (confidence exactly 1.0 lands in the last bin; 0 cannot occur), and

    ECE = sum_m |B_m| / n * |acc(B_m) - conf(B_m)|

with ``acc(B_m)`` the fraction correct and ``conf(B_m)`` the mean confidence in bin ``m``. Weighted, ``|B_m|``
and ``n`` become weight sums.
"""
from __future__ import annotations

import numpy as np

from . import check_same_length, group_sums

N_BINS = 15


def _check(confidence: np.ndarray, correct: np.ndarray) -> None:
    check_same_length(confidence=confidence, correct=correct)
    conf = np.asarray(confidence)
    if conf.size and (np.nanmin(conf) < 0 or np.nanmax(conf) > 1):
        raise ValueError("confidence must lie in [0, 1]")


def bin_index(confidence: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Bin of each confidence under ``lower < conf <= upper`` (bins 0..n_bins-1)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    conf = np.asarray(confidence, dtype=np.float64)
    # ceil(conf * n_bins) - 1 is the bin but where rounding puts conf * n_bins on the wrong side of an integer: one
    # step against the edges themselves settles it (a binary search per sample took twice as long).
    with np.errstate(invalid="ignore"):
        k = np.ceil(conf * n_bins)
    k = np.clip(np.nan_to_num(k, nan=n_bins), 1, n_bins).astype(np.intp) - 1  # NaN sorts last: the last bin
    k -= (conf <= edges[k]) & (k > 0)
    k += (conf > edges[k + 1]) & (k < n_bins - 1)
    return k


def _bin_sums(confidence, correct, n_bins, weights, bins):
    bins = bin_index(confidence, n_bins) if bins is None else bins
    sums = group_sums(bins, n_bins, [confidence, correct], weights)
    return sums[..., :n_bins], sums[..., n_bins:2 * n_bins], sums[..., 2 * n_bins:]


def ece(confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS,
        weights: np.ndarray | None = None, bins: np.ndarray | None = None) -> np.ndarray:
    """Expected calibration error (per bootstrap row when ``weights`` is ``[B, n]``). ``bins``:
    ``bin_index(confidence, n_bins)`` where the caller has it already (the point estimate, its replicates and
    the reliability curve all bin the same confidences)."""
    _check(confidence, correct)
    count, conf_sum, hit_sum = _bin_sums(confidence, correct, n_bins, weights, bins)
    total = count.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(hit_sum - conf_sum).sum(axis=-1) / total


def reliability(confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS,
                bins: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Reliability diagram and confidence histogram: per bin its edges, count, accuracy and mean confidence
    (``bins`` as for :func:`ece`)."""
    _check(confidence, correct)
    count, conf_sum, hit_sum = _bin_sums(confidence, correct, n_bins, None, bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "lower": np.linspace(0.0, 1.0, n_bins + 1)[:-1],
            "upper": np.linspace(0.0, 1.0, n_bins + 1)[1:],
            "count": count,
            "accuracy": hit_sum / count,
            "confidence": conf_sum / count,
        }
