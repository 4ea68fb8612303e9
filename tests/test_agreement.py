"""Agreement (analyze/metrics/agreement.py, analyze/studies/agreement.py): error consistency and linear CKA.

Every number is checked against a second computation written here from the definitions: error consistency
as model-vs-human's ``ErrorConsistency`` computes it (c_obs = fraction of trials both right or both wrong,
c_exp = p1 p2 + (1 - p1)(1 - p2), kappa = (c_obs - c_exp) / (1 - c_exp), 1 when c_obs = 1), straight from
the published per-trial rows of ten human observers (tests/data/model-vs-human); CKA in the feature form
``||X~^T Y~||_F^2 / (||X~^T X~||_F ||Y~^T Y~||_F)`` (the code uses the Gram form). The intervals are checked
against the same formulas evaluated on the report's bootstrap replicates.
"""
from __future__ import annotations

import csv
import doctest
import gzip
import math
import re

import numpy as np
import polars as pl
import pytest

from analyze.bootstrap import Bootstrap
from analyze.metrics import agreement as metric
from analyze.studies import _pairs

HUMANS_CSV = "model-vs-human/cue-conflict_demo_stimuli.csv.gz"
N_BOOT = 200


# -- independent references -------------------------------------------------------------------------------

def ref_kappa(c1, c2, w=None) -> float:
    """model-vs-human's error consistency of two boolean sequences (weights: repeated trials)."""
    w = [1.0] * len(c1) if w is None else list(w)
    n = math.fsum(w)
    p1 = math.fsum(wi for wi, a in zip(w, c1) if a) / n
    p2 = math.fsum(wi for wi, b in zip(w, c2) if b) / n
    observed = math.fsum(wi for wi, a, b in zip(w, c1, c2) if bool(a) == bool(b)) / n
    expected = p1 * p2 + (1 - p1) * (1 - p2)
    return 1.0 if observed == 1.0 else (observed - expected) / (1 - expected)


