"""Transfer: VTAB-1k linear probes on pooled features (train800 / val200 / test)."""
from __future__ import annotations

import numpy as np

from ..context import Context, Section, select
from ..figures import grouped_bars
from ..metrics.accuracy import accuracy
from ..metrics.linear_probe import linear_probe
from ..store import RunKey
from ..tables import by_model
from ._common import CENTER, order_models

TITLE = "Transfer: VTAB-1k linear probes (test top-1, %)"
GROUPS = ("natural", "specialized", "structured")
SPLITS = ("train800", "val200", "test")


def wants(key: RunKey, entry: dict) -> bool:
    """The probes read pooled features, not logits."""
    return False


def probe_task(ctx: Context, key: RunKey) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-test-sample correctness and the test rows, or None when the run can't be probed."""
    if not ctx.reader.has_features(key):
        ctx.reader.notes.append(f"{key.path}: no pooled features (imported predictions?); linear probe skipped")
        return None
    samples = ctx.reader.samples(key.dataset)
    split = samples.columns.get("split")
    if split is None:
        ctx.reader.notes.append(f"{key.dataset}/split: missing per-sample column (expected train800 / val200 / test)")
        return None
    valid = ctx.reader.valid(key)
    feats = ctx.reader.features(key)
    valid &= np.isfinite(feats).all(axis=1)
    masks = {s: (np.asarray(split).astype(str) == s) & valid for s in SPLITS}
    if not all(m.any() for m in masks.values()):
        counts = {s: int(m.sum()) for s, m in masks.items()}
        ctx.reader.notes.append(f"{key.path}: a split has no valid samples {counts}; probe skipped")
        return None
    y = samples.label
    res = linear_probe(*(a for s in SPLITS for a in (feats[masks[s]], y[masks[s]])))
    return res.correct, masks["test"]


def run(ctx: Context) -> None:
    tasks = ctx.datasets_for("transfer")
    if not tasks:
        ctx.sections.append(Section(TITLE, "The store holds no `vtab-*` dataset."))
        return
    group_of = {t: ctx.reader.manifest_entry(t).get("group") or "ungrouped" for t in tasks}
    task_reps: dict[str, dict[str, tuple[float, np.ndarray | None]]] = {}
    for task in tasks:
        for key in ctx.reader.runs(task, CENTER):
            probed = ctx.summaries.derived(key, "vtab-probe", lambda key=key: probe_task(ctx, key))
            if probed is None:
                continue
            correct, test = probed

            def stat(w, correct=correct, test=test):
                return {"top1": accuracy(correct, select(w, test))}

            value = ctx.record(key, stat, int(test.sum()))["top1"]
            task_reps.setdefault(key.model, {})[task] = (value, None)  # replicates after the flush below
    ctx.flush()
    task_reps = {model: {task: (value, ctx.replicates.get((task, CENTER, "top1", model), (None, None))[1])
                         for task, (value, _) in per_task.items()} for model, per_task in task_reps.items()}
    models = order_models(list(task_reps))
    # Group means: the mean over the group's tasks, replicate by replicate (tasks resample independently).
    group_rows = {}
    for model, per_task in task_reps.items():
        for group in (*GROUPS, "all"):
            members = [t for t in per_task if group == "all" or group_of[t] == group]
            if not members:
                continue
            value = float(np.mean([per_task[t][0] for t in members]))
            reps = [per_task[t][1] for t in members]
            low, high = ctx.boot.interval(np.mean(reps, axis=0)) if all(r is not None for r in reps) else (np.nan, np.nan)
            row = {"model": model, "dataset": f"vtab-{group}", "transform": CENTER, "metric": "top1_mean",
                   "value": value, "ci_low": low, "ci_high": high, "n": len(members),
                   "partial": any(ctx.is_partial(t) for t in members)}
            ctx.rows.append(row)
            group_rows[(model, group)] = row
    order = sorted(tasks, key=lambda t: (GROUPS.index(group_of[t]) if group_of[t] in GROUPS else 9, t))
    label = {f"{t} ({group_of[t]})": t for t in order}
    body = by_model("task (group)", list(label), models,
                    lambda t, m: f"{task_reps[m][label[t]][0] * 100:.1f}" if label[t] in task_reps[m] else "—")
    body += "\n\n" + by_model("group mean", [*GROUPS, "all"], models,
                              lambda g, m: f"{group_rows[(m, g)]['value'] * 100:.1f}" if (m, g) in group_rows else "—")
    groups = [g for g in (*GROUPS, "all") if any((m, g) in group_rows for m in models)]
    fig = grouped_bars(ctx.figure_path("vtab"), groups,
                       {m: [group_rows.get((m, g), {"value": np.nan})["value"] * 100 for g in groups] for m in models},
                       ylabel="linear-probe top-1 (%)", title="VTAB-1k linear probes")
    ctx.sections.append(Section(TITLE, body, [fig.relative_to(ctx.out_dir).as_posix()]))
