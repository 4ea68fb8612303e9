"""Calibration: ECE (15 bins), reliability diagrams and confidence histograms (ImageNet val and ImageNet-R)."""
from __future__ import annotations

from ..context import Context, Section, select
from ..figures import reliability_panels
from ..metrics.accuracy import correct_single
from ..metrics.calibration import bin_index, ece, reliability
from ..store import RunKey
from ..tables import side_by_side
from ._common import CENTER, lacks, listed, order_models, skipped_line

TITLE = "Calibration (ECE, %)"


def wants(key: RunKey, entry: dict) -> bool:
    """Whether this study reads the run's logits (the report summarises those runs up front)."""
    return key.transform == CENTER and "calibration" in entry["studies"]


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
            conf, correct = summary.confidence[rows], correct[rows]
            bins = bin_index(conf)  # binned once for the point estimate, the replicates and the curve
            ctx.record(key, lambda w, conf=conf, correct=correct, rows=rows, bins=bins: {
                "ece": ece(conf, correct, weights=select(w, rows), bins=bins)}, int(rows.sum()))
            curves[key.model] = reliability(conf, correct, bins=bins)
        if curves:
            curves = {m: curves[m] for m in order_models(list(curves))}
            figures.append(reliability_panels(ctx.figure_path(f"reliability_{dataset}"), curves,
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
