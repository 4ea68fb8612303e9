"""Agreement between models, and with human observers: error consistency (Geirhos et al., NeurIPS 2020) of
per-image correctness and linear CKA (Kornblith et al., ICML 2019) of pooled features, for every pair of runs
under ``center`` on each dataset. Definitions: ``analyze/metrics/agreement.py``; pairs: ``_pairs.py``.

A run holds human decisions when its model id starts with ``human`` or ``subject-`` (model-vs-human's
observer names, which ``analyze import`` keeps). Each model is then also compared with the human observers:
the mean error consistency over the observers, and the observers' own mean over their pairs.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl

from ..context import Context, Section
from ..figures import matrices
from ..store import RunKey, manifest_entries, manifest_order
from ..tables import markdown_table
from ._common import CENTER, is_human, order_models, tagged
from ._pairs import CKA_IMAGES, Pair, cka_pairs, error_consistency_pairs

TITLE = "Agreement: error consistency and CKA"
STUDY = "agreement"
HUMANS = "humans:mean"  # model_b of a model's mean over the human observers (model_a too: between observers)
COLUMNS = ("model_a", "model_b", "dataset", "transform", "metric", "value", "ci_low", "ci_high", "n", "partial")
TABLE = "agreement"  # agreement.parquet / agreement.csv in the output folder
EXPLAIN = (f"Error consistency κ: Cohen's kappa of per-image correctness (Geirhos et al., NeurIPS 2020); 0 = no more "
           f"shared errors than the two accuracies predict, 1 = right and wrong on the same images. CKA: linear CKA "
           f"(Kornblith et al., ICML 2019) of the pooled features on the same images, at most {CKA_IMAGES:,} of "
           f"them (a fixed random subset). Observed and expected: the fraction of images both get right or both "
           f"wrong, and what independent errors at the two accuracies would give. Every pair and metric: "
           f"`{TABLE}.csv` / `{TABLE}.parquet`.")
SHOWN = 15  # pairs shown at each end of a dataset's table (most and least consistent) when there are more


def listed(dataset: str, entry: dict) -> bool:
    """The stored entry lists the study, or today's data_manifest.yaml lists it for the dataset: a store
    written before the study existed is compared too (its runs are all the study needs)."""
    return STUDY in entry["studies"] or STUDY in manifest_entries().get(dataset, {}).get("studies", ())


def wants(key: RunKey, entry: dict) -> bool:
    """Whether this study reads the run's logits (the report summarises those runs up front)."""
    return key.transform == CENTER and listed(key.dataset, entry)


def run(ctx: Context) -> None:
    datasets = manifest_order(d for d in ctx.reader.datasets if listed(d, ctx.reader.manifest_entry(d)))
    rows: list[dict] = []
    if not datasets:
        ctx.sections.append(Section(TITLE, "The store holds no dataset data_manifest.yaml lists for `agreement`."))
    for i, dataset in enumerate(datasets):
        rows += run_dataset(ctx, dataset, dataset if len(datasets) > 1 else "", explain=i == 0)
    schema = {c: pl.Float64 if c in ("value", "ci_low", "ci_high") else pl.Int64 if c == "n"
              else pl.Boolean if c == "partial" else pl.Utf8 for c in COLUMNS}
    table = pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)
    table.write_parquet(ctx.out_dir / f"{TABLE}.parquet")
    table.write_csv(ctx.out_dir / f"{TABLE}.csv")


def _row(ctx: Context, a: str, b: str, dataset: str, metric: str, value: float, reps, n: int,
         bounds: tuple[float, float] | None = None) -> dict:
    low, high = ctx.boot.interval(reps) if bounds is None else bounds
    return {"model_a": a, "model_b": b, "dataset": dataset, "transform": CENTER, "metric": metric, "value": value,
            "ci_low": low, "ci_high": high, "n": n, "partial": ctx.is_partial(dataset)}


def _pair_rows(ctx: Context, dataset: str, pairs: list[Pair]) -> list[dict]:
    """One row per pair and metric; the intervals of all of them at once (thousands of pairs at 50 models)."""
    bounds = np.array([np.full(2, np.nan) if p.bounds is None else p.bounds for p in pairs]).reshape(-1, 2)
    with_reps = [i for i, p in enumerate(pairs) if p.bounds is None and p.reps is not None]
    if with_reps:
        bounds[with_reps] = ctx.boot.intervals(np.stack([pairs[i].reps for i in with_reps]))
    return [_row(ctx, p.a.model, p.b.model, dataset, p.metric, p.value, p.reps, p.n, (float(lo), float(hi)))
            for p, (lo, hi) in zip(pairs, bounds)]


def _mean(ctx: Context, a: str, b: str, dataset: str, pairs: list[Pair]) -> dict | None:
    """The mean error consistency over ``pairs``, replicate by replicate (the replicates are paired)."""
    if not pairs:
        return None
    reps = None if any(p.reps is None for p in pairs) else np.mean([p.reps for p in pairs], axis=0)
    return _row(ctx, a, b, dataset, "error_consistency", float(np.mean([p.value for p in pairs])), reps,
                min(p.n for p in pairs))


def _partner(pair: Pair, model: str) -> str | None:
    """The other run of a pair that includes ``model``; None for a pair without it."""
    return pair.b.model if pair.a.model == model else pair.a.model if pair.b.model == model else None


