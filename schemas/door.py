"""The door: what a dataset's manifest entry declares, checked against the arrays offered or stored.

Pure functions over numpy arrays. Each returns a list of ``Violation``s naming the path (relative to the
store root) and field, what was expected, what was found and the likely fix. ``store.write_run`` and
``store.ensure_dataset`` call them before writing anything; ``validate`` calls them on the stored datasets
and runs, so a store written by any means is checked the same way.

What an entry declares: ``label_space`` and ``num_labels`` (``label`` and the label-like columns, i.e.
``label_set`` and names ending in ``_label``, hold indices in ``[0, num_labels)``; ``-1`` = no label /
list padding), ``columns`` (name -> dtype; every declared column is required), ``logit_space`` (the
logits' width is its class count), ``class_subset`` and ``studies`` (which transforms the report reads).
Entries written by older releases or minimal hand-made entries may lack fields: a check whose field is
absent is skipped. numpy, the label spaces and the manifest's id checks only; nothing from extract/analyze.
"""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from . import logit_kinds
from .label_spaces import CLASS_SUBSETS, LABEL_SPACES, class_subset_indices, label_space_names
from .manifest.models import is_transform_id, parse_column_dtype
from .registry import close_names

LABEL_DTYPE = "int32"  # `label` as stored (layout.py's contract)
SHOWN = 3  # examples quoted in a message
# The one study that reads runs under transforms other than center (scale-*, shift-*, res-*).
INVARIANCE_STUDY = "invariance"
CENTER = "center"


@dataclass(frozen=True)
class Violation:
    path: str
    message: str
    severity: str = "error"  # "error" breaks the contract; "warning" is an incomplete but valid state

    def __str__(self) -> str:
        return f"{self.severity}: {self.path}: {self.message}"


class StoreWarning(UserWarning):
    """Data accepted into a store that the analysis will not use as the writer probably meant."""


@dataclass(frozen=True)
class Declared:
    """The fields of a manifest entry the door checks; None where the entry does not say."""

    label_space: str | None
    num_labels: int | None
    logit_space: str | None
    logit_classes: int | None
    class_subset: str | None
    columns: dict[str, str] | None
    studies: tuple[str, ...] | None


def declared(entry: Mapping[str, Any] | None) -> Declared:
    entry = dict(entry or {})
    space = entry.get("label_space")
    num = entry.get("num_labels")
    if num is None and space is not None:
        num = LABEL_SPACES.get(space)
    logit_space = entry.get("logit_space")
    columns = entry.get("columns")
    studies = entry.get("studies")
    return Declared(
        label_space=space,
        num_labels=int(num) if num is not None else None,
        logit_space=logit_space,
        logit_classes=LABEL_SPACES.get(logit_space) if logit_space is not None else None,
        class_subset=entry.get("class_subset"),
        columns=dict(columns) if isinstance(columns, Mapping) else None,
        studies=tuple(studies) if isinstance(studies, (list, tuple)) else None,
    )


def is_label_like(name: str) -> bool:
    """Columns that hold indices into the dataset's label space (``label_set``, ``texture_label``, ...)."""
    return name == "label_set" or name.endswith("_label")


def _texts(values: np.ndarray) -> list[str]:
    """Every value as a Python str (numpy's StringDType does not cast to fixed-width str)."""
    return [str(x) for x in values.ravel().tolist()]


def _examples(values: Sequence | np.ndarray) -> str:
    shown = [repr(v.item() if isinstance(v, np.generic) else v) for v in list(values)[:SHOWN]]
    return ", ".join(shown) + (", ..." if len(values) > SHOWN else "")


def _v(path: str, expected: str, found: str, fix: str = "", severity: str = "error") -> Violation:
    return Violation(path, f"expected {expected}, found {found}" + (f"; {fix}" if fix else ""), severity)


def _space(ds: Declared) -> str:
    if ds.num_labels is None:
        return f"label space {ds.label_space}"
    return f"the {ds.num_labels} classes of label space {ds.label_space}"


