"""Ranking across properties: ranks from z-scores computed here by hand, rank intervals from the replicates,
--priorities, and the report staying readable with many models (tables transposed and split, figures that grow)."""
from __future__ import annotations

import math
import statistics

import numpy as np
import polars as pl
import pytest
from PIL import Image

from analyze.figures import grouped_bars
from analyze.ranking import PROPERTIES, rank_models
from analyze.report import build_report
from analyze.tables import MAX_COLUMNS, by_model

N, CLASSES = 200, 10
# (property id, dataset, metric, sign): the properties a store of imagenet-val under robustness + calibration has.
HAND = [("accuracy/imagenet-val", "imagenet-val", "top1", 1), ("robustness/imagenet-real", "imagenet-real", "top1", 1),
        ("calibration/imagenet-val", "imagenet-val", "ece", -1)]


def _write(kit, store, model, hits, high, rng_seed=1, flip=()):
    label = np.arange(N) % CLASSES
    pred = label.copy()
    pred[hits:] = (label[hits:] + 1) % CLASSES
    for i in flip:  # swap correctness of these rows
        pred[i] = label[i] if pred[i] != label[i] else (label[i] + 1) % CLASSES
    kit.write(store, "imagenet-val", "center", model,
              kit.planted(pred, CLASSES, high=high, rng=np.random.default_rng(rng_seed)),
              sample_id=kit.val_ids(N), label=label, studies=["robustness", "calibration"])


@pytest.fixture(scope="module")
def three(kit, tmp_path_factory):
    """sharp: most accurate, over-confident; middle: less accurate, calibrated; shy: least accurate, unsure."""
    base = tmp_path_factory.mktemp("rank")
    store = base / "store.zarr"
    for model, hits, high in (("sharp", 180, 8.0), ("middle", 160, 4.0), ("shy", 140, 2.5)):
        _write(kit, store, model, hits, high)
    return store, base


def hand_ranking(results: pl.DataFrame, weights: dict[str, float]) -> dict[str, tuple[float, int]]:
    """Score and rank per model, from the z-scores of HAND's properties computed with the statistics module."""
    value = {(r["model"], r["dataset"], r["metric"]): r["value"] for r in results.iter_rows(named=True)}
    models = sorted({r["model"] for r in results.iter_rows(named=True)})
    z = {m: {} for m in models}
    for pid, dataset, metric, sign in HAND:
        xs = [value[(m, dataset, metric)] for m in models]
        mu, sd = math.fsum(xs) / len(xs), statistics.pstdev(xs)
        for m, x in zip(models, xs):
            z[m][pid] = 0.0 if sd == 0 else sign * (x - mu) / sd
    group = {pid: pid.split("/")[0] for pid, *_ in HAND}   # one property per group here
    score = {m: math.fsum(weights.get(group[p], 1.0) * z[m][p] for p in z[m])
             / math.fsum(weights.get(group[p], 1.0) for p in z[m]) for m in models}
    return {m: (score[m], 1 + sum(score[o] > score[m] for o in models)) for m in models}


@pytest.mark.parametrize("priorities", [None, {"calibration": 5.0}])
def test_rank_from_hand_computed_z_scores(three, priorities):
    store, base = three
    out = base / f"out-{bool(priorities)}"
    build_report(store, out, study_names=["robustness", "calibration"], n_boot=0, progress=False,
                 priorities=priorities)
    expected = hand_ranking(pl.read_csv(out / "results.csv"), priorities or {})
    ranking = pl.read_csv(out / "ranking.csv")
    assert ranking["model"].to_list() == sorted(expected, key=lambda m: expected[m][1])
    for r in ranking.iter_rows(named=True):
        assert r["score"] == pytest.approx(expected[r["model"]][0], abs=1e-12)
        assert r["rank"] == expected[r["model"]][1] and r["properties"] == len(HAND)
        assert math.isnan(r["rank_low"]) and math.isnan(r["rank_high"])  # no replicates, no interval
    scores = pl.read_csv(out / "scores.csv")
    assert set(scores["property"]) == {p for p, *_ in HAND}
    # The planted design: accuracy wins by default, calibration when it weighs 5.
    assert ranking["model"][0] == ("middle" if priorities else "sharp")
    report = (out / "report.md").read_text()
    assert "## Ranking across properties" in report and "![ranking](figures/ranking.png)" in report
    assert (out / "figures" / "ranking.png").read_bytes()[:4] == b"\x89PNG"