def ref_cka(x, y, w=None) -> float:
    """Linear CKA in the feature form, centred by the (weighted) mean, float64; an image drawn w_i > 1 times is
    not paired with its own copies (``||x~_i||^2 ||y~_i||^2`` counted w_i times, not w_i^2)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    w = np.ones(len(x)) if w is None else np.asarray(w, np.float64)
    xc = x - (w @ x) / w.sum()
    yc = y - (w @ y) / w.sum()

    def hsic(a, b):
        own = np.sum(w * (w - 1) * np.sum(a * a, axis=1) * np.sum(b * b, axis=1))
        return np.linalg.norm(a.T @ (w[:, None] * b), "fro") ** 2 - own

    return hsic(xc, yc) / np.sqrt(hsic(xc, xc) * hsic(yc, yc))


def draws_cka(x, y, counts) -> float:
    """The same from the resample itself: each image repeated ``counts`` times, HSIC summed over every pair of
    draws except two different draws of one image."""
    draws = np.repeat(np.arange(len(x)), counts)
    xs, ys = x[draws] - x[draws].mean(axis=0), y[draws] - y[draws].mean(axis=0)
    keep = (draws[:, None] != draws[None, :]) | np.eye(len(draws), dtype=bool)
    hsic = lambda a, b: np.sum(keep * (a @ a.T) * (b @ b.T))  # noqa: E731
    return hsic(xs, ys) / np.sqrt(hsic(xs, xs) * hsic(ys, ys))


def interval(reps) -> tuple[float, float]:
    reps = np.asarray(reps, np.float64)
    reps = reps[np.isfinite(reps)]
    return tuple(np.percentile(reps, [2.5, 97.5]))


# -- the metric functions ----------------------------------------------------------------------------------

def test_docstring_examples():
    assert doctest.testmod(metric).failed == 0


def test_kappa_matches_model_vs_human_definition():
    rng = np.random.default_rng(1)
    for p1, p2, n in ((0.7, 0.6, 500), (0.95, 0.2, 80), (0.5, 0.5, 7)):
        a = rng.random(n) < p1
        b = np.where(rng.random(n) < 0.5, a, rng.random(n) < p2)  # correlated errors
        got = metric.error_consistency(a, b)
        assert got["error_consistency"] == pytest.approx(ref_kappa(a, b), abs=1e-12)
        assert got["observed_consistency"] == pytest.approx(np.mean(a == b), abs=1e-12)
    always = np.ones(10, bool)
    assert metric.error_consistency(always, always)["error_consistency"] == 1.0  # 0/0: model-vs-human says 1
    assert metric.error_consistency(~always, ~always)["error_consistency"] == 1.0
    assert metric.error_consistency(always, ~always)["error_consistency"] == pytest.approx(0.0)  # c_exp = c_obs = 0
    assert math.isnan(float(metric.error_consistency(always[:0], always[:0])["error_consistency"]))


def test_kappa_weights_are_repeated_trials():
    rng = np.random.default_rng(2)
    a, b = rng.random(60) < 0.6, rng.random(60) < 0.7
    w = rng.poisson(1.0, (5, 60)).astype(float)
    got = metric.error_consistency(a, b, w)["error_consistency"]
    for row, value in zip(w, got):
        reps = row.astype(int)
        assert value == pytest.approx(ref_kappa(np.repeat(a, reps), np.repeat(b, reps)), abs=1e-6)


def test_cka_matches_the_feature_form_and_its_invariances():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((90, 12))
    y = x[:, :5] @ rng.standard_normal((5, 7)) + 0.5 * rng.standard_normal((90, 7))
    assert metric.linear_cka(x, y) == pytest.approx(ref_cka(x, y), rel=1e-10)
    q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    assert metric.linear_cka(x, 3.0 * x @ q + 2.0) == pytest.approx(1.0, abs=1e-10)  # rotation, scale, shift
    w = rng.poisson(1.0, (4, 90)).astype(float)
    for row, value in zip(w, metric.linear_cka(x, y, w)):
        assert value == pytest.approx(draws_cka(x, y, row.astype(int)), rel=1e-9)
        assert value == pytest.approx(ref_cka(x, y, row), rel=1e-9)
    mask = (rng.random(90) < 0.7).astype(float)  # weights in {0, 1}: plain CKA of the kept images
    assert metric.linear_cka(x, y, mask) == pytest.approx(ref_cka(x[mask > 0], y[mask > 0]), rel=1e-10)


def test_cka_replicates_centre_on_the_value():
    """Copies of a resampled image are not paired with each other: otherwise every replicate of unrelated
    features would read about twice the estimator's upward bias and the interval would miss the value."""
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((600, 32)), rng.standard_normal((600, 32))
    value = float(metric.linear_cka(x, y))
    reps = metric.linear_cka(x, y, Bootstrap(n_boot=300, seed=0).counts("x", 600).astype(float))
    low, median, high = np.percentile(reps, [2.5, 50, 97.5])
    assert low < value < high and abs(median - value) < 0.25 * (high - low)


def test_cka_of_constant_features_is_nan():
    x = np.ones((10, 3))
    assert math.isnan(float(metric.linear_cka(x, np.random.default_rng(0).random((10, 2)))))


def test_cka_subset_is_fixed_sorted_and_seeded():
    a = _pairs.cka_subset("imagenet-val", 5000, seed=0, size=300)
    assert len(a) == len(np.unique(a)) == 300 and np.all(np.diff(a) > 0) and a.max() < 5000
    np.testing.assert_array_equal(a, _pairs.cka_subset("imagenet-val", 5000, seed=0, size=300))
    assert not np.array_equal(a, _pairs.cka_subset("imagenet-val", 5000, seed=1, size=300))
    assert not np.array_equal(a, _pairs.cka_subset("imagenet-r", 5000, seed=0, size=300))
    np.testing.assert_array_equal(_pairs.cka_subset("x", 40, seed=0, size=300), np.arange(40))


