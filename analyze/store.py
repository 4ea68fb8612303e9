"""Read-only access to a store: what it holds, its sample tables, and its runs streamed block by block."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

import numpy as np
import zarr

from schemas import layout as L
from schemas.manifest import FORMER_STUDY_NAMES
from schemas.store import StoreError, check_root_attrs, open_read_only


class AnalysisError(ValueError):
    """The store cannot be analysed as asked; the message names the path and what was expected."""


@dataclass(frozen=True, order=True)
class RunKey:
    dataset: str
    transform: str
    model: str

    @property
    def path(self) -> str:
        return f"{self.dataset}/{self.transform}/{self.model}"


@dataclass(frozen=True)
class Samples:
    sample_id: np.ndarray
    label: np.ndarray
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.sample_id)


class StoreReader:
    """Opens ``url`` (a path or fsspec URL) read-only and checks what the analysis relies on.

    Structural problems raise :class:`AnalysisError`; incomplete runs, all-invalid runs and NaN rows are
    noted in ``notes`` and the affected runs or rows left out.
    """

    def __init__(self, url: Any):
        self.url = str(url)
        try:
            self.root = open_read_only(url)
        except StoreError as e:
            raise AnalysisError(str(e)) from None
        try:
            check_root_attrs(dict(self.root.attrs), self.url)
        except StoreError as e:
            raise AnalysisError(str(e)) from None
        self.notes: list[str] = []
        self._samples: dict[str, Samples] = {}
        # Filled by discovery, which opens every array's metadata once: the per-block reads reuse them.
        self._n_samples: dict[str, int] = {}
        self._logits: dict[RunKey, zarr.Array] = {}
        self._runs = self._discover()

    # -- discovery ------------------------------------------------------------------------------------
    def _require(self, group: zarr.Group, name: str, shape0: int | None, what: str) -> zarr.Array:
        path = f"{group.path}/{name}"
        node = group.get(name)
        if not isinstance(node, zarr.Array):
            raise AnalysisError(f"{self.url}/{path}: missing array (expected {what})")
        if shape0 is not None and node.shape[0] != shape0:
            raise AnalysisError(f"{self.url}/{path}: {node.shape[0]} rows, expected {shape0} (the dataset's sample count)")
        return node

    def _discover(self) -> list[RunKey]:
        runs: list[RunKey] = []
        for name, dataset in sorted(self.root.groups()):
            if name.startswith("_"):
                continue
            sid = self._require(dataset, L.SAMPLE_ID, None, "sample ids [sample]")
            n = self._n_samples[name] = sid.shape[0]
            self._require(dataset, L.LABEL, n, "labels [sample] int32")
            if "label_space" not in dataset.attrs:
                raise AnalysisError(f"{self.url}/{name}: missing attribute 'label_space' (the dataset's manifest entry)")
            for tname, transform in sorted(dataset.groups()):
                for mname, run in sorted(transform.groups()):
                    key = RunKey(name, tname, mname)
                    logits = self._require(run, L.LOGITS, n, "logits [sample, class]")
                    if logits.ndim != 2:
                        raise AnalysisError(f"{self.url}/{key.path}/logits: {logits.ndim} dimensions, expected 2 [sample, class]")
                    self._require(run, L.VALID, n, "valid [sample] bool")
                    done = np.asarray(self._require(run, L.BLOCK_DONE, len(L.Blocks(n)), "block_done [block] bool")[:])
                    if not done.all():
                        self.notes.append(f"{key.path}: incomplete ({int(done.sum())} of {done.size} blocks done); left out")
                        continue
                    self._logits[key] = logits
                    runs.append(key)
        return runs

    # -- what the store holds -------------------------------------------------------------------------
    def runs(self, dataset: str | None = None, transform: str | None = None) -> list[RunKey]:
        return [k for k in self._runs
                if (dataset is None or k.dataset == dataset) and (transform is None or k.transform == transform)]

    @cached_property
    def datasets(self) -> list[str]:
        return sorted({k.dataset for k in self._runs})

    @cached_property
    def models(self) -> list[str]:
        return sorted({k.model for k in self._runs})

    def transforms(self, dataset: str) -> list[str]:
        return sorted({k.transform for k in self._runs if k.dataset == dataset})

    def dataset_attrs(self, dataset: str) -> dict:
        return dict(self.root[dataset].attrs)

    def manifest_entry(self, dataset: str) -> dict:
        """The dataset's data_manifest.yaml entry as the store holds it, ``studies`` in today's study names.

        Stores written before the names were unified hold former spellings (``mistakes``...), mapped here;
        a store written without the field gets the bundled manifest's list (none for an unknown dataset).
        """
        entry = dict(self.dataset_attrs(dataset).get("manifest") or {})
        if "studies" in entry:
            entry["studies"] = [FORMER_STUDY_NAMES.get(s, s) for s in entry["studies"]]
        else:
            entry["studies"] = list(manifest_entries().get(dataset, {}).get("studies", []))
        return entry

    def partial(self, dataset: str) -> dict | None:
        """``{"found": n, "expected": m}`` for a dataset extracted with ``--allow-partial`` (fewer samples than
        its manifest declares); None for a whole dataset and for stores written before the mark existed."""
        mark = self.dataset_attrs(dataset).get("partial")
        return dict(mark) if isinstance(mark, dict) else None

    def run_attrs(self, key: RunKey) -> dict:
        return dict(self.root[key.path].attrs)

    def n_samples(self, dataset: str) -> int:
        return int(self._n_samples[dataset])

    def samples(self, dataset: str) -> Samples:
        if dataset not in self._samples:
            group = self.root[dataset]
            columns = {name: _plain(arr[:]) for name, arr in group.arrays() if name not in (L.SAMPLE_ID, L.LABEL)}
            self._samples[dataset] = Samples(_plain(group[L.SAMPLE_ID][:]), np.asarray(group[L.LABEL][:]), columns)
        return self._samples[dataset]

    # -- arrays ---------------------------------------------------------------------------------------
    def valid(self, key: RunKey) -> np.ndarray:
        return np.asarray(self.root[key.path][L.VALID][:], dtype=bool)

    def blocks(self, key: RunKey) -> L.Blocks:
        """The run's row blocks: reading block by block keeps memory bounded whatever the store's size."""
        return L.Blocks(self.n_samples(key.dataset))

    def logits(self, key: RunKey, rows: slice) -> np.ndarray:
        return self._logits[key][rows]

    def features(self, key: RunKey) -> np.ndarray:
        group = self.root[key.path]
        if L.FEATURES not in group:
            raise AnalysisError(f"{self.url}/{key.path}/features: missing array (the linear probes need pooled features)")
        return np.asarray(group[L.FEATURES][:], dtype=np.float32)

    def datatree(self):
        """The whole store as an ``xarray.DataTree`` (lazy), for interactive use."""
        import xarray as xr

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return xr.open_datatree(self.url, engine="zarr", consolidated=False)


def _plain(values) -> np.ndarray:
    """Variable-length strings come back as numpy's StringDType; fixed-width ``<U`` is what numpy's
    string routines (np.char, np.unique) take everywhere."""
    values = np.asarray(values)
    return values.astype(object).astype(str) if values.dtype.kind in "TO" else values


@lru_cache(maxsize=1)
def manifest_entries() -> dict[str, dict]:
    """data_manifest.yaml's resolved entries by dataset id, in its order; empty when it cannot be read."""
    from schemas.manifest import ManifestError, load_manifest

    try:
        m = load_manifest()
    except (ManifestError, OSError):
        return {}
    return {d: m.dataset(d) for d in m.dataset_ids()}


def open_store(url: Any) -> StoreReader:
    """Open a store read-only for analysis."""
    return StoreReader(url)
