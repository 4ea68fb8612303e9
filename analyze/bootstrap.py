"""Seeded bootstrap confidence intervals over samples, paired across models.

A Poisson bootstrap: replicate ``b`` weighs sample ``i`` by ``w_bi ~ Poisson(1)`` (Hanley & MacGibbon, 2006;
the streaming form of resampling with replacement). The weights are drawn by inverse CDF from 16-bit
uniforms (Poisson(1) probabilities quantised to 1/65536), several times faster than numpy's sampler. The weights depend only on the seed, the dataset and the
sample count, so every model and transform of a dataset sees the same replicates: a difference between two
models computed replicate by replicate is a paired bootstrap.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field

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


@dataclass
class Bootstrap:
    n_boot: int = 1000
    seed: int = 0
    level: float = 0.95
    # Counts are kept as uint8 for every sample population (a byte per sample and replicate); only the
    # most recent float32 copies, which the matrix products need, are kept beside them.
    _counts: dict = field(default_factory=dict, repr=False)
    _cache: OrderedDict = field(default_factory=OrderedDict, repr=False)
    max_cached: int = 2

    def weights(self, key: str, n: int) -> np.ndarray | None:
        """``[n_boot, n]`` float32 Poisson(1) weights for the samples of ``key``; None when disabled."""
        if self.n_boot <= 0:
            return None
        if (key, n) not in self._cache:
            if (key, n) not in self._counts:
                rng = np.random.default_rng([self.seed, _key_seed(key), n])
                self._counts[(key, n)] = poisson1(rng, (self.n_boot, n))
            self._cache[(key, n)] = self._counts[(key, n)].astype(np.float32)
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
        self._cache.move_to_end((key, n))
        return self._cache[(key, n)]

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