def run_dataset(ctx: Context, dataset: str, tag: str, explain: bool = True) -> list[dict]:
    title = tagged(TITLE, tag, ": ")
    keys = ctx.reader.runs(dataset, CENTER)
    humans = sorted(k.model for k in keys if is_human(k.model))
    names = order_models([k.model for k in keys if k.model not in humans]) + humans
    keys = sorted(keys, key=lambda k: names.index(k.model))
    pairs = error_consistency_pairs(ctx, keys) + cka_pairs(ctx, keys)
    if not pairs:
        ctx.sections.append(Section(title, f"Agreement needs two runs of `{dataset}` under `center` with per-image "
                                           "correctness or pooled features; the store holds fewer."))
        return []
    rows = _pair_rows(ctx, dataset, pairs)
    kappas = [p for p in pairs if p.metric == "error_consistency"]
    with_humans = {}
    compared = [m for m in names if m not in humans] if humans else []  # each walks every pair: none without humans
    for m in compared:
        mean = _mean(ctx, m, HUMANS, dataset, [p for p in kappas if _partner(p, m) in humans])
        if mean is not None:
            with_humans[m] = mean
    among = _mean(ctx, HUMANS, HUMANS, dataset, [p for p in kappas if p.a.model in humans and p.b.model in humans])
    rows += list(with_humans.values()) + ([among] if among else [])
    mark = ctx.reader.partial(dataset)
    body = "\n\n".join(
        ([f"**Partial data:** `{dataset}` holds {mark['found']} of its {mark['expected']} samples (extracted with "
          f"`--allow-partial`); `{TABLE}.csv` flags its rows `partial`."] if mark else [])
        + ([EXPLAIN] if explain else []) + [_body(rows, humans, with_humans, among)])
    figure = _figure(ctx, dataset, tag, names, rows)
    ctx.sections.append(Section(title, body, [figure.relative_to(ctx.out_dir).as_posix()]))
    return rows


def _cell(row: dict | None, digits: int = 3) -> str:
    if row is None or math.isnan(row["value"]):
        return "—"
    text = f"{row['value']:.{digits}f}"
    return text if math.isnan(row["ci_low"]) else f"{text} [{row['ci_low']:.{digits}f}, {row['ci_high']:.{digits}f}]"


def _body(rows: list[dict], humans: list[str], with_humans: dict, among: dict | None) -> str:
    index = {(r["model_a"], r["model_b"], r["metric"]): r for r in rows}
    pairs = list(dict.fromkeys((r["model_a"], r["model_b"]) for r in rows if HUMANS not in (r["model_a"], r["model_b"])))
    kappa = lambda p: index.get((*p, "error_consistency"), {"value": math.nan})["value"]  # noqa: E731
    pairs.sort(key=lambda p: math.inf if math.isnan(kappa(p)) else -kappa(p))
    shown = pairs if len(pairs) <= 2 * SHOWN else pairs[:SHOWN] + pairs[-SHOWN:]

    def line(a: str, b: str) -> list[str]:
        kappa_row, expected = index.get((a, b, "error_consistency")), index.get((a, b, "expected_consistency"))
        undefined = expected is not None and expected["value"] >= 1.0  # 0/0: model-vs-human reports 1
        return [a, b, _cell(kappa_row) + (" †" if undefined else ""), _cell(index.get((a, b, "observed_consistency"))),
                _cell(expected), _cell(index.get((a, b, "cka"))), str(kappa_row["n"]) if kappa_row else "—"]

    rows_shown = [line(a, b) for a, b in shown]
    table = markdown_table(["model A", "model B", "error consistency κ", "observed", "expected", "CKA", "images (κ)"],
                           rows_shown)
    parts = ["Pairs by κ, highest first:", table]
    if any(r[2].endswith(" †") for r in rows_shown):
        parts.append("† Both runs are right on every image, or both wrong on every image: κ is 0/0, reported as 1 "
                     "as model-vs-human does; it says nothing about shared errors.")
    if len(shown) < len(pairs):
        parts.append(f"The {SHOWN} most and {SHOWN} least consistent of {len(pairs)} pairs; all of them in "
                     f"`{TABLE}.csv`.")
    if with_humans or among:
        human_rows = [[m, _cell(r)] for m, r in with_humans.items()]
        if among:
            human_rows.append(["(between the observers)", _cell(among)])
        parts += [f"Error consistency with the {len(humans)} human observers (mean over them):",
                  markdown_table(["model", "κ with humans"], human_rows)]
    return "\n\n".join(parts)


def _figure(ctx: Context, dataset: str, tag: str, names: list[str], rows: list[dict]) -> Path:
    """One matrix per metric over the runs it compares (CKA: those with features), 1 on the diagonal."""
    panels = {}
    for metric, label, low in (("error_consistency", "error consistency κ", -1.0), ("cka", "linear CKA", 0.0)):
        pairs = [r for r in rows if r["metric"] == metric and HUMANS not in (r["model_a"], r["model_b"])]
        present = [m for m in names if any(m in (r["model_a"], r["model_b"]) for r in pairs)]
        if not present:
            continue
        where = {m: i for i, m in enumerate(present)}
        grid = np.full((len(present), len(present)), np.nan)
        np.fill_diagonal(grid, 1.0)
        for r in pairs:
            i, j = where[r["model_a"]], where[r["model_b"]]
            grid[i, j] = grid[j, i] = r["value"]
        panels[label] = (present, grid, low, 1.0)
    return matrices(ctx.figure_path(tagged("agreement", tag)), panels, title=f"Agreement on {dataset}")
