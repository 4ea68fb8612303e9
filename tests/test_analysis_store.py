"""The analysis over fixture stores with planted logits: every study's numbers against values known by hand
or computed here with loops; invalid, NaN, all-invalid and incomplete runs; bad input through
``StoreReader`` and the CLI; the store is never written to.
"""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

import schemas
from analyze.store import AnalysisError, StoreReader


def _row(rows, model, dataset, transform, metric):
    key = (model, dataset, transform, metric)
    assert key in rows, f"no result row {key}; have {sorted(k for k in rows if k[1] == dataset)}"
    return rows[key]


# ------------------------------------------------------------------------------- ImageNet val (+ invariance)
@pytest.fixture(scope="module")
def val_store(kit, tmp_path_factory):
    """imagenet-val, 60 images, 10 classes; three transforms; rows 3 and 4 invalid, row 5 NaN but marked valid,
    rows 0 and 1 without a label."""
    rng = np.random.default_rng(100)
    n, k = 60, 10
    store = tmp_path_factory.mktemp("val") / "val.zarr"
    ids = kit.val_ids(n, start=1001)
    label = rng.integers(0, k, n)
    label[:2] = -1
    runs = {}
    for transform, scale in (("center", 3.0), ("scale-1.5", 1.5), ("shift-30", 0.7)):
        logits = (rng.standard_normal((n, k)) * scale).astype(np.float32)
        # Plant a clear majority of hits so the numbers differ across transforms.
        hit = rng.random(n) < {"center": 0.8, "scale-1.5": 0.5, "shift-30": 0.3}[transform]
        logits[hit, label[hit]] = logits[hit].max(axis=1) + 1.0
        valid = np.ones(n, bool)
        if transform == "center":
            valid[[3, 4]] = False
            logits[5] = np.nan
        path = kit.write(store, "imagenet-val", transform, "convnext-sup", np.nan_to_num(logits), sample_id=ids,
                         label=label, valid=valid)
        # write_run refuses NaN on a valid row: plant it through the block writer, as another writer could.
        schemas.RunWriter(zarr.open_group(store, path=path, mode="r+"), n).write_block(0, logits, valid=valid)
        runs[transform] = (logits, valid)
    return dict(store=store, ids=ids, label=label, runs=runs, n=n)


@pytest.fixture(scope="module")
def val_results(kit, val_store, tmp_path_factory):
    """Every study over the val store (n_boot=50); the store's files are hashed before and after."""
    import polars as pl

    from analyze.report import build_report

    out = tmp_path_factory.mktemp("val_out")
    before = kit.tree_hash(val_store["store"])
    info = build_report(val_store["store"], out, n_boot=50, progress=False)
    info["store_unchanged"] = kit.tree_hash(val_store["store"]) == before
    table = pl.read_parquet(out / "results.parquet")
    return {(r["model"], r["dataset"], r["transform"], r["metric"]): r for r in table.iter_rows(named=True)}, info


def _expected_val(kit, val_store, transform):
    logits, valid = val_store["runs"][transform]
    label = val_store["label"]
    conf, correct, p_true = [], [], []
    for i in range(val_store["n"]):
        if not valid[i] or not np.isfinite(logits[i]).all() or label[i] < 0:
            continue
        p = kit.ref_softmax(logits[i])
        conf.append(max(p))
        correct.append(kit.ref_argmax(logits[i]) == label[i])
        p_true.append(p[label[i]])
    return conf, correct, p_true


def test_val_top1_ece_and_invariance(kit, val_store, val_results):
    rows, info = val_results
    for transform in ("center", "scale-1.5", "shift-30"):
        conf, correct, p_true = _expected_val(kit, val_store, transform)
        top1 = _row(rows, "convnext-sup", "imagenet-val", transform, "top1")
        assert top1["value"] == pytest.approx(sum(correct) / len(correct), abs=1e-12)
        assert top1["n"] == len(correct)
        pt = _row(rows, "convnext-sup", "imagenet-val", transform, "p_true")
        assert pt["value"] == pytest.approx(math.fsum(p_true) / len(p_true), rel=1e-9)
        assert pt["n"] == len(correct)
        assert top1["ci_low"] <= top1["value"] <= top1["ci_high"]
    conf, correct, _ = _expected_val(kit, val_store, "center")
    assert len(correct) == 60 - 2 - 3  # 2 unlabelled, 2 invalid, 1 NaN row
    ece = _row(rows, "convnext-sup", "imagenet-val", "center", "ece")
    assert ece["value"] == pytest.approx(kit.ref_ece(conf, correct), abs=1e-12)
    assert ece["n"] == len(correct)
    # ECE is only computed at the standard view.
    assert ("convnext-sup", "imagenet-val", "scale-1.5", "ece") not in rows


def test_nan_row_marked_valid_is_noted_once_naming_the_run(val_results):
    _, info = val_results
    notes = [n for n in info["notes"] if "NaN" in n]
    assert notes == ["imagenet-val/center/convnext-sup/logits: 1 rows marked valid hold NaN/inf logits; treated as invalid"]


def test_invalid_rows_are_counted_in_a_note(val_results):
    _, info = val_results
    assert any("imagenet-val/center/convnext-sup" in n and "2" in n and "NaN" not in n for n in info["notes"]), info["notes"]