# -- ten human observers and two models on the cue-conflict stimuli -------------------------------------------

def read_trials(kit) -> list[dict]:
    with gzip.open(kit.DATA / HUMANS_CSV, "rt", newline="") as f:
        return list(csv.DictReader(f))


def stimulus(trial: dict) -> str:
    return trial["imagename"].rsplit("_", 1)[-1]


@pytest.fixture(scope="module")
def cue(kit, tmp_path_factory):
    """A store with one run per observer (one-hot category decisions, "na" = invalid row) and two models
    with planted decisions and pooled features; the agreement report over it."""
    from analyze.report import build_report

    names = [c for c, _ in kit.read_cue_categories()]
    members = [m for _, m in kit.read_cue_categories()]
    trials = read_trials(kit)
    stimuli = sorted({stimulus(t) for t in trials})
    shape = [re.sub(r"\d", "", s.split("-")[0]) for s in stimuli]
    texture = [re.sub(r"\d", "", s[:-4].split("-")[1]) for s in stimuli]
    ids = np.array([f"{sh}/{s}" for sh, s in zip(shape, stimuli)])
    label = np.array([names.index(s) for s in shape])
    columns = {"texture_label": np.array([names.index(t) for t in texture], np.int16)}
    store = tmp_path_factory.mktemp("agreement") / "cue.zarr"
    entry = kit.entry_for("cue-conflict", studies=["shape_bias", "agreement"])

    def logits_for(decisions, rng):
        z = (rng.random((len(stimuli), 1000)) * 0.1).astype(np.float32)
        for i, d in enumerate(decisions):
            if d is not None:
                z[i, members[names.index(d)]] = 10.0
        return z

    rng = np.random.default_rng(0)
    answers = {}
    for subject in sorted({t["subj"] for t in trials}):
        given = {stimulus(t): t["object_response"] for t in trials if t["subj"] == subject}
        answers[subject] = [given[s] if given[s] != "na" else None for s in stimuli]
        kit.write(store, "cue-conflict", "center", subject, logits_for(answers[subject], rng), sample_id=ids,
                  label=label, columns=columns, valid=np.array([a is not None for a in answers[subject]]),
                  entry=entry)  # a human observer by its id, subject-NN
    # model-a follows subject-01 on about 70% of the images; model-b answers the shape on 60%.
    follow = rng.random(len(stimuli)) < 0.7
    plan = {"model-a": [a if f and a else names[rng.integers(16)] for a, f in zip(answers["subject-01"], follow)],
            "model-b": [s if rng.random() < 0.6 else names[rng.integers(16)] for s in shape]}
    base = rng.standard_normal((len(stimuli), 24)).astype(np.float32)
    features = {"model-a": base, "model-b": base[:, :10] @ rng.standard_normal((10, 16)).astype(np.float32)
                + rng.standard_normal((len(stimuli), 16)).astype(np.float32)}
    logits = {}
    for model, decisions in plan.items():
        logits[model] = logits_for(decisions, rng)
        kit.write(store, "cue-conflict", "center", model, logits[model], features[model], sample_id=ids,
                  label=label, columns=columns, entry=entry)
    out = tmp_path_factory.mktemp("agreement-out")
    build_report(store, out, study_names=["agreement"], n_boot=N_BOOT, seed=0, progress=False)
    table = pl.read_parquet(out / "agreement.parquet")
    rows = {(r["model_a"], r["model_b"], r["metric"]): r for r in table.iter_rows(named=True)}
    # The models' decisions, from the logits as the definition says (mean softmax probability per category).
    decided = {m: [names[kit.ref_cue_decision(row, kit.read_cue_categories())] for row in z] for m, z in logits.items()}
    return dict(rows=rows, table=table, answers={**answers, **decided}, shape=shape, out=out, n=len(stimuli), store=store,
                humans=sorted(answers), features={m: f.astype(np.float16) for m, f in features.items()})


