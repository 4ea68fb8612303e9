"""The reproduction check: the bundled paper values, and "paper vs this store" on stores built to hit them.

The expected paper values are read here with the csv module straight from analyze/data/paper_values.csv, and the
"inside the interval" rule is recomputed from the printed strings, independently of analyze/paper_check.py.
"""
from __future__ import annotations

import csv
import math
from collections import Counter
from decimal import Decimal

import numpy as np
import polars as pl
import pytest

from analyze.paper_check import PAPER_VALUES, PaperDataError, load_paper_values
from analyze.report import build_report
from extract.spec.models import REGISTRY
from schemas.manifest import load_manifest

PERCENT = {"percent": 100, "fraction": 1, "ratio": 1}


def rows_of_csv() -> list[dict]:
    with open(PAPER_VALUES, newline="") as f:
        return list(csv.DictReader(f))


def paper(model: str, dataset: str, metric: str, transform: str = "center") -> dict:
    found = [r for r in rows_of_csv() if (r["model"], r["dataset"], r["transform"], r["metric"], r["compared"])
             == (model, dataset, transform, metric, "true")]
    assert len(found) == 1, found
    return found[0]


def test_every_published_value_is_bundled_once_with_its_source():
    rows = rows_of_csv()
    # The paper's tables, entry by entry: Table 1 4 models; Table 2 4 x 4 groups; Table 3 11 sizes; Tables 4-7 and
    # 9: 15 models x size; Table 8: 15 rows x 13 columns (1x, and 4 values each of scale, shift, resolution);
    # Figure 6: 4 x 7 datasets; Figure 5: 4.
    assert Counter(r["source"] for r in rows) == {
        "Table 1": 4, "Table 2": 16, "Table 3": 11, "Table 4": 15, "Table 5": 15, "Table 6": 15, "Table 7": 15,
        "Table 8": 15 * 13, "Table 9": 15, "Figure 6": 28, "Figure 5": 4}
    datasets = set(load_manifest().dataset_ids()) | {"imagenet-real", "vtab-natural", "vtab-specialized",
                                                     "vtab-structured", "vtab-all"}
    keys = Counter()
    for r in rows:
        assert r["model"] in REGISTRY, r
        assert r["dataset"] in datasets, r
        assert r["unit"] in PERCENT and r["compared"] in ("true", "false")
        value = float(r["printed"]) / PERCENT[r["unit"]]
        assert 0 <= value <= (2 if r["metric"] == "error_ratio" else 1), r
        if r["compared"] == "true":
            keys[(r["model"], r["dataset"], r["transform"], r["metric"])] += 1
    assert max(keys.values()) == 1
    # Spot checks against the paper: Table 6's CLIP ConvNeXt-L, Table 8's ViT-clip Huge at 640 px, Figure 6.
    assert paper("convnext-clip-large", "imagenet-val", "ece")["printed"] == "0.017"
    assert paper("vit-clip-huge", "imagenet-val", "top1", "res-640")["printed"] == "68.4"
    assert paper("vit-clip", "imagenet-hard", "top1")["printed"] == "5.5"
    # Both printings of a disagreeing value are kept, and the one compared is named.
    ece = [r for r in rows if r["model"] == "vit-sup" and r["dataset"] == "imagenet-val" and r["metric"] == "ece"]
    assert {(r["source"], r["printed"], r["compared"]) for r in ece} == {("Table 6", "0.043", "true"),
                                                                          ("Figure 5", "0.0415", "false")}
    # The loader reads the same values.
    loaded = {(p.source, p.model, p.dataset, p.transform, p.metric): p.value for p in load_paper_values()}
    for r in rows:
        key = (r["source"], r["model"], r["dataset"], r["transform"], r["metric"])
        assert loaded[key] == pytest.approx(float(r["printed"]) / PERCENT[r["unit"]], abs=1e-15)


def test_malformed_paper_values_name_the_file_line_and_field(tmp_path):
    good = PAPER_VALUES.read_text().splitlines()
    bad = tmp_path / "paper.csv"
    bad.write_text("\n".join([good[0], good[1], good[2].replace(",percent,", ",pct,")]) + "\n")
    with pytest.raises(PaperDataError, match=rf"{bad}: line 3: unit: expected percent or fraction or ratio, "
                                             r"found 'pct'"):
        load_paper_values(bad)
    bad.write_text("\n".join([good[0], good[1], good[1]]) + "\n")
    with pytest.raises(PaperDataError, match=r"line 3: compared: expected false: line 2 already compares"):
        load_paper_values(bad)
    bad.write_text("\n".join([good[0], good[1].replace(",85.5,", ",eighty,")]) + "\n")
    with pytest.raises(PaperDataError, match=r"line 2: printed: expected a decimal number"):
        load_paper_values(bad)


