"""One streaming pass over a run's logits into the per-sample quantities every study uses.

The logits are read once, block by block on a thread pool (the compiled exp and zarr's decompression
both release the GIL), and reduced to a few numbers per sample. Only the summaries stay in memory, so a
store of any size is analysed in bounded memory.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from schemas import logit_kinds

from . import labels
from .metrics import shape_bias as sb
from .metrics.softmax import decide, stable_exp, summarize
from .store import RunKey, StoreReader

# The studies that read a summary's probabilities (confidence, p_true); the others read its decisions. A dataset
# that none of these lists (data_manifest.yaml `studies`) is summarised to decisions, without the softmax of its
# logits: ImageNet-C's 3.75 M rows a run cost an argmax instead of an exp of every logit.
PROBABILITY_STUDIES = frozenset({"calibration", "invariance", "shape_bias"})


@dataclass(frozen=True)
class RunSummary:
    key: RunKey
    pred: np.ndarray            # [sample] int32 predicted class (logit space), argmax over the class subset
    confidence: np.ndarray | None  # [sample] float64 max softmax probability (over the subset); None: decisions only
    p_true: np.ndarray | None   # [sample] float64 probability of the label (NaN when the label is not a logit class)
    valid: np.ndarray           # [sample] bool: read, and logits finite
    category_probs: np.ndarray | None = None   # [sample, 16] cue-conflict category mean probabilities
    kind: str = logit_kinds.CLASSIFIER          # the run's logit kind (schemas.logit_kinds)
    category: np.ndarray | None = None          # [sample] cue-conflict 16-way decision, -1 for none

    def __len__(self) -> int:
        return len(self.pred)

    def provides(self, capability: str) -> bool:
        """Whether the run's logit kind supports ``capability`` (decision, confidence, probabilities, logits)."""
        return logit_kinds.provides(self.kind, capability)


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
        n = self.n = reader.n_samples(key.dataset)
        self.label = reader.labels(key.dataset) if labels_in_logit_space(entry) else np.full(n, -1)
        self.kind = logit_kinds.kind_name(reader.run_attrs(key).get("logit_kind"))
        self.full = logit_kinds.provides(self.kind, "probabilities")
        # A decision is the decision: restricting its argmax to a class subset would invent another one.
        self.subset = class_subset(entry) if self.full else None
        self.categories = (list(labels.cue_conflict_groups().values())
                           if entry.get("class_subset") == "cue-conflict-16" else None)
        # A 16-way category decision is the category of highest mean probability: it needs the softmax.
        self.decisions_only = not (set(entry.get("studies", ())) & PROBABILITY_STUDIES) and self.categories is None
        self.pred = np.zeros(n, np.int32)
        self.conf = None if self.decisions_only else np.full(n, np.nan)
        self.p_true = None if self.decisions_only else np.full(n, np.nan)
        self.finite = np.zeros(n, bool)
        self.cat = np.full((n, len(self.categories)), np.nan) if self.categories and self.full else None
        self.blocks = list(reader.blocks(key))
        self._left = len(self.blocks)
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._error: BaseException | None = None
        if not self.blocks:
            self._done.set()

    def reduce(self, rows: slice) -> None:
        try:
            if self._error is None:
                self._reduce(rows)
        except BaseException as error:  # kept for the thread that waits on this run
            self._error = error
        with self._lock:
            self._left -= 1
            if self._left == 0 or self._error is not None:
                self._done.set()

    def _reduce(self, rows: slice) -> None:
        # A chunk at a time; an AnalysisError naming the rows, after the last part, when the block is damaged.
        for part, block in self.reader.logit_parts(self.key, rows):
            at = slice(rows.start + part.start, rows.start + part.stop)
            if self.decisions_only:
                self.pred[at], self.finite[at] = decide(block, self.subset)
                continue
            out = summarize(block, self.label[at], self.subset)
            # A NaN or +inf logit makes the row's softmax sum NaN: no separate pass over the block is needed.
            ok = np.isfinite(out["confidence"])
            self.pred[at], self.conf[at], self.p_true[at] = out["pred"], out["confidence"], out["p_true"]
            self.finite[at] = ok
            if self.cat is not None:
                e, total = stable_exp(np.where(ok[:, None], block, 0.0))
                self.cat[at] = sb.category_probabilities(e / total[:, None], self.categories)

    def cancel(self) -> None:
        if not self._done.is_set():
            self._error = RuntimeError(f"{self.key.path}: summary cancelled (the analysis stopped)")
            self._done.set()

    def wait(self) -> RunSummary:
        self._done.wait()
        if self._error is not None:
            raise self._error
        key, notes, n = self.key, self.reader.notes, self.n
        self.reader.samples(key.dataset)  # the labels used above are those of a checked sample list
        valid = self.reader.valid(key)
        if not valid.all() and valid.any():
            why = self.reader.invalid_reasons(key, valid)
            because = "; ".join(f"{c} {r}" for r, c in sorted(why.items(), key=lambda x: -x[1])[:3]) or "valid=false"
            notes.append(f"{key.path}: {int((~valid).sum())} of {n} samples invalid ({because}); excluded")
        nan_rows = int((valid & ~self.finite).sum())
        if nan_rows:
            notes.append(f"{key.path}/logits: {nan_rows} rows marked valid hold NaN/inf logits; treated as invalid")
        valid &= self.finite
        if not valid.any():
            notes.append(f"{key.path}: every sample is invalid (valid is all false); left out")
        return RunSummary(key, self.pred, self.conf, self.p_true, valid, self.cat, self.kind, self._category())

    def _category(self) -> np.ndarray | None:
        """The 16-way cue-conflict decision: the category of highest mean probability when the run holds a
        distribution, else the category holding the decided class (-1 when none does)."""
        if self.categories is None:
            return None
        if self.cat is not None:
            return self.cat.argmax(axis=1)
        of_class = np.full(int(max(int(m.max()) for m in self.categories)) + 2, -1)
        for c, members in reversed(list(enumerate(self.categories))):  # the first category wins a shared class
            of_class[members] = c
        return of_class[np.clip(self.pred, 0, len(of_class) - 1)]


