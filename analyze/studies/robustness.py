"""Robustness: top-1 on the datasets the manifest lists for it (ImageNet val, V2, A, R, Sketch, C as the mean
over its cells, Hard), plus ImageNet-ReaL on ImageNet val's images."""
from __future__ import annotations

import numpy as np

from .. import labels
from ..context import Context, Section, select
from ..figures import grouped_bars
from ..metrics.accuracy import accuracy, correct_multi, correct_single
from ..store import RunKey, manifest_entries
from ..tables import side_by_side
from ._common import CENTER, PER_IMAGE, codes, order_models, population

TITLE = "Robustness (top-1 accuracy, %)"
# ImageNet-ReaL relabels ImageNet val's images (keyed by their file names): a row of its own, read from them.
REAL, REAL_SOURCE = "imagenet-real", "imagenet-val"


def wants(key: RunKey, entry: dict) -> bool:
    """Whether this study reads the run's logits (the report summarises those runs up front)."""
    return key.transform == CENTER and "robustness" in entry["studies"]


def with_real(datasets) -> list[str]:
    """The datasets as table rows: ImageNet-ReaL right after its source."""
    return [row for d in datasets for row in ((d, REAL) if d == REAL_SOURCE else (d,))]


def real_label_sets(sample_ids: np.ndarray) -> np.ndarray:
    """ReaL label sets aligned with the samples, padded with -1 ([sample, slot])."""
    table = labels.real_labels()
    sets = [table.get(labels.base_file_name(s), ()) for s in sample_ids]
    out = np.full((len(sets), max(1, max(map(len, sets)))), -1, np.int64)
    for i, s in enumerate(sets):
        out[i, : len(s)] = s
    return out


def _top1(ctx: Context, key, correct, rows, dataset=None) -> None:
    ctx.record(key, lambda w: {"top1": accuracy(correct[rows], select(w, rows))}, int(rows.sum()), dataset=dataset)


def imagenet_c(ctx: Context, key, summary) -> None:
    """Top-1 per (corruption, severity) cell and their mean, resampling the underlying images."""
    samples = ctx.reader.samples(key.dataset)
    for col in ("corruption", "severity"):
        if col not in samples.columns:
            ctx.reader.notes.append(f"{key.dataset}/{col}: missing per-sample column; ImageNet-C cells need it")
            return
    weight_key, n_images, image_index = population(ctx, key.dataset)
    keys, cell_index = _cells(ctx, key.dataset)
    ok = summary.valid & (samples.label >= 0)
    # Dense [image, cell] arrays: one bootstrap weight per underlying image serves all its 75 cells.
    correct = correct_single(summary.pred, samples.label)
    flat = (image_index * len(keys) + cell_index)[ok]
    hits = np.bincount(flat, correct[ok].astype(np.float64), n_images * len(keys)).reshape(n_images, len(keys))
    seen = np.bincount(flat, minlength=n_images * len(keys)).reshape(n_images, len(keys)).astype(np.float64)

    def stat(w):
        from ..metrics import wsum
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = wsum(hits, w) / wsum(seen, w)
        out = {f"top1:{k}": acc[..., j] for j, k in enumerate(keys)}
        out["top1"] = np.nanmean(acc, axis=-1)
        return out

    counts = {f"top1:{k}": int(c) for k, c in zip(keys, seen.sum(axis=0))}
    ctx.record(key, stat, {**counts, "top1": int(ok.sum())}, weight_key=weight_key, n_rows=n_images)


def _cells(ctx: Context, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``corruption:severity`` cells, sorted, and each row's cell index (once per report, not per model)."""
    if ("cells", dataset) not in ctx.shared:
        columns = ctx.reader.samples(dataset).columns
        ctx.shared[("cells", dataset)] = codes(f"{c}:{s}" for c, s in zip(columns["corruption"].astype(str).tolist(),
                                                                          columns["severity"].astype(str).tolist()))
    return ctx.shared[("cells", dataset)]


def run(ctx: Context) -> None:
    reader = ctx.reader
    shown = with_real(ctx.datasets_for("robustness"))
    for dataset in shown:
        source = REAL_SOURCE if dataset == REAL else dataset
        real_sets = None  # joined once per dataset, shared by its models
        for key in reader.runs(source, CENTER):
            summary = ctx.summaries(key)
            if summary is None:
                continue
            samples = reader.samples(source)
            if dataset in PER_IMAGE:
                imagenet_c(ctx, key, summary)
            elif dataset == REAL:
                if real_sets is None:
                    real_sets = real_label_sets(samples.sample_id)
                correct, counted = correct_multi(summary.pred, real_sets)
                _top1(ctx, key, correct, summary.valid & counted, dataset=REAL)
            elif summary.category is not None:  # 16-way datasets (model-vs-human): the category decision
                _top1(ctx, key, summary.category == samples.label, summary.valid & (samples.label >= 0))
            elif "label_set" in samples.columns:
                correct, counted = correct_multi(summary.pred, samples.columns["label_set"])
                _top1(ctx, key, correct, summary.valid & counted)
            else:
                _top1(ctx, key, correct_single(summary.pred, samples.label), summary.valid & (samples.label >= 0))
    rows = [r for r in ctx.rows if r["metric"] == "top1" and r["dataset"] in shown and r["transform"] == CENTER]
    if not rows:
        ctx.sections.append(Section(TITLE, "The store holds none of these datasets under the `center` transform."))
        return
    models = order_models(sorted({r["model"] for r in rows}))
    present = [d for d in shown if any(r["dataset"] == d for r in rows)]
    table = side_by_side(rows, models, present, lambda r: r["dataset"], "dataset")
    index = {(r["dataset"], r["model"]): r for r in rows}
    fig = grouped_bars(
        ctx.figure_path("robustness"), present,
        {m: [index.get((d, m), {"value": np.nan})["value"] * 100 for d in present] for m in models},
        errors={m: [(index[(d, m)]["ci_low"] * 100, index[(d, m)]["ci_high"] * 100) if (d, m) in index else (np.nan, np.nan)
                    for d in present] for m in models},
        ylabel="top-1 (%)", title="Robustness")
    missing = [d for d in with_real(d for d, e in manifest_entries().items() if "robustness" in e["studies"])
               if d not in present]
    body = table + ("\n\nNot in the store: " + ", ".join(missing) if missing else "")
    ctx.sections.append(Section(TITLE, body, [fig.relative_to(ctx.out_dir).as_posix()]))