def pair(cue, a: str, b: str, metric: str = "error_consistency") -> dict:
    """The tidy row of a pair, whichever of the two the table names first."""
    rows = cue["rows"]
    return rows[(a, b, metric)] if (a, b, metric) in rows else rows[(b, a, metric)]


def reference(cue, a: str, b: str, weights=None) -> tuple[float, int]:
    """kappa over the trials both answered, and how many they are."""
    both = [i for i in range(cue["n"]) if cue["answers"][a][i] is not None and cue["answers"][b][i] is not None]
    c1 = [cue["answers"][a][i] == cue["shape"][i] for i in both]
    c2 = [cue["answers"][b][i] == cue["shape"][i] for i in both]
    return ref_kappa(c1, c2, None if weights is None else [weights[i] for i in both]), len(both)


def test_pairs_summed_in_small_batches_give_the_same_table(cue, tmp_path, monkeypatch):
    """The columns are summed a bounded number at a time (ImageNet-C's rows are millions): eight at a time here,
    where the fixture's report summed them in one product; the sums are integers, exact either way."""
    from analyze.report import build_report

    monkeypatch.setattr(_pairs, "BATCH_VALUES", 1)
    build_report(cue["store"], tmp_path, study_names=["agreement"], n_boot=N_BOOT, seed=0, progress=False)
    assert pl.read_parquet(tmp_path / "agreement.parquet").equals(cue["table"])


@pytest.mark.parametrize("gather", [0, 10**9])
def test_pairs_summed_over_a_run_s_hits_or_misses_give_the_same_table(cue, tmp_path, monkeypatch, gather):
    """A run's columns summed over the rows it gets right, or over those it gets wrong subtracted from its row
    set's sums (every group of columns where the rows are fewer, at ``GATHER_COLUMNS = 0``), or none of them so
    (every column over every row): the same table as the fixture's, the observers' row sets differing as they do."""
    from analyze.report import build_report

    monkeypatch.setattr(_pairs, "GATHER_COLUMNS", gather)
    groups, plan = [], _pairs._plan

    def spied(*args, **kwargs):
        direct, pivoted = plan(*args, **kwargs)
        groups.extend(pivoted)
        return direct, pivoted

    monkeypatch.setattr(_pairs, "_plan", spied)
    build_report(cue["store"], tmp_path, study_names=["agreement"], n_boot=N_BOOT, seed=0, progress=False)
    assert pl.read_parquet(tmp_path / "agreement.parquet").equals(cue["table"])
    if gather:
        assert groups == []
    else:  # both ways, and from both kinds of columns (a run's hits and its row set; two runs' hits)
        assert {(g.level, g.complement is None) for g in groups} == {(1, True), (1, False), (2, True), (2, False)}


def test_the_decisions_follow_the_plan(cue):
    # Sanity of the fixture itself: model-a agrees with subject-01 wherever it followed, i.e. on most images.
    same = np.mean([x == y for x, y in zip(cue["answers"]["model-a"], cue["answers"]["subject-01"]) if y])
    assert same > 0.6


def test_every_pair_of_observers_and_models_matches_model_vs_human(cue):
    people = cue["humans"] + ["model-a", "model-b"]
    assert len(cue["humans"]) == 10
    for i, a in enumerate(people):
        for b in people[i + 1:]:
            row = pair(cue, a, b)
            value, n = reference(cue, a, b)
            assert row["value"] == pytest.approx(value, abs=1e-12), (a, b)
            assert row["n"] == n and row["dataset"] == "cue-conflict" and row["transform"] == "center"


def test_intervals_come_from_the_report_replicates(cue):
    counts = Bootstrap(n_boot=N_BOOT, seed=0).counts("cue-conflict", cue["n"]).astype(float)
    for a, b in (("subject-01", "subject-02"), ("model-a", "subject-01"), ("model-a", "model-b")):
        reps = [reference(cue, a, b, w)[0] for w in counts]
        low, high = interval(reps)
        row = pair(cue, a, b)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high), abs=1e-9)
        assert row["ci_low"] <= row["value"] <= row["ci_high"]


