"""The resolved manifest entries and suites stay what they were: the store's ``manifest`` attrs are copies
of them, so a change here would make new dataset groups differ from the ones old stores hold.

The constants are sha256 digests (first 16 hex digits) of ``json.dumps(..., sort_keys=True)`` computed by the
code at commit d9b2433, before schemas/manifest.py became the typed ``schemas/manifest/`` package, after
``comparable`` below; see ``_digests``. ``comparable`` leaves out only the deliberate changes:
- ``studies`` keep their meaning but use the study module names (``mistakes`` -> ``imagenet_x``,
  ``shape-bias`` -> ``shape_bias``, ``synthetic`` -> ``pug``): compared after that renaming;
- ``label_tables`` is gone (read by nothing; the ReaL and ImageNet-X joins are the studies' own);
- ``logits_dtype`` is new (``float16`` for ImageNet-C);
- ``agreement`` is a new study in ``studies`` (analyze/studies/agreement.py): compared without it (it reads the
  runs other studies read; nothing compares a store's stored entry with today's).
"""
from __future__ import annotations

import hashlib
import json

from schemas.manifest import load_manifest

RENAMED = {"mistakes": "imagenet_x", "shape-bias": "shape_bias", "synthetic": "pug"}
CHANGED = ("label_tables", "logits_dtype")
ADDED_STUDIES = ("agreement",)

DATASETS = {
    "imagenet-val": "17a403e958c41f10",
    "imagenet-v2": "0f8e3af520ac1844",
    "imagenet-a": "40a08747f13ef0bf",
    "imagenet-r": "54a1d7cac20863ac",
    "imagenet-sketch": "40ba35f329cbd6c6",
    "imagenet-c": "1b75a7ac35cf7313",
    "imagenet-hard": "1d5ef9d7278b40c1",
    "pug-imagenet": "4299cdde1380f3e4",
    "cue-conflict": "7253ad5d3fc05eef",
    "vtab-caltech101": "e2817dce046803bb",
    "vtab-cifar100": "56313d7e3dd6c4b5",
    "vtab-dtd": "c9ab055b983b1fb3",
    "vtab-flowers102": "92eb31fc96fed6a1",
    "vtab-pets": "6ff108f0b04ce8e6",
    "vtab-sun397": "7ccdb6c5d32def23",
    "vtab-svhn": "1647a728346f78a5",
    "vtab-camelyon": "018c8c4d5e3fc35f",
    "vtab-eurosat": "5723c92551dcb1f2",
    "vtab-resisc45": "3d74d8ac183276f8",
    "vtab-retinopathy": "7d3e49c4197e2ad4",
    "vtab-clevr-count": "3ae2edd7b716df07",
    "vtab-clevr-dist": "2b83af81f6edefdb",
    "vtab-dmlab": "10cd22a10ed544c4",
    "vtab-kitti-dist": "6433848016cb381c",
    "vtab-dsprites-loc": "9dde1e4681e936e8",
    "vtab-dsprites-ori": "42ebeafc824a920e",
    "vtab-smallnorb-azi": "8a1ba621e2fe1c9d",
    "vtab-smallnorb-ele": "08625abd12aed854",
}
SUITES = {
    "paper": "29ca87bec99c4480",
    "robustness": "3123c5a66db5c847",
    "invariance": "1effa28cb35bf8ef",
    "vtab": "8c349001d8209274",
    "demo": "f9e9e0f54165fd36",
}
# Every dataset entry in manifest order, keys in the order written (zarr stores the attrs as written).
IN_ORDER = "dd8f41b234e1eef3"
SUITE_ENTRIES = {  # suite -> digest of {dataset: entry with the suite"s overrides}
    "paper": "eaa05bf03b3e59ce",
    "robustness": "cffb74874b328307",
    "invariance": "90a6a527e5c7b9e1",
    "vtab": "8113988b266d9b7d",
    "demo": "af29446522a1e4d5",
}


def comparable(entry: dict) -> dict:
    out = {k: v for k, v in entry.items() if k not in CHANGED}
    if "studies" in out:
        out["studies"] = [RENAMED.get(s, s) for s in out["studies"] if s not in ADDED_STUDIES]
    return out


def digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _digests() -> tuple[dict, dict, dict]:
    m = load_manifest()
    datasets = {d: digest(comparable(m.dataset(d))) for d in m.dataset_ids()}
    suites = {s: digest(m.suite(s)) for s in m.suite_ids()}
    entries = {s: digest({d: comparable(m.dataset(d, suite=s)) for d in m.suite(s)["datasets"]})
               for s in m.suite_ids()}
    return datasets, suites, entries


def test_entries_keep_their_key_order():
    m = load_manifest()
    entries = [comparable(m.dataset(d)) for d in m.dataset_ids()]
    assert hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16] == IN_ORDER


def test_entries_and_suites_unchanged():
    datasets, suites, entries = _digests()
    assert datasets == DATASETS
    assert suites == SUITES
    assert entries == SUITE_ENTRIES