def test_rank_intervals_come_from_the_replicates(kit, tmp_path):
    """Two models that differ only in which of two images they get right: every replicate where those images
    weigh differently orders them, so each spans ranks 1-2; a much worse model is 3rd in every replicate."""
    store = tmp_path / "store.zarr"
    _write(kit, store, "left", 170, 8.0, flip=(0,))
    _write(kit, store, "right", 170, 8.0, flip=(1,))
    _write(kit, store, "worse", 100, 8.0)
    build_report(store, tmp_path / "out", study_names=["robustness", "calibration"], n_boot=200, progress=False)
    ranking = {r["model"]: r for r in pl.read_csv(tmp_path / "out" / "ranking.csv").iter_rows(named=True)}
    assert (ranking["left"]["rank_low"], ranking["left"]["rank_high"]) == (1, 2)
    assert (ranking["right"]["rank_low"], ranking["right"]["rank_high"]) == (1, 2)
    assert (ranking["worse"]["rank"], ranking["worse"]["rank_low"], ranking["worse"]["rank_high"]) == (3, 3, 3)
    assert "| 3 | [3, 3] | worse |" in (tmp_path / "out" / "report.md").read_text()


def _reference(values, props, weights, level=0.95):
    """A second implementation, loop by loop: z per property over the models that have it, weighted mean, rank."""
    models = sorted({m for cells in values.values() for m in cells})

    def rank_once(get):
        z = {m: {} for m in models}
        for p in props:
            have = [(m, get(p, m)) for m in models if m in values[p.id] and np.isfinite(get(p, m))]
            xs = [x for _, x in have]
            mu, sd = math.fsum(xs) / len(xs), statistics.pstdev(xs)
            for m, x in have:
                z[m][p.id] = 0.0 if sd == 0 else (1 if p.higher_is_better else -1) * (x - mu) / sd
        w = dict(zip((p.id for p in props), weights))
        score = {m: math.fsum(w[p] * v for p, v in z[m].items()) / math.fsum(w[p] for p in z[m]) for m in models}
        return {m: 1 + sum(score[o] > score[m] for o in models) for m in models}, score

    point, score = rank_once(lambda p, m: values[p.id][m][0])
    B = len(next(iter(next(iter(values.values())).values()))[1])
    per_rep = [rank_once(lambda p, m, b=b: values[p.id][m][1][b])[0] for b in range(B)]
    tail = (1 - level) / 2 * 100
    low = {m: np.percentile([r[m] for r in per_rep], tail, method="lower") for m in models}
    high = {m: np.percentile([r[m] for r in per_rep], 100 - tail, method="higher") for m in models}
    return point, score, low, high


