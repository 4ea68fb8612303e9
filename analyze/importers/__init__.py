"""``analyze import``: per-image predictions made elsewhere, written into a store as runs.

Formats (``--format auto`` tells them apart by their columns):

- ``imagenet-x``: ImageNet-X prediction CSVs (``file_name, predicted_class[, predicted_probability]``) -> runs of
  ``imagenet-val`` (importers/imagenet_x.py);
- ``model-vs-human``: model-vs-human raw-data CSVs (``subj, object_response, category, imagename``) ->
  ``cue-conflict`` or ``mvh-<dataset>`` (importers/model_vs_human.py);
- ``table``: any CSV/Parquet/NPZ/NPY of logits, probabilities or decisions with sample ids, for ``--dataset``
  (importers/generic.py).

Every file is read and checked, and every run goes through the same door as ``schemas.write_run``
(schemas.door), before anything is written: on any problem an ``ImportProblem`` lists them all, naming the
file, line and column, and the store is left as it was. Decisions and probabilities are stored with the
``logit_kind`` that says what they are (schemas.logit_kinds).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from schemas import door, label_spaces, logit_kinds
from schemas.fingerprint import fingerprint, fingerprint_inputs, sample_digest
from schemas.door import StoreWarning
from schemas.store import StoreMissing, default_dataset_attrs, open_read_only, write_run

from . import generic, imagenet_x, model_vs_human
from .parsed import Parsed
from .samples import SampleList, align, new_list, stored_list
from .source import ImportProblem, Table, raise_problems, read_table, sha256

FORMATS = ("auto", imagenet_x.FORMAT, model_vs_human.FORMAT, generic.FORMAT)


@dataclass(frozen=True)
class Imported:
    """One run the import wrote (or found already there, from the same file)."""

    path: str          # dataset/transform/model
    file: str
    kind: str
    rows: int          # the file's entries
    valid: int         # valid rows of the run
    n_samples: int     # the dataset's samples
    status: str        # written | replaced | already there

    def __str__(self) -> str:
        return (f"{self.path} <- {self.file}: {self.rows} rows, {self.valid} of {self.n_samples} samples valid, "
                f"{logit_kinds.HOLDS.get(self.kind, self.kind)} (logit kind {self.kind}); {self.status}")


def detect(table: Table) -> str:
    """The format a file's columns say."""
    if imagenet_x.matches(table):
        return imagenet_x.FORMAT
    if model_vs_human.matches(table):
        return model_vs_human.FORMAT
    return generic.FORMAT


