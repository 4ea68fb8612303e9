"""The door (schemas/door.py): stores written by hand through ``schemas.write_run``, as a new user writes them
from published per-image data, and stores checked by ``validate`` whoever wrote them.

The data are small inline excerpts of real published tables: per-trial decisions of human observers on the
cue-conflict images (bethgelab/model-vs-human raw-data, MIT; stimuli CC BY 4.0) and ImageNet-X's ResNet50
top-1 predictions on ImageNet val (facebookresearch/imagenetx, CC BY-NC 4.0), labels from the bundled
ImageNet-X annotations. Every bad input must be refused with a message that names the store, the field and
the fix, and must leave the store's files exactly as they were; every good input must give the number
computed here from the excerpt.
"""
from __future__ import annotations

import csv
import io
import re
import shutil

import numpy as np
import pytest
import zarr

import schemas
from schemas.door import StoreWarning

# 23 trials of model-vs-human's cue-conflict sessions (subject-NN_session_1.csv), columns as published:
# 11 shape decisions, 6 texture decisions, 2 neither, 3 images whose shape and texture coincide, 1 "na".
HUMANS = """\
subj,session,trial,rt,object_response,category,condition,imagename
subject-05,1,552,0.777889013290405,bicycle,bicycle,0,0552_s5n_s05_0_bicycle_00_bicycle1-bird1.png
subject-10,1,844,0.927587985992432,keyboard,keyboard,0,0844_s5n_s10_0_keyboard_00_keyboard6-bear2.png
subject-03,1,529,0.852756977081299,elephant,elephant,0,0529_s5n_s03_0_elephant_00_elephant7-knife2.png
subject-07,1,873,0.885362863540649,airplane,airplane,0,0873_s5n_s07_0_airplane_00_airplane10-boat3.png
subject-09,1,612,0.628513813018799,boat,boat,0,0612_s5n_s09_0_boat_00_boat1-bicycle2.png
subject-02,1,342,0.768605947494507,chair,chair,0,0342_s5n_s02_0_chair_00_chair10-dog1.png
subject-01,1,349,0.944858074188232,bicycle,bicycle,0,0349_s5n_s01_0_bicycle_00_bicycle1-bear1.png
subject-09,1,520,0.753704786300659,bear,bear,0,0520_s5n_s09_0_bear_00_bear4-truck3.png
subject-05,1,986,0.70633602142334,bear,bear,0,0986_s5n_s05_0_bear_00_bear2-car2.png
subject-10,1,1004,1.4872100353241,knife,knife,0,1004_s5n_s10_0_knife_00_knife9-bird1.png
subject-04,1,1,0.936746120452881,truck,truck,0,0001_s5n_s04_0_truck_00_truck2-bottle3.png
subject-03,1,1178,0.746318101882935,bottle,knife,0,1178_s5n_s03_0_knife_00_knife2-bottle2.png
subject-03,1,312,0.710491895675659,cat,airplane,0,0312_s5n_s03_0_airplane_00_airplane3-cat1.png
subject-10,1,353,1.00132417678833,keyboard,bear,0,0353_s5n_s10_0_bear_00_bear4-keyboard3.png
subject-06,1,842,0.804542064666748,car,boat,0,0842_s5n_s06_0_boat_00_boat1-car2.png
subject-07,1,503,1.05945897102356,car,knife,0,0503_s5n_s07_0_knife_00_knife4-car2.png
subject-07,1,580,1.0800518989563,boat,chair,0,0580_s5n_s07_0_chair_00_chair9-boat2.png
subject-09,1,587,1.13448786735535,airplane,dog,0,0587_s5n_s09_0_dog_00_dog4-chair1.png
subject-07,1,1238,0.822598934173584,keyboard,knife,0,1238_s5n_s07_0_knife_00_knife8-bicycle1.png
subject-09,1,270,0.976994037628174,dog,dog,0,0270_s5n_s09_0_dog_00_dog2-dog3.png
subject-02,1,1134,0.932567119598389,elephant,elephant,0,1134_s5n_s02_0_elephant_00_elephant8-elephant1.png
subject-03,1,1218,1.1055269241333,keyboard,keyboard,0,1218_s5n_s03_0_keyboard_00_keyboard8-keyboard2.png
subject-07,1,329,NaN,na,clock,0,0329_s5n_s07_0_clock_00_clock10-truck2.png
"""

