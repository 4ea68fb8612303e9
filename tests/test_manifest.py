"""data_manifest.yaml and schemas/manifest/: content, validation errors, label spaces, class subsets."""
from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from schemas import label_spaces
from schemas import manifest as M
from schemas.label_spaces import class_subset_indices, label_file
from schemas.manifest import ManifestError, load_manifest

LABELS = label_spaces.LABELS_DIR

VTAB = {  # id -> (group, classes)
    "vtab-caltech101": ("natural", 102), "vtab-cifar100": ("natural", 100), "vtab-dtd": ("natural", 47),
    "vtab-flowers102": ("natural", 102), "vtab-pets": ("natural", 37), "vtab-sun397": ("natural", 397),
    "vtab-svhn": ("natural", 10), "vtab-camelyon": ("specialized", 2), "vtab-eurosat": ("specialized", 10),
    "vtab-resisc45": ("specialized", 45), "vtab-retinopathy": ("specialized", 5),
    "vtab-clevr-count": ("structured", 8), "vtab-clevr-dist": ("structured", 6), "vtab-dmlab": ("structured", 6),
    "vtab-kitti-dist": ("structured", 4), "vtab-dsprites-loc": ("structured", 16),
    "vtab-dsprites-ori": ("structured", 16), "vtab-smallnorb-azi": ("structured", 18),
    "vtab-smallnorb-ele": ("structured", 9),
}
MAIN = ["imagenet-val", "imagenet-v2", "imagenet-a", "imagenet-r", "imagenet-sketch", "imagenet-c",
        "imagenet-hard", "pug-imagenet", "cue-conflict"]
# The 13 distinct views: center stands for scale-1, shift-0 and res-224.
INVARIANCE = ["center", "scale-1.25", "scale-1.5", "scale-2", "scale-3", "shift-5", "shift-30", "shift-75",
              "shift-100", "res-112", "res-336", "res-512", "res-640"]


@pytest.fixture(scope="module")
def manifest():
    return load_manifest(M.MANIFEST_PATH)


def _raw() -> dict:
    return yaml.safe_load(M.MANIFEST_PATH.read_text())


def _write(tmp_path: Path, raw: dict) -> Path:
    p = tmp_path / "manifest.yaml"
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    return p


# ---------------------------------------------------------------- content of the real manifest
def test_every_dataset_of_the_paper(manifest):
    assert set(manifest.datasets) == set(MAIN) | set(VTAB)
    assert "imagenet-real" not in manifest.datasets and "imagenet-x" not in manifest.datasets
    for did in manifest.datasets:
        e = manifest.dataset(did)
        assert e["id"] == did
        assert {n for n, f in M.DatasetEntry.model_fields.items() if f.is_required()} <= set(e)
        assert e["logit_space"] == "imagenet-1k"
        json.dumps(e)  # copied into store attrs: must be JSON-able


def test_entry_details(manifest):
    val = manifest.dataset("imagenet-val")
    assert val["studies"] == ["imagenet_x", "calibration", "robustness", "invariance", "agreement"]
    assert val["expected_samples"] == 50000 and "label_tables" not in val
    assert manifest.dataset("imagenet-v2")["layout"]["class_order"] == "numeric"
    a = manifest.dataset("imagenet-a")
    assert (a["class_subset"], a["expected_samples"], a["num_labels"]) == ("imagenet-a-200", 7500, 1000)
    assert manifest.dataset("imagenet-r")["class_subset"] == "imagenet-r-200"
    hard = manifest.dataset("imagenet-hard")
    assert hard["label_kind"] == "multi" and hard["layout"]["kind"] == "file-list"
    assert M.parse_column_dtype(hard["columns"]["label_set"]) == ("int32", 0)
    c = manifest.dataset("imagenet-c")
    assert c["logits_dtype"] == "float16" and "logits_dtype" not in manifest.dataset("imagenet-val")
    assert c["columns"] == {"corruption": "str", "severity": "int8"} and len(c["layout"]["corruptions"]) == 15
    assert c["expected_samples"] == 15 * 5 * 50000
    cue = manifest.dataset("cue-conflict")
    assert (cue["label_space"], cue["num_labels"], cue["class_subset"]) == ("cue-conflict-16", 16, "cue-conflict-16")
    assert cue["columns"] == {"texture_label": "int16"} and cue["expected_samples"] == 1280
    pug = manifest.dataset("pug-imagenet")
    assert (pug["label_space"], pug["num_labels"], pug["class_subset"]) == ("pug-imagenet-151", 151, "pug-imagenet")
    assert "factor" in pug["columns"]
    for did, (group, k) in VTAB.items():
        e = manifest.dataset(did)
        assert (e["group"], e["num_labels"], e["label_space"]) == (group, k, "own"), did
        assert e["columns"] == {"split": "str"} and e["studies"] == ["transfer"]
        assert e["expected_samples"] > 1000
    for did in MAIN:
        assert manifest.dataset(did)["group"] is None


