"""Read-only access to a store: what it holds, its sample tables, and its runs streamed block by block."""
from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property, lru_cache
from itertools import starmap
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import zarr

from schemas import integrity
from schemas import layout as L
from schemas.local_arrays import read_local, read_whole
from schemas.local_members import local_groups, local_members
from schemas.remote import is_url, reraise_network
from schemas.manifest import FORMER_STUDY_NAMES
from schemas.store import StoreError, check_root_attrs, metadata_errors, open_read_only

from .shard_blocks import NotReadHere, ShardBlocks


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
    # An object array of str: ids are only iterated and looked up, and a fixed-width copy of ImageNet-C's 3.75 M
    # would take 0.9 GB and seconds to make.
    sample_id: np.ndarray
    label: np.ndarray
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.sample_id)


class StoreReader:
    """Opens ``url`` (a path or fsspec URL) read-only and checks what the analysis relies on.

    Structural problems raise :class:`AnalysisError`; incomplete runs, all-invalid runs and NaN rows are
    noted in ``notes`` and the affected runs or rows left out. A done block whose chunks are missing or
    damaged is refused with an AnalysisError naming the path, the rows and the ``extract run --repair``
    that re-extracts it: chunk presence is checked when the store is opened, checksums when a block is
    read (crc32c over the decoded block, a few percent of the reading time).
    """

    def __init__(self, url: Any, *, storage_options: Mapping[str, Any] | None = None):
        self.url = str(url)
        # Reads in flight at once: object storage answers each request after a round trip, a disk at once.
        self.io_threads = 16 if is_url(self.url) else 3
        self.storage_options = dict(storage_options or {})
        try:
            self.root = open_read_only(url, storage_options=storage_options)
        except StoreError as e:
            raise AnalysisError(str(e)) from None
        try:
            check_root_attrs(dict(self.root.attrs), self.url)
        except StoreError as e:
            raise AnalysisError(str(e)) from None
        self.notes: list[str] = []
        self._samples: dict[str, Samples] = {}
        self._labels: dict[str, np.ndarray] = {}
        # Filled by discovery, which opens every array's metadata once: the per-block reads reuse them.
        self._n_samples: dict[str, int] = {}
        self._logits: dict[RunKey, zarr.Array] = {}
        self._shards: dict[RunKey, ShardBlocks | None] = {}  # the logits' blocks read without zarr, where they can be
        # Per run: its block_checksum array and the done blocks it has no checksum for (written before checksums).
        self._checksums: dict[RunKey, tuple[zarr.Array | None, frozenset[int]]] = {}
        self._arrays: dict[RunKey, frozenset[str]] = {}  # each run's array names, listed when it was inspected
        self._tables: dict[RunKey, np.ndarray] = {}
        # Attributes are read once: a study asks for them per row, and each read is a metadata request.
        self._attrs: dict[str, dict] = {}
        try:
            with metadata_errors(self.root, self.url):
                self._runs = self._discover()
        except StoreError as e:
            raise AnalysisError(str(e)) from None

    # -- discovery ------------------------------------------------------------------------------------
    def _require(self, group: zarr.Group, name: str, shape0: int | None, what: str,
                 members: Mapping[str, Any] | None = None) -> zarr.Array:
        path = f"{group.path}/{name}"
        node = group.get(name) if members is None else members.get(name)
        if not isinstance(node, zarr.Array):
            raise AnalysisError(f"{self.url}/{path}: missing array (expected {what})")
        if shape0 is not None and node.shape[0] != shape0:
            raise AnalysisError(f"{self.url}/{path}: {node.shape[0]} rows, expected {shape0} (the dataset's sample count)")
        return node

    def _discover(self) -> list[RunKey]:
        """Every complete run, in sorted order. On object storage runs are inspected concurrently: each inspection
        is a dozen small requests (metadata, listings, done flags) whose latency dominates."""
        found: list[tuple[RunKey, zarr.Group, int]] = []
        for name, dataset in _sorted_groups(self.root):
            if name.startswith("_"):
                continue
            sid = self._require(dataset, L.SAMPLE_ID, None, "sample ids [sample]")
            n = self._n_samples[name] = sid.shape[0]
            self._require(dataset, L.LABEL, n, "labels [sample] int32")
            self._refuse_damaged_dataset(name, integrity.check_dataset(dataset, quick=True))
            if "label_space" not in dataset.attrs:
                raise AnalysisError(f"{self.url}/{name}: missing attribute 'label_space' (the dataset's manifest entry)")
            self._attrs.setdefault(name, dict(dataset.attrs))
            for tname, transform in _sorted_groups(dataset):
                for mname, run in _sorted_groups(transform):
                    key = RunKey(name, tname, mname)
                    found.append((key, run, n))
                    self._attrs.setdefault(key.path, dict(run.attrs))  # listing read them: not asked for again
        if is_url(self.url):
            with ThreadPoolExecutor(max_workers=self.io_threads, thread_name_prefix="discover") as pool:
                incomplete = list(pool.map(lambda item: self._inspect_run(*item), found))  # in order: first error wins
        else:  # a local inspection is Python work on small files: threads only contend for the interpreter
            incomplete = list(starmap(self._inspect_run, found))
        self.notes += [note for note in incomplete if note]
        return [key for (key, _, _), note in zip(found, incomplete) if not note]

    def _inspect_run(self, key: RunKey, run: zarr.Group, n: int) -> str | None:
        """Check the run's arrays and its done blocks' chunks; a note for an incomplete run (left out)."""
        # Every child's metadata at once: from their files where the store is local, else one round trip through zarr.
        members = local_members(run) or dict(run.members())
        logits = self._require(run, L.LOGITS, n, "logits [sample, class]", members)
        if logits.ndim != 2:
            raise AnalysisError(f"{self.url}/{key.path}/logits: {logits.ndim} dimensions, expected 2 [sample, class]")
        self._require(run, L.VALID, n, "valid [sample] bool", members)
        done_array = self._require(run, L.BLOCK_DONE, len(L.Blocks(n)), "block_done [block] bool", members)
        done, _ = integrity.done_flags(run, done_array)
        if not done.all():
            return f"{key.path}: incomplete ({int(done.sum())} of {done.size} blocks done); left out"
        check = integrity.check_run(run, n, quick=True, flags=done, members=members)
        if check.damage:
            raise AnalysisError(self._damaged(key, check.damage))
        table = members.get(L.BLOCK_CHECKSUM) if check.has_checksums else None
        self._checksums[key] = (table, frozenset(check.unchecked))
        self._logits[key] = logits
        self._shards[key] = ShardBlocks.of(logits)
        self._arrays[key] = frozenset(members)
        return None

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
        return self._cached_attrs(dataset)

    def _cached_attrs(self, path: str) -> dict:
        """A node's attributes as the store held them when opened (datasets and runs) or first asked (a copy: callers
        may change it)."""
        return dict(self._kept_attrs(path))

    def _kept_attrs(self, path: str) -> dict:
        """The kept attributes themselves, for reads that copy only what they return."""
        if path not in self._attrs:
            self._attrs[path] = dict(self.root[path].attrs)
        return self._attrs[path]

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
        mark = self._kept_attrs(dataset).get("partial")  # asked once per result row: the attributes are not copied
        return dict(mark) if isinstance(mark, dict) else None

    def run_attrs(self, key: RunKey) -> dict:
        return self._cached_attrs(key.path)

    def n_samples(self, dataset: str) -> int:
        return int(self._n_samples[dataset])

    def samples(self, dataset: str) -> Samples:
        if dataset not in self._samples:
            values, damage = integrity.read_sample_list(self.root[dataset])
            self._refuse_damaged_dataset(dataset, damage)
            columns = {name: _plain(v) for name, v in values.items() if name not in (L.SAMPLE_ID, L.LABEL)}
            self._samples[dataset] = Samples(np.asarray(values[L.SAMPLE_ID]).astype(object, copy=False),
                                             np.asarray(values[L.LABEL]), columns)
            self._labels.pop(dataset, None)  # read again with the list: one copy kept
        return self._samples[dataset]

    def labels(self, dataset: str) -> np.ndarray:
        """The dataset's labels alone, without checking its sample list against its digest: ImageNet-C's 3.75 M
        sample ids take seconds to read and check, which the reading threads need not wait for. A result is used
        only after ``samples`` has checked the list (summaries.py asks for it before handing a run over)."""
        if dataset in self._samples:
            return self._samples[dataset].label
        if dataset not in self._labels:
            try:
                self._labels[dataset] = read_whole(self.root[dataset][L.LABEL])
            except Exception:  # noqa: BLE001 - a damaged chunk: the sample list's check names it
                self.samples(dataset)
                raise
        return self._labels[dataset]

    # -- arrays ---------------------------------------------------------------------------------------
    def valid(self, key: RunKey) -> np.ndarray:
        return self._read_run_array(key, L.VALID).astype(bool, copy=False)

    def blocks(self, key: RunKey) -> L.Blocks:
        """The run's row blocks: reading block by block keeps memory bounded whatever the store's size."""
        return L.Blocks(self.n_samples(key.dataset))

    def logits(self, key: RunKey, rows: slice) -> np.ndarray:
        shards = self._shards.get(key)
        return self._checked_logits(key, rows, shards.read(rows) if shards is not None else None)

    def _checked_logits(self, key: RunKey, rows: slice, values: np.ndarray | None = None) -> np.ndarray:
        """``values`` of ``rows`` (zarr's read where None, an error naming the rows when it fails) once they match
        the block's recorded checksum."""
        try:
            if values is None:
                values = self._logits[key][rows]
        except Exception as error:  # noqa: BLE001 - whatever the codec raises, the rows and the fix are named
            reraise_network(error, self.url)  # a network fault is not a damaged chunk
            raise AnalysisError(f"{self.url}/{key.path}/{L.LOGITS}: rows {rows.start}:{rows.stop} could not be read "
                                f"({type(error).__name__}: {error}); the chunk is damaged: "
                                f"{integrity.run_repair_hint(self.url, key.path)}") from error
        self._verify(key, L.LOGITS, rows, values)
        return values

    def logit_parts(self, key: RunKey, rows: slice) -> Iterator[tuple[slice, np.ndarray]]:
        """The run's logits of ``rows`` as ``(rows within them, values)``: a chunk at a time, each in this thread's
        buffer and valid until the next part, where the block is one shard on local disk (ShardBlocks.parts); else
        the block at once. The block's recorded checksum is checked over the parts after the last one, and a
        mismatch raises then: a caller keeps nothing from the parts until the iteration has ended. After a frame
        that does not decode, the whole block follows as zarr reads it (the parts before it are given again)."""
        shards = self._shards.get(key)
        parts = shards.parts(rows) if shards is not None else None
        if parts is not None:
            recorded, crc = self._recorded_checksum(key, L.LOGITS, rows), 0
            try:
                for part, values in parts:
                    if recorded is not None:
                        crc = integrity.extend_checksum(crc, values)
                    yield part, values
            except NotReadHere:
                pass
            else:
                if recorded is not None:
                    self._match(key, L.LOGITS, rows, recorded, crc)
                return
        values = self._checked_logits(key, rows)  # the shard read failed already: zarr's read names the damage
        yield slice(0, len(values)), values

    def invalid_reasons(self, key: RunKey, valid: np.ndarray) -> dict[str, int]:
        """Why the run's invalid rows are invalid: reason -> count (empty for runs written before reasons)."""
        group = self.root[key.path]
        if L.INVALID_REASON not in group or valid.all():
            return {}
        reasons = _plain(group[L.INVALID_REASON][...])[~valid]
        values, counts = np.unique(reasons, return_counts=True)
        return {str(v) or "no reason recorded": int(c) for v, c in zip(values, counts)}

    def has_features(self, key: RunKey) -> bool:
        """Whether the run stored pooled features (imported predictions have none)."""
        return L.FEATURES in (self._arrays[key] if key in self._arrays else self.root[key.path])

    def features(self, key: RunKey) -> np.ndarray:
        if not self.has_features(key):
            raise AnalysisError(f"{self.url}/{key.path}/features: missing array (the linear probes need pooled features)")
        return self._read_run_array(key, L.FEATURES).astype(np.float32)

    def _read_run_array(self, key: RunKey, name: str) -> np.ndarray:
        """A whole row array of a run, every block checked against its recorded checksum."""
        arr = self.root[key.path][name]
        try:
            values = read_whole(arr)
        except Exception as first:  # noqa: BLE001 - some chunk does not decode: find which, block by block
            reraise_network(first, self.url)
            where, error = "", first
            for rows in self.blocks(key):
                try:
                    arr[rows]
                except Exception as e:  # noqa: BLE001 - named with its rows and the fix
                    where, error = f"rows {rows.start}:{rows.stop} ", e
                    break
            raise AnalysisError(f"{self.url}/{key.path}/{name}: {where}could not be read ({type(error).__name__}: "
                                f"{error}); the chunk is damaged: {integrity.run_repair_hint(self.url, key.path)}") from first
        for rows in self.blocks(key):
            self._verify(key, name, rows, values[rows])
        return values

    def checksums(self, key: RunKey) -> np.ndarray | None:
        """The run's recorded block checksums ``[block, array]``, or None when some done block has none (written
        before checksums): with them, what the run holds is known without reading it."""
        table, unchecked = self._checksums.get(key, (None, frozenset()))
        return None if table is None or unchecked else self._recorded(key, table)

    def _verify(self, key: RunKey, name: str, rows: slice, values: np.ndarray) -> None:
        """Refuse a block whose values are not those whose checksum was recorded when it was written."""
        recorded = self._recorded_checksum(key, name, rows)
        if recorded is not None:
            self._match(key, name, rows, recorded, integrity.checksum(values))

    def _recorded_checksum(self, key: RunKey, name: str, rows: slice) -> int | None:
        """The checksum recorded for ``rows`` of the run's array ``name``; None when there is none to check against
        (written before checksums, or not a whole block)."""
        table, unchecked = self._checksums.get(key, (None, frozenset()))
        blocks = self.blocks(key)
        b = rows.start // blocks.rows
        if table is None or b in unchecked or blocks.slice(b) != rows or name not in table.attrs["arrays"]:
            return None
        return int(self._recorded(key, table)[b, list(table.attrs["arrays"]).index(name)])

    def _match(self, key: RunKey, name: str, rows: slice, recorded: int, found: int) -> None:
        if found != recorded:
            damage = integrity.Damage(f"{key.path}/{name}", rows.start // self.blocks(key).rows,
                                      (rows.start, rows.stop), integrity.mismatch(recorded, found))
            raise AnalysisError(self._damaged(key, [damage]))

    def _recorded(self, key: RunKey, table: zarr.Array) -> np.ndarray:
        """The run's whole checksum table, read once (one small read per block would cost more than the crc)."""
        if key not in self._tables:  # two threads may both read it: the same values, no harm
            try:
                local = read_local(table)  # a local store's table without zarr's event loop (None: zarr reads it)
                self._tables[key] = np.asarray(table[...]) if local is None else local
            except Exception as error:  # noqa: BLE001 - a damaged checksum chunk is a damaged run
                reraise_network(error, self.url)
                raise AnalysisError(self._damaged(key, [integrity.Damage(table.path, None, None, f"unreadable "
                                                        f"({type(error).__name__}: {error})")])) from error
        return self._tables[key]

    def _damaged(self, key: RunKey, damage: list[integrity.Damage]) -> str:
        lines = "; ".join(f"{self.url}/{path}: {line}" for path, line in integrity.describe(damage))
        return (f"{lines}; the analysis refuses a run whose done blocks are missing or damaged: "
                f"{integrity.run_repair_hint(self.url, key.path)}")

    def _refuse_damaged_dataset(self, dataset: str, damage: list[integrity.Damage]) -> None:
        if damage:
            lines = "; ".join(f"{self.url}/{path}: {line}" for path, line in integrity.describe(damage))
            raise AnalysisError(f"{lines}; {integrity.dataset_repair_hint(self.url, dataset)}")

    def datatree(self):
        """The whole store as an ``xarray.DataTree`` (lazy), for interactive use."""
        import xarray as xr

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The open store (with its storage options for a URL), not the URL again.
            return xr.open_datatree(self.root.store, engine="zarr", consolidated=False)