def test_model_means_over_the_human_observers(cue):
    for model in ("model-a", "model-b"):
        expected = np.mean([reference(cue, model, h)[0] for h in cue["humans"]])
        assert cue["rows"][(model, "humans:mean", "error_consistency")]["value"] == pytest.approx(expected, abs=1e-12)
    humans = cue["humans"]
    among = np.mean([reference(cue, a, b)[0] for i, a in enumerate(humans) for b in humans[i + 1:]])
    assert cue["rows"][("humans:mean", "humans:mean", "error_consistency")]["value"] == pytest.approx(among, abs=1e-12)
    # model-a copies subject-01 on most images: it agrees with that observer far more than model-b does.
    assert pair(cue, "model-a", "subject-01")["value"] > pair(cue, "model-b", "subject-01")["value"] + 0.2


def test_cka_of_the_stored_features(cue):
    x, y = cue["features"]["model-a"], cue["features"]["model-b"]  # as stored: float16
    row = cue["rows"][("model-a", "model-b", "cka")]
    assert row["value"] == pytest.approx(ref_cka(x, y), rel=1e-5) and row["n"] == cue["n"]
    counts = Bootstrap(n_boot=N_BOOT, seed=0).counts("cue-conflict", cue["n"]).astype(float)
    low, high = interval([ref_cka(x, y, w) for w in counts])
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high), rel=1e-4)
    # Observers store no features: no CKA with them.
    assert not [k for k in cue["rows"] if k[2] == "cka" and k != ("model-a", "model-b", "cka")]


def test_tidy_table_and_report_section(cue):
    table = cue["table"]
    assert table.columns == ["model_a", "model_b", "dataset", "transform", "metric", "value", "ci_low", "ci_high",
                             "n", "partial"]
    assert pl.read_csv(cue["out"] / "agreement.csv").shape == table.shape
    assert set(table["metric"]) == {"error_consistency", "observed_consistency", "expected_consistency", "cka"}
    n_pairs = 12 * 11 // 2
    assert table.filter(pl.col("metric") == "observed_consistency").height == n_pairs
    report = (cue["out"] / "report.md").read_text()
    assert "## Agreement: error consistency and CKA" in report and "κ with humans" in report
    # 66 pairs: the 15 most and 15 least consistent are shown, the rest named in agreement.csv.
    assert "The 15 most and 15 least consistent of 66 pairs" in report
    assert (cue["out"] / "figures" / "agreement.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cka_on_a_subset_of_the_images(kit, tmp_path, monkeypatch):
    """Above CKA_IMAGES images, CKA reads the fixed subset for every model, with the same replicates."""
    from analyze.report import build_report

    n = 120
    rng = np.random.default_rng(5)
    label = rng.integers(0, 1000, n)
    x = rng.standard_normal((n, 6)).astype(np.float32)
    feats = {"convnext-sup": x, "vit-sup": (x @ rng.standard_normal((6, 6)) + rng.standard_normal((n, 6))).astype(np.float32)}
    for model, f in feats.items():
        kit.write(tmp_path / "s.zarr", "imagenet-val", "center", model, kit.planted(label, 1000, rng=rng), f,
                  sample_id=kit.val_ids(n), label=label)
    monkeypatch.setattr(_pairs, "CKA_IMAGES", 50)
    build_report(tmp_path / "s.zarr", tmp_path / "out", study_names=["agreement"], n_boot=N_BOOT, progress=False)
    row = pl.read_csv(tmp_path / "out" / "agreement.csv").filter(pl.col("metric") == "cka").row(0, named=True)
    rows = _pairs.cka_subset("imagenet-val", n, seed=0, size=50)
    a, b = (feats[m].astype(np.float16)[rows] for m in ("convnext-sup", "vit-sup"))
    assert row["n"] == 50 and row["value"] == pytest.approx(ref_cka(a, b), rel=1e-5)
    counts = Bootstrap(n_boot=N_BOOT, seed=0).counts("imagenet-val", n)[:, rows].astype(float)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(interval([ref_cka(a, b, w) for w in counts]), rel=1e-4)


def test_imagenet_c_resamples_images_not_cells(kit, tmp_path):
    """ImageNet-C: kappa over every (image, cell) trial; one bootstrap weight per image for all its cells, the
    population robustness uses."""
    from analyze.report import build_report

    images = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 31)]
    cells = [(c, s) for c in ("fog", "snow") for s in (1, 3)]
    ids = np.array([f"{c}/{s}/{img}" for c, s in cells for img in images])
    rng = np.random.default_rng(7)
    label = rng.integers(0, 1000, len(ids))
    columns = {"corruption": np.array([c for c, s in cells for _ in images]),
               "severity": np.array([s for c, s in cells for _ in images], np.int8)}
    correct = {}
    for model, p in (("convnext-sup", 0.7), ("vit-sup", 0.6)):
        correct[model] = rng.random(len(ids)) < p
        pred = np.where(correct[model], label, (label + 1) % 1000)
        kit.write(tmp_path / "c.zarr", "imagenet-c", "center", model, kit.planted(pred, 1000, rng=rng),
                  sample_id=ids, label=label, columns=columns)
    build_report(tmp_path / "c.zarr", tmp_path / "out", study_names=["agreement"], n_boot=N_BOOT, progress=False)
    row = pl.read_csv(tmp_path / "out" / "agreement.csv").filter(pl.col("metric") == "error_consistency").row(0, named=True)
    a, b = correct["convnext-sup"], correct["vit-sup"]
    assert row["value"] == pytest.approx(ref_kappa(a, b), abs=1e-12) and row["n"] == len(ids)
    image_of = {name: i for i, name in enumerate(sorted(images))}
    per_row = np.array([image_of[s.rsplit("/", 1)[-1]] for s in ids])
    counts = Bootstrap(n_boot=N_BOOT, seed=0).counts("imagenet-c:images", len(images)).astype(float)
    low, high = interval([ref_kappa(a, b, w[per_row]) for w in counts])
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high), abs=1e-9)


