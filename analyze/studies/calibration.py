"""Calibration: ECE (15 bins), reliability diagrams and confidence histograms (ImageNet val and ImageNet-R)."""
from __future__ import annotations

import numpy as np

from ..context import Context, Section, select
from ..figures import background, heatmap, label_inches, save
from ..metrics.accuracy import correct_single
from ..metrics.calibration import ece, reliability
from ..store import RunKey
from ..tables import side_by_side
from ._common import CENTER, lacks, listed, order_models, skipped_line

TITLE = "Calibration (ECE, %)"


def wants(key: RunKey, entry: dict) -> bool:
    """Whether this study reads the run's logits (the report summarises those runs up front)."""
    return key.transform == CENTER and "calibration" in entry["studies"]


PER_ROW = 6  # models per row of the figure; more models wrap onto further rows


@background
def plot_reliability(path, curves: dict[str, dict], title: str):
    """Reliability diagram (top) and confidence histogram (below it), one column per model, ``PER_ROW`` a row;
    beyond two rows of models, heat maps instead: per model and bin, accuracy minus mean confidence (what ECE
    weighs) and the fraction of the samples."""
    from ..pyplot_agg import plt

    if len(curves) > 2 * PER_ROW:
        bins = next(iter(curves.values()))
        columns = [f"{hi:.2f}" for hi in bins["upper"]]
        with np.errstate(all="ignore"):
            gap = np.array([r["accuracy"] - r["confidence"] for r in curves.values()])
            share = np.array([r["count"] / max(1, r["count"].sum()) for r in curves.values()])
        return heatmap(path, list(curves), columns,
                       {"accuracy - confidence": gap, "fraction of samples": share},
                       title=f"{title} (columns: bins by upper confidence edge)",
                       cmap={"accuracy - confidence": "RdBu", "fraction of samples": "Greys"},
                       limits={"accuracy - confidence": (-0.5, 0.5)})
    cols = min(PER_ROW, len(curves))
    rows = -(-len(curves) // cols)
    column = max(3.2, label_inches(curves, 9) / 0.8 + 0.3)  # each model's name fits above its panel
    fig, axes = plt.subplots(2 * rows, cols, figsize=(column * cols, 4.6 * rows + 1), squeeze=False,
                             gridspec_kw={"height_ratios": [2, 1] * rows})
    for k, (model, r) in enumerate(curves.items()):
        i, j = 2 * (k // cols), k % cols
        centers = (r["lower"] + r["upper"]) / 2
        width = r["upper"] - r["lower"]
        ax = axes[i][j]
        ax.bar(centers, np.nan_to_num(r["accuracy"]), width, edgecolor="k", lw=0.4, label="accuracy")
        ax.plot([0, 1], [0, 1], "--", color="gray", lw=0.8)
        ax.set_title(model, fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy" if j == 0 else "")
        hist = axes[i + 1][j]
        hist.bar(centers, r["count"] / max(1, r["count"].sum()), width, color="tab:orange", edgecolor="k", lw=0.4)
        hist.set_xlim(0, 1)
        hist.set_xlabel("confidence")
        hist.set_ylabel("fraction" if j == 0 else "")
        for a in (ax, hist):
            a.set_xticks((0, 0.5, 1))
        ax.set_yticks((0, 0.5, 1))
        if j:  # the accuracy axis is [0, 1] everywhere: its numbers once per row
            ax.tick_params(labelleft=False)
    for k in range(len(curves), rows * cols):
        axes[2 * (k // cols)][k % cols].set_visible(False)
        axes[2 * (k // cols) + 1][k % cols].set_visible(False)
    fig.suptitle(title)
    # Margins in inches, not tight_layout: its measuring pass costs as much as the drawing, at every model.
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.2 / width, bottom=0.55 / height, top=1 - 0.6 / height,
                        wspace=0.25, hspace=0.45)
    return save(fig, path)


def run(ctx: Context) -> None:
    figures, skipped, given = [], [], []
    datasets = ctx.datasets_for("calibration")
    for dataset in datasets:
        curves = {}
        # Over a class subset the confidence is renormalised over its classes: that needs the whole distribution.
        need = "probabilities" if ctx.reader.manifest_entry(dataset).get("class_subset") else "confidence"
        for key in ctx.reader.runs(dataset, CENTER):
            summary = ctx.summaries(key)
            if summary is None:
                continue
            if lacks(ctx, summary, need, f"calibration on {dataset}"):
                skipped.append(key.model)
                continue
            if not summary.provides("probabilities"):
                given.append(key.model)
            label = ctx.reader.samples(dataset).label
            rows = summary.valid & (label >= 0)
            correct = correct_single(summary.pred, label)
            conf = summary.confidence
            ctx.record(key, lambda w, conf=conf, correct=correct, rows=rows: {
                "ece": ece(conf[rows], correct[rows], weights=select(w, rows))}, int(rows.sum()))
            curves[key.model] = reliability(conf[rows], correct[rows])
        if curves:
            curves = {m: curves[m] for m in order_models(list(curves))}
            figures.append(plot_reliability(ctx.figure_path(f"reliability_{dataset}"), curves,
                                            f"Reliability and confidence histogram: {dataset}"))
    rows = [r for r in ctx.rows if r["metric"] == "ece" and r["transform"] == CENTER]
    why = ("their runs give no confidence per decision (over a class subset such as ImageNet-R's: no whole "
           "distribution); see the notes")
    if not rows:
        ctx.sections.append(Section(TITLE, f"The store holds no {listed('calibration')} run under `center` with "
                                           f"a confidence per decision.{skipped_line(skipped, why)}"))
        return
    models = order_models(sorted({r["model"] for r in rows}))
    present = [d for d in datasets if any(r["dataset"] == d for r in rows)]
    body = side_by_side(rows, models, present, lambda r: r["dataset"], "dataset")
    body += ("\n\nSoftmax in float64 over the dataset's classes (ImageNet-R: its 200); 15 equal-width bins, "
             "lower < confidence <= upper.")
    if given:
        body += (f" For {', '.join(order_models(sorted(set(given))))} the confidence is the probability their "
                 f"imported decisions come with.")
    body += skipped_line(skipped, why)
    ctx.sections.append(Section(TITLE, body, [f.relative_to(ctx.out_dir).as_posix() for f in figures]))