def _sorted_groups(group: zarr.Group) -> list[tuple[str, zarr.Group]]:
    """The group's sub-groups by name: read from their files where the store is local, else listed by zarr."""
    found = local_groups(group)
    return sorted((dict(group.groups()) if found is None else found).items())


def _plain(values) -> np.ndarray:
    """Variable-length strings come back as numpy's StringDType; fixed-width ``<U`` is what numpy's
    string routines (np.char, np.unique) take everywhere."""
    values = np.asarray(values)
    if values.dtype.kind == "T":  # numpy casts StringDType only to a stated width (a third faster than through objects)
        return values.astype(f"U{max(1, int(np.strings.str_len(values).max(initial=0)))}")
    return values.astype(str) if values.dtype.kind == "O" else values


@lru_cache(maxsize=1)
def manifest_entries() -> dict[str, dict]:
    """data_manifest.yaml's resolved entries by dataset id, in its order; empty when it cannot be read."""
    from schemas.manifest import ManifestError, load_manifest

    try:
        m = load_manifest()
    except (ManifestError, OSError):
        return {}
    return {d: m.dataset(d) for d in m.dataset_ids()}


def manifest_order(datasets: Iterable[str]) -> list[str]:
    """``datasets`` in data_manifest.yaml's order (the order the studies report them), unlisted ones last by name."""
    order = {d: i for i, d in enumerate(manifest_entries())}
    return sorted(datasets, key=lambda d: (order.get(d, len(order)), d))


def open_store(url: Any, *, storage_options: Mapping[str, Any] | None = None) -> StoreReader:
    """Open a store read-only for analysis; ``storage_options`` go to fsspec for a URL (``s3://``: endpoint_url,
    key, secret, ...; see ``schemas.remote``)."""
    return StoreReader(url, storage_options=storage_options)
