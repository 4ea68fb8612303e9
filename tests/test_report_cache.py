"""``analyze report --cache DIR``: after adding a model only its runs are read, and every output equals that of a
report without the cache; a run whose contents change is read again; a damaged entry is recomputed."""
from __future__ import annotations

import zlib
from collections import Counter

import numpy as np
import polars as pl
import pytest

import schemas
from analyze.array_file import read_arrays, write_arrays
from analyze.report import build_report
from analyze.store import StoreReader
from analyze.synthetic import build_synthetic_store

SIZES = {"imagenet-val": 120, "imagenet-r": 40, "imagenet-a": 40, "cue-conflict": 64}
STUDIES = ["robustness", "calibration", "shape_bias", "invariance", "transfer"]
OUTPUTS = ("results.csv", "differences.csv", "ranking.csv", "scores.csv")


def add_models(kit, store, models: dict[str, float]) -> None:
    """Synthetic runs of ``models`` (same samples whatever the models: the sample tables come first from the seed),
    plus one VTAB task with pooled features for the probes."""
    run_seed = zlib.crc32(",".join(models).encode())
    build_synthetic_store(store, sizes=SIZES, transforms=("center", "scale-1.5"), models=models, seed=0,
                          run_seed=run_seed)
    rng = np.random.default_rng(run_seed)
    n = 60
    split = np.array(["train800"] * 30 + ["val200"] * 10 + ["test"] * 20)
    label = np.arange(n) % 3
    for model in models:
        feats = (np.eye(8)[label] * 2 + rng.standard_normal((n, 8)) * 0.6).astype(np.float32)
        kit.write(store, "vtab-aa", "center", model, np.zeros((n, 5), np.float32), feats,
                  sample_id=[f"vtab-aa/{i:03d}" for i in range(n)], label=label, columns={"split": split},
                  entry=kit.entry_for("vtab-aa", group="natural"))


@pytest.fixture
def counting(monkeypatch):
    """Counts the logits blocks and feature arrays the analysis reads, per run path."""
    reads = Counter()
    logits, features = StoreReader.logit_parts, StoreReader.features

    def count_logits(self, key, rows):
        reads[key.path] += 1
        yield from logits(self, key, rows)

    def count_features(self, key):
        reads[key.path + "#features"] += 1
        return features(self, key)

    monkeypatch.setattr(StoreReader, "logit_parts", count_logits)
    monkeypatch.setattr(StoreReader, "features", count_features)
    return reads


def report(store, out, cache=None):
    return build_report(store, out, study_names=STUDIES, n_boot=40, seed=3, progress=False, cache=cache)


def same_outputs(a, b) -> None:
    """The same rows; numbers equal to float32 rounding: the bootstrap's one matrix product per population sums
    in an order that depends on how many statistics share it, i.e. on the other runs of the report. Intervals of
    differences are near 0, so the absolute bound is what counts there: two float32 ulps at 1, the scale of
    the statistics (fractions), as BLAS kernels that block the sums differently give."""
    for name in OUTPUTS:
        x, y = pl.read_csv(a / name), pl.read_csv(b / name)
        assert x.columns == y.columns and x.shape == y.shape, name
        for col in x.columns:
            if x[col].dtype.is_float():
                np.testing.assert_allclose(x[col].to_numpy(), y[col].to_numpy(), rtol=1e-6, atol=2.0**-22,
                                           equal_nan=True, err_msg=f"{name}: {col}")
            else:
                assert x[col].to_list() == y[col].to_list(), f"{name}: {col}"


def test_after_adding_a_model_only_its_runs_are_read(kit, tmp_path, counting, monkeypatch):
    from analyze import bootstrap

    drawn = []  # the shapes of the bootstrap counts drawn rather than read from the cache
    draw = bootstrap.poisson1
    monkeypatch.setattr(bootstrap, "poisson1", lambda rng, shape: (drawn.append(shape), draw(rng, shape))[1])
    store, cache = tmp_path / "store.zarr", tmp_path / "cache"
    add_models(kit, store, {"convnext-sup": 0.8, "vit-sup": 0.7})
    first = report(store, tmp_path / "first", cache)
    assert first["cache"] == {"from_cache": 0, "read": len(StoreReader(store).runs()) - 2}  # VTAB: features only
    assert drawn and len(list((cache / "counts").iterdir())) == len(drawn)
    add_models(kit, store, {"newcomer": 0.75})
    counting.clear()
    drawn.clear()
    again = report(store, tmp_path / "again", cache)
    assert drawn == []  # the same populations: their counts are read back
    read = {path.split("#")[0] for path in counting}
    assert read and all(path.endswith("/newcomer") for path in read), sorted(read)
    assert "vtab-aa/center/newcomer#features" in counting
    runs = StoreReader(store).runs()
    assert again["cache"] == {"from_cache": sum(k.model != "newcomer" for k in runs) - 2,
                              "read": sum(k.model == "newcomer" for k in runs) - 1}
    # ImageNet-A's summaries hold decisions alone (no study that reads probabilities lists it), ImageNet-R's not.
    kept = [read_arrays(path) for path in cache.glob("*/*/summary.arrays")]
    assert len(kept) == again["cache"]["from_cache"] + again["cache"]["read"]
    assert sum("confidence" not in arrays for arrays in kept) == sum(k.dataset == "imagenet-a" for k in runs) == 3
    # The same report as one computed from scratch: values, intervals, differences, ranking.
    plain = report(store, tmp_path / "plain")
    same_outputs(tmp_path / "again", tmp_path / "plain")
    assert again["notes"] == plain["notes"]
    assert (tmp_path / "again" / "report.md").read_text().count("\n") == (tmp_path / "plain" / "report.md").read_text().count("\n")


