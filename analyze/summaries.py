"""One streaming pass over a run's logits into the per-sample quantities every study uses.

The logits are read once, block by block (two blocks in flight on a thread pool: numpy's exp and zarr's
decompression both release the GIL), and reduced to a few numbers per sample. Only the summaries stay in
memory, so a store of any size is analysed in bounded memory.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from . import labels
from .metrics import shape_bias as sb
from .metrics.softmax import stable_exp, summarize
from .store import RunKey, StoreReader


@dataclass(frozen=True)
class RunSummary:
    key: RunKey
    pred: np.ndarray            # [sample] int32 predicted class (logit space), argmax over the class subset
    confidence: np.ndarray      # [sample] float64 max softmax probability (over the subset)
    p_true: np.ndarray          # [sample] float64 probability of the label (NaN when the label is not a logit class)
    valid: np.ndarray           # [sample] bool: read, and logits finite
    category_probs: np.ndarray | None = None   # [sample, 16] cue-conflict category mean probabilities

    def __len__(self) -> int:
        return len(self.pred)


def class_subset(entry: dict) -> np.ndarray | None:
    name = entry.get("class_subset")
    if name in ("imagenet-a-200", "imagenet-r-200"):
        return labels.subset_indices(name)
    return None


def labels_in_logit_space(entry: dict) -> bool:
    return entry.get("label_space", "imagenet-1k") == entry.get("logit_space", "imagenet-1k")


class _Pending:
    """A run whose summary is being filled block by block (each block writes its own rows)."""

    def __init__(self, reader: StoreReader, key: RunKey):
        self.reader, self.key = reader, key
        entry = reader.manifest_entry(key.dataset)
        entry.setdefault("label_space", reader.dataset_attrs(key.dataset).get("label_space"))
        samples = reader.samples(key.dataset)
        n = self.n = len(samples)
        self.label = samples.label if labels_in_logit_space(entry) else np.full(n, -1)
        self.subset = class_subset(entry)
        self.categories = (list(labels.cue_conflict_categories().values())
                           if entry.get("class_subset") == "cue-conflict-16" else None)
        self.pred = np.zeros(n, np.int32)
        self.conf = np.full(n, np.nan)
        self.p_true = np.full(n, np.nan)
        self.finite = np.zeros(n, bool)
        self.cat = np.full((n, len(self.categories)), np.nan) if self.categories else None

    def blocks(self) -> list[slice]:
        return list(self.reader.blocks(self.key))

    def reduce(self, rows: slice) -> None:
        block = self.reader.logits(self.key, rows)
        out = summarize(block, self.label[rows], self.subset)
        # A NaN or +inf logit makes the row's softmax sum NaN: no separate pass over the block is needed.
        ok = np.isfinite(out["confidence"])
        self.pred[rows], self.conf[rows], self.p_true[rows] = out["pred"], out["confidence"], out["p_true"]
        self.finite[rows] = ok
        if self.cat is not None:
            e, total = stable_exp(np.where(ok[:, None], block, 0.0))
            self.cat[rows] = sb.category_probabilities(e / total[:, None], self.categories)

    def finish(self) -> RunSummary:
        key, notes, n = self.key, self.reader.notes, self.n
        valid = self.reader.valid(key)
        if not valid.all() and valid.any():
            notes.append(f"{key.path}: {int((~valid).sum())} of {n} samples could not be read (valid=false); excluded")
        nan_rows = int((valid & ~self.finite).sum())
        if nan_rows:
            notes.append(f"{key.path}/logits: {nan_rows} rows marked valid hold NaN/inf logits; treated as invalid")
        valid &= self.finite
        if not valid.any():
            notes.append(f"{key.path}: every sample is invalid (valid is all false); left out")
        return RunSummary(key, self.pred, self.conf, self.p_true, valid, self.cat)


def summarize_runs(reader: StoreReader, keys: list[RunKey], threads: int = 3, progress: bool = False) -> dict[RunKey, RunSummary]:
    """Summaries of several runs, their blocks spread over one thread pool.

    Each task reads one block and reduces it, so reading (zarr's decompression) and the float64 softmax
    of different blocks overlap, across runs too; one thread more than cores covers the I/O waits.
    """
    pending = [_Pending(reader, key) for key in keys]
    tasks = [(p, rows) for p in pending for rows in p.blocks()]
    bar = None
    if progress and tasks:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), desc="reading logits", unit="block")
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(lambda task: task[0].reduce(task[1]), tasks):
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    return {p.key: p.finish() for p in pending}


def summarize_run(reader: StoreReader, key: RunKey) -> RunSummary:
    return summarize_runs(reader, [key])[key]


class SummaryCache:
    """Summaries computed on first use, kept for the studies that share them."""

    def __init__(self, reader: StoreReader):
        self.reader = reader
        self._cache: dict[RunKey, RunSummary] = {}

    def prefetch(self, keys: list[RunKey], progress: bool = False) -> None:
        """Summarise every run the studies will ask for in one parallel pass."""
        todo = [k for k in keys if k not in self._cache]
        self._cache.update(summarize_runs(self.reader, todo, progress=progress))

    def __call__(self, key: RunKey) -> RunSummary | None:
        if key not in self._cache:
            self._cache[key] = summarize_run(self.reader, key)
        summary = self._cache[key]
        return summary if summary.valid.any() else None