def test_a_store_written_before_the_study_is_compared(kit, tmp_path, results_of):
    """Entries stored without `agreement` (older stores) are compared when today's manifest lists the dataset;
    a dataset neither lists is not."""
    n = 40
    rng = np.random.default_rng(0)
    label = rng.integers(0, 1000, n)
    for model in ("convnext-sup", "vit-sup"):
        for dataset in ("imagenet-val", "my-set"):
            kit.write(tmp_path / "s.zarr", dataset, "center", model, kit.planted(label, 1000, rng=rng),
                      sample_id=kit.val_ids(n), label=label, entry={**kit.entry_for("imagenet-v2"), "id": dataset})
    assert kit.entry_for("imagenet-v2")["studies"] == ["robustness"]
    results_of(tmp_path / "s.zarr", tmp_path / "out", studies=["agreement"])
    assert set(pl.read_csv(tmp_path / "out" / "agreement.csv")["dataset"]) == {"imagenet-val"}


def test_both_always_wrong_is_flagged_not_hidden(kit, tmp_path, results_of):
    """kappa is 0/0 when both runs miss every image: 1 in the table (model-vs-human), marked in report.md."""
    n = 40
    label = np.arange(n) % 1000
    for model in ("convnext-sup", "vit-sup"):
        kit.write(tmp_path / "s.zarr", "imagenet-val", "center", model, kit.planted(label + 1, 1000), sample_id=kit.val_ids(n),
                  label=label)
    results_of(tmp_path / "s.zarr", tmp_path / "out", studies=["agreement"])
    row = pl.read_csv(tmp_path / "out" / "agreement.csv").filter(pl.col("metric") == "error_consistency").row(0, named=True)
    assert row["value"] == 1.0 and ref_kappa([False] * n, [False] * n) == 1.0
    assert "1.000 †" in (tmp_path / "out" / "report.md").read_text()