def test_a_run_whose_contents_change_is_read_again(kit, tmp_path, counting):
    store, cache = tmp_path / "store.zarr", tmp_path / "cache"
    add_models(kit, store, {"convnext-sup": 0.8, "vit-sup": 0.7})
    report(store, tmp_path / "first", cache)
    # The same run written again with other logits: same fingerprint (same inputs), other checksums.
    reader = StoreReader(store)
    key = next(k for k in reader.runs("imagenet-val", "center") if k.model == "vit-sup")
    fingerprint = reader.run_attrs(key)["fingerprint"]
    samples = reader.samples("imagenet-val")
    logits = np.random.default_rng(9).standard_normal((len(samples), 1000)).astype(np.float32)
    schemas.write_run(store, "imagenet-val", "center", "vit-sup", logits, sample_id=samples.sample_id,
                      label=samples.label, attrs={"synthetic": True, "weights_id": "synthetic",
                                                  "model": {"id": "vit-sup"}}, overwrite=True)
    assert StoreReader(store).run_attrs(key)["fingerprint"] == fingerprint
    counting.clear()
    report(store, tmp_path / "again", cache)
    assert {p for p in counting} == {"imagenet-val/center/vit-sup"}
    report(store, tmp_path / "plain")
    same_outputs(tmp_path / "again", tmp_path / "plain")


