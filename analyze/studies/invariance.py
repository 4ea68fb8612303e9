"""Invariance to scale, shift and resolution on ImageNet val: top-1 and mean true-class probability."""
from __future__ import annotations

import re

import numpy as np

from ..context import Context, Section, select
from ..figures import lines
from ..metrics.accuracy import correct_single
from ..metrics import wmean
from ..store import RunKey
from ..tables import by_model as table_by_model
from ._common import for_each_dataset, lacks, listed, order_models, tagged

TITLE = "Invariance (ImageNet val under scale, shift and resolution changes)"
KINDS = {"scale": "scale factor", "shift": "shift (px)", "res": "resolution (px)"}
# The standard view is the origin of every curve: scale 1, shift 0 and resolution 224.
CENTER_AS = (("scale", 1.0), ("shift", 0.0), ("res", 224.0))


def wants(key: RunKey, entry: dict) -> bool:
    """Whether this study reads the run's logits (the report summarises those runs up front)."""
    return "invariance" in entry["studies"] and bool(parse(key.transform))


def parse(transform: str) -> list[tuple[str, float]]:
    """The curve points a transform id stands for."""
    if transform == "center":
        return list(CENTER_AS)
    match = re.fullmatch(r"(scale|shift|res)-([0-9.]+)", transform)
    return [(match.group(1), float(match.group(2)))] if match else []


def run(ctx: Context) -> None:
    for_each_dataset(ctx, "invariance", TITLE,
                     f"The store holds no scale-/shift-/res- transform of {listed('invariance')}.", run_dataset)


def run_dataset(ctx: Context, dataset: str, tag: str) -> None:
    title = tagged(TITLE, tag, ": ")
    label = ctx.reader.samples(dataset).label
    keys = [k for k in ctx.reader.runs(dataset) if parse(k.transform)]
    if not any(k.transform != "center" for k in keys):
        ctx.sections.append(Section(title, f"The store holds no scale-/shift-/res- transform of `{dataset}`."))
        return
    curves: dict[str, dict[str, dict[str, dict[float, float]]]] = {}
    for key in keys:
        summary = ctx.summaries(key)
        if summary is None:
            continue
        ok = summary.valid & (label >= 0)
        correct = correct_single(summary.pred, label)
        metrics = ("top1", "p_true")
        if lacks(ctx, summary, "probabilities", "the mean true-class probability (invariance)"):
            metrics = ("top1",)
        p_true = np.nan_to_num(summary.p_true)
        both = np.stack([correct[ok], p_true[ok]], axis=1).astype(np.float64)

        def stat(w, both=both, ok=ok, metrics=metrics):
            means = wmean(both, select(w, ok))  # top-1 and mean true-class probability in one pass
            return {m: means[..., j] for j, m in enumerate(metrics)}

        result = ctx.record(key, stat, int(ok.sum()))
        for kind, value in parse(key.transform):
            for metric in metrics:
                points = curves.setdefault(metric, {}).setdefault(KINDS[kind], {}).setdefault(key.model, {})
                # An explicit scale-1 / shift-0 / res-224 run wins over center.
                if key.transform != "center" or value not in points:
                    points[value] = result[metric] * 100
    if not curves:
        ctx.sections.append(Section(title, f"Every scale-/shift-/res- run of `{dataset}` is invalid; see the notes."))
        return
    models = order_models(sorted({k.model for k in keys}))
    figs, tables = [], []
    for metric, label_text in (("top1", "top-1 (%)"), ("p_true", "mean true-class probability (%)")):
        if metric not in curves:  # no run of a kind that gives it (decisions only)
            continue
        panels = {kind: {m: (sorted(v), [v[x] for x in sorted(v)]) for m, v in by_model.items()}
                  for kind, by_model in curves.get(metric, {}).items()}
        figs.append(lines(ctx.figure_path(tagged(f"invariance_{metric}", tag)), panels, ylabel=label_text,
                          title=f"Invariance: {label_text}"))
        for kind, by_model in curves.get(metric, {}).items():
            xs = {f"{x:g}": x for x in sorted({x for v in by_model.values() for x in v})}
            tables.append(f"**{label_text} vs {kind}**\n\n" + table_by_model(
                kind, list(xs), models,
                lambda x, m, points=by_model, xs=xs: f"{points.get(m, {}).get(xs[x], np.nan):.1f}"))
    ctx.sections.append(Section(title, "\n\n".join(tables), [f.relative_to(ctx.out_dir).as_posix() for f in figs]))
