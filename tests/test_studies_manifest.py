"""The manifest entry's ``studies`` decides which studies read a dataset: one name per study (module, manifest,
``--studies``), former spellings of older stores mapped, the bundled manifest for entries without the field."""
from __future__ import annotations

from typing import get_args

import numpy as np

from analyze import studies
from analyze.store import StoreReader
from schemas.manifest import FORMER_STUDY_NAMES, StudyId, load_manifest


def test_one_name_per_study():
    assert set(get_args(StudyId)) == set(studies.available())
    used = {s for d in load_manifest().dataset_ids() for s in load_manifest().dataset(d)["studies"]}
    assert used == set(studies.available())
    assert set(FORMER_STUDY_NAMES.values()) <= set(studies.available())
    assert not set(FORMER_STUDY_NAMES) & set(studies.available())


def _val_store(kit, path, **entry):
    n = 40
    rng = np.random.default_rng(0)
    label = rng.integers(0, 1000, n)
    for model in ("convnext-sup", "vit-sup"):
        kit.write(path, "imagenet-val", "center", model, kit.planted(label, 1000, rng=rng), sample_id=kit.val_ids(n),
                  label=label, entry={**kit.entry_for("imagenet-val"), **entry} if entry else None)
    return path


def _studies_in(rows) -> set[str]:
    return {metric.split(":")[0] for (_, dataset, _, metric) in rows if dataset == "imagenet-val"}


def test_the_entry_decides(kit, tmp_path, results_of):
    store = _val_store(kit, tmp_path / "s.zarr", studies=["robustness"])
    rows, _ = results_of(store, tmp_path / "out")
    assert _studies_in(rows) == {"top1"}  # neither ECE (calibration) nor error ratios (imagenet_x)
    store = _val_store(kit, tmp_path / "t.zarr", studies=["calibration"])
    rows, _ = results_of(store, tmp_path / "out2")
    assert _studies_in(rows) == {"ece"}


def test_former_spellings_are_mapped(kit, tmp_path, results_of):
    """A store written before the names were unified: ``mistakes`` is ``imagenet_x``."""
    old = _val_store(kit, tmp_path / "old.zarr", studies=["mistakes", "calibration"])
    assert StoreReader(old).manifest_entry("imagenet-val")["studies"] == ["imagenet_x", "calibration"]
    new = _val_store(kit, tmp_path / "new.zarr", studies=["imagenet_x", "calibration"])
    a, _ = results_of(old, tmp_path / "a")
    b, _ = results_of(new, tmp_path / "b")
    assert _studies_in(a) == {"error_ratio", "ece"} and a.keys() == b.keys()
    np.testing.assert_array_equal([a[k]["value"] for k in sorted(a)], [b[k]["value"] for k in sorted(b)])


def test_an_entry_without_studies_gets_the_bundled_manifest_list(kit, tmp_path):
    entry = {k: v for k, v in kit.entry_for("imagenet-val").items() if k != "studies"}
    store = tmp_path / "bare.zarr"
    kit.write(store, "imagenet-val", "center", "vit-sup", kit.planted([1, 2], 1000), sample_id=kit.val_ids(2),
              label=[1, 2], entry=entry)
    assert StoreReader(store).manifest_entry("imagenet-val")["studies"] == load_manifest().dataset("imagenet-val")["studies"]