class SummaryCache:
    """Run summaries, computed in the background in the order the studies will ask for them.

    ``prefetch`` queues every block of every run on one thread pool: reading (zarr's decompression) and
    the softmax of different blocks overlap, across runs too, one thread more than cores covering the I/O
    waits. Meanwhile the studies run: asking for a run waits for that run's blocks only, so the studies'
    own work fills the cores the logits pass leaves idle.
    """

    def __init__(self, reader: StoreReader, threads: int = 3):
        self.reader, self.threads = reader, threads
        self._cache: dict[RunKey, RunSummary] = {}
        self._pending: dict[RunKey, _Pending] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._bar = None

    def prefetch(self, keys: list[RunKey], progress: bool = False) -> None:
        """Start summarising these runs, in this order, without waiting."""
        todo = [k for k in dict.fromkeys(keys) if k not in self._cache and k not in self._pending]
        if not todo:
            return
        if progress:
            from tqdm import tqdm

            blocks = sum(len(self.reader.blocks(k)) for k in todo)
            self._bar = tqdm(total=blocks, desc="reading logits", unit="block", position=0)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="logits")
        # Each run's blocks are queued as soon as the run is set up (its dataset's labels read): the threads start on
        # the first run while the next ones are set up.
        try:
            for key in todo:
                pending = self._pending[key] = _Pending(self.reader, key)
                for rows in pending.blocks:
                    future = self._pool.submit(pending.reduce, rows)
                    if self._bar is not None:
                        future.add_done_callback(lambda _: self._bar.update())
        except BaseException:  # a run that cannot be set up (labels that do not decode): the queued blocks are dropped
            self.close()
            raise

    def summary(self, key: RunKey) -> RunSummary:
        """The run's summary, all-invalid runs included (waits for a prefetched run's blocks)."""
        if key not in self._cache:
            if key not in self._pending:
                self.prefetch([key])
            self._cache[key] = self._pending.pop(key).wait()
        return self._cache[key]

    def derived(self, key: RunKey, name: str, compute):
        """A per-run result that needs more than the logits (``compute()``); ``--cache`` keeps it (report_cache.py)."""
        return compute()

    def __call__(self, key: RunKey) -> RunSummary | None:
        summary = self.summary(key)
        return summary if summary.valid.any() else None

    def finish(self) -> None:
        """Wait for every queued run (their notes on invalid rows count even if no study asked), then
        release the threads; on an error, queued blocks are dropped."""
        try:
            for key in list(self._pending):
                self.summary(key)
        finally:
            self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        for pending in self._pending.values():  # blocks dropped above: a later wait must not hang
            pending.cancel()
        if self._bar is not None:
            self._bar.close()
            self._bar = None