def _exact_hits(n: int, hits: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predictions with exactly ``hits`` correct rows."""
    label = np.arange(n) % n_classes
    pred = label.copy()
    pred[hits:] = (label[hits:] + 1) % n_classes
    return label, pred


@pytest.fixture(scope="module")
def paper_store(kit, tmp_path_factory):
    """imagenet-val (1000 images): convnext-sup hits the paper's 85.5% exactly, vit-sup is far off (70.0%), a
    model the paper does not have; cue-conflict where convnext-sup's shape bias is 33.3% of its decisions."""
    base = tmp_path_factory.mktemp("paper")
    store = base / "store.zarr"
    n, classes = 1000, 10
    for model, hits in (("convnext-sup", 855), ("vit-sup", 700), ("my-model", 900)):
        label, pred = _exact_hits(n, hits, classes)
        kit.write(store, "imagenet-val", "center", model, kit.planted(pred, classes), sample_id=kit.val_ids(n),
                  label=label, studies=["robustness", "calibration"])
    out = base / "out"
    info = build_report(store, out, n_boot=200, seed=0, progress=False)
    return dict(store=store, out=out, info=info)


def test_results_get_the_paper_columns(paper_store):
    table = pl.read_csv(paper_store["out"] / "results.csv")
    assert table.columns[-4:] == ["paper_value", "paper_source", "paper_diff", "paper_in_ci"]
    rows = {(r["model"], r["dataset"], r["transform"], r["metric"]): r for r in table.iter_rows(named=True)}
    hit = rows[("convnext-sup", "imagenet-val", "center", "top1")]
    assert hit["value"] == pytest.approx(0.855, abs=1e-12)
    assert hit["paper_value"] == pytest.approx(float(paper("convnext-sup", "imagenet-val", "top1")["printed"]) / 100)
    assert hit["paper_source"] == "Table 1" and abs(hit["paper_diff"]) < 1e-12 and hit["paper_in_ci"] is True
    miss = rows[("vit-sup", "imagenet-val", "center", "top1")]
    assert miss["paper_diff"] == pytest.approx(0.700 - 0.855) and miss["paper_in_ci"] is False
    assert miss["ci_high"] < 0.855  # far outside: the verdict is not a rounding matter
    # Every compared row: the rule recomputed from the printed value (interval widened by half its last digit).
    compared = [r for r in table.iter_rows(named=True) if r["paper_value"] is not None]
    assert {(r["model"], r["metric"]) for r in compared} == {("convnext-sup", "top1"), ("vit-sup", "top1"),
                                                              ("convnext-sup", "ece"), ("vit-sup", "ece")}
    for r in compared:
        printed = paper(r["model"], r["dataset"], r["metric"])
        scale = PERCENT[printed["unit"]]
        half = 0.5 * 10.0 ** Decimal(printed["printed"]).as_tuple().exponent / scale
        value = float(printed["printed"]) / scale
        assert r["paper_value"] == pytest.approx(value, abs=1e-15)
        assert r["paper_diff"] == pytest.approx(r["value"] - value, abs=1e-12)
        assert r["paper_in_ci"] == (r["ci_low"] - half <= value <= r["ci_high"] + half)
    # ImageNet-ReaL (on ImageNet val's images) is compared too (Figure 6); nothing for a model the paper lacks.
    assert rows[("convnext-sup", "imagenet-real", "center", "top1")]["paper_source"] == "Figure 6"
    assert all(r["paper_value"] is None for r in table.iter_rows(named=True) if r["model"] == "my-model")


def test_report_md_has_the_paper_section(paper_store):
    report = (paper_store["out"] / "report.md").read_text()
    section = report.split("## Paper vs this store", 1)[1].split("\n## ", 1)[0]
    table = pl.read_csv(paper_store["out"] / "results.csv").filter(pl.col("paper_in_ci").is_not_null())
    assert f"**{int(table['paper_in_ci'].sum())} of {len(table)}**" in section
    assert "**Table 1** (imagenet-val, center, top1)" in section
    assert "| convnext-sup | 85.5 [" in section and "| 85.5 | +0.0 | yes |" in section
    # The paper's second printing of the Base models' ECE, with the one compared.
    assert "`vit-sup` imagenet-val center ece: Figure 5 prints 0.0415, Table 6 0.043 (compared)" in section


def test_no_paper_section_without_the_papers_models(kit, tmp_path):
    store = tmp_path / "store.zarr"
    label, pred = _exact_hits(40, 30, 5)
    kit.write(store, "imagenet-val", "center", "someone-else", kit.planted(pred, 5), sample_id=kit.val_ids(40),
              label=label, studies=["robustness"])
    build_report(store, tmp_path / "out", n_boot=0, progress=False)
    assert "Paper vs this store" not in (tmp_path / "out" / "report.md").read_text()
    table = pl.read_csv(tmp_path / "out" / "results.csv")
    assert table["paper_value"].null_count() == len(table) > 0


def test_imagenet_x_mean_error_ratio_is_the_mean_of_the_factors(kit, tmp_path, results_of):
    """Table 5's number: the unweighted mean of the 16 factors' error ratios, and its replicates likewise."""
    n = 600
    rng = np.random.default_rng(5)
    from analyze import labels

    ann = labels.imagenet_x()
    ids = kit.val_ids(n)
    truth = dict(zip(ann.file_name, ann.label))
    label = np.array([truth.get(s, 0) for s in ids])
    pred = np.where(rng.random(n) < 0.7, label, (label + 1) % 1000)
    kit.write(tmp_path / "x.zarr", "imagenet-val", "center", "m", kit.planted(pred, 1000), sample_id=ids,
              label=label, studies=["imagenet_x"])
    rows, _ = results_of(tmp_path / "x.zarr", tmp_path / "out", n_boot=30)
    factors = [r["value"] for k, r in rows.items() if k[3].startswith("error_ratio:")]
    assert len(factors) == 16
    mean = rows[("m", "imagenet-val", "center", "error_ratio")]
    assert mean["value"] == pytest.approx(np.nanmean(factors), rel=1e-12)
    assert mean["ci_low"] <= mean["value"] <= mean["ci_high"] and math.isfinite(mean["ci_low"])
