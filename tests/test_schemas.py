"""The store contract: write_run / validate round trip, layout, chunking, fingerprints, refusals."""
from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import zarr

import schemas
from schemas import layout as L


def _columns(n):
    return {"corruption": np.array(["fog", "snow"] * (n // 2)), "severity": (np.arange(n) % 5 + 1).astype(np.int8),
            "label_set": np.stack([np.arange(n), np.full(n, -1)], axis=1).astype(np.int32)}


@pytest.fixture
def small(kit, tmp_path):
    """One run with features, columns, an invalid row and a NaN row (n=30, 7 classes, 4 features)."""
    n = 30
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((n, 7)).astype(np.float32)
    logits[5] = np.nan
    features = rng.standard_normal((n, 4)).astype(np.float32)
    valid = np.ones(n, bool)
    valid[[3, 5]] = False  # row 5 holds NaN: write_run refuses NaN on a valid row (tests/test_door.py)
    ids = kit.val_ids(n)
    label = rng.integers(-1, 7, n)
    store = tmp_path / "s.zarr"
    path = kit.write(store, "imagenet-c", "center", "m", logits, features, sample_id=ids, label=label,
                     columns=_columns(n), valid=valid, attrs={"precision": "fp32", "weights_id": "w1"})
    return dict(store=store, path=path, n=n, logits=logits, features=features, valid=valid, ids=ids, label=label)


def test_round_trip_and_validate_clean(small):
    store, n = small["store"], small["n"]
    assert small["path"] == "imagenet-c/center/m"
    assert schemas.validate(store) == []
    root = zarr.open_group(store, mode="r")
    assert root.attrs["schema"] == schemas.SCHEMA and root.attrs["schema_version"] == schemas.SCHEMA_VERSION
    assert "created_with" in root.attrs
    ds = root["imagenet-c"]
    for key in L.DATASET_ATTRS:
        assert key in ds.attrs
    assert ds.attrs["n_samples"] == n and ds.attrs["manifest"]["id"] == "imagenet-c"
    assert [str(s) for s in ds["sample_id"][:]] == list(small["ids"])
    np.testing.assert_array_equal(ds["label"][:], small["label"])
    assert ds["label"].dtype == np.int32
    np.testing.assert_array_equal(ds["severity"][:], _columns(n)["severity"])
    assert [str(s) for s in ds["corruption"][:]] == list(_columns(n)["corruption"])
    np.testing.assert_array_equal(ds["label_set"][:], _columns(n)["label_set"])
    run = ds["center"]["m"]
    for key in L.RUN_ATTRS:
        assert key in run.attrs
    assert len(run.attrs["fingerprint"]) == 32
    assert run.attrs["fingerprint"] == schemas.fingerprint(run.attrs["fingerprint_inputs"])
    valid = np.asarray(run["valid"][:])
    expected_valid = small["valid"] & np.isfinite(small["logits"]).all(axis=1)
    # valid=False rows become NaN.
    assert valid[3] == False and valid[5] == False  # noqa: E712
    got = np.asarray(run["logits"][:])
    assert np.isnan(got[3]).all() and np.isnan(got[5]).all()
    rows = expected_valid
    np.testing.assert_array_equal(got[rows], small["logits"][rows])
    assert run["logits"].dtype == np.float32
    feats = np.asarray(run["features"][:])
    assert run["features"].dtype == np.float16
    np.testing.assert_array_equal(feats[rows], small["features"][rows].astype(np.float16))
    assert np.asarray(run["block_done"][:]).all()


def test_dimension_names_on_every_array(small):
    root = zarr.open_group(small["store"], mode="r")
    expected = {
        "imagenet-c/sample_id": ("sample",), "imagenet-c/label": ("sample",),
        "imagenet-c/corruption": ("sample",), "imagenet-c/severity": ("sample",),
        "imagenet-c/label_set": ("sample", "label_set_1"),
        "imagenet-c/center/m/logits": ("sample", "class"), "imagenet-c/center/m/features": ("sample", "feature"),
        "imagenet-c/center/m/valid": ("sample",), "imagenet-c/center/m/block_done": ("block",),
    }
    for path, dims in expected.items():
        assert tuple(root[path].metadata.dimension_names) == dims, path
    # Every array of the store carries dimension names.
    def walk(group):
        for _, arr in group.arrays():
            yield arr
        for _, sub in group.groups():
            yield from walk(sub)
    for arr in walk(root):
        assert arr.metadata.dimension_names and len(arr.metadata.dimension_names) == arr.ndim, arr.path


def _zstd_level(arr):
    codecs = list(arr.compressors)
    assert len(codecs) == 1 and type(codecs[0]).__name__ == "ZstdCodec", codecs
    return codecs[0].level


def test_chunks_unsharded_below_20000(kit, tmp_path):
    n, k = 2500, 5
    kit.write(tmp_path / "s.zarr", "imagenet-val", "center", "m", np.zeros((n, k), np.float32),
              sample_id=kit.val_ids(n), label=np.zeros(n, np.int32))
    root = zarr.open_group(tmp_path / "s.zarr", mode="r")
    logits = root["imagenet-val/center/m/logits"]
    assert logits.chunks == (1000, k) and logits.shards is None
    assert _zstd_level(logits) == 3
    assert root["imagenet-val/center/m/block_done"].shape == (3,)


def test_chunks_and_shards_at_20000(kit, tmp_path):
    n, k = 20000, 3
    logits = np.tile(np.arange(k, dtype=np.float32), (n, 1))
    kit.write(tmp_path / "s.zarr", "imagenet-val", "center", "m", logits,
              sample_id=np.array([f"{i:06d}" for i in range(n)]), label=np.zeros(n, np.int32))
    root = zarr.open_group(tmp_path / "s.zarr", mode="r")
    arr = root["imagenet-val/center/m/logits"]
    assert arr.chunks == (1000, k) and arr.shards == (10000, k)
    assert _zstd_level(arr) == 3
    for name in ("sample_id", "label"):
        assert root[f"imagenet-val/{name}"].chunks == (1000,) and root[f"imagenet-val/{name}"].shards == (10000,)
    assert root["imagenet-val/center/m/valid"].shards == (10000,)
    assert root["imagenet-val/center/m/block_done"].shape == (2,)  # a block is a shard
    assert schemas.validate(tmp_path / "s.zarr") == []
    np.testing.assert_array_equal(arr[19998:], logits[19998:])


def test_validate_reports_missing_array_with_path(small, tmp_path):
    store = tmp_path / "copy.zarr"
    shutil.copytree(small["store"], store)
    shutil.rmtree(store / "imagenet-c" / "center" / "m" / "valid")
    problems = schemas.validate(store)
    assert any(p.path == "imagenet-c/center/m/valid" and "missing array" in p.message and p.severity == "error"
               for p in problems), problems
    shutil.rmtree(store / "imagenet-c" / "label")
    assert any(p.path == "imagenet-c/label" and "missing array" in p.message for p in schemas.validate(store))


def test_validate_reports_wrong_shapes_with_path(small, tmp_path):
    store = tmp_path / "copy.zarr"
    shutil.copytree(small["store"], store)
    run = zarr.open_group(store / "imagenet-c" / "center" / "m", mode="r+")
    run.create_array("logits", shape=(small["n"] + 2, 7), dtype="float32", dimension_names=("sample", "class"),
                     overwrite=True)
    ds = zarr.open_group(store / "imagenet-c", mode="r+")
    ds.create_array("severity", shape=(4,), dtype="int8", dimension_names=("sample",), overwrite=True)
    problems = [str(p) for p in schemas.validate(store)]
    assert any("imagenet-c/center/m/logits" in p and f"{small['n'] + 2} rows, expected {small['n']}" in p
               for p in problems), problems
    assert any("imagenet-c/severity" in p and f"expected {small['n']}" in p for p in problems), problems


def test_validate_wrong_dims_dtype_and_attrs(small, tmp_path):
    store = tmp_path / "copy.zarr"
    shutil.copytree(small["store"], store)
    run = zarr.open_group(store / "imagenet-c" / "center" / "m", mode="r+")
    run.create_array("valid", shape=(small["n"],), dtype="int32", dimension_names=("row",), overwrite=True)
    meta_path = store / "imagenet-c" / "center" / "m" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    del meta["attributes"]["fingerprint"]
    meta_path.write_text(json.dumps(meta))
    problems = [str(p) for p in schemas.validate(store)]
    assert any("imagenet-c/center/m/valid" in p and "dimension_names" in p for p in problems), problems
    assert any("imagenet-c/center/m/valid" in p and "dtype" in p for p in problems), problems
    assert any("imagenet-c/center/m" in p and "fingerprint" in p for p in problems), problems


def test_validate_incomplete_is_a_warning_and_not_a_store_is_an_error(kit, tmp_path):
    n = 1500
    root = schemas.open_root(tmp_path / "s.zarr")
    schemas.ensure_dataset(root, "imagenet-val", sample_id=kit.val_ids(n), label=np.zeros(n, np.int32),
                           attrs=kit.dataset_attrs("imagenet-val"))
    inputs = schemas.fingerprint_inputs(model={"id": "m"}, weights_id="w", preprocess={}, transform={"id": "center"},
                                        precision="fp32", sample_digest=root["imagenet-val"].attrs["sample_digest"])
    writer = schemas.open_run(root, "imagenet-val", "center", "m", num_classes=3, feature_dim=None,
                              attrs={"model": {"id": "m"}, "preprocess": {}, "precision": "fp32",
                                     "logit_kind": "classifier", "fingerprint_inputs": inputs})
    writer.write_block(0, np.zeros((1000, 3), np.float32))
    assert writer.pending_blocks() == [1]
    problems = schemas.validate(tmp_path / "s.zarr")
    assert [(p.path, p.severity) for p in problems] == [("imagenet-val/center/m", "warning")]
    assert "incomplete: 1 of 2 blocks done" in problems[0].message
    # Resuming with the same inputs reopens the run and skips the done block.
    again = schemas.open_run(root, "imagenet-val", "center", "m", num_classes=3, feature_dim=None,
                             attrs={"model": {"id": "m"}, "preprocess": {}, "precision": "fp32",
                                    "logit_kind": "classifier", "fingerprint_inputs": inputs})
    assert again.pending_blocks() == [1]
    with pytest.raises(schemas.StoreError, match="expects shape"):
        again.write_block(1, np.zeros((499, 3), np.float32))
    (tmp_path / "empty").mkdir()
    for bad in (tmp_path / "empty", tmp_path / "nothing-here"):
        problems = schemas.validate(bad)
        assert len(problems) == 1 and problems[0].severity == "error" and str(bad) in problems[0].path


def test_validate_other_schema_version(small, tmp_path):
    store = tmp_path / "copy.zarr"
    shutil.copytree(small["store"], store)
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"]["schema_version"] = schemas.SCHEMA_VERSION + 1
    (store / "zarr.json").write_text(json.dumps(meta))
    problems = schemas.validate(store)
    assert len(problems) == 1 and f"version {schemas.SCHEMA_VERSION + 1}" in problems[0].message
    with pytest.raises(schemas.StoreError, match="schema version"):
        schemas.open_root(store)


def test_fingerprint_mismatch_names_the_differing_field(kit, small):
    again = dict(sample_id=small["ids"], label=small["label"], columns=_columns(small["n"]), valid=small["valid"])
    # Same inputs: a resume, accepted (nothing to do).
    kit.write(small["store"], "imagenet-c", "center", "m", small["logits"], small["features"],
              attrs={"precision": "fp32", "weights_id": "w1"}, **again)
    with pytest.raises(schemas.FingerprintMismatch) as err:
        kit.write(small["store"], "imagenet-c", "center", "m", small["logits"], small["features"],
                  attrs={"precision": "bf16", "weights_id": "w1"}, **again)
    msg = str(err.value)
    assert "imagenet-c/center/m" in msg and "precision: 'fp32' -> 'bf16'" in msg and "weights_id" not in msg
    with pytest.raises(schemas.FingerprintMismatch, match="weights_id: 'w1' -> 'w2'"):
        kit.write(small["store"], "imagenet-c", "center", "m", small["logits"], small["features"],
                  attrs={"precision": "fp32", "weights_id": "w2"}, **again)
    # A refused resume leaves the stored run as it was.
    assert zarr.open_group(small["store"], mode="r")["imagenet-c/center/m"].attrs["precision"] == "fp32"


def test_overwrite_replaces_the_run(kit, small):
    again = dict(sample_id=small["ids"], label=small["label"], columns=_columns(small["n"]))
    schemas.write_run(small["store"], "imagenet-c", "center", "m", small["logits"] * 0, small["features"],
                attrs={"precision": "bf16"}, dataset_attrs=kit.dataset_attrs("imagenet-c"), overwrite=True, **again)
    run = zarr.open_group(small["store"], mode="r")["imagenet-c/center/m"]
    assert run.attrs["precision"] == "bf16"
    assert np.nanmax(np.abs(np.asarray(run["logits"][:]))) == 0
    assert schemas.validate(small["store"]) == []


def test_fingerprint_diff_nested_fields():
    old = {"model": {"id": "a", "arch": "x"}, "precision": "fp32"}
    new = {"model": {"id": "a", "arch": "y"}, "precision": "fp32", "extra": 1}
    assert schemas.fingerprint_diff(old, new) == ["extra: (absent) -> 1", "model.arch: 'x' -> 'y'"]
    assert schemas.fingerprint(old) == schemas.fingerprint(json.loads(json.dumps(old)))
    assert schemas.fingerprint(old) != schemas.fingerprint(new)


def test_sample_list_mismatch_refused(kit, small):
    ids = small["ids"].copy()
    ids[[0, 1]] = ids[[1, 0]]
    with pytest.raises(schemas.StoreError, match="different sample list") as err:
        kit.write(small["store"], "imagenet-c", "center", "other", small["logits"], sample_id=ids,
                  label=small["label"], columns=_columns(small["n"]))
    assert "imagenet-c" in str(err.value)
    label = small["label"].copy()
    label[0] = label[0] + 1
    with pytest.raises(schemas.StoreError, match="different sample list"):
        kit.write(small["store"], "imagenet-c", "center", "other", small["logits"], sample_id=small["ids"],
                  label=label, columns=_columns(small["n"]))


def test_write_run_rejects_bad_arrays(kit, tmp_path):
    ids = kit.val_ids(10)
    with pytest.raises(schemas.StoreError, match=r"imagenet-val/center/m/logits: expected shape \(10, classes\)"):
        kit.write(tmp_path / "s.zarr", "imagenet-val", "center", "m", np.zeros((9, 3)), sample_id=ids,
                  label=np.zeros(10, np.int32))
    with pytest.raises(schemas.StoreError, match="unique"):
        kit.write(tmp_path / "s.zarr", "imagenet-val", "center", "m", np.zeros((10, 3)),
                  sample_id=np.array(["a"] * 10), label=np.zeros(10, np.int32))
    with pytest.raises(schemas.StoreError, match="label"):
        kit.write(tmp_path / "s.zarr", "imagenet-val", "center", "m", np.zeros((10, 3)), sample_id=ids,
                  label=np.zeros(9, np.int32))
    with pytest.raises(schemas.StoreError, match="valid"):
        kit.write(tmp_path / "s.zarr", "imagenet-val", "center", "m", np.zeros((10, 3)), sample_id=ids,
                  label=np.zeros(10, np.int32), valid=np.ones(3, bool))


def test_open_datatree_opens_the_whole_tree(small, kit):
    import xarray as xr

    kit.write(small["store"], "imagenet-c", "scale-2", "m", small["logits"], small["features"],
              sample_id=small["ids"], label=small["label"], columns=_columns(small["n"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tree = xr.open_datatree(str(small["store"]), engine="zarr", consolidated=False)
    assert tree.attrs["schema"] == schemas.SCHEMA
    node = tree["imagenet-c/center/m"]
    assert node["logits"].dims == ("sample", "class") and node["logits"].shape == (small["n"], 7)
    assert node["features"].dims == ("sample", "feature")
    assert tree["imagenet-c/scale-2/m"]["valid"].dims == ("sample",)
    assert tree["imagenet-c"]["label"].dims == ("sample",)
    assert tree["imagenet-c"]["label_set"].dims == ("sample", "label_set_1")
    np.testing.assert_array_equal(tree["imagenet-c"]["label"].values, small["label"])
    # The analysis' own accessor returns the same tree.
    from analyze.store import StoreReader

    assert set(StoreReader(small["store"]).datatree()["imagenet-c"].children) == {"center", "scale-2"}
