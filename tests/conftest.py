"""Shared fixtures for the analysis tests: fixture stores with planted logits, independent references.

Everything here is written from the definitions in docs/design.md ("Analysis: definitions"), never by calling
the analysis code, so that the tests compare the analysis against a second, independent computation.
Fixture stores are written through ``schemas.write_run`` with explicit ``dataset_attrs`` so that they do
not depend on the exact content of data_manifest.yaml.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the tests run from a checkout, installed or not
    sys.path.insert(0, str(ROOT))

LABELS = ROOT / "schemas" / "labels"
DATA = Path(__file__).resolve().parent / "data"
# Published per-image predictions bundled with the analysis (analyze import's examples, the demo's real models).
PUBLISHED = ROOT / "analyze" / "published"

# Minimal manifest entries: only the fields the analysis reads. No logit_space (the analysis takes
# imagenet-1k): the fixtures use logits over a few classes to stay small, and schemas.door checks the
# width against the logit space only where the entry names it.
_BASE = {"label_space": "imagenet-1k", "class_subset": None, "columns": {},
         "group": None, "studies": ["robustness"]}
ENTRIES = {
    "imagenet-val": {**_BASE, "studies": ["imagenet_x", "calibration", "robustness", "invariance"]},
    "imagenet-v2": dict(_BASE),
    "imagenet-sketch": dict(_BASE),
    "imagenet-a": {**_BASE, "class_subset": "imagenet-a-200"},
    "imagenet-r": {**_BASE, "class_subset": "imagenet-r-200", "studies": ["robustness", "calibration"]},
    "imagenet-c": {**_BASE, "columns": {"corruption": "str", "severity": "int8"}},
    "imagenet-hard": {**_BASE, "columns": {"label_set": "int32[max]"}},
    "cue-conflict": {**_BASE, "label_space": "cue-conflict-16", "class_subset": "cue-conflict-16",
                     "columns": {"texture_label": "int16"}, "studies": ["shape_bias"]},
    "pug-imagenet": {**_BASE, "label_space": "pug-imagenet-151", "class_subset": "pug-imagenet",
                     "columns": {"world": "str", "camera_yaw": "int16"}, "studies": ["pug"]},
}


def entry_for(dataset: str, **overrides) -> dict:
    if dataset.startswith("vtab-"):
        base = {**_BASE, "label_space": "own", "columns": {"split": "str"}, "group": "natural", "studies": ["transfer"]}
    else:
        base = dict(ENTRIES[dataset])
    base.update(overrides)
    return {**base, "id": dataset}


def dataset_attrs(dataset: str, **overrides) -> dict:
    entry = entry_for(dataset, **overrides)
    return {"manifest": entry, "label_space": entry["label_space"]}


def write(store, dataset, transform, model, logits, features=None, *, sample_id, label, columns=None,
          valid=None, attrs=None, entry: dict | None = None, **entry_overrides) -> str:
    """``schemas.write_run`` with explicit dataset attrs (no manifest lookup)."""
    import schemas

    if entry is not None:
        attrs_ds = {"manifest": entry, "label_space": entry["label_space"]}
    else:
        attrs_ds = dataset_attrs(dataset, **entry_overrides)
    return schemas.write_run(store, dataset, transform, model, np.asarray(logits), features, sample_id=sample_id,
                             label=np.asarray(label), columns=columns, valid=valid, attrs=attrs,
                             dataset_attrs=attrs_ds)


def val_ids(n: int, start: int = 1) -> np.ndarray:
    """ImageNet validation file names ILSVRC2012_val_%08d.JPEG, ``start`` 1-based."""
    return np.array([f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(start, start + n)])


def planted(pred, n_classes: int, *, high: float = 8.0, rng=None, noise: float = 1.0) -> np.ndarray:
    """float32 logits whose argmax is ``pred`` (random noise below ``high``)."""
    pred = np.asarray(pred)
    rng = rng or np.random.default_rng(0)
    logits = (rng.random((len(pred), n_classes)) * noise).astype(np.float32)
    logits[np.arange(len(pred)), pred] = high
    return logits


def tree_hash(path) -> dict[str, str]:
    """sha256 of every file under ``path`` (relative path -> digest), and every directory (-> 'dir')."""
    out = {}
    for root, dirs, files in os.walk(path):
        for d in dirs:
            out[os.path.relpath(os.path.join(root, d), path) + "/"] = "dir"
        for f in files:
            full = os.path.join(root, f)
            out[os.path.relpath(full, path)] = hashlib.sha256(Path(full).read_bytes()).hexdigest()
    return out


def run_cli(*args, timeout: int = 120) -> subprocess.CompletedProcess:
    """``python -m analyze ARGS`` in a subprocess from the repository root."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "analyze", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)


