"""Shape / texture bias on the cue-conflict images."""
from __future__ import annotations

from .. import labels
from ..context import Context, Section, select
from ..figures import grouped_bars
from ..metrics.shape_bias import shape_bias, shape_bias_per_category
from ..store import RunKey
from ..tables import by_model, markdown_table
from ._common import CENTER, for_each_dataset, listed, order_models, tagged

TITLE = "Shape bias on cue-conflict images"


def wants(key: RunKey, entry: dict) -> bool:
    """Whether this study reads the run's logits (the report summarises those runs up front)."""
    return key.transform == CENTER and "shape_bias" in entry["studies"]


def run(ctx: Context) -> None:
    for_each_dataset(ctx, "shape_bias", TITLE, f"The store holds no {listed('shape_bias')} run under `center`.",
                     run_dataset)


def run_dataset(ctx: Context, dataset: str, tag: str) -> None:
    title = tagged(TITLE, tag, ": ")
    keys = ctx.reader.runs(dataset, CENTER)
    if not keys:
        ctx.sections.append(Section(title, f"The store holds no `{dataset}` run under `center`."))
        return
    samples = ctx.reader.samples(dataset)
    if "texture_label" not in samples.columns:
        ctx.reader.notes.append(f"{dataset}/texture_label: missing per-sample column; shape bias needs it")
        return
    shape, texture = samples.label, samples.columns["texture_label"]
    categories = list(labels.cue_conflict_groups())
    per_category = {}
    from_decisions = []
    for key in keys:
        summary = ctx.summaries(key)
        if summary is None or summary.category is None:
            continue
        ok = summary.valid
        decision = summary.category
        if not summary.provides("probabilities"):
            from_decisions.append(key.model)
        kept = int((ok & (shape != texture)).sum())
        ctx.record(key, lambda w, decision=decision, ok=ok: shape_bias(
            decision[ok], shape[ok], texture[ok], weights=select(w, ok)), kept)
        per_category[key.model] = shape_bias_per_category(decision[ok], shape[ok], texture[ok], len(categories))
    rows = [r for r in ctx.rows if r["dataset"] == dataset]
    models = order_models(sorted({r["model"] for r in rows}))
    index = {(r["model"], r["metric"]): r for r in rows}
    metrics = ("shape_bias", "shape_fraction", "texture_fraction")

    def cell(m, metric):
        r = index.get((m, metric))
        return "—" if r is None else f"{r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"

    body = markdown_table(["model", *metrics], [[m] + [cell(m, k) for k in metrics] for m in models])
    body += ("\n\nDecision = the category with the highest mean softmax probability over its ImageNet classes; "
             "images whose shape and texture categories coincide are dropped.")
    if from_decisions:
        body += (f" For {', '.join(order_models(from_decisions))} (decisions without a full distribution), the "
                 f"decision is the category of the decided class, or the decided category itself.")
    body += "\n\nPer shape category:\n\n"
    body += by_model("category", categories, models, lambda c, m: f"{per_category[m][categories.index(c)]:.2f}")
    fig = grouped_bars(ctx.figure_path(tagged("shape_texture_fractions", tag)), models,
                       {"shape": [index[(m, "shape_fraction")]["value"] for m in models],
                        "texture": [index[(m, "texture_fraction")]["value"] for m in models]},
                       ylabel="fraction of decisions", title="Shape vs texture decisions on cue-conflict")
    ctx.sections.append(Section(title, body, [fig.relative_to(ctx.out_dir).as_posix()]))
