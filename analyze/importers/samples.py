"""The sample list imported runs go into: the one the store already holds, or one made from the files.

A dataset's runs share one sample list (ids, labels, columns; schemas.store). When the store holds the dataset,
every file's ids must be among its samples and any label the file gives must agree; the samples a file lacks
become invalid rows of its run. Otherwise the list is the sorted union of the files' ids (the order the readers
give), labelled from the files, from ``--labels``, or from what is bundled for the dataset:

- ``imagenet-val``: the class of the ImageNet-X annotations (schemas/labels, 48,868 of the 50,000 images; the
  others get -1, no label, and count in no accuracy);
- ``cue-conflict``: shape and texture categories parsed from ``<shape>/<shape><i>-<texture><j>.png``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from schemas import label_spaces
from schemas import layout as L
from schemas.manifest.models import parse_column_dtype

from .parsed import Parsed
from .source import SHOWN, ImportProblem, Table


@dataclass
class SampleList:
    dataset: str
    sample_id: np.ndarray            # [n] str
    label: np.ndarray                # [n] int
    columns: dict[str, np.ndarray]
    entry: dict
    stored: bool                     # the store already holds it
    label_source: str                # in words, for the import's summary

    def index(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id (every id must be in the list)."""
        position = {s: i for i, s in enumerate(self.sample_id.tolist())}
        return np.asarray([position[s] for s in ids.tolist()], dtype=np.int64)

    def declared_columns(self) -> dict[str, np.ndarray]:
        """The columns in the dtypes the entry declares: the values the extractor's readers would store (and
        hash into the sample digest)."""
        out = {}
        for name, values in self.columns.items():
            base, width = parse_column_dtype(str((self.entry.get("columns") or {}).get(name, "str")))
            out[name] = (np.asarray([str(v) for v in np.asarray(values).tolist()], dtype=object) if base == "str"
                         else np.asarray(values).astype(base))
        return out


def stored_list(root: Any, dataset: str) -> SampleList | None:
    """The store's sample list of ``dataset`` (None when the store lacks it)."""
    from schemas import integrity

    if root is None or dataset not in root:
        return None
    group = root[dataset]
    attrs = dict(group.attrs)
    if "sample_digest" not in attrs:
        raise ImportProblem(f"{dataset}: the store's sample list is incomplete (no sample_digest: being written, or "
                            f"a write cut short); finish or delete that dataset first")
    values, damage = integrity.read_sample_list(group)
    if damage:
        raise ImportProblem(f"{dataset}: the store's sample list is damaged ({damage[0].path}); "
                            f"run `analyze validate` and repair it first")
    ids = np.asarray(values.pop(L.SAMPLE_ID)).astype(object).astype(str).astype(object)
    label = np.asarray(values.pop(L.LABEL))
    columns = {k: (np.asarray(v).astype(object).astype(str).astype(object) if np.asarray(v).dtype.kind in "TO" else v)
               for k, v in values.items()}
    return SampleList(dataset, ids, label, columns, dict(attrs.get("manifest") or {}), True,
                      "the store's sample list")


def align(stored: SampleList, runs: list[Parsed]) -> None:
    """Record a problem on each file for ids the stored list lacks, and labels or columns that disagree with it."""
    position = {s: i for i, s in enumerate(stored.sample_id.tolist())}
    for run in runs:
        t = run.table
        missing = [i for i, s in enumerate(run.sample_id.tolist()) if s not in position]
        for i in missing[:SHOWN]:
            t.problem(i, None, f"sample {run.sample_id[i]!r} is not in the store's {stored.dataset} sample list "
                               f"({len(stored.sample_id)} samples, e.g. {stored.sample_id[0]!r}); the ids must name the "
                               f"same samples as the store's")
        if len(missing) > SHOWN:
            t.whole(f"{len(missing)} samples in all are not in the store's {stored.dataset}")
        if missing:
            continue
        rows = stored.index(run.sample_id)
        if run.label is not None:
            _disagree(t, "label", run.label, stored.label[rows], "the store's label")
        for name, values in run.columns.items():
            if name in stored.columns:
                _disagree(t, name, np.asarray(values).astype(str), np.asarray(stored.columns[name])[rows].astype(str),
                          f"the store's {name}")


def _disagree(table: Table, column: str, given: np.ndarray, stored: np.ndarray, what: str) -> None:
    bad = np.flatnonzero(np.asarray(given) != np.asarray(stored))
    for i in bad[:SHOWN]:
        table.problem(int(i), column, f"expected {what} {stored[i]!r}, found {given[i]!r}")