# ---------------------------------------------------------------------------------------------------------
# Independent references (plain loops over the definitions).

def ref_softmax(row) -> list[float]:
    """Softmax of one row in float64 with math.exp."""
    z = [float(v) for v in row]
    m = max(z)
    e = [math.exp(v - m) for v in z]
    s = math.fsum(e)
    return [v / s for v in e]


def ref_argmax(row, columns=None) -> int:
    """Index (in the full space) of the largest logit, over ``columns`` only when given (first on ties)."""
    columns = range(len(row)) if columns is None else columns
    best, best_v = None, -math.inf
    for j in columns:
        if float(row[j]) > best_v:
            best, best_v = int(j), float(row[j])
    return best


def ref_ece(conf, correct, n_bins: int = 15) -> float:
    """ECE with bins lower < conf <= upper, edges m / n_bins."""
    n = len(conf)
    total = 0.0
    for m in range(n_bins):
        lo, hi = m / n_bins, (m + 1) / n_bins
        members = [i for i in range(n) if lo < conf[i] <= hi]
        if members:
            acc = sum(bool(correct[i]) for i in members) / len(members)
            c = math.fsum(conf[i] for i in members) / len(members)
            total += len(members) / n * abs(acc - c)
    return total


def ref_bins(conf, correct, n_bins: int = 15):
    """Per bin: (count, accuracy, mean confidence) with NaN for empty bins."""
    out = []
    for m in range(n_bins):
        lo, hi = m / n_bins, (m + 1) / n_bins
        members = [i for i in range(len(conf)) if lo < conf[i] <= hi]
        if members:
            out.append((len(members), sum(bool(correct[i]) for i in members) / len(members),
                        math.fsum(conf[i] for i in members) / len(members)))
        else:
            out.append((0, math.nan, math.nan))
    return out


def read_subset(name: str) -> list[int]:
    """ImageNet-A/R class indices straight from the bundled text file."""
    files = {"imagenet-a-200": "imagenet_a_indices.txt", "imagenet-r-200": "imagenet_r_indices.txt"}
    return sorted(int(line) for line in (LABELS / files[name]).read_text().split())


def read_cue_categories() -> list[tuple[str, list[int]]]:
    raw = json.loads((LABELS / "cue_conflict_16.json").read_text())
    return [(k, list(raw[k])) for k in sorted(raw)]


def read_pug_classes() -> list[tuple[str, list[int]]]:
    raw = json.loads((LABELS / "pug_imagenet_class_to_imagenet_idx.json").read_text())
    return [(k, list(raw[k])) for k in sorted(raw)]


def read_real() -> list[list[int]]:
    with gzip.open(LABELS / "imagenet_real_labels.json.gz", "rt") as f:
        return json.load(f)


def ref_cue_decision(row_logits, categories) -> int:
    """Category with the highest MEAN softmax probability over its member classes."""
    p = ref_softmax(row_logits)
    means = [math.fsum(p[j] for j in members) / len(members) for _, members in categories]
    return max(range(len(means)), key=lambda c: (means[c], -c))


@pytest.fixture(scope="session")
def kit():
    """Store-building helpers and independent references, as one namespace."""
    return SimpleNamespace(
        ROOT=ROOT, LABELS=LABELS, DATA=DATA, PUBLISHED=PUBLISHED, entry_for=entry_for, dataset_attrs=dataset_attrs, write=write,
        val_ids=val_ids, planted=planted, tree_hash=tree_hash, run_cli=run_cli, ref_softmax=ref_softmax,
        ref_argmax=ref_argmax, ref_ece=ref_ece, ref_bins=ref_bins, read_subset=read_subset,
        read_cue_categories=read_cue_categories, read_pug_classes=read_pug_classes, read_real=read_real,
        ref_cue_decision=ref_cue_decision,
    )


@pytest.fixture
def results_of():
    """Run ``build_report`` and return ``{(model, dataset, transform, metric): row}`` plus the report dict."""

    def run(store, out, studies=None, n_boot=0, seed=0):
        import polars as pl

        from analyze.report import build_report

        info = build_report(store, out, study_names=studies, n_boot=n_boot, seed=seed, progress=False)
        table = pl.read_parquet(Path(out) / "results.parquet")
        rows = {(r["model"], r["dataset"], r["transform"], r["metric"]): r for r in table.iter_rows(named=True)}
        return rows, info

    return run
