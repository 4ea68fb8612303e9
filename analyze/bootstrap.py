"""Seeded bootstrap confidence intervals over samples, paired across models.

A Poisson bootstrap: replicate ``b`` weighs sample ``i`` by ``w_bi ~ Poisson(1)`` (Hanley & MacGibbon, 2006;
the streaming form of resampling with replacement). The weights are drawn by inverse CDF from 16-bit
uniforms (Poisson(1) probabilities quantised to 1/65536), several times faster than numpy's sampler. The weights depend only on the seed, the dataset and the
sample count, so every model and transform of a dataset sees the same replicates: a difference between two
models computed replicate by replicate is a paired bootstrap.
"""
from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, Protocol

import numpy as np


def _poisson1_table(bits: int = 16) -> np.ndarray:
    """Inverse CDF of Poisson(1) at the centres of 2**bits equal quantiles."""
    k = np.arange(20)
    pmf = np.exp(-1.0) / np.cumprod(np.concatenate([[1.0], k[1:].astype(float)]))
    u = (np.arange(2**bits) + 0.5) / 2**bits
    return np.searchsorted(np.cumsum(pmf), u).astype(np.uint8)


_POISSON1 = _poisson1_table()


def poisson1(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Poisson(1) counts as uint8 (the largest count the table holds is well under 255)."""
    return _POISSON1[rng.integers(0, len(_POISSON1), size=shape, dtype=np.uint16)]


def _key_seed(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")


class KeptCounts(Protocol):
    """Where counts drawn before are kept (``analyze report --cache``: report_cache.ReportCache)."""

    def load_counts(self, what: tuple) -> np.ndarray | None: ...

    def save_counts(self, what: tuple, counts: np.ndarray) -> None: ...


@dataclass
class Bootstrap:
    n_boot: int = 1000
    seed: int = 0
    level: float = 0.95
    # Counts are kept as uint8 (a byte per sample and replicate); the matrix products convert them to
    # float32 a slice at a time (ProductBatch.compute).
    _draws: dict = field(default_factory=dict, repr=False)
    _drawer: ThreadPoolExecutor | None = field(default=None, repr=False)
    # Counts an earlier report drew (read back in a fraction of the time drawing them takes: a report after adding
    # one model needs every dataset's counts for that model's replicates).
    kept: KeptCounts | None = field(default=None, repr=False)

    def _draw(self, key: str, n: int) -> np.ndarray:
        what = ("poisson1-counts", self.seed, key, n, self.n_boot)
        counts = None if self.kept is None else self.kept.load_counts(what)
        if counts is not None and counts.shape == (self.n_boot, n) and counts.dtype == np.uint8:
            return counts
        counts = poisson1(np.random.default_rng([self.seed, _key_seed(key), n]), (self.n_boot, n))
        if self.kept is not None:
            self.kept.save_counts(what, counts)
        return counts

    def prepare(self, populations: Iterable[tuple[str, int]]) -> None:
        """Start drawing the counts of these ``(key, n)`` populations on a background thread: they depend
        on nothing but the seed, so the draws overlap the reading of the logits."""
        if self.n_boot <= 0:
            return
        if self._drawer is None:
            self._drawer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bootstrap")
        for key, n in populations:
            if (key, n) not in self._draws:
                self._draws[(key, n)] = self._drawer.submit(self._draw, key, n)

    def counts(self, key: str, n: int) -> np.ndarray | None:
        """``[n_boot, n]`` uint8 Poisson(1) counts for the samples of ``key``; None when disabled."""
        if self.n_boot <= 0:
            return None
        draw = self._draws.get((key, n))
        if draw is None:
            draw = self._draws[(key, n)] = self._draw(key, n)
        elif isinstance(draw, Future):
            draw = self._draws[(key, n)] = draw.result()
        return draw

    def weights(self, key: str, n: int) -> np.ndarray | None:
        """``[n_boot, n]`` float32 Poisson(1) weights for the samples of ``key``; None when disabled."""
        counts = self.counts(key, n)
        return None if counts is None else counts.astype(np.float32)

    def intervals(self, replicates: np.ndarray) -> np.ndarray:
        """``[k, 2]`` percentile intervals of ``k`` statistics' replicates ``[k, B]``, each as ``interval`` gives it:
        rows of finite replicates in one call along the rows, the others one by one."""
        reps = np.asarray(replicates, dtype=np.float64)
        out = np.full((len(reps), 2), np.nan)
        finite = np.isfinite(reps).all(axis=1) if reps.size else np.zeros(len(reps), bool)
        if finite.any():
            tail = (1.0 - self.level) / 2 * 100
            out[finite] = np.percentile(reps[finite], [tail, 100 - tail], axis=1).T
        for i in np.flatnonzero(~finite):
            out[i] = self.interval(reps[i])
        return out

    def interval(self, replicates: np.ndarray | None) -> tuple[float, float]:
        """Percentile interval of the replicates (NaN when there are none)."""
        if replicates is None:
            return float("nan"), float("nan")
        reps = np.asarray(replicates, dtype=np.float64)
        reps = reps[np.isfinite(reps)]
        if reps.size == 0:
            return float("nan"), float("nan")
        tail = (1.0 - self.level) / 2 * 100
        low, high = np.percentile(reps, [tail, 100 - tail])
        return float(low), float(high)