def test_suites(manifest):
    assert {"paper", "robustness", "invariance", "vtab", "demo"} <= set(manifest.suites)
    paper = manifest.suite("paper")
    assert set(paper["datasets"]) == set(manifest.datasets)
    assert paper["dataset_transforms"]["imagenet-val"] == INVARIANCE
    assert paper["dataset_transforms"]["imagenet-a"] == ["center"]
    inv = manifest.suite("invariance")
    assert inv["datasets"] == ["imagenet-val"] and inv["transforms"] == INVARIANCE
    assert len(set(inv["transforms"])) == len(INVARIANCE) == 13
    assert sorted(manifest.suite("vtab")["datasets"]) == sorted(VTAB)
    demo = manifest.suite("demo")
    assert demo["datasets"] == ["imagenet-val", "cue-conflict"]
    assert demo["models"] == ["demo-convnext-sup", "demo-vit-sup", "demo-convnext-clip", "demo-vit-clip"]
    assert demo["dataset_transforms"] == {"imagenet-val": ["center", "scale-1.5"], "cue-conflict": ["center"]}
    assert demo["data_root"] == "demo"
    assert manifest.dataset("imagenet-val", suite="demo")["expected_samples"] == 64
    assert manifest.dataset("imagenet-val")["expected_samples"] == 50000  # overrides do not leak
    assert manifest.suite_plan("demo") == [("imagenet-val", ["center", "scale-1.5"]), ("cue-conflict", ["center"])]
    for s in manifest.suites:
        for d, ts in manifest.suite_plan(s):
            assert all(M.is_transform_id(t) for t in ts), (s, d)


def test_returned_entries_are_copies(manifest):
    e = manifest.dataset("imagenet-a")
    e["layout"]["path"] = "elsewhere"
    assert manifest.dataset("imagenet-a")["layout"]["path"] == "imagenet-a"


# ---------------------------------------------------------------- lookups and validation errors
def test_unknown_dataset_and_suite_suggest(manifest):
    with pytest.raises(ValueError, match=r"unknown dataset 'imagenet-aa'.*did you mean 'imagenet-a'.*available"):
        manifest.dataset("imagenet-aa")
    with pytest.raises(ValueError, match=r"unknown suite 'robustnes'.*did you mean 'robustness'"):
        manifest.suite("robustnes")


def test_missing_field_names_file_entry_field(tmp_path):
    raw = _raw()
    del raw["datasets"]["imagenet-a"]["num_labels"]
    p = _write(tmp_path, raw)
    with pytest.raises(ManifestError) as e:
        load_manifest(p)
    msg = str(e.value)
    assert str(p) in msg and "datasets.imagenet-a.num_labels" in msg and "missing field" in msg