# ImageNet-X ResNet50 predictions (file_name, predicted_class, predicted_probability) joined with the label
# of imagenet_x_val_top_factor.csv.gz: file_name, label, predicted_class, predicted_probability.
IMAGENET_X = """\
ILSVRC2012_val_00002750.JPEG,746,746,0.9999802113
ILSVRC2012_val_00005217.JPEG,176,176,0.7474647164
ILSVRC2012_val_00006452.JPEG,854,854,0.9922890067000001
ILSVRC2012_val_00011813.JPEG,589,453,0.4187922478
ILSVRC2012_val_00015985.JPEG,334,334,0.5198524594
ILSVRC2012_val_00018889.JPEG,649,704,0.39970263840000003
ILSVRC2012_val_00022839.JPEG,997,997,0.9393941760000001
ILSVRC2012_val_00024836.JPEG,154,154,0.9935956597000001
ILSVRC2012_val_00036713.JPEG,82,86,0.7813099027
ILSVRC2012_val_00048133.JPEG,618,696,0.7159006
"""


def _trials() -> list[dict]:
    return list(csv.DictReader(io.StringIO(HUMANS)))


def _stimulus(trial: dict) -> tuple[str, str, str]:
    """(bare stimulus name, shape category, texture category) of a trial's imagename."""
    name = trial["imagename"].rsplit("_", 1)[-1]
    shape, texture = (re.sub(r"\d", "", part) for part in name[: -len(".png")].split("-"))
    return name, shape, texture


def reference_shape_bias() -> tuple[float, int]:
    """Shape bias of the excerpt straight from the definition: shape / (shape + texture) decisions among the
    answered trials whose shape and texture differ; and how many such trials there are."""
    shape_hits = texture_hits = kept = 0
    for t in _trials():
        _, shape, texture = _stimulus(t)
        if shape == texture or t["object_response"] == "na":
            continue
        kept += 1
        shape_hits += t["object_response"] == shape
        texture_hits += t["object_response"] == texture
    return shape_hits / (shape_hits + texture_hits), kept


@pytest.fixture(scope="module")
def cue(kit):
    """The excerpt as write_run's arguments, built as a new user would: category indices in the order of the
    16 categories, decisions spread over each category's ImageNet classes in 1000-wide logits."""
    cats = kit.read_cue_categories()
    names = [c for c, _ in cats]
    members = [m for _, m in cats]
    trials = _trials()
    n = len(trials)
    ids, shape, texture = [], [], []
    logits = np.zeros((n, 1000), np.float32)
    valid = np.ones(n, bool)
    for i, t in enumerate(trials):
        name, s, tx = _stimulus(t)
        ids.append(f"{s}/{name}")
        shape.append(names.index(s))
        texture.append(names.index(tx))
        if t["object_response"] == "na":
            valid[i] = False
        else:
            logits[i, members[names.index(t["object_response"])]] = 10.0
    return dict(names=names, members=members, n=n, logits=logits, valid=valid, sample_id=np.array(ids),
                label=np.array(shape, np.int64), texture=np.array(texture, np.int16))


def write_cue(store, cue, *, model="humans", transform="center", logits=None, sample_id=None, label=None,
              columns=None, valid=None):
    """write_run with the repository manifest's cue-conflict entry (no dataset_attrs: as a new user calls it)."""
    return schemas.write_run(
        store, "cue-conflict", transform, model, cue["logits"] if logits is None else logits,
        sample_id=cue["sample_id"] if sample_id is None else sample_id,
        label=cue["label"] if label is None else label,
        columns={"texture_label": cue["texture"]} if columns is None else columns,
        valid=cue["valid"] if valid is None else valid,
    )


@pytest.fixture(scope="module")
def good_store(cue, tmp_path_factory):
    store = tmp_path_factory.mktemp("good") / "cue.zarr"
    write_cue(store, cue)
    return store


def test_excerpt_counts():
    """The reference itself, counted by hand from the excerpt above: 11 shape and 6 texture decisions among
    19 answered trials with shape != texture."""
    bias, kept = reference_shape_bias()
    assert kept == 19 and bias == pytest.approx(11 / 17)


def test_good_human_decisions_give_their_shape_bias(good_store, tmp_path, results_of):
    assert schemas.validate(good_store) == []
    rows, _ = results_of(good_store, tmp_path / "out", studies=["shape_bias"])
    bias, kept = reference_shape_bias()
    row = rows[("humans", "cue-conflict", "center", "shape_bias")]
    assert row["value"] == pytest.approx(bias) and row["n"] == kept


def _names(cue, idx):
    return np.array([cue["names"][i] for i in idx])