def _as_integers(path: str, values: np.ndarray, dtype: str, ds: Declared, label_like: bool
                 ) -> tuple[np.ndarray | None, list[Violation]]:
    """``values`` as an integer array, or None and the problem: no silent casts from text, floats or bools."""
    kind = values.dtype.kind
    if kind == "O":
        items = values.ravel().tolist()
        if all(isinstance(x, str) for x in items):
            return None, [_text_for_integers(path, np.asarray(items, dtype=str), dtype, ds, label_like)]
        if all(isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_)) for x in items):
            return np.asarray(items, dtype=np.int64).reshape(values.shape), []
        kinds = sorted({type(x).__name__ for x in items})
        return None, [_v(path, f"{dtype} integers", f"an object array of {', '.join(kinds)}",
                         "give one integer per value (no None, no mixed types)")]
    if kind in "UST":  # T: numpy's StringDType, as zarr reads text back
        return None, [_text_for_integers(path, np.asarray(_texts(values)), dtype, ds, label_like)]
    if kind == "b":
        return None, [_v(path, f"{dtype} integers", "booleans", f"give integers (x.astype(np.{dtype}))")]
    if kind == "f":
        whole = bool(np.all(values == np.round(values)))
        if np.isnan(values).any():
            fix = "NaN for a missing value? missing labels are -1; give integers"
        elif whole:
            fix = f"no silent cast: convert them yourself (x.astype(np.{dtype})) once you know they are indices"
        else:
            fix = f"non-integer values such as {_examples(values[values != np.round(values)])}"
        return None, [_v(path, f"{dtype} integers", f"floats ({values.dtype})", fix)]
    if kind not in "iu":
        return None, [_v(path, f"{dtype} integers", f"dtype {values.dtype}")]
    info = np.iinfo(dtype)
    if values.size and (values.min() < info.min or values.max() > info.max):
        return None, [_v(path, f"values that fit {dtype} ({info.min}..{info.max})",
                         f"{values.min()}..{values.max()}", "check the values, or declare a wider dtype")]
    return values, []


def _text_for_integers(path: str, text: np.ndarray, dtype: str, ds: Declared, label_like: bool) -> Violation:
    distinct = list(dict.fromkeys(text.ravel().tolist()))
    found = f"strings ({_examples(distinct)})"
    if distinct and all(s.strip().lstrip("-").isdigit() for s in distinct):
        return _v(path, f"{dtype} integers", found, "numbers given as text: convert them (x.astype(np.int64))")
    names = label_space_names(ds.label_space) if label_like and ds.label_space in LABEL_SPACES else None
    if names is not None and all(s in names for s in distinct):
        field = path.rsplit("/", 1)[-1]
        return _v(path, f"{dtype} indices into {_space(ds)}", found,
                  f"{field} holds category names: give indices into the {len(names)} {ds.label_space} categories "
                  f"(names.index(x) with names = schemas.label_spaces.label_space_names({ds.label_space!r}))")
    return _v(path, f"{dtype} integers", found, "give integer values; no silent cast from text")


def _check_indices(path: str, values: np.ndarray, ds: Declared) -> list[Violation]:
    """Label indices: each in ``[0, num_labels)`` or -1 (no label; list padding). One pass over the array."""
    if values.size == 0:
        return []
    flat = values.ravel()
    lo, hi = int(flat.min()), int(flat.max())
    out: list[Violation] = []
    if lo < -1:
        bad = flat[flat < -1]
        out.append(_v(path, "indices >= 0, or -1 for no label / padding",
                      f"{bad.size} values below -1 ({_examples(np.unique(bad))})",
                      "negative values other than -1 have no meaning in the store"))
    k = ds.num_labels
    if k is None or hi < k:
        return out
    bad = np.unique(flat[flat >= k])
    labelled = flat[flat >= 0]
    found = f"{int((flat >= k).sum())} of {flat.size} values >= {k} (range found {int(labelled.min())}..{hi}; " \
            f"e.g. {_examples(bad)})"
    if int(labelled.min()) >= 1 and hi == k:
        fix = f"labels look 1-based (1..{k}): subtract 1"
    elif _looks_like_logit_classes(labelled, ds):
        fix = (f"these look like {ds.logit_space} class numbers, not {ds.label_space} category indices: map each "
               f"class to its category (schemas.label_spaces.class_groups({ds.class_subset!r}))")
    else:
        fix = f"{path.rsplit('/', 1)[-1]} indexes {_space(ds)}"
    out.append(_v(path, f"indices in [0, {k}) into {_space(ds)}", found, fix))
    return out


def _looks_like_logit_classes(labelled: np.ndarray, ds: Declared) -> bool:
    """Every label is a logit-space class of the dataset's class subset (e.g. ImageNet classes of cue-conflict)."""
    if ds.class_subset not in CLASS_SUBSETS or ds.label_space == ds.logit_space or ds.logit_classes is None:
        return False
    return bool(np.isin(labelled, class_subset_indices(ds.class_subset)).all())


