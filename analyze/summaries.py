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


def summarize_run(reader: StoreReader, key: RunKey, threads: int = 2) -> RunSummary:
    entry = reader.manifest_entry(key.dataset)
    entry.setdefault("label_space", reader.dataset_attrs(key.dataset).get("label_space"))
    samples = reader.samples(key.dataset)
    label = samples.label if labels_in_logit_space(entry) else np.full(len(samples), -1)
    subset = class_subset(entry)
    categories = list(labels.cue_conflict_categories().values()) if entry.get("class_subset") == "cue-conflict-16" else None
    n = len(samples)
    pred = np.zeros(n, np.int32)
    conf = np.full(n, np.nan)
    p_true = np.full(n, np.nan)
    finite = np.zeros(n, bool)
    cat = np.full((n, len(categories)), np.nan) if categories else None

    def reduce(item):
        rows, block = item
        ok = np.isfinite(block).all(axis=1)
        block = np.where(ok[:, None], block, 0.0)
        out = summarize(block, label[rows], subset)
        if categories:
            e, s = stable_exp(block)
            return rows, ok, out, sb.category_probabilities(e / s[:, None], categories)
        return rows, ok, out, None

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for rows, ok, out, cat_block in pool.map(reduce, reader.logit_blocks(key)):
            pred[rows], conf[rows], p_true[rows], finite[rows] = out["pred"], out["confidence"], out["p_true"], ok
            if cat is not None:
                cat[rows] = cat_block
    valid = reader.valid(key)
    if not valid.all() and valid.any():
        reader.notes.append(f"{key.path}: {int((~valid).sum())} of {n} samples could not be read (valid=false); excluded")
    nan_rows = int((valid & ~finite).sum())
    if nan_rows:
        reader.notes.append(f"{key.path}/logits: {nan_rows} rows marked valid hold NaN/inf logits; treated as invalid")
    valid &= finite
    if not valid.any():
        reader.notes.append(f"{key.path}: every sample is invalid (valid is all false); left out")
    return RunSummary(key, pred, conf, p_true, valid, cat)


class SummaryCache:
    """Summaries computed on first use, kept for the studies that share them."""

    def __init__(self, reader: StoreReader):
        self.reader = reader
        self._cache: dict[RunKey, RunSummary] = {}

    def __call__(self, key: RunKey) -> RunSummary | None:
        if key not in self._cache:
            self._cache[key] = summarize_run(self.reader, key)
        summary = self._cache[key]
        return summary if summary.valid.any() else None
