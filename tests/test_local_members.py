"""A local group's children opened from their zarr.json files (schemas/local_members.py): the same arrays zarr's
``Group.members`` gives, and zarr's own opening (with its errors) for every group that is not the plain case."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import zarr

from analyze.store import AnalysisError, StoreReader
from schemas import integrity
from schemas.local_members import local_groups, local_members

RUN = "imagenet-val/center/m"


def _run_store(kit, tmp_path):
    rng = np.random.default_rng(3)
    n = 2_500
    store = tmp_path / "s.zarr"
    kit.write(store, "imagenet-val", "center", "m", rng.standard_normal((n, 4)).astype(np.float32),
              rng.standard_normal((n, 3)).astype(np.float32), sample_id=kit.val_ids(n),
              label=rng.integers(0, 4, n).astype(np.int32))
    return store


def _document(array: zarr.Array) -> str:  # NaN fill values make metadata objects unequal to themselves
    return json.dumps(array.metadata.to_dict(), sort_keys=True, default=str)


def test_the_members_of_a_run_are_zarrs(kit, tmp_path):
    store = _run_store(kit, tmp_path)
    run = zarr.open_group(store, mode="r")[RUN]
    got, want = local_members(run), dict(run.members())
    assert got is not None and set(got) == set(want) >= {"logits", "features", "valid", "block_done"}
    for name, array in want.items():
        assert type(got[name]) is type(array) and got[name].store_path == array.store_path, name
        assert _document(got[name]) == _document(array), name
        assert dict(got[name].attrs) == dict(array.attrs), name
        np.testing.assert_array_equal(got[name][...], array[...])


def test_a_group_at_the_stores_root(tmp_path):
    root = zarr.open_group(tmp_path / "r.zarr", mode="w")
    root.create_array("a", shape=(3,), dtype="int16", fill_value=-1)
    root.create_array("b", shape=(2, 2), dtype="float64", fill_value=np.nan)
    got = local_members(zarr.open_group(tmp_path / "r.zarr", mode="r"))
    assert got is not None and sorted(got) == ["a", "b"] and got["a"].path == "a"
    assert got["a"][...].tolist() == [-1, -1, -1] and np.isnan(got["b"][...]).all()


def _spoil(folder, child: str, other: str) -> None:
    """Make ``folder`` (a group's) other than the plain case: ``other`` names how; a document is ``child``'s."""
    if other == "stray file":
        (folder / "notes.txt").write_text("x")
    elif other == "folder without zarr.json":
        (folder / "empty").mkdir()
    else:
        text = {"bad json": "{not json", "not an object": "[1, 2]", "zarr v2": json.dumps({"zarr_format": 2})}
        (folder / child / "zarr.json").write_text(text[other])


@pytest.mark.parametrize("other", ["sub-group", "stray file", "folder without zarr.json", "bad json", "not an object"])
def test_anything_but_the_plain_case_is_left_to_zarr(kit, tmp_path, other):
    store = _run_store(kit, tmp_path)
    if other == "sub-group":
        zarr.open_group(store, mode="a")[RUN].create_group("inner")
    else:
        _spoil(store / RUN, "valid", other)
    assert local_members(zarr.open_group(store, mode="r")[RUN]) is None


def test_a_damaged_array_document_is_refused_as_zarr_refuses_it(kit, tmp_path):
    store = _run_store(kit, tmp_path)
    (store / RUN / "valid" / "zarr.json").write_text("{not json")
    with pytest.raises(AnalysisError, match="valid"):
        StoreReader(store)


def test_the_listing_names_every_stored_object_relative_to_the_node(kit, tmp_path):
    store = _run_store(kit, tmp_path)
    root = zarr.open_group(store, mode="r")
    for node in (root, root[RUN], root[f"{RUN}/logits"]):
        base = os.path.join(str(store), node.path)
        want = sorted(os.path.relpath(os.path.join(folder, name), base).replace(os.sep, "/")
                      for folder, _, names in os.walk(base) for name in names)
        assert sorted(integrity._listed(node)) == want and want


def test_runs_described_alike_share_one_parse_and_keep_their_own_paths(kit, tmp_path):
    store = _run_store(kit, tmp_path)
    rng = np.random.default_rng(4)
    kit.write(store, "imagenet-val", "center", "other", rng.standard_normal((2_500, 4)).astype(np.float32),
              rng.standard_normal((2_500, 3)).astype(np.float32), sample_id=kit.val_ids(2_500),
              label=zarr.open_group(store, mode="r")["imagenet-val/label"][...])
    root = zarr.open_group(store, mode="r")
    first, second = local_members(root[RUN]), local_members(root["imagenet-val/center/other"])
    assert (store / RUN / "valid" / "zarr.json").read_bytes() == (
        store / "imagenet-val/center/other/valid/zarr.json").read_bytes()
    assert first["valid"].metadata is second["valid"].metadata  # one parse
    assert second["valid"].path == "imagenet-val/center/other/valid" and first["valid"].path == f"{RUN}/valid"
    for name in ("valid", "logits"):
        np.testing.assert_array_equal(second[name][...], root[f"imagenet-val/center/other/{name}"][...])
    # A document that differs (here its attributes) is parsed on its own.
    document = json.loads((store / RUN / "valid" / "zarr.json").read_text())
    document["attributes"] = {"note": "changed"}
    (store / RUN / "valid" / "zarr.json").write_text(json.dumps(document))
    changed = local_members(zarr.open_group(store, mode="r")[RUN])
    assert changed["valid"].metadata is not second["valid"].metadata and dict(changed["valid"].attrs) == {
        "note": "changed"}


def test_the_groups_of_a_store_are_zarrs(kit, tmp_path):
    store = _run_store(kit, tmp_path)
    root = zarr.open_group(store, mode="r")
    for node in (root, root["imagenet-val"], root["imagenet-val/center"]):  # the dataset also holds arrays: skipped
        got, want = local_groups(node), dict(node.groups())
        assert got is not None and set(got) == set(want) and want, node.path
        for name, group in want.items():
            assert type(got[name]) is type(group) and got[name].store_path == group.store_path, name
            assert got[name].metadata == group.metadata and dict(got[name].attrs) == dict(group.attrs), name
    assert dict(local_groups(root["imagenet-val/center"])["m"].members()).keys() == dict(root[RUN].members()).keys()


@pytest.mark.parametrize("other", ["stray file", "folder without zarr.json", "bad json", "not an object", "zarr v2"])
def test_a_listing_that_is_not_the_plain_case_is_left_to_zarr(kit, tmp_path, other):
    store = _run_store(kit, tmp_path)
    _spoil(store / "imagenet-val" / "center", "m", other)
    assert local_groups(zarr.open_group(store, mode="r")["imagenet-val/center"]) is None