def check_samples(dataset: str, entry: Mapping[str, Any] | None, sample_id: Any, label: Any,
                  columns: Mapping[str, Any] | None) -> list[Violation]:
    """Problems of a dataset's sample table against its manifest entry (``entry`` None: structure only)."""
    ds = declared(entry)
    out: list[Violation] = []
    sid = np.asarray(sample_id)
    n = len(sid) if sid.ndim >= 1 else 0
    if sid.ndim != 1:
        out.append(_v(f"{dataset}/sample_id", "a 1-d array of ids", f"shape {sid.shape}"))
    elif n == 0:
        out.append(_v(f"{dataset}/sample_id", "at least one sample", "none"))
    elif sid.dtype.kind in "fcb":
        out.append(_v(f"{dataset}/sample_id", "text ids (file names, relative paths)", f"{sid.dtype} values",
                      "give the ids as strings"))
    else:
        ids = _texts(sid)
        if len(set(ids)) != n:
            dups = [(s, c) for s, c in Counter(ids).items() if c > 1]
            shown = ", ".join(f"{s!r} x{c}" for s, c in dups[:SHOWN]) + (", ..." if len(dups) > SHOWN else "")
            out.append(_v(f"{dataset}/sample_id", "unique sample ids",
                          f"{len(dups)} id{'s' * (len(dups) != 1)} repeated ({shown})",
                          "each sample needs its own id (e.g. its path relative to the dataset folder)"))
    out += _check_label(dataset, np.asarray(label), n, ds)
    out += _check_columns(dataset, dict(columns or {}), n, ds)
    return out


def _check_label(dataset: str, label: np.ndarray, n: int, ds: Declared) -> list[Violation]:
    path = f"{dataset}/label"
    if label.shape != (n,):
        return [_v(path, f"shape ({n},) to match sample_id", f"shape {label.shape}")]
    values, out = _as_integers(path, label, LABEL_DTYPE, ds, label_like=True)
    if values is None:
        return out
    out += _check_indices(path, values, ds)
    if values.size and not out and (values == -1).all():
        out.append(Violation(path, "every label is -1 (no label): accuracy cannot be computed", "warning"))
    return out


def _check_columns(dataset: str, columns: dict[str, Any], n: int, ds: Declared) -> list[Violation]:
    out: list[Violation] = []
    for name, values in columns.items():
        path = f"{dataset}/{name}"
        if name in ("sample_id", "label") or name.startswith("_"):
            out.append(_v(path, "a column name other than sample_id, label or _*", f"{name!r} (reserved)",
                          "rename the column"))
        elif np.ndim(values) == 0 or len(values) != n:
            out.append(_v(path, f"{n} rows to match sample_id", f"shape {np.shape(values)}"))
    if ds.columns is None:  # the entry does not say: shapes only
        return out
    given = [c for c in columns if c not in ds.columns]
    for name, dtype in ds.columns.items():
        path = f"{dataset}/{name}"
        if name not in columns:
            near = close_names(name, given)
            hint = f" (did you mean your column {near[0]!r}?)" if near else ""
            out.append(_v(path, f"column {name} ({dtype}, one value per sample), as the manifest entry declares",
                          "no such column" + hint, f"give columns={{{name!r}: ...}}"))
        elif not any(p.path == path for p in out):
            out += check_column(path, np.asarray(columns[name]), dtype, n, ds)
    return out