@pytest.mark.parametrize("mutate, where", [
    (lambda r: r["datasets"]["imagenet-r"].update(label_space="imagenet-21k"), "datasets.imagenet-r.label_space"),
    (lambda r: r["datasets"]["imagenet-r"].update(num_labels=200), "datasets.imagenet-r.num_labels"),
    (lambda r: r["datasets"]["imagenet-c"]["columns"].update(severity="int9"), "datasets.imagenet-c.columns.severity"),
    (lambda r: r["datasets"]["imagenet-a"].update(class_subset="imagenet-b-200"), "datasets.imagenet-a.class_subset"),
    (lambda r: r["datasets"]["imagenet-a"]["layout"].update(class_ordr="numeric"), "datasets.imagenet-a.layout"),
    (lambda r: r["datasets"]["imagenet-a"]["layout"].update(kind="zip"), "datasets.imagenet-a.layout.kind"),
    (lambda r: r["datasets"]["vtab-dtd"].update(group="natural-ish"), "datasets.vtab-dtd.group"),
    (lambda r: r["datasets"]["imagenet-val"].update(label_tables=["reel"]), "datasets.imagenet-val.label_tables"),
    (lambda r: r["datasets"]["imagenet-val"].update(studies=["vibes"]), "datasets.imagenet-val.studies"),
    (lambda r: r["suites"]["robustness"]["datasets"].append("imagenet-b"), "suites.robustness.datasets"),
    (lambda r: r["suites"]["invariance"]["transforms"].append("rotate-90"), "suites.invariance.transforms"),
    (lambda r: r["suites"]["demo"]["overrides"]["cue-conflict"].update(size=3), "suites.demo.overrides.cue-conflict.size"),
    # the typed schema's own checks
    (lambda r: r["datasets"]["imagenet-r"].update(num_labels="1000"), "datasets.imagenet-r.num_labels"),
    (lambda r: r["datasets"]["imagenet-c"].update(logits_dtype="float64"), "datasets.imagenet-c.logits_dtype"),
    (lambda r: r["datasets"]["imagenet-val"].update(studies=["mistakes"]), "datasets.imagenet-val.studies"),
    (lambda r: r["datasets"]["imagenet-hard"]["layout"].update(path_column="path"),
     "datasets.imagenet-hard.layout.image_column"),
    (lambda r: r["datasets"]["imagenet-hard"]["columns"].pop("label_set"), "datasets.imagenet-hard.columns"),
    (lambda r: r["datasets"]["vtab-dtd"]["layout"]["alternatives"][0].update(alternatives=[]),
     "datasets.vtab-dtd.layout.alternatives"),
    (lambda r: r["datasets"]["vtab-dtd"]["layout"]["alternatives"][0].update(files=3),
     "datasets.vtab-dtd.layout.alternatives[0].files"),
    (lambda r: r["datasets"]["vtab-dtd"].update(group=None), "datasets.vtab-dtd.group"),
    (lambda r: r["suites"]["demo"]["overrides"]["cue-conflict"].update(expected_samples="3"),
     "suites.demo.overrides.cue-conflict.expected_samples"),
    (lambda r: r["suites"]["demo"]["dataset_transforms"].update({"imagenet-a": ["center"]}),
     "suites.demo.dataset_transforms.imagenet-a"),
    (lambda r: r.update(label_tables={}), "label_tables"),
])
def test_validation_errors(tmp_path, mutate, where):
    raw = _raw()
    mutate(raw)
    p = _write(tmp_path, raw)
    with pytest.raises(ManifestError, match=re.escape(where)):
        load_manifest(p)


def test_message_names_file_path_expectation_and_value(tmp_path):
    raw = _raw()
    del raw["datasets"]["imagenet-val"]["layout"]["labels_file"]
    raw["datasets"]["imagenet-a"]["layout"]["kind"] = "zip"
    raw["datasets"]["imagenet-r"]["label_space"] = "imagenet-21k"
    raw["datasets"]["imagenet-r"]["layout"]["class_ordr"] = "numeric"
    p = _write(tmp_path, raw)
    with pytest.raises(ManifestError) as e:
        load_manifest(p)
    lines = str(e.value).splitlines()
    assert f"{p}: datasets.imagenet-val.layout.labels_file: missing field (required for kind flat-folder)" in lines
    assert any(line.startswith(f"{p}: datasets.imagenet-a.layout.kind: unknown layout kind 'zip'; available: "
                               "class-folders") for line in lines)
    assert any(line.startswith(f"{p}: datasets.imagenet-r.label_space: must be 'imagenet-1k'") and
               line.endswith("got str 'imagenet-21k'") for line in lines)
    assert f"{p}: datasets.imagenet-r.layout.class_ordr: unknown field 'class_ordr'; did you mean 'class_order'?" \
        in str(e.value)


def test_float16_only_where_asked(manifest):
    assert [d for d in manifest.datasets if manifest.datasets[d].logits_dtype == "float16"] == ["imagenet-c"]


def test_unknown_suite_dataset_suggests(tmp_path):
    raw = _raw()
    raw["suites"]["robustness"]["datasets"].append("imagenet-skech")
    with pytest.raises(ManifestError, match="did you mean 'imagenet-sketch'"):
        load_manifest(_write(tmp_path, raw))


