"""PUG-ImageNet: top-1 (1000-way, mapped to PUG classes) overall and per factor of variation.

PUG-ImageNet varies one factor at a time: its images sit in one folder per factor (column ``factor``), and
within a folder the factor's value (e.g. column ``camera_yaw``) changes. Accuracy is reported per factor
folder and, within it, per value of that factor.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .. import labels
from ..context import Context, Section, select
from ..figures import lines
from ..metrics.accuracy import accuracy
from ..metrics.grouped import coded_group_means
from ..store import RunKey
from ..tables import by_model
from ._common import CENTER, for_each_dataset, listed, order_models, tagged

TITLE = "PUG-ImageNet (top-1 %, overall and per factor)"


def wants(key: RunKey, entry: dict) -> bool:
    """Whether this study reads the run's logits (the report summarises those runs up front)."""
    return key.transform == CENTER and "pug" in entry["studies"]


@lru_cache(maxsize=1)
def _members() -> np.ndarray:
    """``[PUG class, ImageNet class]``: whether the ImageNet class is mapped to the PUG class."""
    classes = list(labels.pug_classes().values())
    member = np.zeros((len(classes), 1000), bool)
    for c, idx in enumerate(classes):
        member[c, idx] = True
    return member


def pug_correct(pred: np.ndarray, pug_label: np.ndarray) -> np.ndarray:
    """Correct when the 1000-way prediction is one of the ImageNet classes mapped to the PUG class."""
    member = _members()
    ok = (pug_label >= 0) & (pug_label < len(member))
    return ok & member[np.where(ok, pug_label, 0), pred]


def value_column(folder: str, columns: list[str]) -> str | None:
    """The column holding the varied value of a factor folder (``Camera_Yaw`` -> ``camera_yaw``,
    ``Object_Scale`` -> ``scale``, ``Worlds`` -> ``world``)."""
    name = folder.lower().replace(" ", "_").replace("-", "_")
    for col in columns:
        if name == col or name.endswith("_" + col) or name.rstrip("s") == col:
            return col
    return None


def _known(values: np.ndarray) -> np.ndarray:
    """Rows whose value was filled (readers leave "" or NaN where they could not)."""
    if values.dtype.kind == "f":
        return np.isfinite(values)
    return values.astype(str) != ""


def factor_groups(columns: dict[str, np.ndarray], declared: list[str]) -> list[tuple[str, np.ndarray, str]]:
    """``(factor name, rows, value column)`` for each factor the samples vary."""
    value_cols = [c for c in declared if c != "factor" and c in columns]
    if "factor" in columns:
        folders = columns["factor"].astype(str)
        out = []
        for folder in np.unique(folders):
            col = value_column(folder, value_cols)
            if col is not None:
                out.append((folder, (folders == folder) & _known(columns[col]), col))
        return out
    return [(col, _known(columns[col]), col) for col in value_cols]


def run(ctx: Context) -> None:
    for_each_dataset(ctx, "pug", TITLE, f"The store holds no {listed('pug')} run under `center`.", run_dataset)


def run_dataset(ctx: Context, dataset: str, tag: str) -> None:
    title = tagged(TITLE, tag, ": ")
    keys = ctx.reader.runs(dataset, CENTER)
    if not keys:
        ctx.sections.append(Section(title, f"The store holds no `{dataset}` run under `center`."))
        return
    samples = ctx.reader.samples(dataset)
    declared = list(ctx.reader.manifest_entry(dataset).get("columns", {})) or sorted(samples.columns)
    groups = factor_groups(samples.columns, declared)
    # Each value column's distinct values and codes, found once for every model (a sort of the whole column).
    coded = {col: np.unique(samples.columns[col], return_inverse=True) for col in {col for _, _, col in groups}}
    panels: dict[str, dict] = {}
    every = {}  # each factor's rows, values and codes where a run is valid on every sample: found once

    def factor_rows(rows: np.ndarray, col: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        distinct, inverse = coded[col]
        counts = np.bincount(inverse[rows], minlength=len(distinct))
        present = counts > 0  # the values these rows hold, numbered in sorted order as np.unique of them would
        return rows, distinct[present], counts[present], (np.cumsum(present) - 1)[inverse[rows]]

    for key in keys:
        summary = ctx.summaries(key)
        if summary is None:
            continue
        ok = summary.valid
        correct = pug_correct(summary.pred, samples.label)
        ctx.record(key, lambda w, correct=correct, ok=ok: {"top1": accuracy(correct[ok], select(w, ok))}, int(ok.sum()))
        for factor, rows, col in groups:
            if ok.all():
                if factor not in every:
                    every[factor] = factor_rows(rows, col)
                rows, group_keys, counts, codes = every[factor]
            else:
                rows, group_keys, counts, codes = factor_rows(rows & ok, col)
            if not rows.any():
                continue

            def stat(w, correct=correct, rows=rows, codes=codes, factor=factor, group_keys=group_keys):
                means = coded_group_means(correct[rows], codes, len(group_keys), select(w, rows))
                return {f"top1:{factor}={k}": means[..., j] for j, k in enumerate(group_keys)}

            result = ctx.record(key, stat, {f"top1:{factor}={k}": int(c) for k, c in zip(group_keys, counts)})
            panels.setdefault(factor, {})[key.model] = ([f"{k}" for k in group_keys], [v * 100 for v in result.values()])
    rows = [r for r in ctx.rows if r["dataset"] == dataset]
    models = order_models(sorted({r["model"] for r in rows}))
    metrics = sorted({r["metric"] for r in rows}, key=lambda m: (m != "top1", m))
    index = {(r["metric"], r["model"]): r for r in rows}
    body = by_model("metric", metrics, models,
                    lambda m, mod: f"{index[(m, mod)]['value'] * 100:.1f}" if (m, mod) in index else "—")
    figs = [lines(ctx.figure_path(tagged("pug_factors", tag)), panels, ylabel="top-1 (%)",
                  title="PUG-ImageNet per factor")] if panels else []
    ctx.sections.append(Section(title, body, [f.relative_to(ctx.out_dir).as_posix() for f in figs]))
