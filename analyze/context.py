"""What a study gets: the store, cached run summaries, the bootstrap, and where its results go."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .bootstrap import Bootstrap
from .metrics import DeferredWeights, ProductBatch
from .store import RunKey, StoreReader, manifest_order
from .summaries import SummaryCache

# partial: the number comes from a dataset extracted with --allow-partial (fewer samples than declared).
RESULT_COLUMNS = ("model", "dataset", "transform", "metric", "value", "ci_low", "ci_high", "n", "partial")
DIFF_COLUMNS = ("model_a", "model_b", "dataset", "transform", "metric", "diff", "ci_low", "ci_high", "n", "partial")

# A statistic: given bootstrap weights over the dataset's rows (None for the point estimate), its values.
# It is evaluated again later for its replicates, so it must bind the per-run arrays it uses (default
# arguments), not refer to loop variables.
Statistic = Callable[[np.ndarray | None], dict[str, np.ndarray]]


def select(weights, rows: np.ndarray | None):
    """Weights restricted to a boolean row mask (no copy when every row is kept)."""
    if weights is None or rows is None or rows.all():
        return weights
    if isinstance(weights, DeferredWeights):
        return weights.restrict(rows)
    return weights[:, rows]


@dataclass
class Section:
    """A part of report.md: a title, markdown body and figure paths relative to the output folder."""

    title: str
    body: str
    figures: list[str] = field(default_factory=list)


class _Sections(list):
    """report.md's sections; each one gets a note naming the partial datasets its numbers come from."""

    def __init__(self, ctx: "Context", items=()):
        super().__init__(items)
        self._ctx = ctx

    def append(self, section: Section) -> None:
        note = self._ctx.partial_note()
        if note:
            section.body = f"{note}\n\n{section.body}"
        super().append(section)


