"""ImageNet-X: error ratio per factor of variation (top factor, prototypes filtered)."""
from __future__ import annotations

import warnings

import numpy as np

from .. import labels
from ..context import Context, Section, select
from ..figures import grouped_bars
from ..metrics.accuracy import correct_single
from ..metrics.imagenet_x import error_ratios
from ..store import RunKey
from ..tables import fmt_value, side_by_side
from ._common import CENTER, for_each_dataset, listed, order_models, tagged

TITLE = "ImageNet-X error ratios (lower is better; 1 = average error)"


def wants(key: RunKey, entry: dict) -> bool:
    """Whether this study reads the run's logits (the report summarises those runs up front)."""
    return key.transform == CENTER and "imagenet_x" in entry["studies"]


def align(sample_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, label, factors)``: the store rows annotated in ImageNet-X (prototypes filtered), joined on file name."""
    ann = labels.imagenet_x().without_prototypes()
    position = {name: i for i, name in enumerate(ann.file_name)}
    idx = np.array([position.get(labels.base_file_name(s), -1) for s in sample_ids])
    rows = idx >= 0
    return rows, ann.label[idx[rows]], ann.factors[idx[rows]]


def run(ctx: Context) -> None:
    for_each_dataset(ctx, "imagenet_x", TITLE, f"The store holds no {listed('imagenet_x')} run under `center`.",
                     run_dataset)


def run_dataset(ctx: Context, dataset: str, tag: str) -> None:
    title = tagged(TITLE, tag, ": ")
    keys = ctx.reader.runs(dataset, CENTER)
    if not keys:
        ctx.sections.append(Section(title, f"The store holds no `{dataset}` run under `center`."))
        return
    rows, ann_label, factors = align(ctx.reader.samples(dataset).sample_id)
    if not rows.any():
        ctx.sections.append(Section(title, f"No `{dataset}` sample id matches an ImageNet-X file name."))
        return
    names = labels.IMAGENET_X_FACTORS
    for key in keys:
        summary = ctx.summaries(key)
        if summary is None:
            continue
        keep = rows & summary.valid
        correct = correct_single(summary.pred[keep], ann_label[summary.valid[rows]])
        f = factors[summary.valid[rows]]

        def stat(w, correct=correct, f=f, keep=keep):
            ratios = error_ratios(correct, f, weights=select(w, keep))
            out = {f"error_ratio:{name}": ratios[..., j] for j, name in enumerate(names)}
            with warnings.catch_warnings():  # a replicate without any defined factor is NaN, not a warning
                warnings.simplefilter("ignore", RuntimeWarning)
                out["error_ratio"] = np.nanmean(ratios, axis=-1)  # the paper's Table 5: the mean over the factors
            return out

        ctx.record(key, stat, int(keep.sum()))
    result = [r for r in ctx.rows if r["dataset"] == dataset and r["metric"].startswith("error_ratio")]
    models = order_models(sorted({r["model"] for r in result}))
    shown = {f"error_ratio:{n}": n for n in names} | {"error_ratio": "mean of the factors"}
    body = side_by_side(result, models, list(shown.values()), lambda r: shown[r["metric"]], "factor",
                        cell=lambda r: fmt_value(r, scale=1.0, digits=3))
    body += f"\n\nJoined on file name: {int(rows.sum())} of {len(rows)} `{dataset}` samples are annotated."
    index = {(r["metric"], r["model"]): r for r in result}
    fig = grouped_bars(ctx.figure_path(tagged("imagenet_x_error_ratios", tag)), list(names),
                       {m: [index.get((f"error_ratio:{n}", m), {"value": np.nan})["value"] for n in names] for m in models},
                       ylabel="error ratio", title="ImageNet-X error ratios", hline=1.0)
    ctx.sections.append(Section(title, body, [fig.relative_to(ctx.out_dir).as_posix()]))