def check_column(path: str, values: np.ndarray, dtype: str, n: int, ds: Declared) -> list[Violation]:
    """One per-sample column against its declared dtype (``int16``, ``str``, ``int32[max]``, ...)."""
    name = path.rsplit("/", 1)[-1]
    try:
        base, width = parse_column_dtype(dtype)
    except ValueError as e:
        return [Violation(path, f"the manifest entry declares an unknown dtype: {e}")]
    if width is None and values.ndim != 1:
        return [_v(path, f"a 1-d column of {n} values ({dtype})", f"shape {values.shape}")]
    if width is not None:
        if values.ndim != 2:
            return [_v(path, f"an [{n}, slots] {base} array ({dtype}: lists padded with -1)", f"shape {values.shape}",
                       "pad each sample's list with -1 to a common length (np.full((n, K), -1) then fill)")]
        if width and values.shape[1] != width:
            return [_v(path, f"{width} slots per sample ({dtype})", f"{values.shape[1]}")]
    if len(values) != n:
        return [_v(path, f"{n} rows to match sample_id", f"{len(values)}")]
    kind = values.dtype.kind
    if base == "str":
        if kind in "UST" or (kind == "O" and all(isinstance(x, str) for x in values.tolist())):
            return []
        return [_v(path, "text values (str)", f"{values.dtype} values ({_examples(values)})",
                   "give the values as strings (x.astype(str)), or declare the column's real dtype")]
    if base == "bool":
        return [] if kind == "b" else [_v(path, "booleans", f"dtype {values.dtype}", "give a bool array")]
    if base.startswith("float"):
        if kind in "fiu":
            return []
        return [_v(path, f"numbers ({base})", f"dtype {values.dtype} ({_examples(values.ravel())})",
                   "give numeric values; no silent cast from text")]
    ints, out = _as_integers(path, values, base, ds, label_like=is_label_like(name))
    if ints is not None and is_label_like(name):
        out += _check_indices(path, ints, ds)
    return out


def check_logits(path: str, entry: Mapping[str, Any] | None, logits: Any, n: int,
                 valid: Any | None = None) -> list[Violation]:
    """In-memory logits (and ``valid``) of a run at ``path`` (``<dataset>/<transform>/<model>``)."""
    logits = np.asarray(logits)
    out = check_logit_shape(path, entry, logits.shape, logits.dtype, n)
    if out:
        return out
    if valid is not None:
        valid = np.asarray(valid)
        if valid.shape != (n,):
            return [_v(f"{path}/valid", f"shape ({n},)", f"shape {valid.shape}")]
        if valid.dtype.kind != "b" and not (valid.dtype.kind in "iu" and np.isin(valid, (0, 1)).all()):
            return [_v(f"{path}/valid", "booleans (True: the row's logits are usable)", f"dtype {valid.dtype}")]
        out += nonfinite_problem(path, nonfinite_valid_rows(logits, valid.astype(bool)), n)
        return out
    # valid unset: rows with NaN/inf are stored invalid; say so, and refuse a run with no usable row.
    rows = nonfinite_valid_rows(logits, np.ones(n, bool))
    if rows.size:
        fix = ("-inf for classes without a score (log of 0)? give a large negative finite value instead (e.g. -1e4)"
               if np.isneginf(logits[rows]).any() else "pass valid= to say which rows are usable")
        out.append(_v(f"{path}/logits", "finite logits on the rows to analyse",
                      f"{rows.size} of {n} rows with NaN/inf (rows {_examples(rows)}), stored as invalid rows", fix,
                      "error" if rows.size == n else "warning"))
    return out


def check_logit_shape(path: str, entry: Mapping[str, Any] | None, shape: tuple, dtype: Any, n: int
                      ) -> list[Violation]:
    ds = declared(entry)
    where = f"{path}/logits"
    if len(shape) != 2 or shape[0] != n:
        return [_v(where, f"shape ({n}, classes)", f"shape {tuple(shape)}")]
    if np.dtype(dtype).kind not in "fiu":
        return [_v(where, "float logits", f"dtype {dtype}")]
    k = ds.logit_classes
    if k is not None and shape[1] != k:
        fix = f"logits span the whole logit space {ds.logit_space} ({k} classes)"
        if ds.num_labels is not None and shape[1] == ds.num_labels and ds.label_space != ds.logit_space:
            fix += (f", also for {ds.label_space}: the analysis maps them to its {ds.num_labels} classes "
                    f"(class_subset {ds.class_subset}); put each class's score on its {ds.logit_space} classes "
                    f"(schemas.label_spaces.class_groups({ds.class_subset!r})) and a low value elsewhere")
        return [_v(where, f"{k} columns (logit space {ds.logit_space})", f"{shape[1]}", fix)]
    return []