def import_files(store: Any, files: Sequence[str | Path], *, fmt: str = "auto", dataset: str | None = None,
                 model: str | None = None, transform: str = "center", labels: str | Path | None = None,
                 ids: str | Path | None = None, scores: str = "logits", overwrite: bool = False,
                 storage_options: Mapping[str, Any] | None = None) -> tuple[list[Imported], list[str]]:
    """Import ``files`` into ``store``: the runs, and notes (what was assumed, warnings of the door).

    ``dataset``/``model`` override what the format says (``model`` with one file only); ``labels``: a table of
    ``sample_id`` (or ``file_name``) and ``label`` for a new sample list; ``ids``: sample ids of an NPY, one per
    line; ``scores``: what an NPY holds (``logits`` or ``probabilities``). Raises ImportProblem, writing nothing,
    on any problem.
    """
    if fmt not in FORMATS:
        raise ImportProblem(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if model is not None and len(files) > 1:
        raise ImportProblem(f"--model {model!r} names one run; {len(files)} files given (each file is a run named "
                            f"after it: import them one at a time to name each)")
    if scores not in generic.SCORE_KINDS:
        raise ImportProblem(f"--scores {scores!r}: expected one of {', '.join(generic.SCORE_KINDS)}")
    tables = [read_table(Path(f)) for f in files]
    id_list = _id_list(ids) if ids is not None else None
    runs = [r for r in (_parse(t, fmt, dataset, model, scores, id_list) for t in tables) if r is not None]
    raise_problems(tables)
    root = _open(store, storage_options)
    label_map = _label_map(labels, runs) if labels is not None else None
    lists, notes = {}, []
    for name in dict.fromkeys(r.dataset for r in runs):
        members = [r for r in runs if r.dataset == name]
        stored = stored_list(root, name)
        if stored is not None:
            align(stored, members)
            lists[name] = stored
        else:
            lists[name] = new_list(name, _entry(name, members[0]), members, label_map)
    extra = _duplicate_runs(runs, transform)
    raise_problems(tables, extra)
    plans = [(_check(run, lists[run.dataset], transform, root, overwrite, notes)) for run in runs]
    raise_problems(tables, [p for plan in plans for p in plan[0]])
    for sl in lists.values():
        notes.append(f"{sl.dataset}: labels from {sl.label_source}" if not sl.stored
                     else f"{sl.dataset}: into the store's sample list ({len(sl.sample_id)} samples)")
    return [_write(store, run, lists[run.dataset], transform, status, overwrite, storage_options)
            for run, (_, status) in zip(runs, plans)], notes


def _parse(table: Table, fmt: str, dataset: str | None, model: str | None, scores: str,
           id_list: list[str] | None) -> Parsed | None:
    fmt = detect(table) if fmt == "auto" else fmt
    if fmt == imagenet_x.FORMAT:
        return imagenet_x.parse(table, model=model, dataset=dataset)
    if fmt == model_vs_human.FORMAT:
        return model_vs_human.parse(table, model=model, dataset=dataset)
    if dataset is None:
        table.whole(f"a table of predictions needs --dataset (columns found: {', '.join(table.columns) or 'none'}; "
                    f"an ImageNet-X or model-vs-human file is recognised by its columns)")
        return None
    try:
        entry = default_dataset_attrs(dataset)["manifest"]
    except ValueError as e:
        table.whole(str(e))
        return None
    return generic.parse(table, dataset=dataset, entry=entry, model=model, scores=scores, ids=id_list)


def _entry(dataset: str, run: Parsed) -> dict:
    return dict(run.entry) if run.entry is not None else default_dataset_attrs(dataset)["manifest"]


def _open(store: Any, storage_options: Mapping[str, Any] | None):
    """The store's root, read-only, or None when there is no store yet."""
    try:
        return open_read_only(store, storage_options=storage_options)
    except StoreMissing:
        return None


def _id_list(path: str | Path) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise ImportProblem(f"--ids {p}: no such file")
    return [line.strip() for line in p.read_text().splitlines() if line.strip()]


def _label_map(path: str | Path, runs: list[Parsed]) -> dict[str, int]:
    """``--labels``: sample id -> label, from a table of ``sample_id`` (or ``file_name``) and ``label``."""
    table = read_table(Path(path))
    entry = _entry(runs[0].dataset, runs[0]) if runs else {}
    sid = generic._ids(table, None)
    if "label" not in table.columns:
        table.require(("label",), "a label table (sample_id, label)")
    label = generic._labels(table, entry) if "label" in table.columns else None
    raise_problems([table])
    return dict(zip(sid.tolist(), label.tolist()))


def _duplicate_runs(runs: list[Parsed], transform: str) -> list[str]:
    seen: dict[tuple, Parsed] = {}
    out = []
    for run in runs:
        key = (run.dataset, run.model)
        if key in seen:
            out.append(f"{run.table.name}: run {run.dataset}/{transform}/{run.model} also comes from "
                       f"{seen[key].table.name}; give each file its own model name (--model, one file at a time)")
        seen[key] = run
    return out


def _fingerprint_inputs(run: Parsed, sl: SampleList, transform: str, digest: str) -> tuple[dict, dict]:
    sha = sha256(run.table.path)
    attrs = run.attrs(sha)
    inputs = fingerprint_inputs(model=attrs["model"], weights_id=attrs["weights_id"], preprocess={},
                                transform={"id": transform}, precision=attrs["precision"], sample_digest=digest)
    return {**attrs, "fingerprint_inputs": inputs}, inputs


def _check(run: Parsed, sl: SampleList, transform: str, root: Any, overwrite: bool, notes: list[str]
           ) -> tuple[list[str], str]:
    """The door's verdict on the run (problems naming the file) and what writing will do."""
    n_classes = label_spaces.LABEL_SPACES.get(sl.entry.get("logit_space", "imagenet-1k")) or 1000
    logits, valid, _ = run.rows(sl.index(run.sample_id), len(sl.sample_id), n_classes, _groups(sl.entry))
    found = door.check_run(sl.dataset, transform, run.model, sl.entry, sample_id=sl.sample_id, label=sl.label,
                           columns=sl.columns, logits=logits, valid=valid, logit_kind=run.kind)
    problems = [f"{run.table.name}: {p.path}: {p.message}" for p in found if p.severity == "error"]
    notes += [f"{run.table.name}: {p.path}: {p.message}" for p in found if p.severity == "warning"]
    path = f"{sl.dataset}/{transform}/{run.model}"
    status = "written"
    if not problems and root is not None and path in root:
        old = dict(root[path].attrs)
        digest = sample_digest(sl.sample_id.astype(str), sl.label, sl.declared_columns())
        _, inputs = _fingerprint_inputs(run, sl, transform, digest)
        if old.get("fingerprint") == fingerprint(inputs):
            status = "already there (same file)"
        elif not overwrite:
            problems.append(f"{run.table.name}: {path}: the store holds this run from other inputs "
                            f"({old.get('imported', {}).get('file', 'not an import')}); give --overwrite to replace it, "
                            f"or --model to import it under another name")
        else:
            status = "replaced"
    return problems, status


def _groups(entry: dict) -> list[np.ndarray] | None:
    subset = entry.get("class_subset")
    if subset in ("cue-conflict-16", "pug-imagenet"):
        return list(label_spaces.class_groups(subset).values())
    return None


def _write(store: Any, run: Parsed, sl: SampleList, transform: str, status: str, overwrite: bool,
           storage_options: Mapping[str, Any] | None) -> Imported:
    n = len(sl.sample_id)
    n_classes = label_spaces.LABEL_SPACES.get(sl.entry.get("logit_space", "imagenet-1k")) or 1000
    logits, valid, reasons = run.rows(sl.index(run.sample_id), n, n_classes, _groups(sl.entry))
    columns = sl.declared_columns()
    digest = sample_digest(sl.sample_id.astype(str), sl.label, columns)
    attrs, _ = _fingerprint_inputs(run, sl, transform, digest)
    dataset_attrs = {"manifest": sl.entry, "label_space": sl.entry.get("label_space")}
    with warnings.catch_warnings():  # the door's warnings were collected into the notes already
        warnings.simplefilter("ignore", StoreWarning)
        # The same fingerprint as a run already there: write_run resumes it, writing only blocks not done.
        path = write_run(store, sl.dataset, transform, run.model, logits, sample_id=sl.sample_id.astype(str),
                         label=sl.label.astype(np.int32), columns=columns, attrs=attrs, valid=valid,
                         invalid_reason=reasons, dataset_attrs=dataset_attrs,
                         overwrite=overwrite and status == "replaced", storage_options=storage_options)
    return Imported(path, run.table.name, run.kind, len(run.sample_id), int(valid.sum()), n, status)


__all__ = ["FORMATS", "ImportProblem", "Imported", "detect", "import_files"]
