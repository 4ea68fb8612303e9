"""Metric functions: pure functions over per-sample arrays.

Every statistic takes optional bootstrap ``weights``: ``None`` gives the plain estimate; an array of shape
``[n]`` or ``[B, n]`` (one row per bootstrap replicate) gives the weighted estimate for each row. Writing each
statistic as a ratio of weighted sums over samples lets one weight matrix serve every metric of a dataset,
which makes differences between models paired by construction.
"""
from __future__ import annotations

import hashlib

import numpy as np

from ..scratch import thread_buffer


class ProductBatch:
    """One matrix product ``W @ X`` for many statistics of one sample population.

    Statistics are evaluated twice against :class:`DeferredWeights`: first every weighted sum they ask for
    is recorded as columns of ``X`` (their results are discarded), then, after one product with the real
    ``[B, n]`` weights, the same statistics replayed in the same order read their slices of it. Reading the
    weight matrix once instead of once per statistic is what makes 1000 replicates cheap.
    """

    def __init__(self, n_rows: int, n_boot: int):
        self.n_rows, self.n_boot = n_rows, n_boot
        self.columns: list[np.ndarray] = []
        self.result: np.ndarray | None = None
        self.cursor = 0

    def product(self, flat: np.ndarray, index: np.ndarray | None) -> np.ndarray:
        k = flat.shape[1]
        if self.result is None:
            full = np.zeros((self.n_rows, k), np.float32)
            full[slice(None) if index is None else index] = flat
            self.columns.append(full)
            return np.zeros((self.n_boot, k))
        out = self.result[:, self.cursor:self.cursor + k]
        self.cursor += k
        return out

    def compute(self, weights: np.ndarray) -> None:
        # Equal columns (every weighted mean's count column, two models that agree) are multiplied once:
        # less work, and bit-identical replicates for identical inputs.
        first: dict[bytes, int] = {}
        where, unique = [], []
        for block in self.columns:
            for column in np.ascontiguousarray(block.T):
                digest = hashlib.blake2b(column.tobytes(), digest_size=16).digest()
                if digest not in first:
                    first[digest] = len(first)
                    unique.append(column)
                where.append(first[digest])
        x = np.stack(unique, axis=1) if unique else np.zeros((self.n_rows, 0), np.float32)
        self.result = weighted_product(weights, x).astype(np.float64)[:, np.asarray(where, dtype=np.int64)]
        self.columns, self.cursor = [], 0


def weighted_product(weights: np.ndarray, x: np.ndarray, slice_rows: int = 4096,
                     rows: np.ndarray | None = None) -> np.ndarray:
    """``weights @ x`` in float32 for ``[n]`` or ``[B, n]`` weights of any numeric dtype: a ``[B, n]`` matrix
    that is not float32 (uint8 bootstrap counts) is converted a slice of samples at a time into this thread's
    reused buffer, never as a whole float32 copy. ``rows``: ``weights[:, rows] @ x`` (``x`` has ``len(rows)``
    rows), gathered a slice at a time too."""
    weights = np.asarray(weights)
    if rows is None and (weights.dtype == np.float32 or weights.ndim == 1):
        return weights.astype(np.float32, copy=False) @ x
    n = weights.shape[1] if rows is None else len(rows)
    out = np.zeros((weights.shape[0], x.shape[1]), np.float32)
    buf = thread_buffer("weights", (weights.shape[0], min(slice_rows, n)), np.float32)
    for start in range(0, n, slice_rows):
        part = weights[:, start:start + slice_rows] if rows is None else weights[:, rows[start:start + slice_rows]]
        chunk = buf[:, :part.shape[1]]
        np.copyto(chunk, part, casting="unsafe")
        out += chunk @ x[start:start + slice_rows]
    return out


class DeferredWeights:
    """Stands for the ``[B, n]`` weights of a :class:`ProductBatch`, optionally restricted to some rows."""

    def __init__(self, batch: ProductBatch, index: np.ndarray | None = None):
        self.batch, self.index = batch, index

    def restrict(self, rows: np.ndarray) -> "DeferredWeights":
        base = np.arange(self.batch.n_rows) if self.index is None else self.index
        return DeferredWeights(self.batch, base[np.asarray(rows, dtype=bool)])


def wsum(x: np.ndarray, weights: np.ndarray | DeferredWeights | None = None) -> np.ndarray:
    """Sum over the sample axis (axis 0 of ``x``): ``x [n, ...]`` -> ``[...]`` or ``[B, ...]`` with weights."""
    x = np.asarray(x)
    if weights is None:
        return x.sum(axis=0, dtype=np.float64)
    flat = x.reshape(len(x), -1).astype(np.float32, copy=False)
    if isinstance(weights, DeferredWeights):
        out = weights.batch.product(flat, weights.index)
        return out.reshape(out.shape[:-1] + x.shape[1:])
    out = weighted_product(weights, flat)
    return out.reshape(out.shape[:-1] + x.shape[1:]).astype(np.float64)


def group_sums(group: np.ndarray, n_groups: int, values: list[np.ndarray],
               weights: np.ndarray | DeferredWeights | None = None) -> np.ndarray:
    """Per group ``g`` in ``0 .. n_groups - 1``: the weight total, then each of ``values``' weighted sum, as one
    axis ``[(1 + len(values)) * n_groups]`` (``[B, ...]`` with ``[B, n]`` weights):

        count_g = sum_{i: group_i = g} w_i        sum_g(v) = sum_{i: group_i = g} w_i v_i

    Weighted, through one-hot columns (one product serves every statistic of a population). The point estimate
    by ``bincount``: the same additions in the same order as summing those columns, so the same bits, without
    an ``[n, groups]`` matrix."""
    group = np.asarray(group)
    if weights is None:
        parts = [np.bincount(group, minlength=n_groups).astype(np.float64)]
        parts += [np.bincount(group, weights=np.asarray(v, dtype=np.float64), minlength=n_groups) for v in values]
        return np.concatenate(parts)
    onehot = np.zeros((len(group), n_groups))
    onehot[np.arange(len(group)), group] = 1.0
    return wsum(np.concatenate([onehot] + [onehot * np.asarray(v, dtype=np.float64)[:, None] for v in values],
                               axis=1), weights)


def wmean(x: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted mean over samples; NaN where the weights sum to zero."""
    x = np.asarray(x, dtype=np.float64)
    flat = x.reshape(len(x), -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if weights is None:  # the point estimate: every weight is 1, their total the sample count
            means = flat.sum(axis=0, dtype=np.float64) / len(x)
        else:  # the weight total rides along as one more column: one pass over the weight matrix, not two
            sums = wsum(np.concatenate([np.ones((len(x), 1)), flat], axis=1), weights)
            means = sums[..., 1:] / sums[..., :1]
    return means.reshape(means.shape[:-1] + x.shape[1:])


def check_same_length(**arrays: np.ndarray) -> int:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"per-sample arrays differ in length: {lengths}")
    return next(iter(lengths.values()))