def nonfinite_valid_rows(logits: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Row indices marked valid whose logits hold NaN or inf."""
    return np.flatnonzero(valid & ~np.isfinite(logits).all(axis=1))


def nonfinite_problem(path: str, rows: np.ndarray, n: int) -> list[Violation]:
    if rows.size == 0:
        return []
    return [_v(f"{path}/logits", "finite logits on every row marked valid",
               f"{rows.size} of {n} valid rows with NaN/inf (rows {_examples(rows)})",
               "mark those rows valid=False (leaving valid unset marks rows with NaN/inf invalid)")]


def check_transform(dataset: str, entry: Mapping[str, Any] | None, transform: str) -> list[Violation]:
    """The transform id parses; a warning when no study of the entry reads runs under it."""
    path = f"{dataset}/{transform}"
    if not is_transform_id(transform):
        near = close_names(transform, (CENTER, "scale-1.5", "shift-30", "res-336"))
        hint = f"; did you mean {near[0]!r}?" if near else ""
        return [_v(path, "a transform id: center, scale-<s>, shift-<px> or res-<px>", repr(transform) + hint,
                   "name the run by the transform applied to the images (center for the standard evaluation)")]
    studies = declared(entry).studies
    if studies is None:
        return []
    if transform == CENTER and studies:
        return []
    if transform != CENTER and INVARIANCE_STUDY in studies:
        return []
    listed = ", ".join(studies) or "none"
    why = ("only the invariance study reads transforms other than center" if transform != CENTER
           else "the entry lists no study")
    return [Violation(path, f"no study reads {dataset} runs under {transform} (the entry's studies: {listed}; "
                            f"{why}): the report ignores them", "warning")]


def check_logit_kind(path: str, logit_kind: Any, logits: np.ndarray | None = None, valid: np.ndarray | None = None,
                     *, offset: int = 0) -> list[Violation]:
    """The run's ``logit_kind`` is known, and (given its rows) every valid row has the form the kind says."""
    name = logit_kinds.kind_name(logit_kind)
    if name not in logit_kinds.KINDS:
        near = close_names(name, logit_kinds.KINDS)
        return [_v(f"{path}/logit_kind", f"one of {', '.join(logit_kinds.KINDS)}",
                   repr(name) + (f" (did you mean {near[0]!r}?)" if near else ""),
                   "say what the logits array holds (schemas/logit_kinds.py)")]
    if logits is None:
        return []
    logits = np.asarray(logits)
    valid = np.ones(len(logits), bool) if valid is None else np.asarray(valid, dtype=bool)
    rows, form = logit_kinds.bad_rows(name, logits, valid)
    if not rows.size:
        return []
    return [_v(f"{path}/logits", f"rows of logit kind {name!r}: {form}",
               f"{rows.size} valid rows that are not (rows {_examples(rows + offset)})",
               "encode them with schemas.logit_kinds (decision_logits, probability_logits, ...)")]


def check_run(dataset: str, transform: str, model: str, entry: Mapping[str, Any] | None, *, sample_id: Any,
              label: Any, columns: Mapping[str, Any] | None, logits: Any, features: Any | None = None,
              valid: Any | None = None, logit_kind: Any = None) -> list[Violation]:
    """Everything ``write_run`` is offered, checked at once."""
    n = len(np.asarray(sample_id)) if np.ndim(sample_id) >= 1 else 0
    path = f"{dataset}/{transform}/{model}"
    out = check_samples(dataset, entry, sample_id, label, columns)
    out += check_transform(dataset, entry, transform)
    out += check_logits(path, entry, logits, n, valid)
    if not any(p.path.startswith(f"{path}/") and p.severity == "error" for p in out):
        out += check_logit_kind(path, logit_kind, logits, valid)
    if features is not None and (np.ndim(features) != 2 or len(features) != n):
        out.append(_v(f"{path}/features", f"shape ({n}, dims)", f"shape {np.shape(features)}"))
    return out


def refuse(problems: list[Violation], where: str, error: type[Exception]) -> None:
    """Raise ``error`` listing every error (nothing was written), else warn about each warning."""
    errors = [p for p in problems if p.severity == "error"]
    base = str(where).rstrip("/")
    if len(errors) == 1:  # one line, as a CLI prints it
        raise error(f"{base}: nothing written: {base}/{errors[0].path}: {errors[0].message}")
    if errors:
        lines = "\n".join(f"  {base}/{p.path}: {p.message}" for p in errors)
        raise error(f"{base}: nothing written, {len(errors)} problems with the data offered:\n{lines}")
    for p in problems:
        warnings.warn(f"{base}/{p.path}: {p.message}", StoreWarning, stacklevel=3)


__all__ = [
    "Declared", "StoreWarning", "Violation", "check_column", "check_logit_kind", "check_logit_shape", "check_logits",
    "check_run",
    "check_samples", "check_transform", "declared", "is_label_like", "nonfinite_problem", "nonfinite_valid_rows",
    "refuse",
]