def test_invariance_figures_and_report(val_results):
    _, info = val_results
    from pathlib import Path

    out = Path(info["out"])
    for name in ("invariance_top1", "invariance_p_true", "reliability_imagenet-val"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "top-1 (%) vs scale factor" in report and "top-1 (%) vs shift (px)" in report


# ------------------------------------------------------------------------------------------------ ReaL
def test_real_top1_excludes_empty_sets_and_invalid_rows(kit, tmp_path, results_of):
    sets = kit.read_real()[:60]
    n = 60
    pred, label = [], []
    for i, s in enumerate(sets):
        label.append(s[0] if s else 0)
        pred.append(s[-1] if s and i % 3 else next(c for c in range(1000) if c not in s))
    valid = np.ones(n, bool)
    first_nonempty = next(i for i, s in enumerate(sets) if s)
    valid[first_nonempty] = False
    logits = kit.planted(np.array(pred), 1000)
    store = tmp_path / "real.zarr"
    kit.write(store, "imagenet-val", "center", "vit-sup", logits, sample_id=kit.val_ids(n), label=label, valid=valid)
    rows, _ = results_of(store, tmp_path / "out", studies=["robustness"])
    counted = [i for i, s in enumerate(sets) if s and valid[i]]
    expected = sum(pred[i] in sets[i] for i in counted) / len(counted)
    real = _row(rows, "vit-sup", "imagenet-real", "center", "top1")
    assert real["value"] == pytest.approx(expected, abs=1e-12) and real["n"] == len(counted)
    val = _row(rows, "vit-sup", "imagenet-val", "center", "top1")
    kept = [i for i in range(n) if valid[i]]
    assert val["value"] == pytest.approx(sum(pred[i] == label[i] for i in kept) / len(kept), abs=1e-12)


# ----------------------------------------------------------------------------- ImageNet-A / -R / Hard / C
def test_imagenet_a_and_r_class_subsets(kit, tmp_path, results_of):
    rng = np.random.default_rng(101)
    store = tmp_path / "ar.zarr"
    expected = {}
    for dataset in ("imagenet-a", "imagenet-r"):
        subset = kit.read_subset(f"{dataset}-200")
        outside = sorted(set(range(1000)) - set(subset))
        n = 40
        label = rng.choice(subset, n)
        logits = (rng.standard_normal((n, 1000)) * 2).astype(np.float32)
        logits[np.arange(n), rng.choice(outside, n)] += 25.0        # the global argmax is never an A/R class
        hit = rng.random(n) < 0.6
        logits[hit, label[hit]] = 9.0
        kit.write(store, dataset, "center", "convnext-clip", logits, sample_id=[f"{dataset}/{i}.jpg" for i in range(n)],
                  label=label)
        conf, correct = [], []
        for i in range(n):
            p = kit.ref_softmax([logits[i][j] for j in subset])
            conf.append(max(p))
            correct.append(kit.ref_argmax(logits[i], subset) == label[i])
        assert all(kit.ref_argmax(logits[i]) not in subset for i in range(n))
        expected[dataset] = (sum(correct) / n, kit.ref_ece(conf, correct))
    rows, _ = results_of(store, tmp_path / "out", studies=["robustness", "calibration"])
    for dataset, (top1, ece) in expected.items():
        assert top1 > 0.4
        assert _row(rows, "convnext-clip", dataset, "center", "top1")["value"] == pytest.approx(top1, abs=1e-12)
    assert _row(rows, "convnext-clip", "imagenet-r", "center", "ece")["value"] == pytest.approx(expected["imagenet-r"][1], abs=1e-12)
    assert ("convnext-clip", "imagenet-a", "center", "ece") not in rows   # the paper's ECE: val and R only


def test_only_datasets_a_probability_study_lists_get_the_softmax(kit, tmp_path):
    """ImageNet-A is read for its decisions alone (no study that reads probabilities lists it): its summary holds
    the argmax over its 200 classes and which rows count, no confidence; ImageNet-R, which calibration lists, holds
    both."""
    from analyze.summaries import SummaryCache

    rng = np.random.default_rng(102)
    store, n = tmp_path / "ar.zarr", 30
    logits = {}
    for dataset in ("imagenet-a", "imagenet-r"):
        logits[dataset] = (rng.standard_normal((n, 1000)) * 3).astype(np.float32)
        kit.write(store, dataset, "center", "m", logits[dataset], sample_id=[f"{dataset}/{i}.jpg" for i in range(n)],
                  label=rng.choice(kit.read_subset(f"{dataset}-200"), n))
    reader = StoreReader(store)
    summaries = SummaryCache(reader)
    a, r = (summaries.summary(k) for k in sorted(reader.runs(), key=lambda k: k.dataset))
    assert a.key.dataset == "imagenet-a" and a.confidence is None and a.p_true is None
    assert r.confidence is not None and np.isfinite(r.confidence[r.valid]).all() \
        and np.isfinite(r.p_true[r.valid]).all()
    for summary, subset in ((a, kit.read_subset("imagenet-a-200")), (r, kit.read_subset("imagenet-r-200"))):
        rows = logits[summary.key.dataset]
        assert summary.valid.all()
        assert summary.pred.tolist() == [kit.ref_argmax(rows[i], subset) for i in range(n)]
    summaries.close()


def test_imagenet_hard_label_lists(kit, tmp_path, results_of):
    label_set = np.array([[1, -1, -1], [2, 3, -1], [4, 5, 6], [7, -1, -1], [8, 9, -1], [0, -1, -1]], np.int32)
    pred = np.array([1, 3, 6, 0, 2, 0])        # hits: rows 0, 1, 2, 5
    store = tmp_path / "hard.zarr"
    kit.write(store, "imagenet-hard", "center", "vit-clip", kit.planted(pred, 12), sample_id=[f"h{i}" for i in range(6)],
              label=label_set[:, 0], columns={"label_set": label_set})
    rows, _ = results_of(store, tmp_path / "out", studies=["robustness"])
    r = _row(rows, "vit-clip", "imagenet-hard", "center", "top1")
    assert r["value"] == pytest.approx(4 / 6) and r["n"] == 6


def test_imagenet_c_per_cell_and_mean(kit, tmp_path, results_of):
    hits = {("fog", 1): 4, ("fog", 3): 2, ("snow", 1): 3, ("snow", 3): 0}     # of 4 images per cell
    images = [f"n0144/ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 5)]
    ids, label, pred, corruption, severity = [], [], [], [], []
    for (c, s), h in hits.items():
        for j, image in enumerate(images):
            ids.append(f"{c}/{s}/{image}")
            label.append(j + 1)
            pred.append(j + 1 if j < h else 0)
            corruption.append(c)
            severity.append(s)
    store = tmp_path / "c.zarr"
    kit.write(store, "imagenet-c", "center", "convnext-sup", kit.planted(np.array(pred), 10), sample_id=ids, label=label,
              columns={"corruption": np.array(corruption), "severity": np.array(severity, np.int8)})
    rows, _ = results_of(store, tmp_path / "out", studies=["robustness"], n_boot=50)
    for (c, s), h in hits.items():
        assert _row(rows, "convnext-sup", "imagenet-c", "center", f"top1:{c}:{s}")["value"] == pytest.approx(h / 4)
    mean = _row(rows, "convnext-sup", "imagenet-c", "center", "top1")
    assert mean["value"] == pytest.approx(sum(hits.values()) / 4 / len(hits))
    assert mean["n"] == 16
    assert mean["ci_low"] <= mean["value"] <= mean["ci_high"] and mean["ci_high"] > mean["ci_low"]


@pytest.mark.parametrize("values", [
    [f"ILSVRC2012_val_{i:08d}.JPEG" for i in np.random.default_rng(1).integers(0, 300, 5000)],
    ["snow:3", "fog:1", "snow:10", "fog:1", "b", "a"],
    list(np.random.default_rng(2).integers(-5, 5, 100)),
    [],
])
def test_codes_equal_numpy_unique(values):
    """The per-report image and cell indices of per-image datasets: np.unique's values and inverse, by hashing."""
    from analyze.studies._common import codes

    distinct, inverse = codes(np.array(values))
    want, want_inverse = np.unique(np.array(values), return_inverse=True)
    assert distinct.tolist() == want.tolist()
    np.testing.assert_array_equal(inverse, want_inverse.reshape(-1))



def test_imagenet_c_cells_equal_numpy_unique_of_the_cell_names():
    """Each row's ``corruption:severity`` cell, found from the two columns' own values: np.unique of the names
    made row by row (a severity of 10 sorts before 2 as text, as the names are sorted)."""
    from types import SimpleNamespace

    from analyze.studies.robustness import _cells

    rng = np.random.default_rng(4)
    corruption = rng.choice(["snow", "fog", "jpeg_compression", "zoom_blur"], 3000)
    severity = rng.choice(np.array([1, 2, 10, 5], np.int8), 3000)
    corruption[5], severity[5] = "motion_blur", 3  # a pair on one row only
    samples = SimpleNamespace(columns={"corruption": corruption, "severity": severity})
    ctx = SimpleNamespace(reader=SimpleNamespace(samples=lambda dataset: samples), shared={})
    names, index = _cells(ctx, "imagenet-c")
    want, want_index = np.unique([f"{c}:{s}" for c, s in zip(corruption, severity)], return_inverse=True)
    assert names.tolist() == want.tolist()
    np.testing.assert_array_equal(index, want_index)

# ------------------------------------------------------------------------------------------ cue-conflict
def test_shape_bias_through_store(kit, tmp_path, results_of):
    cats = kit.read_cue_categories()
    names = [c for c, _ in cats]
    members = [m for _, m in cats]
    dog, knife = names.index("dog"), names.index("knife")
    # (shape, texture, decision); decision None = the dog/knife trap below
    plan = [(0, 1, 0), (1, 2, 1), (2, 3, 2),           # shape hits
            (3, 4, 4),                                 # texture hit
            (dog, knife, None),                        # texture hit under the MEAN rule (sum would say shape)
            (4, 5, 9),                                 # neither
            (5, 5, 5), (5, 5, 5), (6, 6, 6), (7, 7, 7),  # shape == texture: dropped (would add 4 + 4 hits)
            (8, 9, 8)]                                 # invalid row: a shape hit that must not count
    n = len(plan)
    logits = np.zeros((n, 1000), np.float32)
    for i, (s, t, d) in enumerate(plan):
        if d is None:
            logits[i, members[dog][:3]] = 10.0
            logits[i, members[knife][0]] = 10.5
        else:
            logits[i, members[d][0]] = 12.0
    valid = np.ones(n, bool)
    valid[-1] = False
    shape = np.array([p[0] for p in plan])
    texture = np.array([p[1] for p in plan], np.int16)
    ids = [f"{names[s]}/{names[s]}{i}-{names[t]}{i}.png" for i, (s, t, _) in enumerate(plan)]
    store = tmp_path / "cue.zarr"
    kit.write(store, "cue-conflict", "center", "vit-sup", logits, sample_id=ids, label=shape,
              columns={"texture_label": texture}, valid=valid)
    decisions = [kit.ref_cue_decision(logits[i], cats) for i in range(n)]
    assert decisions[4] == knife
    kept = [i for i in range(n) if valid[i] and shape[i] != texture[i]]
    s_hits = sum(decisions[i] == shape[i] for i in kept)
    t_hits = sum(decisions[i] == texture[i] for i in kept)
    assert (s_hits, t_hits, len(kept)) == (3, 2, 6)
    rows, info = results_of(store, tmp_path / "out", studies=["shape_bias"], n_boot=50)
    got = {m: _row(rows, "vit-sup", "cue-conflict", "center", m) for m in ("shape_bias", "shape_fraction", "texture_fraction")}
    assert got["shape_bias"]["value"] == pytest.approx(3 / 5)
    assert got["shape_fraction"]["value"] == pytest.approx(3 / 6)
    assert got["texture_fraction"]["value"] == pytest.approx(2 / 6)
    assert all(r["n"] == 6 for r in got.values())
    # Per shape category, in report.md: airplane 1.00 (a shape hit), category 3 0.00 (texture), 4 undefined.
    report = (tmp_path / "out" / "report.md").read_text()
    assert f"| {names[0]} | 1.00 |" in report
    assert f"| {names[3]} | 0.00 |" in report
    assert f"| {names[dog]} | 0.00 |" in report
    assert f"| {names[4]} | nan |" in report
    assert (tmp_path / "out" / "figures" / "shape_texture_fractions.png").stat().st_size > 0


# ---------------------------------------------------------------------------------------------------- PUG
def test_pug_overall_and_per_factor(kit, tmp_path, results_of):
    classes = kit.read_pug_classes()
    n = 16
    rng = np.random.default_rng(102)
    label = rng.integers(0, len(classes), n)
    world = np.array(["desert", "city"] * 8)
    yaw = np.array([0, 0, 90, 90] * 4, np.int16)
    hit = np.array([1, 1, 1, 0, 1, 0, 1, 1, 0, 0, 1, 1, 1, 0, 0, 1], bool)
    pred = []
    for i in range(n):
        members = classes[label[i]][1]
        pred.append(members[-1] if hit[i] else next(c for c in range(1000) if c not in members))
    store = tmp_path / "pug.zarr"
    kit.write(store, "pug-imagenet", "center", "convnext-sup", kit.planted(np.array(pred), 1000),
              sample_id=[f"Worlds/{classes[l][0]}/{i}.png" for i, l in enumerate(label)], label=label,
              columns={"world": world, "camera_yaw": yaw})
    rows, _ = results_of(store, tmp_path / "out", studies=["pug"])
    assert _row(rows, "convnext-sup", "pug-imagenet", "center", "top1")["value"] == pytest.approx(hit.mean())
    for column, values in (("world", world), ("camera_yaw", yaw)):
        for v in sorted(set(values.tolist())):
            rows_v = [i for i in range(n) if values[i] == v]
            expected = sum(hit[i] for i in rows_v) / len(rows_v)
            r = _row(rows, "convnext-sup", "pug-imagenet", "center", f"top1:{column}={v}")
            assert r["value"] == pytest.approx(expected), (column, v)
    assert (tmp_path / "out" / "figures" / "pug_factors.png").stat().st_size > 0


def test_pug_factor_folders_group_only_their_own_images(kit, tmp_path, results_of):
    """With PUG's one-folder-per-factor layout, a factor's values are compared only within its folder."""
    classes = kit.read_pug_classes()
    n = 16
    label = np.zeros(n, int)
    factor = np.array(["Worlds"] * 8 + ["Camera_Yaw"] * 8)
    world = np.array(["desert", "city"] * 8)
    yaw = np.array([0, 90] * 8, np.int16)
    hit = np.array([1, 0, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1, 1, 0, 1, 0], bool)
    members = classes[0][1]
    pred = np.array([members[0] if h else next(c for c in range(1000) if c not in members) for h in hit])
    store = tmp_path / "pug.zarr"
    kit.write(store, "pug-imagenet", "center", "convnext-sup", kit.planted(pred, 1000),
              sample_id=[f"{f}/{classes[0][0]}/{i}.png" for i, f in enumerate(factor)], label=label,
              columns={"factor": factor, "world": world, "camera_yaw": yaw})
    rows, _ = results_of(store, tmp_path / "out", studies=["pug"])
    for folder, column, values in (("Worlds", "world", world), ("Camera_Yaw", "camera_yaw", yaw)):
        inside = factor == folder
        for v in sorted(set(values[inside].tolist())):
            rows_v = inside & (values == v)
            r = _row(rows, "convnext-sup", "pug-imagenet", "center", f"top1:{folder}={v}")
            assert r["value"] == pytest.approx(hit[rows_v].mean()), (folder, v)
            assert r["n"] == rows_v.sum()


# --------------------------------------------------------------------------------------------------- VTAB
def _vtab_split(rng, centers, counts, mislabel_test=0):
    xs, ys, splits = [], [], []
    for split, count in counts.items():
        y = np.arange(count) % len(centers)
        x = centers[y] + rng.standard_normal((count, centers.shape[1])) * 0.05
        if split == "test" and mislabel_test:
            y = y.copy()
            y[:mislabel_test] = (y[:mislabel_test] + 1) % len(centers)   # features of one class, label of another
        xs.append(x * rng.uniform(0.5, 3.0, (count, 1)))
        ys.append(y)
        splits += [split] * count
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys), np.array(splits)


def test_vtab_linear_probes_and_group_means(kit, tmp_path, results_of):
    rng = np.random.default_rng(103)
    centers = np.eye(8)[:3] * 2
    counts = {"train800": 30, "val200": 15, "test": 30}
    plan = {"vtab-aa": ("natural", 0), "vtab-bb": ("natural", 10), "vtab-cc": ("structured", 0)}
    store = tmp_path / "vtab.zarr"
    for task, (group, bad) in plan.items():
        feats, y, split = _vtab_split(rng, centers, counts, bad)
        # Shuffle the sample order: the probe must pick its splits from the column, not the position.
        order = rng.permutation(len(y))
        feats, y, split = feats[order], y[order], split[order]
        kit.write(store, task, "center", "vit-clip", np.zeros((len(y), 5), np.float32), feats,
                  sample_id=[f"{task}/{i:04d}" for i in range(len(y))], label=y, columns={"split": split},
                  entry=kit.entry_for(task, group=group))
    rows, _ = results_of(store, tmp_path / "out", studies=["transfer"], n_boot=20)
    expected = {"vtab-aa": 1.0, "vtab-bb": 20 / 30, "vtab-cc": 1.0}
    for task, value in expected.items():
        r = _row(rows, "vit-clip", task, "center", "top1")
        assert r["value"] == pytest.approx(value) and r["n"] == 30
    means = {"vtab-natural": ((1 + 2 / 3) / 2, 2), "vtab-structured": (1.0, 1), "vtab-all": ((2 + 2 / 3) / 3, 3)}
    for dataset, (value, n_tasks) in means.items():
        r = _row(rows, "vit-clip", dataset, "center", "top1_mean")
        assert r["value"] == pytest.approx(value) and r["n"] == n_tasks
        assert r["ci_low"] <= r["value"] + 1e-12 and r["value"] <= r["ci_high"] + 1e-12
    assert ("vit-clip", "vtab-specialized", "center", "top1_mean") not in rows


# ------------------------------------------------------------------------------- invalid / incomplete runs
@pytest.fixture
def small_store(kit, tmp_path):
    """imagenet-val, 20 images, 5 classes, one model 'm' under center (every prediction right)."""
    n = 20
    label = np.arange(n) % 5
    store = tmp_path / "small.zarr"
    kit.write(store, "imagenet-val", "center", "m", kit.planted(label, 5), sample_id=kit.val_ids(n), label=label)
    return store


def test_all_invalid_run_is_left_out_with_a_note(kit, small_store, tmp_path, results_of, capsys):
    n = 20
    kit.write(small_store, "imagenet-val", "center", "dead", np.zeros((n, 5), np.float32), sample_id=kit.val_ids(n),
              label=np.arange(n) % 5, valid=np.zeros(n, bool))
    rows, info = results_of(small_store, tmp_path / "out", studies=["robustness", "calibration"], n_boot=10)
    assert not any(k[0] == "dead" for k in rows)
    assert _row(rows, "m", "imagenet-val", "center", "top1")["value"] == 1.0
    dead = [note for note in info["notes"] if "dead" in note]
    assert dead == ["imagenet-val/center/dead: every sample is invalid (valid is all false); left out"]
    code, _, stderr = cli(capsys, "report", small_store, "--out", tmp_path / "cli", "--n-boot", "5", "--quiet",
                          "--studies", "robustness,calibration")
    assert code == 0, stderr
    assert stderr.count("imagenet-val/center/dead: every sample is invalid") == 1


def test_incomplete_run_is_left_out_with_a_note(kit, tmp_path, results_of):
    n = 1500
    label = np.arange(n) % 3
    store = tmp_path / "inc.zarr"
    kit.write(store, "imagenet-val", "center", "done", kit.planted(label, 3), sample_id=kit.val_ids(n), label=label)
    root = schemas.open_root(store)
    digest = root["imagenet-val"].attrs["sample_digest"]
    inputs = schemas.fingerprint_inputs(model={"id": "half"}, weights_id="w", preprocess={}, transform={"id": "center"},
                                        precision="fp32", sample_digest=digest)
    writer = schemas.open_run(root, "imagenet-val", "center", "half", num_classes=3, feature_dim=None,
                              attrs={"model": {"id": "half"}, "preprocess": {}, "precision": "fp32",
                                     "logit_kind": "classifier", "fingerprint_inputs": inputs})
    writer.write_block(0, kit.planted(label[:1000], 3))
    reader = StoreReader(store)
    assert [k.model for k in reader.runs()] == ["done"]
    assert reader.notes == ["imagenet-val/center/half: incomplete (1 of 2 blocks done); left out"]
    rows, info = results_of(store, tmp_path / "out", studies=["robustness", "calibration"])
    assert not any(k[0] == "half" for k in rows)
    done = _row(rows, "done", "imagenet-val", "center", "top1")
    assert done["n"] == n and done["value"] == 1.0
    assert sum("half" in note for note in info["notes"]) == 1
    assert "imagenet-val/center/half: incomplete" in (tmp_path / "out" / "report.md").read_text()


def _only_dead(kit, store, dataset, transforms=("center",)):
    """A store whose only runs (of ``dataset``) are all-invalid."""
    n = 12
    rng = np.random.default_rng(0)
    kwargs = {}
    k = 1000
    label = rng.integers(0, 5, n)
    features = None
    if dataset == "cue-conflict":
        kwargs["columns"] = {"texture_label": np.arange(n, dtype=np.int16) % 16}
    elif dataset == "pug-imagenet":
        kwargs["columns"] = {"world": np.array(["a", "b"] * (n // 2)), "camera_yaw": np.zeros(n, np.int16)}
    elif dataset.startswith("vtab-"):
        kwargs["columns"] = {"split": np.array(["train800", "val200", "test"] * (n // 3))}
        features = rng.standard_normal((n, 4)).astype(np.float32)
        k = 5
    for transform in transforms:
        kit.write(store, dataset, transform, "convnext-sup", np.zeros((n, k), np.float32), features,
                  sample_id=[f"x/{i}.png" for i in range(n)], label=label, valid=np.zeros(n, bool), **kwargs)


@pytest.mark.parametrize("dataset, transforms", [
    ("imagenet-val", ("center",)),
    pytest.param("imagenet-val", ("center", "scale-2")),
    ("imagenet-r", ("center",)),
    ("cue-conflict", ("center",)),
    ("pug-imagenet", ("center",)),
])
def test_store_with_only_all_invalid_runs(kit, tmp_path, dataset, transforms):
    from analyze.report import build_report

    store = tmp_path / "dead.zarr"
    _only_dead(kit, store, dataset, transforms)
    info = build_report(store, tmp_path / "out", n_boot=10, progress=False)
    assert info["results"] == 0
    for t in transforms:
        assert f"{dataset}/{t}/convnext-sup: every sample is invalid (valid is all false); left out" in info["notes"]
    assert (tmp_path / "out" / "report.md").exists()


def test_vtab_all_invalid_is_skipped_with_a_note(kit, tmp_path):
    from analyze.report import build_report

    store = tmp_path / "dead.zarr"
    _only_dead(kit, store, "vtab-aa")
    info = build_report(store, tmp_path / "out", n_boot=10, progress=False)
    assert info["results"] == 0
    assert any("vtab-aa/center/convnext-sup" in note for note in info["notes"]), info["notes"]


# ------------------------------------------------------------------------------------------------ bad input
def _edit_attrs(path, **changes):
    meta = json.loads((path / "zarr.json").read_text())
    for key, value in changes.items():
        if value is None:
            meta["attributes"].pop(key, None)
        else:
            meta["attributes"][key] = value
    (path / "zarr.json").write_text(json.dumps(meta))


def _replace_array(group_path, name, shape, dtype="float32", dims=("sample", "class")):
    group = zarr.open_group(group_path, mode="r+")
    group.create_array(name, shape=shape, dtype=dtype, dimension_names=dims, overwrite=True)


def _case(name, tmp_path, base):
    """Build the broken input ``name``; return (path given to the analysis, strings the message must hold)."""
    store = tmp_path / "broken.zarr"
    if name == "empty-dir":
        store.mkdir()
        return store, [str(store), "not a Zarr v3 store"]
    if name == "random-file":
        store.write_bytes(np.random.default_rng(0).bytes(256))
        return store, [str(store), "not a Zarr v3 store"]
    if name == "no-such-path":
        return store, [str(store), "not a Zarr v3 store"]
    shutil.copytree(base, store)
    run = store / "imagenet-val" / "center" / "m"
    if name == "other-schema-version":
        _edit_attrs(store, schema_version=schemas.SCHEMA_VERSION + 1)
        return store, [str(store), f"schema version {schemas.SCHEMA_VERSION + 1}", f"reads version {schemas.SCHEMA_VERSION}"]
    if name == "other-schema":
        _edit_attrs(store, schema="somebody-elses-store")
        return store, [str(store), f"not a {schemas.SCHEMA} store", "somebody-elses-store"]
    if name == "zarr-group-without-attrs":
        shutil.rmtree(store)
        zarr.open_group(store, mode="w")
        return store, [str(store), f"not a {schemas.SCHEMA} store"]
    if name == "missing-logits":
        shutil.rmtree(run / "logits")
        return store, [f"{store}/imagenet-val/center/m/logits", "missing array", "logits [sample, class]"]
    if name == "missing-valid":
        shutil.rmtree(run / "valid")
        return store, [f"{store}/imagenet-val/center/m/valid", "missing array", "valid [sample] bool"]
    if name == "missing-block-done":
        shutil.rmtree(run / "block_done")
        return store, [f"{store}/imagenet-val/center/m/block_done", "missing array"]
    if name == "missing-label":
        shutil.rmtree(store / "imagenet-val" / "label")
        return store, [f"{store}/imagenet-val/label", "missing array", "labels [sample]"]
    if name == "missing-sample-id":
        shutil.rmtree(store / "imagenet-val" / "sample_id")
        return store, [f"{store}/imagenet-val/sample_id", "missing array", "sample ids"]
    if name == "logits-rows-mismatch":
        _replace_array(run, "logits", (23, 5))
        return store, [f"{store}/imagenet-val/center/m/logits", "23 rows, expected 20"]
    if name == "valid-rows-mismatch":
        _replace_array(run, "valid", (19,), "bool", ("sample",))
        return store, [f"{store}/imagenet-val/center/m/valid", "19 rows, expected 20"]
    if name == "label-rows-mismatch":
        _replace_array(store / "imagenet-val", "label", (21,), "int32", ("sample",))
        return store, [f"{store}/imagenet-val/label", "21 rows, expected 20"]
    if name == "logits-1d":
        _replace_array(run, "logits", (20,), "float32", ("sample",))
        return store, [f"{store}/imagenet-val/center/m/logits", "1 dimensions, expected 2"]
    if name == "no-label-space":
        _edit_attrs(store / "imagenet-val", label_space=None)
        return store, [f"{store}/imagenet-val", "label_space"]
    raise AssertionError(name)


BAD_INPUTS = ["empty-dir", "random-file", "no-such-path", "other-schema-version", "other-schema",
              "zarr-group-without-attrs", "missing-logits", "missing-valid", "missing-block-done", "missing-label",
              "missing-sample-id", "logits-rows-mismatch", "valid-rows-mismatch", "label-rows-mismatch", "logits-1d",
              "no-label-space"]


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_reader(name, tmp_path, small_store):
    path, expected = _case(name, tmp_path, small_store)
    with pytest.raises(AnalysisError) as err:
        StoreReader(path)
    for part in expected:
        assert part in str(err.value), (part, str(err.value))


def cli(capsys, *args) -> tuple[int, str, str]:
    """``analyze`` CLI in-process (``analyze.cli.main``): exit code, stdout, stderr."""
    from analyze.cli import main

    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse errors
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


CLI_BAD = ["empty-dir", "random-file", "other-schema-version", "missing-logits", "logits-rows-mismatch",
           "label-rows-mismatch", "no-label-space"]


@pytest.mark.parametrize("name", CLI_BAD)
def test_bad_input_cli(name, tmp_path, small_store, capsys):
    path, expected = _case(name, tmp_path, small_store)
    out = tmp_path / "out"
    code, stdout, stderr = cli(capsys, "report", path, "--out", out, "--n-boot", "5", "--quiet")
    assert code == 2, (code, stdout, stderr)
    errors = [l for l in stderr.splitlines() if l.strip()]
    assert len(errors) == 1 and errors[0].startswith("analyze report: error: "), stderr
    for part in expected:
        assert part in errors[0], (part, errors[0])
    assert stdout == ""
    assert not out.exists(), "nothing is written when the store can't be read"


def test_bad_input_python_m_analyze(kit, tmp_path, small_store):
    """The real entry point, in a subprocess: exit code 2, one line on stderr, no traceback."""
    path, expected = _case("missing-logits", tmp_path, small_store)
    result = kit.run_cli("report", path, "--out", tmp_path / "out", "--n-boot", "5", "--quiet")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("analyze report: error: "), result.stderr
    assert all(part in lines[0] for part in expected)


def test_nan_rows_through_cli(kit, tmp_path, small_store, capsys):
    n = 20
    logits = kit.planted(np.arange(n) % 5, 5)
    logits[[2, 7]] = np.nan
    path = kit.write(small_store, "imagenet-val", "center", "holey", np.nan_to_num(logits), sample_id=kit.val_ids(n),
                     label=np.arange(n) % 5, valid=np.ones(n, bool))
    run = zarr.open_group(small_store, path=path, mode="r+")
    schemas.RunWriter(run, n).write_block(0, logits, valid=np.ones(n, bool))  # NaN on valid rows: no door here
    code, _, stderr = cli(capsys, "report", small_store, "--out", tmp_path / "out", "--n-boot", "5", "--quiet",
                          "--studies", "robustness")
    assert code == 0, stderr
    notes = [l for l in stderr.splitlines() if "holey" in l]
    assert notes == ["note: imagenet-val/center/holey/logits: 2 rows marked valid hold NaN/inf logits; treated as invalid"]
    import polars as pl

    table = pl.read_csv(tmp_path / "out" / "results.csv")
    row = table.filter((pl.col("model") == "holey") & (pl.col("dataset") == "imagenet-val")).row(0, named=True)
    assert row["n"] == 18 and row["value"] == 1.0


def test_damaged_logits_chunk_is_named_and_nothing_hangs(kit, tmp_path, small_store, capsys):
    """The logits are read on background threads: a damaged chunk reaches the user as one clear error."""
    n = 20
    kit.write(small_store, "imagenet-val", "center", "other", kit.planted(np.arange(n) % 5, 5),
              sample_id=kit.val_ids(n), label=np.arange(n) % 5)
    chunk = next(p for p in (small_store / "imagenet-val" / "center" / "m" / "logits").rglob("*")
                 if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(b"not zstd at all")
    code, _, stderr = cli(capsys, "report", small_store, "--out", tmp_path / "out", "--n-boot", "5", "--quiet")
    assert code != 0
    assert f"{small_store}/imagenet-val/center/m/logits: rows 0:20 could not be read" in stderr
    assert "Traceback" not in stderr


def test_cli_unknown_study_is_an_error_that_suggests_the_close_name(tmp_path, small_store, capsys):
    code, _, stderr = cli(capsys, "report", small_store, "--out", tmp_path / "out", "--studies", "calibraton")
    assert code == 2 and "Traceback" not in stderr
    assert "unknown study 'calibraton'; did you mean 'calibration'?" in stderr and "available:" in stderr


# --------------------------------------------------------------------------------------- read-only store
def test_report_never_writes_into_the_store(kit, tmp_path, val_results, small_store):
    _, info = val_results
    assert info["store_unchanged"], "build_report changed a file of the store"
    before = kit.tree_hash(small_store)
    result = kit.run_cli("report", small_store, "--out", tmp_path / "out", "--n-boot", "5", "--quiet",
                         "--studies", "calibration")
    assert result.returncode == 0, result.stderr
    assert kit.tree_hash(small_store) == before
    assert (tmp_path / "out" / "report.md").exists()


@pytest.mark.parametrize("inside", [
    "",
    pytest.param("imagenet-val/report"),
])
def test_out_inside_the_store_is_refused_and_the_store_untouched(kit, tmp_path, small_store, inside, capsys):
    before = kit.tree_hash(small_store)
    out = small_store / inside if inside else small_store
    code, _, stderr = cli(capsys, "report", small_store, "--out", out, "--n-boot", "5", "--quiet")
    assert code == 2
    assert "must not lie inside the store" in stderr
    assert kit.tree_hash(small_store) == before


@pytest.mark.parametrize("workers", [0, 1])
def test_out_inside_the_store_refused_by_build_report(tmp_path, small_store, workers):
    from analyze import figures
    from analyze.report import build_report

    with pytest.raises(ValueError, match="must not lie inside the store"):
        build_report(small_store, small_store / "imagenet-val" / "x", n_boot=0, progress=False,
                     figure_workers=workers)
    assert figures._pool is None  # the figure workers, started before the store was opened, are gone


def test_store_given_as_a_file_url(small_store, tmp_path, results_of):
    rows, _ = results_of(f"file://{small_store}", tmp_path / "out", studies=["robustness"])
    assert _row(rows, "m", "imagenet-val", "center", "top1")["value"] == 1.0


def test_out_inside_a_file_url_store_is_refused(kit, small_store):
    from analyze.report import build_report

    before = kit.tree_hash(small_store)
    try:
        with pytest.raises(ValueError, match="must not lie inside the store"):
            build_report(f"file://{small_store}", small_store / "inside", study_names=["robustness"], n_boot=0,
                         progress=False)
    finally:
        assert kit.tree_hash(small_store) == before


def test_out_is_an_existing_file(small_store, tmp_path, capsys):
    target = tmp_path / "afile"
    target.write_text("x")
    code, _, stderr = cli(capsys, "report", small_store, "--out", target, "--quiet", "--studies", "robustness")
    assert code == 2 and str(target) in stderr


def _add_imagenet_v2(kit, store, n: int = 20) -> None:
    kit.write(store, "imagenet-v2", "center", "m", kit.planted(np.arange(n) % 5, 5), sample_id=kit.val_ids(n),
              label=np.arange(n) % 5)


def test_a_run_that_cannot_be_set_up_stops_the_reading_already_queued(kit, small_store):
    """The reading starts run by run while the next runs are set up: when one cannot be (its labels do not
    decode), the error comes at once, naming the damage, and no thread goes on reading the runs queued before it."""
    import threading

    from analyze.summaries import SummaryCache

    _add_imagenet_v2(kit, small_store)
    reader = StoreReader(small_store)
    chunks = list((small_store / "imagenet-v2" / "label").glob("c.*"))
    assert chunks
    for chunk in chunks:
        chunk.write_bytes(b"not a zstd frame")
    cache = SummaryCache(reader)
    keys = sorted(reader.runs(), key=lambda k: k.dataset != "imagenet-val")  # the intact dataset first
    with pytest.raises(AnalysisError, match="imagenet-v2/label"):
        cache.prefetch(keys)
    assert not [t for t in threading.enumerate() if t.name.startswith("logits")]


def test_a_changed_sample_list_is_refused_before_its_runs_are_used(kit, small_store):
    """The reading threads start on a dataset's labels alone (its sample list is checked against its digest on
    the studies' thread meanwhile): a list changed after it was written is refused before a summary is handed over."""
    from analyze.summaries import SummaryCache

    _add_imagenet_v2(kit, small_store)
    label = zarr.open_array(small_store / "imagenet-v2" / "label", mode="r+")
    label[0] = 4
    reader = StoreReader(small_store)
    cache = SummaryCache(reader)
    keys = sorted(reader.runs(), key=lambda k: k.dataset != "imagenet-val")
    cache.prefetch(keys)
    try:
        assert cache.summary(keys[0]).valid.all()  # the intact dataset
        with pytest.raises(AnalysisError, match="imagenet-v2.*sample_digest"):
            cache.summary(keys[1])
    finally:
        cache.close()


def test_the_console_entry_point_exits_with_the_commands_code(small_store, tmp_path):
    import tomllib

    from analyze.cli import run

    scripts = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["analyze"] == f"{run.__module__}:{run.__name__}"
    for args, want in (([small_store, "--out", tmp_path / "ok", "--studies", "robustness", "--n-boot", "5"], 0),
                       ([small_store, "--out", small_store], 2)):
        done = subprocess.run([sys.executable, "-c", "import sys; from analyze.cli import run; "
                               "sys.argv[1:] = sys.argv[2:]; run()", "x", "report", *map(str, args), "--quiet"],
                              capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=300)
        assert done.returncode == want, done.stderr
    assert (tmp_path / "ok" / "report.html").is_file()
