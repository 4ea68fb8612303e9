"""ImageNet-X golden reproduction: the published error ratios of ResNet50 and ViT (ImageNet-X README,
top factor, prototypes filtered, class errors) from their published per-image predictions.

analyze/published/imagenet-x holds the predictions (gzipped copies of the published files) and the README whose
table is the expectation. Checked twice: the metric function alone on the CSV joined with the annotations,
and the whole analysis (store written with schemas.write_run -> imagenet_x study -> results.parquet).
"""
from __future__ import annotations

import csv
import gzip
import math
import re

import numpy as np
import pytest

FACTORS = ("pose", "background", "pattern", "color", "smaller", "shape", "partial_view", "subcategory",
           "texture", "larger", "darker", "object_blocking", "person_blocking", "style", "brighter",
           "multiple_objects")
MODELS = ("ResNet50", "ViT")
TOL = 1e-4


def published(kit) -> dict[str, dict[str, float]]:
    """The README's table: model -> factor -> error ratio (cells that are not numbers are skipped)."""
    lines = [l for l in (kit.PUBLISHED / "imagenet-x" / "README.md").read_text().splitlines() if l.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    out = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        row = {}
        for name, cell in zip(header[1:], cells[1:]):
            if re.fullmatch(r"[0-9.]+", cell):
                row[name] = float(cell)
        out[cells[0]] = row
    return out


def predictions(kit, model: str) -> tuple[list[str], np.ndarray]:
    with gzip.open(kit.PUBLISHED / "imagenet-x" / f"{model}.csv.gz", "rt", newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["file_name"] for r in rows], np.array([int(r["predicted_class"]) for r in rows])


def annotations(kit) -> dict[str, tuple[int, bool, int]]:
    """file name -> (class, prototype, top factor index or -1), parsed straight from the bundled file.

    Two annotated images carry no top factor: they count in the accuracy over all annotated images only."""
    with gzip.open(kit.LABELS / "imagenet_x_val_top_factor.csv.gz", "rt", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        assert tuple(header[3:]) == FACTORS
        out = {}
        for row in reader:
            flags = [int(v) for v in row[3:]]
            assert sum(flags) <= 1, row[0]
            out[row[0]] = (int(row[1]), bool(int(row[2])), flags.index(1) if 1 in flags else -1)
    return out


@pytest.fixture(scope="module")
def golden(kit):
    table = published(kit)
    assert len(table["ResNet50"]) == 16 and len(table["ViT"]) == 15 and "multiple_objects" not in table["ViT"]
    return table


def test_published_table_from_csv_with_a_loop_and_with_the_metric(kit, golden):
    from analyze.metrics.accuracy import correct_single
    from analyze.metrics.imagenet_x import error_ratios

    ann = annotations(kit)
    for model in MODELS:
        files, pred = predictions(kit, model)
        keep = [i for i, f in enumerate(files) if f in ann and not ann[f][1]]
        label = np.array([ann[files[i]][0] for i in keep])
        factor = np.array([ann[files[i]][2] for i in keep])
        correct = correct_single(pred[keep], label)
        got = error_ratios(correct, factor[:, None] == np.arange(16)[None, :])
        # The loop reference, from the definition.
        err_all = 1 - sum(correct) / len(correct)
        for j, name in enumerate(FACTORS):
            members = [i for i in range(len(correct)) if factor[i] == j]
            ref = (1 - sum(correct[i] for i in members) / len(members)) / err_all
            assert got[j] == pytest.approx(ref, rel=1e-12)
            if name in golden[model]:
                assert abs(got[j] - golden[model][name]) < TOL, (model, name, got[j], golden[model][name])


@pytest.fixture(scope="module")
def golden_store(kit, tmp_path_factory):
    """imagenet-val store whose logits reproduce each model's published top-1 (one-hot-ish float16 logits)."""
    from analyze import labels

    store = tmp_path_factory.mktemp("golden") / "imagenetx.zarr"
    ann = labels.imagenet_x()
    known = dict(zip(ann.file_name.tolist(), ann.label.tolist()))
    ids = None
    for model in MODELS:
        files, pred = predictions(kit, model)
        if ids is None:
            ids = files
            label = np.array([known.get(f, -1) for f in ids])
        assert files == ids, "both prediction files list the same images in the same order"
        logits = np.zeros((len(ids), 1000), np.float16)
        logits[np.arange(len(ids)), pred] = 10.0
        kit.write(store, "imagenet-val", "center", model, logits, sample_id=np.array(ids), label=label)
    return store


def test_published_table_through_store_and_report(kit, golden, golden_store, results_of, tmp_path):
    rows, info = results_of(golden_store, tmp_path / "out", studies=["imagenet_x"], n_boot=0)
    ann = annotations(kit)
    n_annotated = sum(1 for f, (_, proto, _) in ann.items() if not proto)
    for model in MODELS:
        for name in FACTORS:
            row = rows[(model, "imagenet-val", "center", f"error_ratio:{name}")]
            assert row["n"] == n_annotated
            assert math.isnan(row["ci_low"]) and math.isnan(row["ci_high"])  # n_boot=0: no interval
            if name in golden[model]:
                assert abs(row["value"] - golden[model][name]) < TOL, (model, name, row["value"], golden[model][name])
    report = (tmp_path / "out" / "report.md").read_text()
    assert "ImageNet-X" in report and "0.695" in report  # ResNet50 pose, 3 decimals
    assert (tmp_path / "out" / "figures" / "imagenet_x_error_ratios.png").stat().st_size > 0
