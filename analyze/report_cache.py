"""``analyze report --cache DIR``: what a report computed per run, kept for the next report of a growing store.

A run is identified by its **token**: the sha256 of its fingerprint (what it was computed from), its recorded
block checksums (what it holds: a rerun with ``--retry-invalid`` or ``--overwrite`` changes them), its dataset's
manifest entry and sample digest, and the analysis version (the source of ``analyze/`` and ``schemas/``, their
bundled tables, numpy's and scikit-learn's versions). Runs without checksums (written before them) are never
cached. Under ``DIR/<token[:2]>/<token>/`` the cache keeps

- ``summary.arrays``: the run's per-sample summary (pred, valid, its logit kind; confidence and p_true unless the
  summary holds decisions only; cue-conflict category probabilities and decisions) and the notes reading it gave,
  so the logits are not read again;
- ``derived-<name>.arrays``: per-run results that need more than the logits (the VTAB probe's test-set correctness,
  CKA's Gram matrix of the run's features and its own HSIC);
- ``stats/<hash>.arrays``: the bootstrap replicates of each statistic the studies recorded over the run, keyed by
  the run token, the result's dataset, the resampled population and its size, the metric names, the number of
  replicates, the seed and the interval's level, with each metric's interval. The point estimates are
  recomputed from the summary (cheap); the replicates and intervals, the costly part, are reused. They are those
  of a report without the cache (the bootstrap weights depend only on the seed, the population and its size) up
  to float32 rounding: the one matrix product per population sums in an order that depends on how many
  statistics share it, i.e. on the other runs in the report;

and, outside the runs' folders, ``DIR/pairs/<hash[:2]>/<hash>.arrays``: one pair of runs' CKA (value, replicates,
image count), keyed by both run tokens, the metric, its population and the bootstrap, so that a report after adding
one model computes the new model's pairs only; and ``DIR/columns/<hash>.arrays``: per dataset, population and
bootstrap, the sums of error consistency's 0/1 columns (point and replicates), each named by the content of the two
rows it ANDs, so that the new model's columns are the only ones summed (one file a dataset: a file per pair would
cost more to read than the sums), and each pair's intervals, named by its four columns; and
``DIR/counts/<hash>.arrays``: each population's bootstrap counts (``[B, n]`` bytes), keyed by the seed, the
population, its size and B: drawing them costs more than reading them.

Each file holds named arrays and their CRC-32C (``analyze/array_file.py``: mapped into memory, not copied).

Every file is written to a temporary name and renamed, so a report stopped halfway, or two reports at once,
leave only whole entries. An entry that cannot be read is deleted and computed again.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from .array_file import read_arrays, write_arrays
from .bootstrap import Bootstrap
from .store import RunKey, StoreReader
from .summaries import RunSummary, SummaryCache

MARKER = "CACHE.txt"
_BOUNDS = "interval:"  # a replicates file's key prefix for a metric's interval
ROOT = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=1)
def analysis_version() -> str:
    """A hash of everything that decides what the analysis computes from a run."""
    from importlib.metadata import version  # not `import sklearn`: seconds, for its version only

    h = hashlib.sha256(f"numpy {np.__version__} scikit-learn {version('scikit-learn')}".encode())
    for package in ("analyze", "schemas"):
        for path in sorted((ROOT / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                h.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:32]


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()[:40]


class ReportCache:
    """The cache folder of ``analyze report --cache``, bound to one store's reader."""

    def __init__(self, folder: str | Path, reader: StoreReader):
        self.folder, self.reader = Path(folder), reader
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"--cache {self.folder}: exists and is not a folder")
        marker = self.folder / MARKER
        if self.folder.is_dir() and any(self.folder.iterdir()) and not marker.exists():
            raise ValueError(f"--cache {self.folder}: a folder that is not a report cache (no {MARKER}); "
                             "give an empty or new folder")
        if not marker.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            marker.write_text("Per-run summaries and bootstrap replicates of `analyze report --cache`; safe to delete.\n")
        self._tokens: dict[RunKey, str | None] = {}
        self._datasets: dict[str, str] = {}
        self.hits: set[RunKey] = set()      # runs whose summary came from the cache
        self.misses: set[RunKey] = set()    # runs read from the store (and then cached)

    # -- identities ------------------------------------------------------------------------------------------
    def token(self, key: RunKey) -> str | None:
        """The run's identity (see the module docstring); None for a run that cannot be cached."""
        if key not in self._tokens:
            fingerprint = self.reader.run_attrs(key).get("fingerprint")
            sums = self.reader.checksums(key)
            if not fingerprint or sums is None:
                self._tokens[key] = None
            else:
                self._tokens[key] = _digest(fingerprint, hashlib.sha256(np.ascontiguousarray(sums)).hexdigest(),
                                            self._dataset_part(key.dataset), key.path)
        return self._tokens[key]

    def _dataset_part(self, dataset: str) -> str:
        """What the dataset adds to its runs' tokens (its attributes are read once per report)."""
        if dataset not in self._datasets:
            attrs = self.reader.dataset_attrs(dataset)
            self._datasets[dataset] = _digest(self.reader.manifest_entry(dataset), attrs.get("label_space"),
                                              attrs.get("sample_digest"), analysis_version())
        return self._datasets[dataset]

    def _dir(self, token: str) -> Path:
        return self.folder / token[:2] / token

    def stat_token(self, key: RunKey, dataset: str, weight_key: str, n_rows: int, metrics: list[str],
                   boot: Bootstrap) -> str | None:
        """The identity of one statistic's replicates over the run (None when the run cannot be cached)."""
        run = self.token(key)
        if run is None:
            return None
        return f"{run}/stats/{_digest(dataset, weight_key, n_rows, sorted(metrics), boot.n_boot, boot.seed, boot.level)}"

    # -- files -----------------------------------------------------------------------------------------------
    def _write(self, path: Path, arrays: dict[str, np.ndarray]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".arrays")
        try:
            with os.fdopen(fd, "wb") as f:
                write_arrays(f, arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @staticmethod
    def _read(path: Path) -> dict[str, np.ndarray] | None:
        try:
            return read_arrays(path)
        except FileNotFoundError:
            return None
        except Exception:  # noqa: BLE001 - a damaged entry is computed again
            path.unlink(missing_ok=True)
            return None

    @staticmethod
    def _notes(notes: list[str]) -> np.ndarray:
        return np.array(notes, dtype=str) if notes else np.zeros(0, dtype="<U1")

    # -- run summaries ---------------------------------------------------------------------------------------
    def has_summary(self, key: RunKey) -> bool:
        token = self.token(key)
        return token is not None and (self._dir(token) / "summary.arrays").exists()

    def load_summary(self, key: RunKey) -> RunSummary | None:
        """The cached summary, its notes added to the reader's as reading the run would; None when absent."""
        token = self.token(key)
        data = None if token is None else self._read(self._dir(token) / "summary.arrays")
        if data is None:
            return None
        self.reader.notes.extend(str(n) for n in data["notes"])
        self.hits.add(key)
        return RunSummary(key, data["pred"], data.get("confidence"), data.get("p_true"), data["valid"],
                          data.get("category_probs"), str(data["kind"]), data.get("category"))

    def save_summary(self, key: RunKey, summary: RunSummary, notes: list[str]) -> None:
        token = self.token(key)
        self.misses.add(key)
        if token is None:
            return
        arrays = {"pred": summary.pred, "valid": summary.valid, "kind": np.array(summary.kind),
                  "notes": self._notes(notes)}
        # confidence and p_true: not in a summary of decisions only; the category arrays: cue-conflict only
        for name in ("confidence", "p_true", "category_probs", "category"):
            if getattr(summary, name) is not None:
                arrays[name] = getattr(summary, name)
        self._write(self._dir(token) / "summary.arrays", arrays)

    # -- results derived from more than the logits -------------------------------------------------------------
    def derived(self, key: RunKey, name: str, compute: Callable[[], tuple | None]) -> tuple | None:
        """``compute()`` (a tuple of arrays, or None), kept under the run's token; notes it adds are replayed."""
        token = self.token(key)
        path = None if token is None else self._dir(token) / f"derived-{name}.arrays"
        data = None if path is None else self._read(path)
        if data is not None:
            self.reader.notes.extend(str(n) for n in data["notes"])
            return tuple(data[f"a{i}"] for i in range(len(data) - 1))
        before = len(self.reader.notes)
        out = compute()
        if out is not None and path is not None:
            self._write(path, {**{f"a{i}": np.asarray(a) for i, a in enumerate(out)},
                               "notes": self._notes(self.reader.notes[before:])})
        return out

    # -- bootstrap replicates ----------------------------------------------------------------------------------
    def load_replicates(self, token: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None:
        """Each metric's replicates and its interval ``[low, high]`` as kept (the interval is what costs: a
        percentile per statistic); None when absent or written without intervals."""
        data = self._read(self.folder / token[:2] / f"{token}.arrays")
        if data is None:
            return None
        reps = {m: v for m, v in data.items() if not m.startswith(_BOUNDS)}
        bounds = {m[len(_BOUNDS):]: v for m, v in data.items() if m.startswith(_BOUNDS)}
        whole = set(bounds) == set(reps) and all(b.shape == (2,) for b in bounds.values())
        return (reps, bounds) if whole else None

    def save_replicates(self, token: str, reps: dict[str, np.ndarray], bounds: dict[str, tuple[float, float]]) -> None:
        self._write(self.folder / token[:2] / f"{token}.arrays",
                    {**{m: np.asarray(v, dtype=np.float64) for m, v in reps.items()},
                     **{_BOUNDS + m: np.asarray(b, dtype=np.float64) for m, b in bounds.items()}})

    # -- pairs of runs (the agreement study's CKA) ---------------------------------------------------------
    def pair_token(self, a: RunKey, b: RunKey, boot: Bootstrap, *what) -> str | None:
        """The identity of one pair's results: both runs' tokens, the bootstrap and what was computed over the
        pair (the metric, its population); None when either run cannot be cached."""
        ta, tb = self.token(a), self.token(b)
        if ta is None or tb is None:
            return None
        return _digest(ta, tb, boot.n_boot, boot.seed, *what)

    def _pair_path(self, token: str) -> Path:
        return self.folder / "pairs" / token[:2] / f"{token}.arrays"

    def load_pair(self, token: str) -> dict[str, np.ndarray] | None:
        return self._read(self._pair_path(token))

    def save_pair(self, token: str, arrays: dict[str, np.ndarray]) -> None:
        self._write(self._pair_path(token), arrays)

    def _shared_path(self, folder: str, what: tuple) -> Path:
        """The file of an entry shared by the runs (not under any run's token), named by ``what`` and the analysis
        version."""
        return self.folder / folder / f"{_digest(analysis_version(), *what)}.arrays"

    # -- error consistency's column sums (analyze/studies/_pairs.py) -------------------------------------------

    def load_columns(self, *what) -> dict[str, np.ndarray] | None:
        """The column sums kept for one dataset's population and bootstrap (``what``), or None."""
        return self._read(self._shared_path("columns", what))

    def save_columns(self, arrays: dict[str, np.ndarray], *what) -> None:
        self._write(self._shared_path("columns", what), arrays)

    # -- the bootstrap's counts (analyze/bootstrap.py) ------------------------------------------------------------
    def load_counts(self, what: tuple) -> np.ndarray | None:
        data = self._read(self._shared_path("counts", what))
        return None if data is None else data.get("counts")

    def save_counts(self, what: tuple, counts: np.ndarray) -> None:
        self._write(self._shared_path("counts", what), {"counts": counts})

    def summaries(self) -> "CachedSummaries":
        return CachedSummaries(self.reader, self, self.reader.io_threads)


class CachedSummaries(SummaryCache):
    """Run summaries from the cache where it has them; the other runs are read (in the background, as without the
    cache) and then kept in it."""

    def __init__(self, reader: StoreReader, cache: ReportCache, threads: int = 3):
        super().__init__(reader, threads)
        self.disk = cache

    def prefetch(self, keys: list[RunKey], progress: bool = False) -> None:
        super().prefetch([k for k in keys if k in self._pending or not self.disk.has_summary(k)], progress)

    def summary(self, key: RunKey) -> RunSummary:
        if key not in self._cache and key not in self._pending:
            hit = self.disk.load_summary(key)
            if hit is not None:
                self._cache[key] = hit
                return hit
        fresh = key not in self._cache
        before = len(self.reader.notes)
        out = super().summary(key)
        if fresh:
            self.disk.save_summary(key, out, self.reader.notes[before:])
        return out

    def derived(self, key: RunKey, name: str, compute: Callable[[], tuple | None]) -> tuple | None:
        return self.disk.derived(key, name, compute)
