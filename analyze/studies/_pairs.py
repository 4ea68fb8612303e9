"""Pairwise agreement on one dataset: error consistency of per-image correctness, linear CKA of pooled features.

Both are computed for every pair of runs under ``center`` and bootstrapped with the report's replicates of that
dataset (``Bootstrap.counts``), so their intervals come from the same resamples as every other number.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from threadpoolctl import threadpool_limits

from schemas.host import usable_cores

from ..context import Context
from ..metrics import weighted_product
from ..metrics.accuracy import correct_multi, correct_single
from ..metrics.agreement import (KAPPA_METRICS, GramSide, HsicWeights, centred_gram, cka_from_hsic,
                                 consistency_from_sums, gram_side, hsic_of_sides, hsic_weights)
from ..store import RunKey
from ..summaries import labels_in_logit_space
from ._common import PER_IMAGE, is_human, population

# CKA compares Gram matrices over a fixed random subset of the images (the same for every model of a dataset):
# its replicates cost B * n^2 per pair (2 GFLOP at n = 1000, B = 1000), while linear CKA on n images reads high
# by about d / (n + d) for unrelated features of effective dimension d: a trade-off, documented in design.md.
CKA_IMAGES = 1000
PAIR_BATCH = 512  # columns whose bootstrap sums share one product with the weight matrix, at most
BATCH_VALUES = 2**24  # and at most this many column values at once (64 MB as float32; ImageNet-C: 3.75 M rows)


@dataclass
class Pair:
    """One pair's value and bootstrap replicates (None without a bootstrap) for each metric."""

    a: RunKey
    b: RunKey
    metric: str
    value: float
    reps: np.ndarray | None  # None also where the interval was kept (--cache) and no mean needs the replicates
    n: int
    bounds: np.ndarray | None = None  # [low, high] when known already (else from ``reps``)


@dataclass(frozen=True)
class Correctness:
    """A run's per-image correctness on its dataset."""

    correct: np.ndarray  # [sample] bool
    counted: np.ndarray  # [sample] bool: valid, and has a label under the dataset's rule


def correctness(ctx: Context, key: RunKey) -> Correctness | None:
    """Per-image correctness under the rule of the study that reports the dataset's accuracy: the
    cue-conflict category decision against the shape, the label set (ImageNet-Hard), else top-1 == label."""
    summary = ctx.summaries(key)
    if summary is None:
        return None
    samples = ctx.reader.samples(key.dataset)
    label = samples.label
    if summary.category is not None:  # cue-conflict: the 16-way decision (from a distribution or a decision run)
        return Correctness(summary.category == label, summary.valid & (label >= 0))
    if "label_set" in samples.columns:
        correct, counted = correct_multi(summary.pred, samples.columns["label_set"])
        return Correctness(correct, summary.valid & counted)
    entry = ctx.reader.manifest_entry(key.dataset)
    entry.setdefault("label_space", ctx.reader.dataset_attrs(key.dataset).get("label_space"))  # as summaries.py
    if not labels_in_logit_space(entry):
        return None
    return Correctness(correct_single(summary.pred, label), summary.valid & (label >= 0))


def _positions(kept: np.ndarray, names: np.ndarray) -> np.ndarray:
    """Where each of ``names`` lies in ``kept`` (-1 where it does not)."""
    at = {name: k for k, name in enumerate(kept.tolist())}
    return np.array([at.get(name, -1) for name in names.tolist()], dtype=np.int64)


def _batches(pairs: list, size: int = PAIR_BATCH) -> Iterator[list]:
    for start in range(0, len(pairs), size):
        yield pairs[start:start + size]