def test_env_var_overrides_path(tmp_path, monkeypatch):
    raw = _raw()
    raw["datasets"]["imagenet-a"]["title"] = "from the env manifest"
    p = _write(tmp_path, raw)
    monkeypatch.setenv(M.ENV_VAR, str(p))
    m = load_manifest()
    assert m.path == p and m.dataset("imagenet-a")["title"] == "from the env manifest"
    monkeypatch.setenv(M.ENV_VAR, str(tmp_path / "nope.yaml"))
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_manifest()


def test_bad_yaml(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("datasets: [unclosed\n  other: 1\n")
    with pytest.raises(ManifestError, match=str(p)) as error:
        load_manifest(p)
    assert "other: 1" in str(error.value)  # the offending line quoted


def test_the_manifest_reads_as_pyyamls_pure_python_parser_reads_it(manifest):
    from schemas.manifest.load import parse_manifest

    pure = parse_manifest(yaml.load(M.MANIFEST_PATH.read_text(), Loader=yaml.SafeLoader), M.MANIFEST_PATH)
    assert manifest.model_dump() == pure.model_dump()


# ---------------------------------------------------------------- label files, spaces, subsets
def test_label_file():
    assert label_file("imagenet_synsets.txt").is_file()
    with pytest.raises(FileNotFoundError, match="no_such_file.txt.*present: "):
        label_file("no_such_file.txt")


def test_label_spaces():
    assert len(label_spaces.label_space_names("imagenet-1k")) == 1000
    cats = label_spaces.label_space_names("cue-conflict-16")
    assert cats == sorted(cats) and len(cats) == 16 and cats[0] == "airplane"
    pug = label_spaces.label_space_names("pug-imagenet-151")
    assert len(pug) == 151 and pug == sorted(json.loads((LABELS / "pug_imagenet_class_to_imagenet_idx.json").read_text()))
    assert label_spaces.label_space_names("own") is None
    assert len(label_spaces.imagenet_synsets()) == 1000 and label_spaces.imagenet_synsets()[0] == "n01440764"


def test_class_subset_indices_against_the_files():
    a = class_subset_indices("imagenet-a-200")
    r = class_subset_indices("imagenet-r-200")
    assert len(a) == len(r) == 200
    assert a.tolist() == sorted(int(x) for x in (LABELS / "imagenet_a_indices.txt").read_text().split())
    assert r.tolist() == sorted(int(x) for x in (LABELS / "imagenet_r_indices.txt").read_text().split())
    syn = (LABELS / "imagenet_synsets.txt").read_text().split()
    assert [syn[i] for i in a] == (LABELS / "imagenet_a_synsets.txt").read_text().split()

    cue = json.loads((LABELS / "cue_conflict_16.json").read_text())
    expect_cue = sorted({i for v in cue.values() for i in v})
    got = class_subset_indices("cue-conflict-16")
    assert got.tolist() == expect_cue and len(got) == 207

    pug = json.loads((LABELS / "pug_imagenet_class_to_imagenet_idx.json").read_text())
    expect_pug = sorted({int(i) for v in pug.values() for i in v})
    got = class_subset_indices("pug-imagenet")
    assert got.tolist() == expect_pug and len(got) in (176, 177)
    for name in label_spaces.CLASS_SUBSETS:
        idx = class_subset_indices(name)
        assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0) and idx.min() >= 0 and idx.max() < 1000
    assert class_subset_indices(None) is None
    with pytest.raises(ValueError, match="unknown class subset"):
        class_subset_indices("imagenet-z-200")


def test_class_groups():
    g = label_spaces.class_groups("cue-conflict-16")
    assert list(g) == label_spaces.label_space_names("cue-conflict-16") and len(g["knife"]) == 1
    p = label_spaces.class_groups("pug-imagenet")
    assert list(p) == label_spaces.label_space_names("pug-imagenet-151")


def test_no_torch_import():
    """schemas sits below both stages: no torch, nothing from extract/ or analyze/."""
    code = ("import sys, schemas.manifest as m, schemas.label_spaces; m.load_manifest(); "
            "bad = sorted({n.split('.')[0] for n in sys.modules} & {'torch', 'extract', 'analyze'}); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=M.MANIFEST_PATH.parent)


def test_main_validates(capsys):
    from schemas.manifest.__main__ import main

    assert main([str(M.MANIFEST_PATH)]) == 0
    assert "valid" in capsys.readouterr().out


def test_deep_copy_raw_is_untouched(manifest):
    before = copy.deepcopy(manifest.datasets)
    manifest.suite("paper")
    manifest.dataset("imagenet-val", suite="demo")
    assert manifest.datasets == before
