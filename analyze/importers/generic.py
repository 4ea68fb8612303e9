"""Any table of per-sample predictions: CSV, Parquet, NPZ or NPY, for a dataset named with ``--dataset``.

One entry per sample, with

- the sample id: column ``sample_id`` (or ``file_name``), as the dataset's reader names the samples (ImageNet
  val: the file name; cue-conflict: ``<shape>/<file>``; see data_manifest.yaml); an NPY gives only scores, its
  ids come from ``--ids FILE`` (one per line, in the array's order);
- the predictions, one of: a 2-d ``logits`` or ``probabilities`` array (NPZ, Parquet list column; an NPY is
  the array, ``--scores`` says which); columns ``logit_0 .. logit_<C-1>`` or ``prob_0 .. prob_<C-1>``; or a
  ``decision`` column (a class index of the logit space, a synset id, or a class name of the dataset's own
  label space, e.g. a cue-conflict category) with an optional ``probability`` column (its probability);
- optionally ``label`` (an index or class name of the dataset's label space) and the per-sample columns the
  dataset's manifest entry declares (same names).
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from schemas import label_spaces, logit_kinds
from schemas.registry import close_names

from .parsed import Parsed
from .source import SHOWN, Table, stem

FORMAT = "table"
ID_COLUMNS = ("sample_id", "file_name")
SCORE_KINDS = {"logits": logit_kinds.CLASSIFIER, "probabilities": logit_kinds.PROBABILITIES}
PREFIXES = {"logit_": "logits", "prob_": "probabilities"}


def parse(table: Table, *, dataset: str, entry: dict, model: str | None = None, scores: str = "logits",
          ids: Sequence[str] | None = None) -> Parsed | None:
    """The file as one run of ``dataset`` (its manifest ``entry``), or None with the problems recorded."""
    n_classes = label_spaces.LABEL_SPACES.get(entry.get("logit_space", "imagenet-1k")) or 1000
    sample_id = _ids(table, ids)
    parsed = Parsed(table, FORMAT, dataset, model or stem(table.path), np.empty(0, object), logit_kinds.CLASSIFIER,
                    source=f"per-sample predictions ({table.path.suffix.lstrip('.') or 'table'})")
    if "decision" in table.columns:
        _decisions(table, parsed, entry, n_classes)
    else:
        _scores(table, parsed, n_classes, scores)
    if "label" in table.columns:
        parsed.label = _labels(table, entry)
    parsed.columns = _columns(table, entry.get("columns") or {})
    if sample_id is None or table.problems:
        return None
    parsed.sample_id = sample_id
    return parsed


def _columns(table: Table, declared: dict[str, str]) -> dict[str, np.ndarray]:
    """The declared per-sample columns the file has, as the entry's dtypes (text read from a CSV is converted;
    the door checks the values)."""
    from schemas.manifest.models import parse_column_dtype

    out = {}
    for name, dtype in declared.items():
        if name not in table.columns:
            continue
        values = table.columns[name]
        base, width = parse_column_dtype(str(dtype))
        if width is not None or values.dtype.kind != "O":
            out[name] = values  # lists (Parquet, NPZ) and typed columns as they are
        elif base == "str":
            out[name] = table.text(name)
        elif base == "bool":
            text = [v.lower() for v in table.text(name).tolist()]
            bad = [i for i, v in enumerate(text) if v not in ("true", "false", "1", "0")]
            for i in bad[:SHOWN]:
                table.problem(i, name, f"expected a boolean (true/false, 1/0), found {table.columns[name][i]!r}")
            out[name] = np.asarray([v in ("true", "1") for v in text])
        else:
            parsed = (table.integers(name, f"an integer ({dtype})") if base.startswith(("int", "uint"))
                      else table.floats(name, f"a number ({dtype})"))
            if parsed is not None:
                out[name] = parsed
    return out


def _ids(table: Table, ids: Sequence[str] | None) -> np.ndarray | None:
    if ids is not None:
        if len(ids) != len(table):
            table.whole(f"--ids gives {len(ids)} sample ids, the file has {len(table)} entries")
            return None
        values = np.asarray([str(s).strip() for s in ids], dtype=object)
        table.unique("sample_id", values, "sample id")
        return values
    column = next((c for c in ID_COLUMNS if c in table.columns), None)
    if column is None:
        table.require(("sample_id",), "a prediction table (sample_id, then logits, probabilities or decision)")
        return None
    values = table.text(column)
    table.unique(column, values, "sample id")
    return values


def _scores(table: Table, parsed: Parsed, n_classes: int, scores: str) -> None:
    """2-d ``logits``/``probabilities`` (an NPY's ``scores``), or ``logit_<j>``/``prob_<j>`` columns."""
    name = next((c for c in ("logits", "probabilities") if c in table.columns), None)
    if name is None and "scores" in table.columns:
        name = scores
        table.columns[name] = table.columns.pop("scores")
    if name is not None:
        values = np.asarray(table.columns[name])
        if values.dtype == object or values.ndim != 2:
            table.problem(None, name, f"expected a [samples, {n_classes}] array of numbers, found "
                                      f"{'rows of different lengths' if values.dtype == object else f'shape {values.shape}'}")
            return
    else:
        found = {}
        for prefix, what in PREFIXES.items():
            cols = {int(m.group(1)): c for c in table.columns if (m := re.fullmatch(re.escape(prefix) + r"(\d+)", c))}
            if cols:
                found[what] = cols
        if len(found) != 1:
            table.problem(None, None, "expected the predictions as a decision column, a logits or probabilities "
                                      f"array, or the columns logit_0..logit_{n_classes - 1} or prob_0..prob_"
                                      f"{n_classes - 1}; found " + (", ".join(table.columns) if not found else
                                                                    "both logit_ and prob_ columns"))
            return
        name, cols = next(iter(found.items()))
        missing = [j for j in range(n_classes) if j not in cols]
        if missing:
            prefix = "logit_" if name == "logits" else "prob_"
            table.problem(None, f"{prefix}{missing[0]}", f"missing: expected {n_classes} columns {prefix}0.."
                                                         f"{prefix}{n_classes - 1}, {len(missing)} absent")
            return
        stacked = [table.floats(cols[j], "a number") for j in range(n_classes)]
        if any(v is None for v in stacked):
            return
        values = np.stack(stacked, axis=1)
    if values.shape[1] != n_classes:
        table.problem(None, name, f"expected {n_classes} scores per sample (the logit space), found {values.shape[1]}")
        return
    values = values.astype(np.float64)
    if name == "probabilities":
        bad = np.flatnonzero(~np.isclose(values.sum(axis=1), 1.0, atol=1e-3) | (values < 0).any(axis=1))
        for i in bad[:SHOWN]:
            table.problem(int(i), name, f"expected probabilities >= 0 summing to 1, found a sum of {values[i].sum():.6g}")
    parsed.scores, parsed.kind = values, SCORE_KINDS[name]


def _decisions(table: Table, parsed: Parsed, entry: dict, n_classes: int) -> None:
    """``decision``: logit-space class indices or synsets, or class names of the dataset's grouped label space."""
    values = table.text("decision")
    synsets = {s: i for i, s in enumerate(label_spaces.imagenet_synsets())}
    space, subset = entry.get("label_space"), entry.get("class_subset")
    names = label_spaces.label_space_names(space) if space not in (None, "own", "imagenet-1k") and subset else None
    grouped = names is not None and not any(v.lstrip("-").isdigit() or v in synsets for v in values.tolist())
    index = {c.lower(): i for i, c in enumerate(names)} if grouped else synsets
    out = np.empty(len(values), np.int64)
    bad = 0
    for i, v in enumerate(values.tolist()):
        if not grouped and v.lstrip("-").isdigit() and 0 <= int(v) < n_classes:
            out[i] = int(v)
        elif v.lower() in index or v in index:
            out[i] = index.get(v.lower(), index.get(v))
        else:
            if bad < SHOWN:
                near = close_names(v, list(index))
                what = (f"a class name of {space}" if grouped else f"a class index 0..{n_classes - 1} or a synset id")
                table.problem(i, "decision", f"unknown class name {v!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
                                             + f"; expected {what}")
            bad += 1
    if bad:
        return
    parsed.decision = out
    if grouped:
        parsed.decision_space = space
    parsed.kind = logit_kinds.DECISIONS
    if "probability" in table.columns:
        if grouped:
            table.problem(None, "probability", "a probability per category decision has no place in the logit "
                                               "space; drop the column (the decisions are imported alone)")
            return
        p = table.floats("probability", "the decision's probability in [0, 1]")
        if p is not None:
            for i in np.flatnonzero((p < 1.0 / n_classes - 1e-9) | (p > 1 + 1e-6))[:SHOWN]:
                table.problem(int(i), "probability", f"expected the top-1 probability in [1/{n_classes}, 1], found {p[i]!r}")
            parsed.probability, parsed.kind = np.clip(p, 0, 1), logit_kinds.TOP1_PROBABILITY


def _labels(table: Table, entry: dict) -> np.ndarray | None:
    """``label``: indices of the dataset's label space (-1 none), or its class names."""
    values = table.text("label")
    space = entry.get("label_space")
    names = label_spaces.label_space_names(space) if space not in (None, "own") else None
    index = {c.lower(): i for i, c in enumerate(names or [])}
    out = np.empty(len(values), np.int64)
    bad = 0
    for i, v in enumerate(values.tolist()):
        if v.lstrip("-").isdigit():
            out[i] = int(v)
        elif v.lower() in index:
            out[i] = index[v.lower()]
        else:
            if bad < SHOWN:
                near = close_names(v.lower(), list(index))
                table.problem(i, "label", f"unknown class name {v!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
                                          + f"; expected an index of label space {space} or one of its class names")
            bad += 1
    return None if bad else out


__all__ = ["FORMAT", "ID_COLUMNS", "parse"]