def test_damaged_entries_are_recomputed_and_foreign_folders_refused(kit, tmp_path, capsys):
    store, cache = tmp_path / "store.zarr", tmp_path / "cache"
    add_models(kit, store, {"convnext-sup": 0.8, "vit-sup": 0.7})
    report(store, tmp_path / "first", cache)
    entries = sorted(cache.rglob("*.arrays"))
    for path in entries[::3]:
        path.write_bytes(path.read_bytes()[:40])  # cut short
    report(store, tmp_path / "again", cache)
    same_outputs(tmp_path / "first", tmp_path / "again")
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"x")
    from analyze.cli import main

    assert main(["report", str(store), "--out", str(tmp_path / "x"), "--cache", str(foreign), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"--cache {foreign}: a folder that is not a report cache" in err
    assert (foreign / "holiday.jpg").read_bytes() == b"x" and len(list(foreign.iterdir())) == 1
    assert not (tmp_path / "x").exists()  # refused before anything is written
    before = kit.tree_hash(store)
    assert main(["report", str(store), "--out", str(tmp_path / "y"), "--cache", str(store / "c"), "--quiet"]) == 2
    assert f"--cache {store / 'c'}: must not lie inside the store" in capsys.readouterr().err
    assert kit.tree_hash(store) == before and not (tmp_path / "y").exists()


def test_agreement_after_adding_a_model_compares_only_its_pairs(kit, tmp_path, counting, monkeypatch):
    """The agreement study keeps each CKA pair, each run's Gram matrix and error consistency's column sums: after
    adding a model, only the newcomer's features are read, only its CKA pairs computed and only the columns its
    runs bring summed; the table equals a report without the cache."""
    from analyze.studies import _pairs

    def with_features(models):
        build_synthetic_store(store, sizes={"imagenet-val": 90, "imagenet-r": 40}, transforms=("center",),
                              models=models, feature_dim=6, seed=0, run_seed=zlib.crc32(",".join(models).encode()))

    computed = []  # (dataset, model a, model b, metric) of every pair computed rather than taken from the cache
    keep = _pairs._PairCache.keep
    monkeypatch.setattr(_pairs._PairCache, "keep", lambda self, found: (
        computed.extend({(p.a.dataset, p.a.model, p.b.model, p.metric) for p in found}), keep(self, found))[1])
    summed = []  # (columns summed, columns in all) of each dataset's error consistency
    fresh = []  # (pairs whose intervals were computed, pairs in all) of each dataset's error consistency
    keep_columns = _pairs._KeptColumns.keep
    monkeypatch.setattr(_pairs._KeptColumns, "keep", lambda self, todo, point, reps, where, bounds, new: (
        summed.append((len(todo), len(point))), fresh.append((new, len(where))),
        keep_columns(self, todo, point, reps, where, bounds, new))[-1])
    own = []  # (dataset, model) of every run whose own HSIC (CKA's denominator) was computed
    self_arrays = _pairs._Grams._self_arrays
    monkeypatch.setattr(_pairs._Grams, "_self_arrays", lambda self, model, mask: (
        own.append((self.key[model].dataset, model)), self_arrays(self, model, mask))[1])
    store, cache = tmp_path / "store.zarr", tmp_path / "cache"
    with_features({"convnext-sup": 0.8, "vit-sup": 0.7, "vit-clip": 0.6})
    agreement = lambda out, cache=None: build_report(store, out, study_names=["agreement"], n_boot=30,  # noqa: E731
                                                     seed=1, progress=False, cache=cache)
    agreement(tmp_path / "first", cache)
    pairs = lambda metric: {(d, a, b) for d, a, b, m in computed if m == metric}  # noqa: E731
    assert len(pairs("cka")) == 2 * 3  # two datasets, three pairs each
    first = [every for done, every in summed]
    assert len(first) == 2 and all(done == every for done, every in summed)
    assert fresh == [(3, 3), (3, 3)]
    assert sorted(own) == sorted((d, m) for d in ("imagenet-r", "imagenet-val")
                                 for m in ("convnext-sup", "vit-sup", "vit-clip"))
    with_features({"newcomer": 0.75})
    own.clear()
    computed.clear()
    counting.clear()
    summed.clear()
    fresh.clear()
    agreement(tmp_path / "again", cache)
    assert fresh == [(3, 6), (3, 6)]  # the old pairs' intervals are kept, the newcomer's three computed
    # The three old runs' columns are kept: the newcomer's hits against each row, and nothing else, are summed.
    assert [(done, every) for done, every in summed] == [(every - old, every) for old, (_, every) in zip(first, summed)]
    assert all(0 < done < every for done, every in summed)
    assert all("newcomer" in (a, b) for _, a, b, _ in computed), computed
    assert len(pairs("cka")) == 2 * 3  # two datasets, three old models each
    assert sorted(own) == [("imagenet-r", "newcomer"), ("imagenet-val", "newcomer")]  # the old runs' are kept
    features_read = sorted(p for p in counting if p.endswith("#features"))
    assert features_read and all("/newcomer#" in p for p in features_read), features_read
    agreement(tmp_path / "plain")
    x, y = (pl.read_csv(tmp_path / d / "agreement.csv") for d in ("again", "plain"))
    assert x.shape == y.shape and x.shape[0] > 0
    assert x.select(pl.exclude(pl.Float64)).equals(y.select(pl.exclude(pl.Float64)))
    for col in ("value", "ci_low", "ci_high"):
        np.testing.assert_allclose(x[col].to_numpy(), y[col].to_numpy(), rtol=1e-6, atol=2.0**-22, equal_nan=True)
    kappa = lambda t: t.filter(pl.col("metric") != "cka").sort(["dataset", "model_a", "model_b", "metric"])  # noqa: E731
    assert kappa(x).equals(kappa(y))  # integer sums: kept and recomputed are the same numbers
    kept = sorted((cache / "columns").glob("*.arrays"))
    assert len(kept) == 2  # one file a dataset
    for path in kept:  # whole files, but not as a report writes them: every column and interval computed again
        with open(path, "wb") as f:
            write_arrays(f, {"names": np.array([b"x" * 32, b"y" * 32]), "point": np.zeros(3),
                             "pair_names": np.array([b"z" * 128]), "pair_bounds": np.zeros((2, 3, 2))})
    agreement(tmp_path / "odd", cache)
    assert kappa(pl.read_csv(tmp_path / "odd" / "agreement.csv")).equals(kappa(y))
    own.clear()  # another bootstrap: every run's own HSIC computed again, as a report without the cache has it
    build_report(store, tmp_path / "b20", study_names=["agreement"], n_boot=20, seed=1, progress=False, cache=cache)
    assert len(own) == 2 * 4 and len(set(own)) == 2 * 4
    build_report(store, tmp_path / "b20-plain", study_names=["agreement"], n_boot=20, seed=1, progress=False)
    x, y = (pl.read_csv(tmp_path / d / "agreement.csv").filter(pl.col("metric") == "cka") for d in ("b20", "b20-plain"))
    for col in ("value", "ci_low", "ci_high"):
        np.testing.assert_allclose(x[col].to_numpy(), y[col].to_numpy(), rtol=1e-6, atol=2.0**-22)