def new_list(dataset: str, entry: dict, runs: list[Parsed], labels: Mapping[str, int] | None) -> SampleList:
    """A sample list made from the files (problems recorded on their tables)."""
    ids = np.asarray(sorted({s for run in runs for s in run.sample_id.tolist()}), dtype=object)
    position = {s: i for i, s in enumerate(ids.tolist())}
    n = len(ids)
    label = np.full(n, -1, np.int64)
    have = np.zeros(n, bool)
    source = ""
    columns: dict[str, np.ndarray] = {}
    column_from: dict[str, np.ndarray] = {}
    for run in runs:
        rows = np.asarray([position[s] for s in run.sample_id.tolist()], dtype=np.int64)
        if run.label is not None:
            _merge(run.table, "label", rows, run.label, label, have)
            source = f"the files' {'category' if run.fmt == 'model-vs-human' else 'label'} column"
        for name, values in run.columns.items():
            values = np.asarray(values)
            if name not in columns:  # list columns ([n, slots]) padded with -1
                columns[name] = np.full((n,) + values.shape[1:], -1 if values.ndim == 2 else None, dtype=values.dtype
                                        if values.ndim == 2 else object)
                column_from[name] = np.zeros(n, bool)
            _merge(run.table, name, rows, values, columns[name], column_from[name])
    if not have.any():
        if labels is not None:
            label = np.asarray([labels.get(s, -1) for s in ids.tolist()], dtype=np.int64)
            source = "--labels"
        else:
            bundled = bundled_labels(dataset, ids)
            if bundled is None:
                runs[0].table.whole(f"no labels: the file has no label column and {dataset} has none bundled; "
                                    f"add a label column or give --labels FILE")
            else:
                label, extra, source = bundled
                columns.update({k: v for k, v in extra.items() if k not in columns})
                if dataset == "cue-conflict":
                    _unparsed(runs, set(ids[label < 0].tolist()))
    return SampleList(dataset, ids, label, columns, entry, False, source)


def _unparsed(runs: list[Parsed], bad: set[str]) -> None:
    """A problem for each cue-conflict id whose name gives no shape and texture."""
    for run in runs:
        for i in [i for i, s in enumerate(run.sample_id.tolist()) if s in bad][:SHOWN]:
            run.table.problem(i, "sample_id", f"expected a cue-conflict id <shape>/<shape><i>-<texture><j>.png of the "
                                              f"16 categories, found {run.sample_id[i]!r}")


def _merge(table: Table, column: str, rows: np.ndarray, values: np.ndarray, into: np.ndarray, have: np.ndarray) -> None:
    """Put a file's values for its rows into the list's; a value another file gave differently is a problem."""
    seen = have[rows]
    if seen.any():
        old = into[rows[seen]]
        new = values[seen]
        differ = np.flatnonzero((old != new) if old.ndim == 1 else (old != new).any(axis=1))
        for j in differ[:SHOWN]:
            i = int(np.flatnonzero(seen)[j])
            table.problem(i, column, f"expected {old[j]!r} as another imported file gives for this sample, "
                                     f"found {new[j]!r}")
    into[rows] = values
    have[rows] = True


def bundled_labels(dataset: str, ids: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray], str] | None:
    """``(label, columns, source)`` from the files bundled for ``dataset``; None when there are none."""
    if dataset == "imagenet-val":
        from ..labels import base_file_name, imagenet_x

        ann = imagenet_x()
        cls = dict(zip(ann.file_name.tolist(), ann.label.tolist()))
        label = np.asarray([cls.get(base_file_name(s), -1) for s in ids.tolist()], dtype=np.int64)
        return label, {}, (f"the bundled ImageNet-X annotations ({int((label >= 0).sum())} of {len(ids)} images "
                           f"labelled; the others count in no accuracy; --labels FILE gives them all)")
    if dataset == "cue-conflict":
        parsed = [label_spaces.cue_conflict_stimulus(s) for s in ids.tolist()]
        label = np.asarray([p[1] if p else -1 for p in parsed], dtype=np.int64)
        texture = np.asarray([p[2] if p else -1 for p in parsed], dtype=np.int64)
        return label, {"texture_label": texture}, "the stimulus names (<shape><i>-<texture><j>.png)"
    return None


__all__ = ["SampleList", "align", "bundled_labels", "new_list", "stored_list"]
