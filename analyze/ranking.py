"""Ranking across properties (as Battle of the Backbones, Goldblum et al., NeurIPS 2023): one score per model and
property, z-scored across the models present, averaged with priorities into one overall score and rank.

For property ``p`` with direction ``d_p`` (+1 higher is better, -1 lower is better: ECE, ImageNet-X error ratio)
and the models ``M_p`` that have it (at least two):

    z_mp = d_p (v_mp - mean_{M_p} v) / sd_{M_p} v        (population sd; z = 0 when every model ties)

Weights: a group ``g`` (``accuracy``, ``robustness``, ``calibration``, ...) has weight ``W_g`` (``--priorities``,
default 1), shared among its ranked properties in proportion to their own priorities ``u_p`` (default 1):
``w_p = W_g u_p / sum_{q in g} u_q``, so a group weighs the same whatever its number of properties. The score
of model ``m`` is the weighted mean over the properties it has:

    S_m = sum_p w_p z_mp / sum_p w_p,        rank_m = 1 + #{m' : S_m' > S_m}

Rank intervals: the same computation on every bootstrap replicate (each property's replicate values, z-scored
across the models in that replicate), and the 2.5th / 97.5th percentiles of each model's replicate ranks
(numpy's ``lower`` / ``higher`` methods, so the bounds are ranks). The replicates are the report's own, drawn
per dataset and shared by every model: the ranks of one replicate are computed on paired data.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import polars as pl

from schemas.registry import unknown_name

from .context import Context, Section
from .tables import markdown_table

CENTER = "center"


@dataclass(frozen=True)
class Property:
    id: str            # "<group>/<name>", the key of --priorities
    group: str
    label: str         # heat-map column
    higher_is_better: bool
    dataset: str = ""
    metric: str = ""


def _p(group: str, name: str, label: str, dataset: str, metric: str = "top1", higher: bool = True) -> Property:
    return Property(f"{group}/{name}", group, label, higher, dataset, metric)


# Every property the ranking knows, in report order.
PROPERTIES: tuple[Property, ...] = (
    _p("accuracy", "imagenet-val", "top-1", "imagenet-val"),
    *(_p("robustness", d, label, d) for d, label in (
        ("imagenet-v2", "V2"), ("imagenet-a", "A"), ("imagenet-c", "C"), ("imagenet-r", "R"),
        ("imagenet-sketch", "Sketch"), ("imagenet-hard", "Hard"), ("imagenet-real", "ReaL"))),
    _p("calibration", "imagenet-val", "ECE val", "imagenet-val", "ece", higher=False),
    _p("calibration", "imagenet-r", "ECE R", "imagenet-r", "ece", higher=False),
    _p("shape_bias", "cue-conflict", "shape bias", "cue-conflict", "shape_bias"),
    _p("imagenet_x", "imagenet-val", "INet-X err.", "imagenet-val", "error_ratio", higher=False),
    *(_p("invariance", kind, kind, "imagenet-val") for kind in ("scale", "shift", "res")),
    *(_p("transfer", f"vtab-{g}", f"VTAB {g[:6]}", f"vtab-{g}", "top1_mean") for g in
      ("natural", "specialized", "structured")),
    _p("pug", "pug-imagenet", "PUG", "pug-imagenet"),
)
GROUPS: tuple[str, ...] = tuple(dict.fromkeys(p.group for p in PROPERTIES))


def check_priorities(priorities: Mapping[str, float]) -> dict[str, float]:
    """Weights by group or property id, each a finite number >= 0; an unknown key gets the did-you-mean error."""
    known = list(GROUPS) + [p.id for p in PROPERTIES]
    out = {}
    for key, weight in priorities.items():
        if key not in known:
            raise unknown_name("priority key", key, known)
        try:
            out[key] = float(weight)
        except (TypeError, ValueError):
            raise ValueError(f"{key}: expected a number >= 0, found {weight!r}") from None
        if not math.isfinite(out[key]) or out[key] < 0:
            raise ValueError(f"{key}: expected a number >= 0, found {weight!r}")
    return out


def parse_priorities(text: str) -> dict[str, float]:
    """``calibration=2,robustness=1,robustness/imagenet-a=3`` -> weights by group or property id (each >= 0)."""
    given: dict[str, str] = {}
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep:
            raise ValueError(f"{item!r}: expected KEY=WEIGHT (e.g. calibration=2)")
        if key in given:
            raise ValueError(f"{key} is given twice")
        given[key] = value
    if not given:
        raise ValueError(f"{text!r}: expected KEY=WEIGHT[,KEY=WEIGHT...] (e.g. calibration=2)")
    return check_priorities(given)


# -- property values from the report's results ------------------------------------------------------------
Cell = tuple[float, "np.ndarray | None", bool]   # value, replicates (or None), partial


def _cell(ctx: Context, model: str, dataset: str, transform: str, metric: str) -> Cell | None:
    row = ctx.value(model, dataset, transform, metric)
    if row is None or not np.isfinite(row["value"]):
        return None
    reps = ctx.replicates.get((dataset, transform, metric, model))
    return row["value"], None if reps is None else np.asarray(reps[1], np.float64), bool(row["partial"])


def _mean(cells: list[Cell]) -> Cell:
    """The mean of several cells, replicate by replicate (None when any lacks replicates)."""
    reps = [c[1] for c in cells]
    return (float(np.mean([c[0] for c in cells])), None if any(r is None for r in reps) else np.mean(reps, axis=0),
            any(c[2] for c in cells))


def _vtab(ctx: Context, group: str, models: list[str]) -> dict[str, Cell]:
    """A VTAB group: the mean over its tasks the model has (as the transfer study's group rows)."""
    tasks = [t for t in ctx.datasets_for("transfer") if (ctx.reader.manifest_entry(t).get("group") or "") == group]
    out = {}
    for m in models:
        cells = [c for t in tasks if (c := _cell(ctx, m, t, CENTER, "top1")) is not None]
        if cells:
            out[m] = _mean(cells)
    return out


def _invariance(ctx: Context, kind: str, models: list[str]) -> tuple[dict[str, Cell], list[str]]:
    """Accuracy kept under one sweep: the mean over the sweep's views of top1(view) / top1(reference), over the
    views every model with the sweep has (reference: center, or an explicit scale-1 / shift-0 / res-224 run)."""
    from .studies.invariance import CENTER_AS, parse

    dataset = "imagenet-val"
    if dataset not in ctx.reader.datasets:
        return {}, []
    origin = dict(CENTER_AS)[kind]
    sweep = {t: x for t in ctx.reader.transforms(dataset) if t != CENTER for k, x in parse(t) if k == kind}
    reference = next((t for t, x in sweep.items() if x == origin), CENTER)
    views = [{t for t, x in sweep.items() if x != origin and ctx.value(m, dataset, t, "top1") is not None}
             for m in models]
    having = [v for v in views if v]
    common = sorted(set.intersection(*having), key=sweep.get) if having else []
    out = {}
    for m in models:
        ref = _cell(ctx, m, dataset, reference, "top1")
        cells = [_cell(ctx, m, dataset, t, "top1") for t in common]
        if not common or ref is None or ref[0] <= 0 or any(c is None for c in cells):
            continue
        ratios = [(c[0] / ref[0], None if c[1] is None or ref[1] is None else c[1] / ref[1], c[2] or ref[2])
                  for c in cells]
        with np.errstate(all="ignore"):
            out[m] = _mean(ratios)
    return out, common


def property_values(ctx: Context, models: list[str]) -> tuple[dict[str, dict[str, Cell]], dict[str, str]]:
    """Per property id, per model: value, replicates, partial. Also notes on how some were formed."""
    values, notes = {}, {}
    for p in PROPERTIES:
        if p.group == "transfer":
            cells = _vtab(ctx, p.dataset.removeprefix("vtab-"), models)
        elif p.group == "invariance":
            cells, views = _invariance(ctx, p.id.split("/")[1], models)
            if views:
                notes[p.id] = f"{p.id}: top-1 kept at {', '.join(views)} (mean of top1(view) / top1(center))"
        else:
            cells = {m: c for m in models if (c := _cell(ctx, m, p.dataset, CENTER, p.metric)) is not None}
        if len(cells) >= 2:
            values[p.id] = cells
    return values, notes


# -- the maths ------------------------------------------------------------------------------------------------
def zscores(values: np.ndarray, higher: np.ndarray) -> np.ndarray:
    """``[..., model, property]`` values (NaN: missing) -> z-scores across models, signed so higher is better."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=-2, keepdims=True)
        sd = np.nanstd(values, axis=-2, keepdims=True)
        # Equal values are a tie (z = 0), also when their mean is off by an ulp and leaves a sd of ~1e-17.
        spread = sd > 1e-9 * np.nanmax(np.abs(values), axis=-2, keepdims=True)
        z = np.where(spread, (values - mean) / np.where(spread, sd, 1.0), 0.0)
    z = np.where(np.isfinite(values), z, np.nan)
    return z * np.where(higher, 1.0, -1.0)


def scores(z: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean of each model's finite z-scores ([..., model, property] -> [..., model]; NaN with none)."""
    w = np.where(np.isfinite(z), weights, 0.0)
    with np.errstate(all="ignore"):
        return np.where(w.sum(-1) > 0, (np.nan_to_num(z) * w).sum(-1) / w.sum(-1), np.nan)


def ranks(score: np.ndarray) -> np.ndarray:
    """1 + the number of models with a strictly higher score (ties share the better rank); NaN scores: NaN.
    ``[..., model]``: each leading index (a bootstrap replicate) is ranked on its own."""
    s = np.where(np.isfinite(score), score, -np.inf)
    flat = s.reshape(-1, s.shape[-1])
    out = np.empty_like(flat)
    for b, row in enumerate(flat):  # O(M log M) per replicate, never an [M, M] comparison
        out[b] = 1.0 + len(row) - np.searchsorted(np.sort(row), row, side="right")
    return np.where(np.isfinite(score), out.reshape(s.shape), np.nan)


def property_weights(props: list[Property], priorities: dict[str, float]) -> np.ndarray:
    """``w_p = W_g u_p / sum_{q in g} u_q`` over the ranked properties (see the module docstring)."""
    u = np.array([priorities.get(p.id, 1.0) for p in props])
    out = np.zeros(len(props))
    for g in dict.fromkeys(p.group for p in props):
        idx = [i for i, p in enumerate(props) if p.group == g]
        total = u[idx].sum()
        if total > 0:
            out[idx] = priorities.get(g, 1.0) * u[idx] / total
    return out


@dataclass
class Ranking:
    models: list[str]                 # in rank order
    properties: list[Property]
    values: np.ndarray                # [model, property]
    z: np.ndarray                     # [model, property]
    weights: np.ndarray               # [property]
    score: np.ndarray                 # [model]
    rank: np.ndarray
    rank_low: np.ndarray              # NaN without replicates
    rank_high: np.ndarray
    partial: np.ndarray               # [model, property]
    notes: list[str]


def rank_models(values: dict[str, dict[str, Cell]], models: list[str], priorities: dict[str, float] | None = None,
                level: float = 0.95) -> Ranking | None:
    """The ranking of ``models`` over the properties in ``values`` (see the module docstring)."""
    priorities = priorities or {}
    props = [p for p in PROPERTIES if p.id in values]
    weights = property_weights(props, priorities)
    keep = [i for i, w in enumerate(weights) if w > 0]
    props, weights = [props[i] for i in keep], weights[keep]
    if not props or not models:
        return None
    M, P = len(models), len(props)
    v = np.full((M, P), np.nan)
    partial = np.zeros((M, P), bool)
    n_boot = max((len(c[1]) for p in props for c in values[p.id].values() if c[1] is not None), default=0)
    reps = np.full((n_boot, M, P), np.nan) if n_boot else None
    notes = []
    for j, p in enumerate(props):
        for i, m in enumerate(models):
            cell = values[p.id].get(m)
            if cell is None:
                continue
            v[i, j], partial[i, j] = cell[0], cell[2]
            if reps is not None:
                if cell[1] is None or len(cell[1]) != n_boot:
                    notes.append(f"{m} {p.id}: no bootstrap replicates; its point value enters every replicate")
                    reps[:, i, j] = cell[0]
                else:
                    reps[:, i, j] = cell[1]
    higher = np.array([p.higher_is_better for p in props])
    z = zscores(v, higher)
    score = scores(z, weights)
    rank = ranks(score)
    low = high = np.full(M, np.nan)
    if reps is not None:
        rep_rank = ranks(scores(zscores(reps, higher), weights))   # [B, M]
        tail = (1 - level) / 2 * 100
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            low = np.nanpercentile(rep_rank, tail, axis=0, method="lower")
            high = np.nanpercentile(rep_rank, 100 - tail, axis=0, method="higher")
        low, high = np.where(np.isfinite(rank), low, np.nan), np.where(np.isfinite(rank), high, np.nan)
    order = sorted(range(M), key=lambda i: (np.nan_to_num(rank[i], nan=np.inf), models[i]))
    return Ranking([models[i] for i in order], props, v[order], z[order], weights, score[order], rank[order],
                   low[order], high[order], partial[order], notes)


# -- output ---------------------------------------------------------------------------------------------------
def tidy(r: Ranking) -> tuple[list[dict], list[dict]]:
    """``(ranking rows, score rows)``: one row per model; one per model and property."""
    overall, per = [], []
    for i, m in enumerate(r.models):
        have = np.isfinite(r.z[i])
        overall.append({"model": m, "rank": r.rank[i], "rank_low": r.rank_low[i], "rank_high": r.rank_high[i],
                        "score": r.score[i], "properties": int(have.sum()), "partial": bool(r.partial[i][have].any())})
        for j, p in enumerate(r.properties):
            if have[j]:
                per.append({"model": m, "property": p.id, "group": p.group, "higher_is_better": p.higher_is_better,
                            "value": r.values[i, j], "z": r.z[i, j], "weight": r.weights[j],
                            "partial": bool(r.partial[i, j])})
    return overall, per


def heatmap(path: Path, r: Ranking) -> Path:
    """Models (rows, in rank order, with their rank interval) by properties: z-scores, blue better."""
    from .figures import heatmap as draw

    labels = [(f"{int(r.rank[i])}" if np.isfinite(r.rank[i]) else "—")
              + (f" [{int(r.rank_low[i])}–{int(r.rank_high[i])}]" if np.isfinite(r.rank_low[i]) else "") + f"  {m}"
              for i, m in enumerate(r.models)]
    return draw(path, labels, [p.label for p in r.properties], {"z-score (higher is better)": r.z},
                title="Ranking across properties (z-scores across the models)", cmap="RdBu",
                limits={"z-score (higher is better)": (-2.5, 2.5)}, fmt="{:+.1f}")


def section(r: Ranking, figure: str, priorities: dict[str, float], notes: list[str]) -> Section:
    groups = list(dict.fromkeys(p.group for p in r.properties))
    has_ci = bool(np.isfinite(r.rank_low).any())

    def group_z(i: int, g: str) -> str:
        idx = [j for j, p in enumerate(r.properties) if p.group == g and np.isfinite(r.z[i, j])]
        if not idx:
            return "—"
        return f"{np.average(r.z[i, idx], weights=r.weights[idx]) if r.weights[idx].sum() > 0 else np.nan:+.2f}"

    body = []
    for i, m in enumerate(r.models):
        rank = "—" if not np.isfinite(r.rank[i]) else f"{int(r.rank[i])}"
        ci = f"[{int(r.rank_low[i])}, {int(r.rank_high[i])}]" if np.isfinite(r.rank_low[i]) else "—"
        body.append([rank] + ([ci] if has_ci else []) + [m, f"{r.score[i]:+.2f}"] + [group_z(i, g) for g in groups])
    header = ["rank"] + (["95% interval"] if has_ci else []) + ["model", "score"] + groups
    weights = ", ".join(f"{g} {sum(w for p, w in zip(r.properties, r.weights) if p.group == g):g}" for g in groups)
    text = [
        "Each property is z-scored across the models present (ECE and the ImageNet-X error ratio with their sign "
        "flipped, so higher is better everywhere); the score is the weighted mean of a model's z-scores, each "
        "group weighing the same whatever its number of properties. Rank intervals: the same ranking on every "
        "bootstrap replicate. Columns per group: the group's mean z-score.",
        f"Group weights: {weights}" + (f" (`--priorities {','.join(f'{k}={v:g}' for k, v in priorities.items())}`)"
                                       if priorities else " (the default; `--priorities` reweights)."),
        markdown_table(header, body),
        "Properties: " + ", ".join(f"`{p.id}` ({p.label}{'' if p.higher_is_better else ', lower is better'})"
                                   for p in r.properties) + ". Per model and property: `scores.csv`; overall: "
        "`ranking.csv`.",
    ]
    missing = [m for i, m in enumerate(r.models) if np.isfinite(r.z[i]).sum() < len(r.properties)]
    if missing:
        text.append(f"Ranked on the properties they have: {', '.join(missing)} (a missing property is left out of "
                    "the model's mean, not counted as zero).")
    if notes + r.notes:
        text.append("\n".join(f"- {n}" for n in notes + r.notes))
    return Section("Ranking across properties", "\n\n".join(text), [figure])


def report_ranking(ctx: Context, models: list[str], priorities: dict[str, float] | None) -> Section:
    """Rank the store's models, write ``ranking.*`` and ``scores.*`` and the heat map; the report's section."""
    priorities = priorities or {}
    values, notes = property_values(ctx, models)
    r = rank_models(values, models, priorities, ctx.boot.level)
    overall, per = tidy(r) if r is not None else ([], [])
    schemas = {
        "ranking": {"model": pl.Utf8, "rank": pl.Float64, "rank_low": pl.Float64, "rank_high": pl.Float64,
                    "score": pl.Float64, "properties": pl.Int64, "partial": pl.Boolean},
        "scores": {"model": pl.Utf8, "property": pl.Utf8, "group": pl.Utf8, "higher_is_better": pl.Boolean,
                   "value": pl.Float64, "z": pl.Float64, "weight": pl.Float64, "partial": pl.Boolean},
    }
    for name, rows in (("ranking", overall), ("scores", per)):  # written also when empty: the same files always
        frame = pl.DataFrame(rows, schema=schemas[name], orient="row") if rows else pl.DataFrame(schema=schemas[name])
        frame.write_parquet(ctx.out_dir / f"{name}.parquet")
        frame.write_csv(ctx.out_dir / f"{name}.csv")
    if r is None:
        why = ("every property present has weight 0 in --priorities" if values else
               "no property is held by two models or more")
        return Section("Ranking across properties", f"Nothing to rank: {why}.")
    figure = heatmap(ctx.figure_path("ranking"), r)
    return section(r, figure.relative_to(ctx.out_dir).as_posix(), priorities, list(notes.values()))
