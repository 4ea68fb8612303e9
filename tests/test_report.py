"""build_report end to end on small synthetic stores: outputs, columns, warnings, figures, seeds, subsets."""
from __future__ import annotations

import math
import re

import numpy as np
import polars as pl
import pytest

from analyze.report import build_report
from analyze.synthetic import build_synthetic_store

RESULT_COLUMNS = ["model", "dataset", "transform", "metric", "value", "ci_low", "ci_high", "n", "partial",
                  "paper_value", "paper_source", "paper_diff", "paper_in_ci"]
DIFF_COLUMNS = ["model_a", "model_b", "dataset", "transform", "metric", "diff", "ci_low", "ci_high", "n", "partial"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    base = tmp_path_factory.mktemp("synthetic")
    store = build_synthetic_store(base / "store.zarr", seed=0, transforms=("center", "scale-1.5"),
                                  sizes={"imagenet-val": 200, "imagenet-r": 60, "cue-conflict": 320,
                                         "pug-imagenet": 80})
    info = build_report(store, base / "out", n_boot=50, seed=0, progress=False)
    return dict(store=store, out=base / "out", info=info)


def test_output_files_and_exact_columns(synthetic):
    out = synthetic["out"]
    for name in ("results.parquet", "results.csv", "differences.parquet", "differences.csv", "report.md"):
        assert (out / name).stat().st_size > 0, name
    results = pl.read_parquet(out / "results.parquet")
    assert results.columns == RESULT_COLUMNS
    assert pl.read_csv(out / "results.csv").columns == RESULT_COLUMNS
    assert results.schema["value"] == pl.Float64 and results.schema["n"] == pl.Int64
    assert len(results) == synthetic["info"]["results"] > 0
    diffs = pl.read_parquet(out / "differences.parquet")
    assert diffs.columns == DIFF_COLUMNS and pl.read_csv(out / "differences.csv").columns == DIFF_COLUMNS
    assert len(diffs) == synthetic["info"]["differences"] > 0
    # CSV and Parquet hold the same table.
    csv = pl.read_csv(out / "results.csv")
    assert csv["metric"].to_list() == results["metric"].to_list()
    np.testing.assert_allclose(csv["value"].to_numpy(), results["value"].to_numpy(), rtol=1e-12, equal_nan=True)
    # One row per (model, dataset, transform, metric).
    assert results.select(["model", "dataset", "transform", "metric"]).is_duplicated().sum() == 0
    # Every study's data is there.
    datasets = set(results["dataset"])
    assert {"imagenet-val", "imagenet-real", "imagenet-r", "cue-conflict", "pug-imagenet"} <= datasets
    metrics = set(results["metric"])
    assert {"top1", "ece", "p_true", "shape_bias", "error_ratio:pose"} <= metrics
    assert set(results["model"]) == {"convnext-sup", "vit-sup", "convnext-clip", "vit-clip"}


def test_report_tables_show_the_intervals_of_results_csv(synthetic):
    """report.md's tables are written after the bootstrap: each cell carries the interval of its result row."""
    out = synthetic["out"]
    results = pl.read_parquet(out / "results.parquet")
    row = results.filter((pl.col("model") == "convnext-sup") & (pl.col("dataset") == "imagenet-val")
                         & (pl.col("transform") == "center") & (pl.col("metric") == "top1")).row(0, named=True)
    cell = f"{row['value'] * 100:.1f} [{row['ci_low'] * 100:.1f}, {row['ci_high'] * 100:.1f}]"
    line = next(l for l in (out / "report.md").read_text().splitlines() if l.startswith("| imagenet-val |"))
    assert line.split(" | ")[1] == cell


def test_values_and_intervals_are_sane(synthetic):
    results = pl.read_parquet(synthetic["out"] / "results.parquet")
    top1 = results.filter(pl.col("metric") == "top1")
    assert ((top1["value"] >= 0) & (top1["value"] <= 1)).all()
    bounded = results.filter(pl.col("ci_low").is_not_nan() & pl.col("value").is_not_nan())
    assert len(bounded) > 0
    assert (bounded["ci_low"] <= bounded["ci_high"]).all()
    assert (results["n"] > 0).all()
    val = top1.filter((pl.col("dataset") == "imagenet-val") & (pl.col("transform") == "center"))
    assert set(val["n"]) == {200}


def test_differences_are_a_minus_b_on_the_results(synthetic):
    results = pl.read_parquet(synthetic["out"] / "results.parquet")
    value = {(r["model"], r["dataset"], r["transform"], r["metric"]): r["value"] for r in results.iter_rows(named=True)}
    diffs = pl.read_parquet(synthetic["out"] / "differences.parquet")
    assert set(zip(diffs["model_a"], diffs["model_b"])) == {("convnext-sup", "vit-sup"), ("convnext-clip", "vit-clip")}
    for r in diffs.iter_rows(named=True):
        a = value[(r["model_a"], r["dataset"], r["transform"], r["metric"])]
        b = value[(r["model_b"], r["dataset"], r["transform"], r["metric"])]
        if math.isnan(a - b):
            continue
        assert r["diff"] == pytest.approx(a - b, abs=1e-12)
        assert r["ci_low"] <= r["ci_high"]


def test_sections_keep_the_report_order_when_studies_run_in_another(synthetic):
    """Agreement runs first (its figures take the longest to draw) and its sections still come after the others'."""
    from analyze import studies

    order = studies.available()
    assert studies.run_order(order)[0] == "agreement" != order[0]
    titles = [line[3:] for line in (synthetic["out"] / "report.md").read_text().splitlines() if line.startswith("## ")]
    owners = [n for t in titles for n in order if t.startswith(studies.get(n).TITLE)]  # a study's titles start so
    assert "agreement" in owners and "robustness" in owners
    assert owners == sorted(owners, key=order.index)


def test_report_md_warns_and_lists_missing_data(synthetic):
    from schemas.manifest import load_manifest

    report = (synthetic["out"] / "report.md").read_text()
    assert "mean nothing about real models" in report and "synthetic" in report
    missing_line = next(l for l in report.splitlines() if "lacks the paper's datasets" in l)
    paper = load_manifest().suite("paper")["datasets"]
    for dataset in paper:
        if dataset in ("imagenet-val", "imagenet-r", "cue-conflict", "pug-imagenet"):
            assert dataset not in missing_line.split(":", 1)[1].replace(",", " ").split()
        else:
            assert dataset in missing_line
    assert "50 replicates, seed 0" in report
    for title in ("Robustness", "ImageNet-X", "Shape bias", "Calibration", "PUG-ImageNet", "Invariance", "Transfer"):
        assert f"## {title}" in report, title
    assert "The store holds no `vtab-*` dataset." in report
    assert "ConvNeXt minus ViT" in report


def test_figures_exist_and_are_png(synthetic):
    out = synthetic["out"]
    report = (out / "report.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert len(linked) >= 7
    for rel in linked:
        path = out / rel
        assert path.stat().st_size > 1000, rel
        assert path.read_bytes()[:8] == PNG, rel
    names = {p.name for p in (out / "figures").iterdir()}
    assert {"robustness.png", "imagenet_x_error_ratios.png", "shape_texture_fractions.png",
            "reliability_imagenet-val.png", "reliability_imagenet-r.png", "pug_factors.png",
            "invariance_top1.png", "invariance_p_true.png"} <= names


def test_seeds_fix_the_intervals(synthetic, tmp_path):
    def table(seed, name):
        build_report(synthetic["store"], tmp_path / name, study_names=["robustness"], n_boot=30, seed=seed,
                     progress=False)
        return pl.read_parquet(tmp_path / name / "results.parquet").sort(["model", "dataset", "metric"])

    a, b, c = table(7, "a"), table(7, "b"), table(8, "c")
    assert a.equals(b)
    assert a["value"].to_list() == c["value"].to_list()
    assert a["ci_low"].to_list() != c["ci_low"].to_list()
    none = build_report(synthetic["store"], tmp_path / "none", study_names=["robustness"], n_boot=0, progress=False)
    t = pl.read_parquet(tmp_path / "none" / "results.parquet")
    assert none["results"] == len(t) and t["ci_low"].is_nan().all() and t["ci_high"].is_nan().all()
    assert "Intervals: none" in (tmp_path / "none" / "report.md").read_text()


def test_identical_models_differ_by_zero_with_a_zero_interval(kit, tmp_path):
    rng = np.random.default_rng(0)
    n = 120
    label = rng.integers(0, 10, n)
    logits = (rng.standard_normal((n, 10)) * 2).astype(np.float32)
    store = tmp_path / "twins.zarr"
    for model in ("convnext-sup", "vit-sup"):
        kit.write(store, "imagenet-val", "center", model, logits, sample_id=kit.val_ids(n), label=label)
    info = build_report(store, tmp_path / "out", study_names=["robustness", "calibration"], n_boot=50, progress=False)
    diffs = pl.read_parquet(tmp_path / "out" / "differences.parquet")
    assert info["differences"] == len(diffs) >= 3  # top1 on val and ReaL, ECE
    assert set(diffs["metric"]) >= {"top1", "ece"}
    for r in diffs.iter_rows(named=True):
        assert (r["model_a"], r["model_b"]) == ("convnext-sup", "vit-sup")
        assert r["diff"] == 0.0 and r["ci_low"] == 0.0 and r["ci_high"] == 0.0, r
    results = pl.read_parquet(tmp_path / "out" / "results.parquet")
    val = results.filter((pl.col("dataset") == "imagenet-val") & (pl.col("metric") == "top1"))
    assert val["ci_low"].n_unique() == 1 and val["ci_low"][0] < val["value"][0] < val["ci_high"][0]


@pytest.mark.parametrize("dataset", ["imagenet-a", "cue-conflict", "pug-imagenet"])
def test_one_dataset_one_model(tmp_path, dataset):
    store = build_synthetic_store(tmp_path / "one.zarr", sizes={dataset: 64}, transforms=("center",),
                                  models={"vit-clip": 0.7}, seed=1)
    info = build_report(store, tmp_path / "out", n_boot=20, progress=False)
    results = pl.read_parquet(tmp_path / "out" / "results.parquet")
    assert results.columns == RESULT_COLUMNS and len(results) == info["results"] > 0
    assert set(results["model"]) == {"vit-clip"} and set(results["dataset"]) == {dataset}
    diffs = pl.read_parquet(tmp_path / "out" / "differences.parquet")
    assert diffs.columns == DIFF_COLUMNS and len(diffs) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "lacks the paper's models: convnext-sup, vit-sup, convnext-clip" in report
    assert "imagenet-val" in next(l for l in report.splitlines() if "lacks the paper's datasets" in l)
    assert "The store holds no `imagenet-val` run under `center`." in report
    for rel in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report):
        assert (tmp_path / "out" / rel).read_bytes()[:8] == PNG


def test_small_synthetic_cue_conflict_keeps_conflicting_images(tmp_path):
    store = build_synthetic_store(tmp_path / "cue.zarr", sizes={"cue-conflict": 64}, transforms=("center",),
                                  models={"vit-clip": 0.7}, seed=1)
    import zarr

    group = zarr.open_group(store, mode="r")["cue-conflict"]
    shape, texture = np.asarray(group["label"][:]), np.asarray(group["texture_label"][:])
    assert (shape != texture).mean() > 0.5


def test_logits_are_queued_in_the_order_the_studies_ask_for_them(tmp_path, monkeypatch):
    """The logits pass runs ahead of the studies: a study waiting on a run queued behind another dataset's runs
    waits for those too."""
    from analyze import summaries

    store = build_synthetic_store(tmp_path / "order.zarr", sizes={"imagenet-a": 40, "imagenet-r": 40,
                                                                  "imagenet-val": 60, "cue-conflict": 64},
                                  transforms=("center",), models={"vit-clip": 0.7, "convnext-sup": 0.8}, seed=2)
    queued, asked = [], []
    prefetch, summary = summaries.SummaryCache.prefetch, summaries.SummaryCache.summary

    def record_prefetch(self, keys, progress=False):
        queued.extend(keys)
        return prefetch(self, keys, progress)

    def record_summary(self, key):
        asked.append(key)
        return summary(self, key)

    monkeypatch.setattr(summaries.SummaryCache, "prefetch", record_prefetch)
    monkeypatch.setattr(summaries.SummaryCache, "summary", record_summary)
    build_report(store, tmp_path / "out", n_boot=10, progress=False, figure_workers=0)

    def datasets(keys):  # each dataset where it first appears
        return list(dict.fromkeys(k.dataset for k in keys))

    first_asked = list(dict.fromkeys(asked))
    assert datasets(first_asked)[0] == "imagenet-val"  # the robustness table starts with ImageNet itself
    assert set(queued) == set(first_asked)
    assert datasets(queued) == datasets(first_asked)


def test_blas_threads_and_full_collections_are_held_back_only_while_the_studies_run():
    import gc

    from threadpoolctl import threadpool_info

    from analyze.report import _beside_readers

    def blas() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    collections, threads = gc.get_threshold(), blas()
    assert threads  # numpy's BLAS is loaded
    with pytest.raises(RuntimeError):
        with _beside_readers(io_threads=10**6):  # the reading threads leave no core: BLAS on one thread
            assert blas() == [1] * len(threads)
            assert gc.get_threshold()[:2] == collections[:2] and gc.get_threshold()[2] >= 100
            raise RuntimeError("a study failed")
    assert gc.get_threshold() == collections and blas() == threads