def _columns_at_once(n_rows: int) -> int:
    """Columns summed by one product over ``n_rows`` rows: at most ``PAIR_BATCH`` and ``BATCH_VALUES`` values, at
    least 8."""
    return max(8, min(PAIR_BATCH, BATCH_VALUES // max(1, n_rows)))


class _PairCache:
    """``analyze report --cache``: the CKA pairs an earlier report computed, by both runs' tokens; a pair is
    computed only when it is not there (or there is no cache)."""

    def __init__(self, ctx: Context, pairs: list[tuple[RunKey, RunKey]], *what):
        self.ctx = ctx
        self.tokens = {p: ctx.cache.pair_token(*p, ctx.boot, *what) for p in pairs} if ctx.cache else {}
        self.known: dict[tuple[RunKey, RunKey], Pair] = {}
        for (a, b), token in self.tokens.items():
            data = ctx.cache.load_pair(token) if token else None
            if data is not None:
                self.known[(a, b)] = Pair(a, b, str(data["metric"]), float(data["value"]), data.get("reps"),
                                          int(data["n"]), data.get("bounds"))
        self.todo = [p for p in pairs if p not in self.known]

    def keep(self, found: list[Pair]) -> None:
        """Cache the computed pairs, with their intervals."""
        with_reps = [p for p in found if p.reps is not None]
        if with_reps:
            for pair, bounds in zip(with_reps, self.ctx.boot.intervals(np.stack([p.reps for p in with_reps]))):
                pair.bounds = bounds
        for pair in found:
            token = self.tokens.get((pair.a, pair.b))
            if token:
                arrays = {"metric": np.array(pair.metric), "value": np.array(pair.value), "n": np.array(pair.n)}
                if pair.reps is not None:
                    arrays["reps"] = np.asarray(pair.reps, dtype=np.float64)
                    arrays["bounds"] = np.asarray(pair.bounds, dtype=np.float64)
                self.ctx.cache.save_pair(token, arrays)
            self.known[(pair.a, pair.b)] = pair

    def ordered(self, pairs: list[tuple[RunKey, RunKey]]) -> list[Pair]:
        return [self.known[ab] for ab in pairs]


class _KeptColumns:
    """``analyze report --cache``: error consistency's column sums of an earlier report. A column is named by the
    content of the two rows it ANDs (a hash of each), so a report after adding a model sums only the columns its
    runs bring; the sums are integers, exact in float32 whatever the batch, so kept and recomputed sums are equal.
    A pair is named by its four columns, and its metrics' intervals are kept under that name: their percentiles
    cost more than the new model's columns."""

    def __init__(self, ctx: Context, base: np.ndarray, columns: np.ndarray, weight_key: str, n_units: int,
                 image: np.ndarray | None):
        self.cache = ctx.cache
        if self.cache is None:
            return
        row = [hashlib.sha256(r.tobytes()).digest()[:16] for r in base]
        i, j = np.divmod(columns, len(base))
        self.names = np.array([min(row[a], row[b]) + max(row[a], row[b]) for a, b in zip(i, j)], dtype="S32")
        grouping = None if image is None else hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()
        self.what = ("error-consistency", weight_key, n_units, grouping, ctx.boot.n_boot, ctx.boot.seed,
                     ctx.boot.level)
        self.old: dict[str, np.ndarray] = {}

    def fill(self, point: np.ndarray, reps: np.ndarray | None) -> np.ndarray:
        """Fill the kept columns in; the indices of the columns still to sum."""
        if self.cache is None:
            return np.arange(len(point))
        old = self.cache.load_columns(*self.what) or {}
        m = len(old.get("names", ()))
        if not m or old.get("point", np.zeros(0)).shape != (m,) or (reps is not None) != ("reps" in old) or (
                reps is not None and (old["reps"].shape, old["reps"].dtype) != ((len(reps), m), reps.dtype)):
            return np.arange(len(point))  # none kept, or not as written
        self.old = old
        found = _positions(old["names"], self.names)
        have = found >= 0
        point[have] = old["point"][found[have]]
        if reps is not None:
            reps[:, have] = old["reps"][:, found[have]]
        return np.flatnonzero(~have)

    def pair_names(self, where: np.ndarray) -> np.ndarray:
        """``[pairs]`` names: the names of each pair's four columns (``where``: ``[pairs, 4]`` column indices)."""
        return np.ascontiguousarray(self.names[where]).view("S128").ravel()

    def bounds(self, where: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Fill ``out`` (``[pairs, metrics, 2]``) with the kept intervals; which pairs had them."""
        if self.cache is None or not {"pair_names", "pair_bounds"} <= set(self.old) or (
                self.old["pair_bounds"].shape != (len(self.old["pair_names"]), *out.shape[1:])):
            return np.zeros(len(out), bool)
        found = _positions(self.old["pair_names"], self.pair_names(where))
        out[found >= 0] = self.old["pair_bounds"][found[found >= 0]]
        return found >= 0

    def keep(self, summed: np.ndarray, point: np.ndarray, reps: np.ndarray | None, where: np.ndarray,
             bounds: np.ndarray, fresh: int) -> None:
        """Keep the column sums and the pairs' intervals when any were computed (``summed`` columns, ``fresh``
        pairs)."""
        if self.cache is not None and (len(summed) or fresh):
            arrays = {"names": self.names, "point": point}
            if reps is not None:
                arrays.update(reps=reps, pair_names=self.pair_names(where), pair_bounds=bounds)
            self.cache.save_columns(arrays, *self.what)


# A product over a row subset first gathers and widens its weights for its own columns, about what 30 columns'
# multiply-adds a row cost, where the full rows' weights are widened once for a whole batch: a subset of n' of the
# n rows is taken for k columns when n' (k + 30) < n k.
GATHER_COLUMNS = 30


@dataclass
class _Pivoted:
    """Columns ``hit & v`` sharing one run's hit row ``hit``, summed over a subset of the rows: the rows that hit
    holds, or, fewer, the rows its row set holds and it does not (``miss``), each column's sum then that of
    ``row set & v`` (``complement``: already summed) minus the sum over those rows. Integers either way: the same
    sums as a product over every row, bit for bit."""

    level: int
    columns: np.ndarray  # indices into the dataset's columns
    partners: np.ndarray  # base row of each column's other side
    rows: np.ndarray  # the rows summed over
    complement: np.ndarray | None  # columns ``row set & partner``, where ``rows`` are the misses

    def sum(self, counts: np.ndarray, base: np.ndarray, point: np.ndarray, reps: np.ndarray) -> None:
        for part in _batches(np.arange(len(self.columns)), _columns_at_once(len(self.rows))):
            x = base[self.partners[part]][:, self.rows]
            found = weighted_product(counts, x.T.astype(np.float32), rows=self.rows)
            sums = found if self.complement is None else reps[:, self.complement[part]] - found
            reps[:, self.columns[part]] = sums
            taken = x.sum(axis=1, dtype=np.float64)
            point[self.columns[part]] = taken if self.complement is None else point[self.complement[part]] - taken


def _plan(base: np.ndarray, n_sets: int, row_set: np.ndarray, columns: np.ndarray, todo: np.ndarray,
          per_image: bool) -> tuple[np.ndarray, list[_Pivoted]]:
    """Which of the columns ``todo`` to sum over every row (returned first), and which in :class:`_Pivoted` groups,
    in the order to sum them (a group's complements come before it).

    A column ANDs two base rows; one that holds a run's hit row ``h`` (rows ``n_sets`` on) is ``h & v``, and
    ``h`` lies within its run's row set ``s``. Its sum over all rows equals its sum over the rows of ``h``, and
    also the sum of ``s & v`` minus the sum over the rows of ``s & ~h``: over a run's misses, when it hits most
    rows (a new model's 50 columns in a report after adding it: a tenth of the rows at 90% top-1). Columns go to
    the hit row they share with the most others; groups too small to repay the gather (``GATHER_COLUMNS``) are
    summed directly."""
    if per_image or not len(todo):  # per-image sums are over images, not rows
        return todo, []
    n_base, n = len(base), base.shape[1]
    i, j = np.divmod(columns[todo], n_base)
    hits_i, hits_j = i >= n_sets, j >= n_sets
    level = hits_i.astype(int) + hits_j
    shared = np.bincount(np.concatenate([i[hits_i], j[hits_j]]), minlength=n_base)
    pivot = np.where(hits_i & (~hits_j | (shared[i] >= shared[j])), i, j)  # ties: the lower row
    groups = []
    for lv in (1, 2):  # a level-2 column's complement is a level-1 column: summed before it
        for h in np.unique(pivot[level == lv]):
            mine = np.flatnonzero((level == lv) & (pivot == h))
            partners = np.where(i[mine] == h, j[mine], i[mine])
            s, hit = row_set[h - n_sets], base[h]
            miss = base[s] & ~hit
            complement, rows = None, hit
            if miss.sum() < hit.sum():
                codes = np.minimum(s, partners) * n_base + np.maximum(s, partners)
                at = np.minimum(np.searchsorted(columns, codes), len(columns) - 1)
                if (columns[at] == codes).all():
                    complement, rows = at, miss
            groups.append(_Pivoted(lv, todo[mine], partners, np.flatnonzero(rows), complement))
    # A group pays for its gather when n' (k + G) < n k; the groups that do not, where no column needs every row,
    # are still gathered when that costs less than widening every row's weights for them alone, n (G + their k).
    work = lambda g: len(g.rows) * (len(g.columns) + GATHER_COLUMNS)  # noqa: E731
    gather = [work(g) < n * len(g.columns) for g in groups]
    rest = [g for g, chosen in zip(groups, gather) if not chosen]
    if rest and not (level == 0).any() and (
            sum(map(work, rest)) < n * (GATHER_COLUMNS + sum(len(g.columns) for g in rest))):
        gather = [True] * len(groups)
    direct = [todo[level == 0]] + [g.columns for g, chosen in zip(groups, gather) if not chosen]
    return np.sort(np.concatenate(direct)), [g for g, chosen in zip(groups, gather) if chosen]


def error_consistency_pairs(ctx: Context, keys: list[RunKey]) -> list[Pair]:
    """Error consistency (kappa, observed and expected consistency) of every pair of ``keys`` (one dataset).

    A pair needs four sums over the images both runs decided (``consistency_columns``): their count, each run's
    hits there and their common hits. Each is the sum of one 0/1 column, the AND of two rows of ``base`` (the
    runs' distinct row sets, then each run's hits): the count ANDs the two runs' row sets, a run's hits AND them
    with the other's row set, the common hits AND both runs' hits. Pairs share most columns (the runs usually
    have one row set), so the distinct columns are about one a pair, summed a batch at a time by one
    ``[B, n] @ [n, k]`` product (exact in float32: the sums are integers below 2^24); kappa is then computed for
    all pairs at once.
    """
    hits = {k: c for k in keys if (c := correctness(ctx, k)) is not None}
    keys = [k for k in keys if k in hits]
    if len(keys) < 2:
        return []
    weight_key, n_units, image = population(ctx, keys[0].dataset)
    counts = ctx.boot.counts(weight_key, n_units)
    counted = np.stack([hits[k].counted for k in keys])
    seen: dict[bytes, int] = {}  # the distinct row sets (hashed: np.unique(axis=0) sorts rows field by field)
    row_set = np.array([seen.setdefault(c.tobytes(), len(seen)) for c in counted])
    sets = counted[np.unique(row_set, return_index=True)[1]]
    base = np.concatenate([sets, np.stack([hits[k].correct for k in keys]) & counted])
    hit = len(sets) + np.arange(len(keys))  # base rows of the runs' hits
    a, b = np.triu_indices(len(keys), 1)
    left = np.stack([row_set[a], hit[a], hit[b], hit[a]], axis=1)
    right = np.stack([row_set[b], row_set[b], row_set[a], hit[b]], axis=1)
    columns, where = np.unique(np.minimum(left, right) * len(base) + np.maximum(left, right), return_inverse=True)
    point = np.empty(len(columns))
    reps = None if counts is None else np.empty((len(counts), len(columns)), np.float32)  # integer sums: exact
    kept = _KeptColumns(ctx, base, columns, weight_key, n_units, image)
    todo = kept.fill(point, reps)
    direct, pivoted = _plan(base, len(sets), row_set, columns, todo, per_image=image is not None or reps is None)
    for batch in _batches(direct, _columns_at_once(counted.shape[1])):
        i, j = np.divmod(columns[batch], len(base))
        x = base[i] & base[j]
        x = x.T.astype(np.float32) if image is None else np.stack(  # per-image datasets: each image's cells summed
            [np.bincount(image, column, minlength=n_units) for column in x], axis=1).astype(np.float32)
        point[batch] = x.sum(axis=0, dtype=np.float64)
        if reps is not None:
            reps[:, batch] = weighted_product(counts, x)
    for group in pivoted:
        group.sum(counts, base, point, reps)
    where = where.reshape(left.shape)
    value = consistency_from_sums(point[where])
    n = point[where[:, 0]].astype(int)  # the rows both decided (an image's cells all count)
    bounds = np.full((len(where), len(KAPPA_METRICS), 2), np.nan)
    rep, column, fresh = {}, {}, np.zeros(0, np.intp)
    if reps is not None:
        known = kept.bounds(where, bounds)
        human = np.array([is_human(k.model) for k in keys])
        wanted = np.flatnonzero(~known | human[a] | human[b])  # replicates: new pairs, and the means over observers
        rep, column = consistency_from_sums(reps[:, where[wanted]]), {p: c for c, p in enumerate(wanted.tolist())}
        fresh = np.flatnonzero(~known[wanted])
        if len(fresh):
            stacked = np.concatenate([rep[m][:, fresh].T for m in KAPPA_METRICS])
            found = ctx.boot.intervals(stacked).reshape(len(KAPPA_METRICS), len(fresh), 2)
            bounds[wanted[fresh]] = found.swapaxes(0, 1)
    kept.keep(todo, point, reps, where, bounds, len(fresh))
    return [Pair(keys[i], keys[j], m, float(value[m][p]), rep[m][:, column[p]] if p in column else None, int(n[p]),
                 None if reps is None else bounds[p, k])
            for p, (i, j) in enumerate(zip(a, b)) for k, m in enumerate(KAPPA_METRICS)]


def cka_subset(dataset: str, n: int, seed: int, size: int | None = None) -> np.ndarray:
    """The sorted rows CKA is computed on: all of them, or ``size`` (default ``CKA_IMAGES``) drawn without
    replacement, fixed by the seed, the dataset and its size (the same rows for every model)."""
    size = CKA_IMAGES if size is None else size
    if n <= size:
        return np.arange(n)
    tag = int.from_bytes(hashlib.sha256(f"cka:{dataset}".encode()).digest()[:8], "little")
    return np.sort(np.random.default_rng([seed, tag, n]).choice(n, size, replace=False))


def _subset_tag(subset: np.ndarray) -> str:
    """A name for the subset in the cache's entries: its size and a hash of its rows."""
    return f"{len(subset)}-{hashlib.sha256(np.ascontiguousarray(subset).tobytes()).hexdigest()[:16]}"


def run_gram(ctx: Context, key: RunKey, subset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Gram matrix of the run's centred features on ``subset`` (float32) and which of its rows count (valid,
    finite features); ``--cache`` keeps them, so a later report reads no features of this run."""
    def compute() -> tuple[np.ndarray, np.ndarray]:
        features = ctx.reader.features(key)[subset]
        ok = ctx.reader.valid(key)[subset] & np.isfinite(features).all(axis=1)
        x = np.where(ok[:, None], features, 0.0)
        x[ok] -= x[ok].mean(axis=0)
        # float32 halves the memory of the Grams kept for every pair; the sums over them run in float64.
        return centred_gram(x).astype(np.float32), ok

    gram, ok = ctx.summaries.derived(key, f"cka-gram-{_subset_tag(subset)}", compute)
    return gram, ok.astype(bool)


class _Grams:
    """Per model: the Gram matrix of its centred features on the subset and which rows count; its
    :class:`GramSide` for the point estimate and for the replicates, kept for its own rows (what a pair with a
    run that counts them all uses) and computed afresh for the rows of a pair with a run that counts fewer; and
    its own HSIC (CKA's denominator), which ``--cache`` keeps for its own rows, so that a later report computes
    the new model's only."""

    KEPT_MASKS = 8  # masks whose weights are kept (8 MB each at B = n = 1,000); a new one drops the oldest

    def __init__(self, ctx: Context, subset_tag: str, counts: np.ndarray | None):
        self.ctx, self.subset_tag, self.counts = ctx, subset_tag, counts  # counts: [B, subset rows] uint8, or None
        self.key: dict[str, RunKey] = {}
        self.gram: dict[str, np.ndarray] = {}
        self.ok: dict[str, np.ndarray] = {}
        self._weights: dict[bytes, tuple[HsicWeights, HsicWeights | None]] = {}
        self._sides: dict[str, tuple[GramSide, GramSide | None]] = {}
        self._self: dict[tuple, tuple[float, np.ndarray | None]] = {}

    def add(self, key: RunKey, gram: np.ndarray, ok: np.ndarray) -> None:
        self.key[key.model], self.gram[key.model], self.ok[key.model] = key, gram, ok

    def weights(self, mask: np.ndarray) -> tuple[HsicWeights, HsicWeights | None]:
        """The mask's weights for the point estimate, and for the replicates (None without a bootstrap)."""
        key = mask.tobytes()
        if key not in self._weights:
            if len(self._weights) >= self.KEPT_MASKS:
                self._weights.pop(next(iter(self._weights)))
            n = len(mask)
            reps = None if self.counts is None else hsic_weights(self.counts * mask.astype(np.float32), n, np.float32)
            self._weights[key] = (hsic_weights(mask, n, np.float32), reps)
        return self._weights[key]

    def _own(self, model: str, mask: np.ndarray) -> bool:
        """Whether ``mask`` is the model's own rows: what is computed on them is kept."""
        return np.array_equal(mask, self.ok[model])

    def sides(self, model: str, mask: np.ndarray) -> tuple[GramSide, GramSide | None]:
        own = self._own(model, mask)
        if own and model in self._sides:
            return self._sides[model]
        point, reps = self.weights(mask)
        k = self.gram[model]
        sides = (gram_side(k, point), None if reps is None else gram_side(k, reps))
        if own:  # 8 MB a model at B = n = 1,000; another mask's sides are rarely asked for twice
            self._sides[model] = sides
        return sides

    def hsic(self, a: str, b: str, mask: np.ndarray) -> tuple[float, np.ndarray | None]:
        """HSIC of the two models' Gram matrices on ``mask`` (value, replicates)."""
        (point_a, reps_a), (point_b, reps_b) = self.sides(a, mask), self.sides(b, mask)
        both = self.gram[a] * self.gram[b]
        return (float(hsic_of_sides(point_a, point_b, both)),
                None if reps_a is None else hsic_of_sides(reps_a, reps_b, both))

    def self_hsic(self, model: str, mask: np.ndarray) -> tuple[float, np.ndarray | None]:
        key = (model, mask.tobytes())
        if key not in self._self:
            if self._own(model, mask):  # the same rows in every report: kept by --cache
                boot = self.ctx.boot
                name = f"cka-self-{self.subset_tag}-{0 if self.counts is None else boot.n_boot}-{boot.seed}"
                value, reps = self.ctx.summaries.derived(self.key[model], name, lambda: self._self_arrays(model, mask))
                self._self[key] = (float(value), None if self.counts is None else reps)
            else:
                self._self[key] = self.hsic(model, model, mask)
        return self._self[key]

    def _self_arrays(self, model: str, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        value, reps = self.hsic(model, model, mask)
        return np.array(value), np.zeros(0) if reps is None else reps


def cka_pairs(ctx: Context, keys: list[RunKey]) -> list[Pair]:
    """Linear CKA of the pooled features of every pair of ``keys`` that stores features (one dataset).

    Not on ImageNet-C: its images are ImageNet val's, and its 75 cells would mean reading 75 times their
    features for a subset of 2,000 rows."""
    keys = [k for k in keys if k.dataset not in PER_IMAGE and ctx.reader.has_features(k)]
    if len(keys) < 2:
        return []
    dataset = keys[0].dataset
    n = ctx.reader.n_samples(dataset)
    subset = cka_subset(dataset, n, ctx.boot.seed)
    every = [(a, b) for i, a in enumerate(keys) for b in keys[i + 1:]]
    cache = _PairCache(ctx, every, "cka", dataset, n, len(subset))
    counts = ctx.boot.counts(dataset, n) if cache.todo else None
    grams = _Grams(ctx, _subset_tag(subset), None if counts is None else counts[:, subset])
    for key in dict.fromkeys(k for pair in cache.todo for k in pair):  # the runs still to compare
        grams.add(key, *run_gram(ctx, key, subset))
    out = []
    # Every core, though other studies' runs may still be read: a [B, n] @ [n, n] product keeps a second BLAS
    # thread busy (design.md, "Beside the reading threads").
    with threadpool_limits(usable_cores(), user_api="blas"):
        for a, b in cache.todo:
            mask = grams.ok[a.model] & grams.ok[b.model]
            xy, xy_reps = grams.hsic(a.model, b.model, mask)
            (xx, xx_reps), (yy, yy_reps) = grams.self_hsic(a.model, mask), grams.self_hsic(b.model, mask)
            reps = None if xy_reps is None else cka_from_hsic(xy_reps, xx_reps, yy_reps)
            out.append(Pair(a, b, "cka", float(cka_from_hsic(xy, xx, yy)), reps, int(mask.sum())))
    cache.keep(out)
    return cache.ordered(every)