def test_rank_models_matches_a_loop_implementation():
    rng = np.random.default_rng(7)
    chosen = [p for p in PROPERTIES if p.id in ("accuracy/imagenet-val", "robustness/imagenet-a",
                                                   "robustness/imagenet-r", "calibration/imagenet-val")]
    models = [f"m{i}" for i in range(6)]
    values = {}
    for p in chosen:
        cells = {}
        for i, m in enumerate(models):
            if p.id == "robustness/imagenet-a" and m == "m5":
                continue  # one model lacks a property: ranked on those it has
            point = rng.normal(0.5 + 0.03 * i, 0.05)
            reps = point + rng.normal(0, 0.04, 300)
            cells[m] = (float(point), reps, False)
        values[p.id] = cells
    priorities = {"calibration": 2.0, "robustness/imagenet-a": 3.0}
    r = rank_models(values, models, priorities)
    # w: accuracy 1; robustness 1 shared 3:1 between A and R; calibration 2.
    weights = {"accuracy/imagenet-val": 1.0, "robustness/imagenet-a": 0.75, "robustness/imagenet-r": 0.25,
               "calibration/imagenet-val": 2.0}
    assert dict(zip((p.id for p in r.properties), r.weights)) == pytest.approx(weights)
    point, score, low, high = _reference(values, r.properties, r.weights)
    for i, m in enumerate(r.models):
        assert r.score[i] == pytest.approx(score[m], abs=1e-12)
        assert r.rank[i] == point[m] and r.rank_low[i] == low[m] and r.rank_high[i] == high[m]
    assert list(r.rank) == sorted(r.rank)


def cli(capsys, *args):
    from analyze.cli import main

    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("value, message", [
    ("calibraton=2", "argument --priorities: unknown priority key 'calibraton'; did you mean 'calibration'"),
    ("calibration=-1", "argument --priorities: calibration: expected a number >= 0, found '-1'"),
    ("calibration", "argument --priorities: 'calibration': expected KEY=WEIGHT (e.g. calibration=2)"),
    ("robustness=1,robustness=2", "argument --priorities: robustness is given twice"),
])
def test_bad_priorities_are_refused_before_anything_is_read(three, capsys, tmp_path, value, message):
    store, _ = three
    code, err = cli(capsys, "report", store, "--out", tmp_path / "out", "--priorities", value)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_tables_transpose_and_split_with_many_models():
    keys = [f"k{i}" for i in range(12)]
    few = by_model("key", keys, ["a", "b"], lambda k, m: f"{k}-{m}")
    assert few.splitlines()[0] == "| key | a | b |" and len(few.splitlines()) == 2 + len(keys)
    models = [f"model-{i:02d}" for i in range(50)]
    many = by_model("key", keys, models, lambda k, m: f"{k}-{m}")
    tables = many.split("\n\n")
    assert len(tables) == math.ceil(len(keys) / MAX_COLUMNS)
    for t in tables:
        lines = t.splitlines()
        assert lines[0].startswith("| model |") and len(lines) == 2 + len(models)
        assert all(line.count("|") <= MAX_COLUMNS + 2 for line in lines)
    # Nothing is cut: every cell is somewhere.
    assert all(f"| {k}-{m} |" in many or f" {k}-{m} |" in many for k in keys for m in models)


def test_figures_grow_with_the_models(tmp_path):
    groups = ["imagenet-val", "imagenet-a", "imagenet-r"]

    def size(n):
        series = {f"model-{i:02d}": [50 + i * 0.5] * len(groups) for i in range(n)}
        path = grouped_bars(tmp_path / f"bars{n}.png", groups, series, ylabel="top-1 (%)", title="t",
                            errors={m: [(v - 1, v + 1) for v in vs] for m, vs in series.items()})
        with Image.open(path) as im:
            return im.size

    (w4, h4), (w60, h60) = size(4), size(60)
    assert h60 > 2.5 * h4            # one row per model: the figure grows downwards
    assert w60 < 3 * w4              # instead of a bar strip 60 models wide


def test_equal_values_tie_even_when_their_float_mean_is_off():
    """mean(0.1, 0.1, 0.1) is 0.1 + 1.4e-17 in floats; the z-scores must still be 0, not +-1."""
    from analyze.ranking import zscores

    values = np.array([[0.1, 0.5], [0.1, 0.7], [0.1, 0.9]])
    assert np.mean(values[:, 0]) != 0.1  # the premise
    z = zscores(values, np.array([True, False]))
    assert np.all(z[:, 0] == 0)
    assert z[:, 1] == pytest.approx([1.5 ** 0.5, 0.0, -(1.5 ** 0.5)])
