"""The reader base: SampleTable, the DatasetReader protocol, the shared Reader class and column coercion.

A layout's reader subclasses Reader and implements ``_scan`` (ids, labels, columns and a location
per sample, in any order); Reader sorts by sample_id, checks uniqueness, coerces the columns to the
manifest's dtypes and reads bytes by location. No torch at import.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol, runtime_checkable

import numpy as np

from schemas import label_spaces
from schemas import manifest as M

from .decode import IMAGE_EXTENSIONS
from .handles import HandleCache

# What a reader's _scan returns: sample ids, labels, columns (name -> values) and one location per sample.
Scan = tuple[list[str], list[int], dict[str, list], list]


@dataclass
class SampleTable:
    """The sample list of a dataset, in the dataset's stable order (sorted by sample_id).

    sample_id: object array of str; label: int32 (-1 = none); columns: name -> array of the
    dtype the manifest declares (str columns as object arrays; label lists as [n, K] int arrays
    padded with -1).
    """

    sample_id: np.ndarray
    label: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ids = np.asarray(self.sample_id)
        if ids.dtype != object:
            ids = ids.astype(str).astype(object)
        self.sample_id = ids
        self.label = np.asarray(self.label, dtype=np.int32)
        n = len(self.sample_id)
        if self.label.shape != (n,):
            raise ValueError(f"label has shape {self.label.shape}, expected ({n},)")
        for name, values in self.columns.items():
            if len(values) != n:
                raise ValueError(f"column {name!r} has {len(values)} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.sample_id)

    def digest(self) -> str:
        """sha256 (32 hex) over the ordered sample ids, labels and columns: schemas.store.sample_digest."""
        from schemas.store import sample_digest

        return sample_digest(self.sample_id, self.label, self.columns)

    def index(self, sample_id: str) -> int:
        """Position of a sample id (binary search: the table is sorted)."""
        i = int(np.searchsorted(self.sample_id, sample_id))
        if i >= len(self) or self.sample_id[i] != sample_id:
            raise KeyError(sample_id)
        return i


@runtime_checkable
class DatasetReader(Protocol):
    dataset_id: str
    entry: dict

    def samples(self) -> SampleTable: ...

    def read_bytes(self, index: int) -> bytes: ...


def short(items: Iterable[Any], k: int = 5) -> str:
    """The first ``k`` items for a message, with the total when there are more."""
    items = list(items)
    s = ", ".join(repr(x) for x in items[:k])
    return s + (f", ... ({len(items)} in all)" if len(items) > k else "")


def list_images(directory: Path, exts: tuple[str, ...]) -> list[str]:
    """Sorted names of the image files (by extension, hidden ones skipped) in ``directory``.

    A broken symbolic link with an image's name is refused (FileNotFoundError naming it): skipped, the
    dataset would silently lack a sample; listed, its read would stop the run hours in."""
    with os.scandir(directory) as it:
        entries = [e for e in it if not e.name.startswith(".") and e.name.lower().endswith(exts)]
    broken = sorted(e.path for e in entries if e.is_symlink() and not os.path.exists(e.path))
    if broken:
        raise FileNotFoundError(f"{broken[0]}: a broken symbolic link (its target {os.readlink(broken[0])} does not "
                                f"exist){f', and {len(broken) - 1} more in {directory}' if len(broken) > 1 else ''}; "
                                "restore the targets or remove the links, then rerun")
    return sorted(e.name for e in entries if e.is_file())


def list_dirs(directory: Path) -> list[str]:
    """Sorted names of the folders (hidden ones skipped) in ``directory``."""
    with os.scandir(directory) as it:
        return sorted(e.name for e in it if not e.name.startswith(".") and e.is_dir())


def coerce_columns(cols: dict[str, list], n: int, declared: dict[str, str], *, dataset_id: str, kind: str,
                   manifest_path: str) -> dict[str, np.ndarray]:
    """Per-sample column values (from the ``kind`` reader) to arrays of the dtypes the manifest declares;
    label lists become [n, K] arrays padded with -1."""
    where = f"{manifest_path}: datasets.{dataset_id}.columns"
    extra = set(cols) - set(declared)
    if extra:
        raise ValueError(f"dataset {dataset_id!r}: the {kind} reader produces columns {sorted(extra)} "
                         f"that {where} does not declare")
    out: dict[str, np.ndarray] = {}
    for name, dtype in declared.items():
        at = f"{where}.{name}"
        if name not in cols:
            raise ValueError(f"{at}: declared, but the {kind} reader with this layout does not produce it")
        base, width = M.parse_column_dtype(str(dtype))
        values = cols[name]
        if width is not None:
            lists = [list(v) for v in values]
            k = max((len(v) for v in lists), default=0) if width == 0 else width
            k = max(k, 1)
            arr = np.full((n, k), -1, dtype=base)
            for i, v in enumerate(lists):
                if len(v) > k:
                    raise ValueError(f"{at}: sample {i} has {len(v)} entries, more than the {k} of {dtype!r}")
                if v:
                    arr[i, : len(v)] = v
            out[name] = arr
        elif base == "str":
            arr = np.empty(n, dtype=object)
            arr[:] = ["" if v is None else str(v) for v in values]
            out[name] = arr
        else:
            try:
                out[name] = np.asarray(values, dtype=base)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{at}: values cannot be read as {dtype} ({e}); "
                                 "fix the data or declare the column as str") from None
    return out


class Reader:
    """Shared machinery: root checks, sorting, column coercion, lazy per-process file handles.

    Subclasses set ``kind`` and implement ``_scan``; ``_probe`` checks cheaply that the layout is
    there, ``_read_loc`` reads one location (default: a path relative to the root).
    """

    kind = ""

    def __init__(self, dataset_id: str, entry: dict, layout: dict, data_root: str | Path, *,
                 where: str = "layout", manifest_path: str | Path | None = None):
        self.dataset_id = dataset_id
        self.entry = entry
        self.layout = dict(layout)
        self.data_root = Path(data_root).expanduser()
        self.where = where  # "layout" or "layout.alternatives[i]"
        self.manifest_path = str(manifest_path or "data_manifest.yaml")
        p = Path(str(self.layout["path"])).expanduser()
        self.root = Path(os.path.abspath(p if p.is_absolute() else self.data_root / p))
        self.exts = tuple(e.lower() if e.startswith(".") else "." + e.lower()
                          for e in self.layout.get("extensions", IMAGE_EXTENSIONS))
        self.notes: list[str] = []
        self._table: SampleTable | None = None
        self._locs: list | None = None
        self._handles = HandleCache()
        if not self.root.is_dir():
            raise self._missing(self.root, "path",
                                "does not exist" if not self.root.exists() else "is not a directory")
        self._probe()

    # -- messages
    def field(self, name: str) -> str:
        """The manifest field ``name`` of this layout, for messages."""
        return f"{self.manifest_path}: datasets.{self.dataset_id}.{self.where}.{name}"

    def _missing(self, path: Path, fld: str, what: str = "does not exist") -> FileNotFoundError:
        val = self.layout.get(fld)
        rel = f" relative to --data-root {self.data_root}" if fld == "path" else f" under {self.root}"
        return FileNotFoundError(
            f"dataset {self.dataset_id!r}: {path} {what} ({self.field(fld)} = {val!r}{rel}); "
            f"obtain it from: {self.entry.get('source', '?')}"
        )

    # -- subclass hooks
    def _probe(self) -> None:
        """Cheap check that the layout is there (FileNotFoundError otherwise)."""

    def _scan(self) -> Scan:
        raise NotImplementedError

    def _read_loc(self, loc: Any) -> bytes:
        with open(self.root / loc, "rb") as f:
            return f.read()

    def class_names(self) -> list[str] | None:
        """Names of the label space's classes in label order (None if unknown)."""
        return label_spaces.label_space_names(self.entry["label_space"])

    # -- public
    def samples(self) -> SampleTable:
        """The sample list sorted by sample_id (scanned once, then cached)."""
        if self._table is None:
            ids, labels, cols, locs = self._scan()
            n = len(ids)
            if n == 0:
                raise FileNotFoundError(f"dataset {self.dataset_id!r}: no samples found under {self.root} "
                                        f"({self.field('kind')} = {self.kind!r})")
            order = sorted(range(n), key=ids.__getitem__)
            sid = np.empty(n, dtype=object)
            sid[:] = [ids[i] for i in order]
            dup = [sid[i] for i in range(1, n) if sid[i] == sid[i - 1]]
            if dup:
                raise ValueError(f"dataset {self.dataset_id!r}: sample ids must be unique, found duplicates "
                                 f"{short(dup)} under {self.root}")
            label = np.asarray(labels, dtype=np.int64)[order].astype(np.int32)
            columns = coerce_columns({k: [v[i] for i in order] for k, v in cols.items()}, n,
                                     self.entry.get("columns") or {}, dataset_id=self.dataset_id, kind=self.kind,
                                     manifest_path=self.manifest_path)
            self._locs = [locs[i] for i in order]
            self._table = SampleTable(sid, label, columns)
        return self._table

    def __len__(self) -> int:
        return len(self.samples())

    def read_bytes(self, index: int) -> bytes:
        """Encoded bytes of sample ``index`` (in samples() order)."""
        if self._locs is None:
            self.samples()
        return self._read_loc(self._locs[index])

    def describe(self) -> dict:
        """Where and how the data was read (for logs; not part of the store's identity)."""
        return {"dataset": self.dataset_id, "root": str(self.root), "layout": self.layout, "notes": list(self.notes)}

    def close(self) -> None:
        """Close the files this process opened (a later read reopens them)."""
        self._handles.close()
