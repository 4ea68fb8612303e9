"""Pairwise agreement on one dataset: error consistency of per-image correctness, linear CKA of pooled features.

Both are computed for every pair of runs under ``center`` and bootstrapped with the report's replicates of that
dataset (``Bootstrap.counts``), so their intervals come from the same resamples as every other number.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..context import Context
from ..metrics import weighted_product
from ..metrics.accuracy import correct_multi, correct_single
from ..metrics.agreement import KAPPA_METRICS, centred_gram, cka_from_hsic, consistency_from_sums, weighted_hsic
from ..store import RunKey
from ..summaries import labels_in_logit_space
from ._common import PER_IMAGE, population

# CKA compares Gram matrices over a fixed random subset of the images (the same for every model of a dataset):
# its replicates cost B * n^2 per pair (2 GFLOP at n = 1000, B = 1000), while linear CKA on n images reads high
# by about d / (n + d) for unrelated features of effective dimension d: a trade-off, documented in design.md.
CKA_IMAGES = 1000
PAIR_BATCH = 128  # pairs whose bootstrap sums share one product with the weight matrix


@dataclass
class Pair:
    """One pair's value and bootstrap replicates (None without a bootstrap) for each metric."""

    a: RunKey
    b: RunKey
    metric: str
    value: float
    reps: np.ndarray | None
    n: int


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


def _batches(pairs: list, size: int = PAIR_BATCH) -> Iterator[list]:
    for start in range(0, len(pairs), size):
        yield pairs[start:start + size]


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
                                          int(data["n"]))
        self.todo = [p for p in pairs if p not in self.known]

    def keep(self, found: list[Pair]) -> None:
        """Cache the computed pairs."""
        for pair in found:
            token = self.tokens.get((pair.a, pair.b))
            if token:
                arrays = {"metric": np.array(pair.metric), "value": np.array(pair.value), "n": np.array(pair.n)}
                if pair.reps is not None:
                    arrays["reps"] = np.asarray(pair.reps, dtype=np.float64)
                self.ctx.cache.save_pair(token, arrays)
            self.known[(pair.a, pair.b)] = pair

    def ordered(self, pairs: list[tuple[RunKey, RunKey]]) -> list[Pair]:
        return [self.known[ab] for ab in pairs]


def error_consistency_pairs(ctx: Context, keys: list[RunKey]) -> list[Pair]:
    """Error consistency (kappa, observed and expected consistency) of every pair of ``keys`` (one dataset).

    A pair needs four sums over the images both runs decided (``consistency_columns``): the count, each
    run's hits and their common hits. Only the last is the pair's own: the others are shared by every pair
    with the same rows, so a batch of pairs is one ``[B, n] @ [n, k]`` product with k about one column per
    pair (exact in float32: the sums are integers below 2^24).
    """
    hits = {k: c for k in keys if (c := correctness(ctx, k)) is not None}
    keys = [k for k in keys if k in hits]
    if len(keys) < 2:
        return []
    weight_key, n_rows, image = population(ctx, keys[0].dataset)
    counts = ctx.boot.counts(weight_key, n_rows)
    masks: dict[bytes, int] = {}  # the distinct row sets of the pairs, numbered
    out = []
    # Not cached (--cache): a few products over all pairs cost less than reading a file per pair.
    for chunk in _batches([(a, b) for i, a in enumerate(keys) for b in keys[i + 1:]]):
        columns: dict[tuple, np.ndarray] = {}

        def column(name: tuple, values: np.ndarray) -> tuple:
            if name not in columns:  # per-image datasets: the sum over each image's cells
                columns[name] = (values if image is None else np.bincount(image, values, minlength=n_rows)
                                 ).astype(np.float32)
            return name

        layout = []
        for a, b in chunk:
            rows = hits[a].counted & hits[b].counted
            mask = masks.setdefault(rows.tobytes(), len(masks))
            hit_a, hit_b = hits[a].correct & rows, hits[b].correct & rows
            layout.append((a, b, int(rows.sum()), [column(("n", mask), rows), column(("hit", a.model, mask), hit_a),
                                                   column(("hit", b.model, mask), hit_b),
                                                   column(("both", a.model, b.model), hit_a & hit_b)]))
        where = {name: i for i, name in enumerate(columns)}
        x = np.stack(list(columns.values()), axis=1)
        point = x.sum(axis=0, dtype=np.float64)
        reps = None if counts is None else weighted_product(counts, x).astype(np.float64)
        for a, b, n, names in layout:
            index = [where[name] for name in names]
            value = consistency_from_sums(point[index])
            rep = None if reps is None else consistency_from_sums(reps[:, index])
            out += [Pair(a, b, m, float(value[m]), None if rep is None else rep[m], n) for m in KAPPA_METRICS]
    return out


