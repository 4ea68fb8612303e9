"""PUG-ImageNet: top-1 (1000-way, mapped to PUG classes) overall and per factor of variation."""
from __future__ import annotations

import numpy as np

from .. import labels
from ..context import Context, Section, select
from ..figures import lines
from ..metrics.accuracy import accuracy
from ..metrics.grouped import group_means
from ..tables import markdown_table
from ._common import CENTER, order_models

TITLE = "PUG-ImageNet (top-1 %, overall and per factor)"
DATASET = "pug-imagenet"


def pug_correct(pred: np.ndarray, pug_label: np.ndarray) -> np.ndarray:
    """Correct when the 1000-way prediction is one of the ImageNet classes mapped to the PUG class."""
    classes = list(labels.pug_classes().values())
    member = np.zeros((len(classes), 1000), bool)
    for c, idx in enumerate(classes):
        member[c, idx] = True
    ok = (pug_label >= 0) & (pug_label < len(classes))
    return ok & member[np.where(ok, pug_label, 0), pred]


def run(ctx: Context) -> None:
    keys = ctx.reader.runs(DATASET, CENTER)
    if not keys:
        ctx.sections.append(Section(TITLE, "The store holds no `pug-imagenet` run under `center`."))
        return
    samples = ctx.reader.samples(DATASET)
    factors = [c for c in ctx.reader.manifest_entry(DATASET).get("columns", {}) if c in samples.columns] or sorted(samples.columns)
    panels: dict[str, dict] = {f: {} for f in factors}
    for key in keys:
        summary = ctx.summaries(key)
        if summary is None:
            continue
        ok = summary.valid
        correct = pug_correct(summary.pred, samples.label)
        ctx.record(key, lambda w: {"top1": accuracy(correct[ok], select(w, ok))}, int(ok.sum()))
        for factor in factors:
            values = samples.columns[factor][ok]
            group_keys, counts = np.unique(values, return_counts=True)

            def stat(w, values=values, factor=factor, group_keys=group_keys):
                _, means = group_means(correct[ok], values, select(w, ok))
                return {f"top1:{factor}={k}": means[..., j] for j, k in enumerate(group_keys)}

            result = ctx.record(key, stat, {f"top1:{factor}={k}": int(c) for k, c in zip(group_keys, counts)})
            panels[factor][key.model] = ([str(k) for k in group_keys], [v * 100 for v in result.values()])
    rows = [r for r in ctx.rows if r["dataset"] == DATASET]
    models = order_models(sorted({r["model"] for r in rows}))
    metrics = sorted({r["metric"] for r in rows}, key=lambda m: (m != "top1", m))
    index = {(r["metric"], r["model"]): r for r in rows}
    body = markdown_table(["metric"] + models,
                          [[m] + [f"{index[(m, mod)]['value'] * 100:.1f}" if (m, mod) in index else "—" for mod in models]
                           for m in metrics])
    figs = []
    if factors:
        figs.append(lines(ctx.figure_path("pug_factors"), panels, ylabel="top-1 (%)", title="PUG-ImageNet per factor"))
    ctx.sections.append(Section(TITLE, body, [f.relative_to(ctx.out_dir).as_posix() for f in figs]))