@dataclass
class Context:
    reader: StoreReader
    out_dir: Path
    boot: Bootstrap = field(default_factory=Bootstrap)
    _rows: list[dict] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    replicates: dict[tuple, np.ndarray] = field(default_factory=dict)
    summaries: SummaryCache = None  # type: ignore[assignment]
    # analyze report --cache: replicates of statistics over runs an earlier report saw (report_cache.ReportCache)
    cache: Any = None
    _index: dict[tuple, dict] = field(default_factory=dict, repr=False)
    _by_run: dict[tuple, dict[str, float]] = field(default_factory=dict, repr=False)  # (model, dataset, transform)
    # Statistics waiting for their bootstrap replicates: one ProductBatch per sample population.
    _batches: dict[tuple, ProductBatch] = field(default_factory=dict, repr=False)
    _pending: list[tuple] = field(default_factory=list, repr=False)
    _recorded: set[str] = field(default_factory=set, repr=False)  # store datasets recorded since the last section
    # What several studies derive from the same sample table, derived once per report (studies/_common.py).
    shared: dict[tuple, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.summaries is None:
            self.summaries = SummaryCache(self.reader, threads=self.reader.io_threads)
        self.sections = _Sections(self, self.sections)
        (self.out_dir / "figures").mkdir(parents=True, exist_ok=True)

    @property
    def rows(self) -> list[dict]:
        """Every tidy row so far, intervals filled (pending replicates are computed first)."""
        self.flush()
        return self._rows

    def datasets_for(self, study: str) -> list[str]:
        """The store's datasets whose manifest entry lists ``study``, in data_manifest.yaml's order."""
        return manifest_order(d for d in self.reader.datasets if study in self.reader.manifest_entry(d)["studies"])

    def is_partial(self, dataset: str) -> bool:
        """The store's ``dataset`` was extracted with --allow-partial."""
        return self.reader.partial(dataset) is not None

    def partial_note(self) -> str:
        """A note on the partial datasets recorded since the last section ("" when none); starts afresh."""
        marks = {d: self.reader.partial(d) for d in sorted(self._recorded)}
        self._recorded = set()
        parts = [f"`{d}` holds {m['found']} of its {m['expected']} samples" for d, m in marks.items() if m]
        if not parts:
            return ""
        return (f"**Partial data:** {'; '.join(parts)} (extracted with `--allow-partial`). Its numbers here are "
                f"not the whole dataset's; results.csv flags them `partial`.")

    def figure_path(self, name: str) -> Path:
        return self.out_dir / "figures" / f"{name}.png"

    def record(self, key: RunKey, stat: Statistic, n: int | dict[str, int], *, weight_key: str | None = None,
               n_rows: int | None = None, dataset: str | None = None) -> dict[str, float]:
        """Evaluate ``stat`` (point estimate and bootstrap replicates) and add one tidy row per metric.

        ``weight_key``/``n_rows`` name the sample population the bootstrap resamples (default: the run's
        dataset and its full sample count); ``dataset`` overrides the dataset column (ImageNet-ReaL rows live
        on ImageNet val's samples). ``n``: the sample count behind every metric, or a dict per metric.
        """
        existing = self._by_run.setdefault((key.model, dataset or key.dataset, key.transform), {})
        self._recorded.add(key.dataset)
        weight_key = weight_key or key.dataset
        n_rows = n_rows if n_rows is not None else self.reader.n_samples(key.dataset)
        values = stat(None)
        if set(values) <= set(existing):  # another study already recorded these (e.g. top-1 at center)
            return {m: existing[m] for m in values}
        out, new_rows = {}, {}
        for metric, value in values.items():
            if metric in existing:
                out[metric] = existing[metric]
                continue
            row = {"model": key.model, "dataset": dataset or key.dataset, "transform": key.transform,
                   "metric": metric, "value": float(value), "ci_low": float("nan"), "ci_high": float("nan"),
                   "n": int(n[metric] if isinstance(n, dict) else n), "partial": self.is_partial(key.dataset)}
            self._rows.append(row)
            self._index[(key.model, row["dataset"], key.transform, metric)] = row
            existing[metric] = row["value"]
            new_rows[metric] = row
            out[metric] = float(value)
        if self.boot.n_boot > 0:
            token = (self.cache.stat_token(key, dataset or key.dataset, weight_key, n_rows, list(new_rows), self.boot)
                     if self.cache is not None else None)
            known = self.cache.load_replicates(token) if token else None
            if known is not None and set(known[0]) == set(new_rows):
                self._fill(new_rows, *known)
                return out
            batch = self._batches.setdefault((weight_key, n_rows), ProductBatch(n_rows, self.boot.n_boot))
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                stat(DeferredWeights(batch))  # records the sums the replicates need
            self._pending.append((batch, stat, new_rows, token))
        return out

    def flush(self) -> None:
        """Compute the bootstrap replicates of every statistic recorded so far and fill their intervals."""
        for (weight_key, n_rows), batch in self._batches.items():
            batch.compute(self.boot.counts(weight_key, n_rows))
        for batch, stat, rows, token in self._pending:
            reps = stat(DeferredWeights(batch))
            bounds = self._fill(rows, reps)
            if token:
                self.cache.save_replicates(token, {m: reps[m] for m in rows}, bounds)
        self._batches, self._pending = {}, []

    def _fill(self, rows: dict[str, dict], reps: dict[str, np.ndarray],
              bounds: Mapping[str, Sequence[float]] | None = None) -> dict[str, tuple[float, float]]:
        """The intervals of ``rows`` (from their replicates, or ``bounds`` where kept); the replicates kept for
        paired differences. Returns the intervals."""
        out = {}
        for metric, row in rows.items():
            low, high = self.boot.interval(reps.get(metric)) if bounds is None else map(float, bounds[metric])
            row["ci_low"], row["ci_high"] = out[metric] = low, high
            self.replicates[(row["dataset"], row["transform"], metric, row["model"])] = (
                row["value"], reps[metric], row["n"])
        return out

    def paired_differences(self, pairs: list[tuple[str, str]]) -> list[dict]:
        """Model A minus model B for every metric both have, with a paired-bootstrap interval (NaN without
        replicates, ``--n-boot 0``)."""
        self.flush()
        out = []
        partners: dict[str, list[str]] = {}  # by model A: linear in the results, however many pairs
        for a, b in pairs:
            partners.setdefault(a, []).append(b)
        mine = (item for item in self._index.items() if item[0][0] in partners)  # not every row of every model
        for (a, dataset, transform, metric), row in sorted(mine, key=lambda item: item[0][1:]):
            for b in partners.get(a, ()):
                other = self._index.get((b, dataset, transform, metric))
                if other is None:
                    continue
                reps = [self.replicates.get((dataset, transform, metric, m), (None, None))[1] for m in (a, b)]
                low, high = (self.boot.interval(np.asarray(reps[0]) - np.asarray(reps[1]))
                             if all(r is not None for r in reps) else (float("nan"), float("nan")))
                out.append({"model_a": a, "model_b": b, "dataset": dataset, "transform": transform, "metric": metric,
                            "diff": row["value"] - other["value"], "ci_low": low, "ci_high": high,
                            "n": min(row["n"], other["n"]), "partial": row["partial"] or other["partial"]})
        return out

    def value(self, model: str, dataset: str, transform: str, metric: str) -> dict | None:
        return self._index.get((model, dataset, transform, metric))