# name -> (what write_cue is given instead of the good arrays, the parts every message must contain)
BAD = {
    "texture-as-category-names": (
        lambda c: dict(columns={"texture_label": _names(c, c["texture"])}),
        ["cue-conflict/texture_label", "expected int16 indices", "found strings ('bird', 'bear', 'knife', ...)",
         "texture_label holds category names: give indices into the 16 cue-conflict-16 categories"]),
    "labels-one-based": (
        lambda c: dict(label=c["label"] + 1, columns={"texture_label": c["texture"] + 1}),
        ["cue-conflict/label: expected indices in [0, 16)", "cue-conflict/texture_label: expected indices in [0, 16)",
         "labels look 1-based (1..16): subtract 1"]),
    "imagenet-class-numbers": (
        lambda c: dict(label=np.array([c["members"][s][0] for s in c["label"]]),
                       columns={"texture_label": np.array([c["members"][t][0] for t in c["texture"]], np.int16)}),
        ["cue-conflict/label", "cue-conflict/texture_label",
         "these look like imagenet-1k class numbers, not cue-conflict-16 category indices",
         "schemas.label_spaces.class_groups('cue-conflict-16')"]),
    "float-texture-label": (
        lambda c: dict(columns={"texture_label": c["texture"].astype(np.float64)}),
        ["cue-conflict/texture_label: expected int16 integers, found floats (float64)", "no silent cast"]),
    "labels-read-with-missing-cells": (  # pandas reads a label column with an empty cell as float with NaN
        lambda c: dict(label=np.where(np.arange(c["n"]) == 22, np.nan, c["label"])),
        ["cue-conflict/label: expected int32 integers, found floats (float64)", "missing labels are -1"]),
    "texture-label-outside-the-classes": (
        lambda c: dict(columns={"texture_label": np.where(np.arange(c["n"]) == 3, 23, c["texture"]).astype(np.int16)}),
        ["cue-conflict/texture_label: expected indices in [0, 16)", "found 1 of 23 values >= 16", "e.g. 23",
         "texture_label indexes the 16 classes of label space cue-conflict-16"]),
    "texture-label-missing": (
        lambda c: dict(columns={}),
        ["cue-conflict/texture_label: expected column texture_label (int16", "found no such column",
         "give columns={'texture_label': ...}"]),
    "texture-label-misnamed": (
        lambda c: dict(columns={"texture": c["texture"]}),
        ["cue-conflict/texture_label", "did you mean your column 'texture'?"]),
    "labels-as-category-names": (
        lambda c: dict(label=_names(c, c["label"])),
        ["cue-conflict/label: expected int32 indices", "label holds category names"]),
    "sixteen-decision-logits": (
        lambda c: dict(logits=np.eye(16, dtype=np.float32)[np.r_[c["label"][:-1], 0]] * 10),
        ["cue-conflict/center/humans/logits: expected 1000 columns (logit space imagenet-1k), found 16",
         "schemas.label_spaces.class_groups('cue-conflict-16')"]),
    "duplicate-sample-ids": (
        lambda c: dict(sample_id=np.r_[c["sample_id"][:1], c["sample_id"][:-1]]),
        ["cue-conflict/sample_id: expected unique sample ids, found 1 id repeated ('bicycle/bicycle1-bird1.png' x2)"]),
    "nan-and-inf-on-valid-rows": (
        lambda c: dict(logits=np.where(np.isin(np.arange(c["n"]), [2, 5])[:, None],
                                       np.array([np.nan, np.inf] * 500, np.float32), c["logits"])),
        ["cue-conflict/center/humans/logits: expected finite logits on every row marked valid",
         "found 2 of 23 valid rows with NaN/inf (rows 2, 5)", "mark those rows valid=False"]),
    "transform-that-does-not-parse": (
        lambda c: dict(transform="centre"),
        ["cue-conflict/centre: expected a transform id", "did you mean 'center'?"]),
    "several-at-once": (
        lambda c: dict(sample_id=np.r_[c["sample_id"][:1], c["sample_id"][:-1]], label=c["label"].astype(float)),
        ["nothing written, 2 problems", "cue-conflict/sample_id", "cue-conflict/label: expected int32 integers, "
         "found floats (float64)"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_naming_field_and_fix_and_nothing_is_written(case, cue, good_store, kit, tmp_path):
    change, parts = BAD[case]
    fresh = tmp_path / "fresh.zarr"
    with pytest.raises(schemas.StoreError) as err:
        write_cue(fresh, cue, **change(cue))
    message = str(err.value)
    assert message.startswith(f"{fresh}: nothing written"), message
    for part in parts:
        assert part in message, (part, message)
    assert "invalid literal" not in message and "Traceback" not in message
    assert not fresh.exists(), "a refused write created the store"
    # Offered to an existing store (another model of the same dataset): its files stay exactly as they were.
    store = tmp_path / "existing.zarr"
    shutil.copytree(good_store, store)
    before = kit.tree_hash(store)
    with pytest.raises(schemas.StoreError):
        write_cue(store, cue, model="other", **change(cue))
    assert kit.tree_hash(store) == before


def test_run_under_a_transform_no_study_reads_is_a_warning(cue, tmp_path):
    store = tmp_path / "cue.zarr"
    with pytest.warns(StoreWarning, match=r"cue-conflict/scale-1\.5: no study reads cue-conflict runs under "
                                          r"scale-1\.5 \(the entry's studies: shape_bias, agreement; only the invariance"):
        path = write_cue(store, cue, transform="scale-1.5")
    assert path == "cue-conflict/scale-1.5/humans"
    problems = schemas.validate(store)
    assert [(p.path, p.severity) for p in problems] == [("cue-conflict/scale-1.5", "warning")], problems


def test_ensure_dataset_refuses_before_writing(cue, kit, tmp_path):
    root = schemas.open_root(tmp_path / "s.zarr")
    before = kit.tree_hash(tmp_path / "s.zarr")
    attrs = schemas.store.default_dataset_attrs("cue-conflict")
    with pytest.raises(schemas.StoreError, match="cue-conflict/texture_label: expected int16 integers, found floats"):
        schemas.ensure_dataset(root, "cue-conflict", sample_id=cue["sample_id"], label=cue["label"],
                               columns={"texture_label": cue["texture"] + 0.5}, attrs=attrs)
    assert kit.tree_hash(tmp_path / "s.zarr") == before and "cue-conflict" not in root


def _imagenet_x():
    rows = [line.split(",") for line in IMAGENET_X.split()]
    ids = np.array([r[0] for r in rows])
    label = np.array([int(r[1]) for r in rows])
    pred = np.array([int(r[2]) for r in rows])
    prob = np.array([float(r[3]) for r in rows])
    return ids, label, pred, prob


def test_log_of_zero_probabilities_are_refused_and_the_fixed_run_gives_its_top1(tmp_path, results_of):
    """A new user turns ImageNet-X's published top-1 probabilities into logits with log(p), 0 elsewhere ->
    -inf: every row would be stored invalid. Refused with the fix; the finite version gives the top-1."""
    ids, label, pred, prob = _imagenet_x()
    n = len(ids)
    with np.errstate(divide="ignore"):
        logits = np.log(np.zeros((n, 1000), np.float32))
    logits[np.arange(n), pred] = np.log(prob)
    store = tmp_path / "val.zarr"
    with pytest.raises(schemas.StoreError) as err:
        schemas.write_run(store, "imagenet-val", "center", "resnet50", logits, sample_id=ids, label=label)
    message = str(err.value)
    assert "imagenet-val/center/resnet50/logits: expected finite logits on the rows to analyse, found 10 of 10 rows " \
           "with NaN/inf" in message
    assert "give a large negative finite value instead (e.g. -1e4)" in message
    assert not store.exists()
    schemas.write_run(store, "imagenet-val", "center", "resnet50", np.maximum(logits, -1e4), sample_id=ids,
                      label=label)
    assert schemas.validate(store) == []
    rows, _ = results_of(store, tmp_path / "out", studies=["robustness"])
    hits = sum(int(p == l) for p, l in zip(pred, label))
    assert hits == 6
    assert rows[("resnet50", "imagenet-val", "center", "top1")]["value"] == pytest.approx(hits / n)


HARD = {
    "padding-other-than-minus-one": (
        lambda sets: np.where(sets < 0, -2, sets),
        ["imagenet-hard/label_set: expected indices >= 0, or -1 for no label / padding", "values below -1 (-2)"]),
    "lists-not-padded": (
        lambda sets: np.array([list(r[r >= 0]) for r in sets], dtype=object),
        ["imagenet-hard/label_set: expected an [3, slots] int32 array (int32[max]: lists padded with -1)",
         "pad each sample's list with -1"]),
    "class-beyond-the-space": (
        lambda sets: np.where(sets == 3, 1000, sets),
        ["imagenet-hard/label_set: expected indices in [0, 1000)", "found 1 of 6 values >= 1000"]),
}


@pytest.mark.parametrize("case", list(HARD))
def test_label_lists(case, tmp_path):
    """Multi-label (ImageNet-Hard's label_set: int32[max], padded with -1) under the repository manifest."""
    sets = np.array([[3, 7], [12, -1], [998, 999]], np.int32)
    ids = np.array([f"validation-00000-of-00001.parquet#{i:06d}" for i in range(3)])
    columns = {"label_set": sets, "origin": np.array(["imagenet", "objectnet", "imagenet_v2"])}
    logits = np.zeros((3, 1000), np.float32)
    store = tmp_path / "hard.zarr"
    bad, parts = HARD[case]
    with pytest.raises(schemas.StoreError) as err:
        schemas.write_run(store, "imagenet-hard", "center", "m", logits, sample_id=ids, label=sets[:, 0],
                          columns={**columns, "label_set": bad(sets)})
    for part in parts:
        assert part in str(err.value), (part, str(err.value))
    assert not store.exists()
    schemas.write_run(store, "imagenet-hard", "center", "m", logits, sample_id=ids, label=sets[:, 0], columns=columns)
    assert schemas.validate(store) == []


def test_validate_reports_nan_and_inf_logits_on_valid_rows(good_store, cue, kit, tmp_path, capsys):
    """A store written by another writer (the block writer, no door) with NaN and inf on rows marked valid:
    validate, `analyze validate` and `extract verify` name the run and the number of rows."""
    store = tmp_path / "cue.zarr"
    shutil.copytree(good_store, store)
    logits = cue["logits"].copy()
    logits[4] = np.nan
    logits[7, 0] = np.inf
    valid = cue["valid"]
    schemas.RunWriter(zarr.open_group(store, path="cue-conflict/center/humans", mode="r+"), cue["n"]).write_block(
        0, logits, valid=valid)
    problems = [p for p in schemas.validate(store) if p.severity == "error"]
    assert [p.path for p in problems] == ["cue-conflict/center/humans/logits"], problems
    assert "found 2 of 23 valid rows with NaN/inf (rows 4, 7)" in problems[0].message
    result = kit.run_cli("validate", store)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "error: cue-conflict/center/humans/logits: expected finite logits on every row marked valid, found 2 of " \
           "23 valid rows" in result.stdout
    from extract.cli import main as extract_main

    assert extract_main(["verify", str(store)]) == 1
    assert "cue-conflict/center/humans/logits" in capsys.readouterr().out


def _replace_array(store, path, values, dtype):
    group_path, name = path.rsplit("/", 1)
    group = zarr.open_group(store, path=group_path, mode="r+")
    arr = group.create_array(name, shape=values.shape, dtype=dtype, dimension_names=("sample",), overwrite=True)
    arr[...] = values


def test_validate_checks_a_store_written_by_other_means_through_the_same_door(good_store, cue, tmp_path):
    """Arrays replaced with plain zarr (as the old write_run let through): validate says what write_run says."""
    store = tmp_path / "cue.zarr"
    shutil.copytree(good_store, store)
    _replace_array(store, "cue-conflict/texture_label", _names(cue, cue["texture"]).astype(object), str)
    _replace_array(store, "cue-conflict/label", (cue["label"] + 1).astype(np.int32), "int32")
    found = {p.path: p.message for p in schemas.validate(store) if p.severity == "error"}
    # the arrays no longer give the digest recorded with them (integrity), and the door says what is wrong
    assert set(found) == {"cue-conflict", "cue-conflict/texture_label", "cue-conflict/label"}, found
    assert "no longer give the sample_digest" in found["cue-conflict"]
    assert "texture_label holds category names: give indices into the 16 cue-conflict-16 categories" \
        in found["cue-conflict/texture_label"]
    assert "expected indices in [0, 16)" in found["cue-conflict/label"]
    assert "found 1 of 23 values >= 16 (range found 1..16; e.g. 16)" in found["cue-conflict/label"]


def test_validate_of_an_old_store_whose_entry_lacks_fields(kit, tmp_path):
    """Entries written before the door (or by hand) may lack columns, num_labels, logit_space, studies: the
    checks that need them are skipped, the rest still run."""
    store = tmp_path / "old.zarr"
    entry = {"id": "imagenet-val", "label_space": "imagenet-1k"}
    kit.write(store, "imagenet-val", "res-99", "m", np.zeros((4, 7), np.float32), sample_id=kit.val_ids(4),
              label=np.array([0, 1, 2, 999]), entry=entry)
    assert schemas.validate(store) == []
    with pytest.raises(schemas.StoreError, match=r"imagenet-val/label: expected indices in \[0, 1000\)"):
        kit.write(tmp_path / "other.zarr", "imagenet-val", "center", "m", np.zeros((4, 7), np.float32),
                  sample_id=kit.val_ids(4), label=np.array([0, 1, 2, 1000]), entry=entry)