def cka_subset(dataset: str, n: int, seed: int, size: int | None = None) -> np.ndarray:
    """The sorted rows CKA is computed on: all of them, or ``size`` (default ``CKA_IMAGES``) drawn without
    replacement, fixed by the seed, the dataset and its size (the same rows for every model)."""
    size = CKA_IMAGES if size is None else size
    if n <= size:
        return np.arange(n)
    tag = int.from_bytes(hashlib.sha256(f"cka:{dataset}".encode()).digest()[:8], "little")
    return np.sort(np.random.default_rng([seed, tag, n]).choice(n, size, replace=False))


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

    name = f"cka-gram-{len(subset)}-{hashlib.sha256(np.ascontiguousarray(subset).tobytes()).hexdigest()[:16]}"
    gram, ok = ctx.summaries.derived(key, name, compute)
    return gram, ok.astype(bool)


class _Grams:
    """Per model: the Gram matrix of its centred features on the subset, and ``w K`` per mask (cached)."""

    def __init__(self, counts: np.ndarray | None):
        self.counts = counts  # [B, subset] uint8 bootstrap counts, or None
        self.gram: dict[str, np.ndarray] = {}
        self.ok: dict[str, np.ndarray] = {}
        self._weights: dict[bytes, np.ndarray] = {}
        self._wk: dict[tuple, np.ndarray] = {}
        self._self: dict[tuple, tuple[float, np.ndarray | None]] = {}

    def add(self, model: str, gram: np.ndarray, ok: np.ndarray) -> None:
        self.gram[model], self.ok[model] = gram, ok

    def weights(self, mask: np.ndarray) -> np.ndarray | None:
        if self.counts is None:
            return None
        key = mask.tobytes()
        if key not in self._weights:
            self._weights[key] = self.counts * mask.astype(np.float32)
        return self._weights[key]

    def wk(self, model: str, mask: np.ndarray, weights: np.ndarray) -> np.ndarray:
        key = (model, mask.tobytes())
        if key not in self._wk:
            self._wk[key] = weights @ self.gram[model]
        return self._wk[key]

    def self_hsic(self, model: str, mask: np.ndarray) -> tuple[float, np.ndarray | None]:
        key = (model, mask.tobytes())
        if key not in self._self:
            k = self.gram[model]
            value = float(weighted_hsic(k.astype(np.float64), k.astype(np.float64), mask.astype(np.float64)))
            w = self.weights(mask)
            reps = None if w is None else weighted_hsic(k, k, w, kw=self.wk(model, mask, w), lw=self.wk(model, mask, w))
            self._self[key] = (value, reps)
        return self._self[key]


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
    grams = _Grams(None if counts is None else counts[:, subset])
    for key in dict.fromkeys(k for pair in cache.todo for k in pair):  # the runs still to compare
        grams.add(key.model, *run_gram(ctx, key, subset))
    out = []
    for a, b in cache.todo:
        mask = grams.ok[a.model] & grams.ok[b.model]
        k, l = grams.gram[a.model], grams.gram[b.model]
        xy = weighted_hsic(k.astype(np.float64), l.astype(np.float64), mask.astype(np.float64))
        (xx, xx_reps), (yy, yy_reps) = grams.self_hsic(a.model, mask), grams.self_hsic(b.model, mask)
        reps = None
        w = grams.weights(mask)
        if w is not None:
            xy_reps = weighted_hsic(k, l, w, kw=grams.wk(a.model, mask, w), lw=grams.wk(b.model, mask, w))
            reps = cka_from_hsic(xy_reps, xx_reps, yy_reps)
        out.append(Pair(a, b, "cka", float(cka_from_hsic(xy, xx, yy)), reps, int(mask.sum())))
    cache.keep(out)
    return cache.ordered(every)
