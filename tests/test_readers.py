"""Dataset readers on tiny on-disk fixtures, decode errors, check_datasets, the bundled demo data."""
from __future__ import annotations

import concurrent.futures as cf
import io
import json
import multiprocessing as mp
import pickle
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from extract import datasets as D
from extract.datasets import (
    check_datasets,
    decode_image,
    demo_data_root,
    make_synthetic_imagenet_val,
    open_dataset,
)
from extract.readers import READERS, ImageDecodeError, SampleTable, open_reader
from schemas import label_spaces
from schemas import manifest as M
from schemas.manifest import load_manifest
from schemas.registry import UnknownName

SYNSETS = list(label_spaces.imagenet_synsets())
CUE = list(json.loads((label_spaces.LABELS_DIR / "cue_conflict_16.json").read_text()))
FULL_CUE_FILES = Path(__file__).resolve().parent / "data" / "cue-conflict" / "files.txt"


# ---------------------------------------------------------------- fixture helpers
def jpeg_bytes(seed: int = 0, size=(32, 24)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def png_bytes(seed: int = 0, mode="RGB") -> bytes:
    rng = np.random.default_rng(seed)
    ch = 4 if mode == "RGBA" else 3
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (16, 16, ch), dtype=np.uint8), mode).save(buf, "PNG")
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def entry(layout: dict, **over) -> dict:
    e = {
        "title": "fixture", "source": "made by the test", "layout": layout, "label_space": "imagenet-1k",
        "num_labels": 1000, "logit_space": "imagenet-1k", "class_subset": None, "label_kind": "single",
        "columns": {}, "expected_samples": 0, "studies": ["robustness"], "group": None,
    }
    e.update(over)
    return e


def manifest_with(tmp_path: Path, datasets: dict, suites: dict | None = None):
    raw = {"datasets": datasets, "suites": suites or {}}
    p = tmp_path / "fixture_manifest.yaml"
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_manifest(p)


def open_one(tmp_path: Path, data_root: Path, e: dict, did: str = "ds"):
    m = manifest_with(tmp_path, {did: e})
    return open_dataset(did, data_root, m)


def assert_sorted_unique(table: SampleTable):
    ids = table.sample_id.tolist()
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert table.sample_id.dtype == object and table.label.dtype == np.int32


# ---------------------------------------------------------------- class folders
def test_class_folders_synsets(tmp_path):
    root = tmp_path / "data"
    classes = [SYNSETS[5], SYNSETS[0], SYNSETS[999]]
    for k, c in enumerate(classes):
        for j in range(2):
            write(root / "ina" / c / f"img{j}.JPEG", jpeg_bytes(10 * k + j))
    write(root / "ina" / "README.txt", b"not an image")
    write(root / "ina" / SYNSETS[5] / ".hidden.jpg", b"junk")
    r = open_one(tmp_path, root, entry({"kind": "class-folders", "path": "ina", "class_order": "synsets"}))
    t = r.samples()
    assert_sorted_unique(t)
    assert len(t) == 6
    for sid, lab in zip(t.sample_id, t.label):
        assert lab == SYNSETS.index(sid.split("/")[0])
    assert t.label.tolist() == [0, 0, 5, 5, 999, 999]
    assert r.read_bytes(2) == (root / "ina" / t.sample_id[2]).read_bytes()
    assert decode_image(r.read_bytes(0)).size == (32, 24)


def test_class_folders_unknown_synset(tmp_path):
    root = tmp_path / "data"
    write(root / "ina" / "n99999999" / "a.jpg", jpeg_bytes())
    r = open_one(tmp_path, root, entry({"kind": "class-folders", "path": "ina", "class_order": "synsets"}))
    with pytest.raises(ValueError, match="n99999999.*not ImageNet synsets"):
        r.samples()


def test_v2_numeric_folders_are_numeric_not_text(tmp_path):
    root = tmp_path / "data"
    for c in range(12):
        write(root / "v2" / str(c) / f"{c:03d}abc.jpeg", jpeg_bytes(c))
    r = open_one(tmp_path, root, entry({"kind": "class-folders", "path": "v2", "class_order": "numeric"}))
    t = r.samples()
    assert_sorted_unique(t)
    folders = [s.split("/")[0] for s in t.sample_id]
    assert folders == sorted(str(c) for c in range(12))  # text order of ids: 0, 1, 10, 11, 2, ...
    assert folders[:4] == ["0", "1", "10", "11"]
    assert t.label.tolist() == [int(f) for f in folders]  # but labels are the numbers
    text_order_labels = [sorted(folders).index(f) for f in folders]
    assert t.label.tolist() != text_order_labels


def test_class_folders_sorted_for_own_label_space(tmp_path):
    root = tmp_path / "data"
    for c in ["zebra", "apple", "mango"]:
        write(root / "own" / c / "x.png", png_bytes())
    e = entry({"kind": "class-folders", "path": "own", "class_order": "sorted"}, label_space="own", num_labels=3)
    r = open_one(tmp_path, root, e)
    t = r.samples()
    assert dict(zip(t.sample_id, t.label.tolist())) == {"apple/x.png": 0, "mango/x.png": 1, "zebra/x.png": 2}
    assert r.class_names() == ["apple", "mango", "zebra"]


# ---------------------------------------------------------------- flat folder (ImageNet val)
def _val_files(root: Path, n: int = 6):
    labels = [(7 * i + 3) % 1000 for i in range(n)]
    for i in range(n):
        write(root / f"ILSVRC2012_val_{i + 1:08d}.JPEG", jpeg_bytes(i))
    return labels


VAL_LAYOUT = {"kind": "flat-folder", "path": "val", "labels_file": ["LOC_val_solution.csv", "../LOC_val_solution.csv",
                                                                      "labels.txt"],
              "class_folders_fallback": True}


def test_flat_folder_loc_csv(tmp_path):
    root = tmp_path / "data"
    labels = _val_files(root / "val")
    rows = ["ImageId,PredictionString"] + [f"ILSVRC2012_val_{i + 1:08d},{SYNSETS[lab]} 1 2 30 40 {SYNSETS[lab]} 5 6 7 8"
                                           for i, lab in enumerate(labels)][::-1]
    write(root / "LOC_val_solution.csv", "\n".join(rows).encode())  # one level up, as in the Kaggle layout
    r = open_one(tmp_path, root, entry(VAL_LAYOUT))
    t = r.samples()
    assert t.sample_id.tolist() == [f"ILSVRC2012_val_{i + 1:08d}.JPEG" for i in range(6)]
    assert t.label.tolist() == labels


@pytest.mark.parametrize("style", ["one-per-line-index", "one-per-line-synset", "pairs"])
def test_flat_folder_txt_labels(tmp_path, style):
    root = tmp_path / "data"
    labels = _val_files(root / "val")
    if style == "one-per-line-index":
        text = "\n".join(str(x) for x in labels)
    elif style == "one-per-line-synset":
        text = "\n".join(SYNSETS[x] for x in labels)
    else:
        text = "\n".join(f"ILSVRC2012_val_{i + 1:08d}.JPEG {x}" for i, x in enumerate(labels))
    write(root / "val" / "labels.txt", text.encode())
    t = open_one(tmp_path, root, entry(VAL_LAYOUT)).samples()
    assert t.label.tolist() == labels and len(t) == 6  # labels.txt itself is not a sample


def test_flat_folder_refuses_devkit_ids(tmp_path):
    root = tmp_path / "data"
    _val_files(root / "val", n=3)
    write(root / "val" / "labels.txt", b"490\n361\n1000\n")
    r = open_one(tmp_path, root, entry(VAL_LAYOUT))
    with pytest.raises(ValueError, match="devkit"):
        r.samples()


def test_flat_folder_missing_labels_file_names_field(tmp_path):
    root = tmp_path / "data"
    _val_files(root / "val", n=2)
    with pytest.raises(FileNotFoundError) as e:
        open_one(tmp_path, root, entry(VAL_LAYOUT), did="imagenet-val")
    msg = str(e.value)
    assert "datasets.imagenet-val.layout.labels_file" in msg and str(root / "val") in msg


def test_flat_and_class_folder_layouts_give_the_same_samples(tmp_path):
    labels = _val_files(tmp_path / "flat" / "val")
    write(tmp_path / "flat" / "val" / "labels.txt", "\n".join(map(str, labels)).encode())
    for i, lab in enumerate(labels):
        name = f"ILSVRC2012_val_{i + 1:08d}.JPEG"
        write(tmp_path / "cls" / "val" / SYNSETS[lab] / name, (tmp_path / "flat" / "val" / name).read_bytes())
    flat = open_one(tmp_path, tmp_path / "flat", entry(VAL_LAYOUT))
    cls = open_one(tmp_path, tmp_path / "cls", entry(VAL_LAYOUT))
    a, b = flat.samples(), cls.samples()
    assert a.sample_id.tolist() == b.sample_id.tolist()  # file names in both layouts
    assert a.label.tolist() == b.label.tolist()
    assert a.digest() == b.digest()
    assert all(flat.read_bytes(i) == cls.read_bytes(i) for i in range(len(a)))


# ---------------------------------------------------------------- file lists
def test_csv_file_list_with_paths_and_label_lists(tmp_path):
    root = tmp_path / "data"
    for i in range(4):
        write(root / "lst" / "images" / f"im{i}.jpg", jpeg_bytes(i))
    csv_text = "path,label,origin\n" + "\n".join(
        ['images/im3.jpg,"[7, 8, 9]",a', "images/im0.jpg,[1],b", 'images/im2.jpg,"2;4",c', "images/im1.jpg,[],d"])
    write(root / "lst" / "list.csv", csv_text.encode())
    e = entry({"kind": "file-list", "path": "lst", "files": "*.csv", "path_column": "path", "label_list": True,
               "extra_columns": {"origin": "origin"}},
              label_kind="multi", columns={"label_set": "int32[max]", "origin": "str"})
    r = open_one(tmp_path, root, e)
    t = r.samples()
    assert t.sample_id.tolist() == [f"images/im{i}.jpg" for i in range(4)]
    assert t.columns["label_set"].dtype == np.int32 and t.columns["label_set"].shape == (4, 3)
    assert t.columns["label_set"].tolist() == [[1, -1, -1], [-1, -1, -1], [2, 4, -1], [7, 8, 9]]
    assert t.label.tolist() == [1, -1, 2, 7]
    assert t.columns["origin"].tolist() == ["b", "d", "c", "a"]
    assert r.read_bytes(3) == (root / "lst" / "images" / "im3.jpg").read_bytes()


def test_parquet_embedded_bytes_and_label_lists(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    root = tmp_path / "data"
    imgs = [jpeg_bytes(i) for i in range(5)]
    labels = [[3], [10, 20], [999], [0, 1, 2, 3], [5]]
    struct = pa.array([{"bytes": b, "path": f"{i}.jpg"} for i, b in enumerate(imgs)])  # Hugging Face layout
    table = pa.table({"image": struct, "label": pa.array(labels, pa.list_(pa.int64())),
                      "origin": [f"o{i}" for i in range(5)]})
    (root / "hard" / "data").mkdir(parents=True)
    pq.write_table(table, root / "hard" / "data" / "validation-00000-of-00001.parquet", row_group_size=2)
    e = entry({"kind": "file-list", "path": "hard", "files": "**/*.parquet", "image_column": "image",
               "label_column": "label", "label_list": True, "extra_columns": {"origin": "origin"}},
              label_kind="multi", columns={"label_set": "int32[max]", "origin": "str"})
    r = open_one(tmp_path, root, e)
    t = r.samples()
    assert t.sample_id.tolist() == [f"data/validation-00000-of-00001.parquet#{i:06d}" for i in range(5)]
    assert t.columns["label_set"].shape == (5, 4)
    assert t.columns["label_set"][3].tolist() == [0, 1, 2, 3] and t.columns["label_set"][1].tolist() == [10, 20, -1, -1]
    assert t.label.tolist() == [3, 10, 999, 0, 5]
    for i in [4, 0, 3, 1, 2]:  # any order, across row groups
        assert r.read_bytes(i) == imgs[i]
    # plain binary column too
    (root / "plain").mkdir()
    pq.write_table(pa.table({"img": pa.array(imgs, pa.binary()), "label": [1, 2, 3, 4, 5]}), root / "plain" / "x.parquet")
    e2 = entry({"kind": "file-list", "path": "plain", "files": "*.parquet", "image_column": "img"})
    r2 = open_one(tmp_path, root, e2)
    assert r2.samples().label.tolist() == [1, 2, 3, 4, 5] and r2.read_bytes(2) == imgs[2]


def test_parquet_with_paths(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    root = tmp_path / "data"
    for i in range(3):
        write(root / "pl" / "img" / f"{i}.png", png_bytes(i))
    (root / "pl").mkdir(exist_ok=True)
    pq.write_table(pa.table({"file": ["img/2.png", "img/0.png", "img/1.png"], "label": [SYNSETS[2], "4", "5"]}),
                   root / "pl" / "list.parquet")
    e = entry({"kind": "file-list", "path": "pl", "files": "list.parquet", "path_column": "file"})
    t = open_one(tmp_path, root, e).samples()
    assert t.sample_id.tolist() == ["img/0.png", "img/1.png", "img/2.png"] and t.label.tolist() == [4, 5, 2]


# ---------------------------------------------------------------- webdataset / VTAB
def _tar(path: Path, members: dict[str, bytes]):
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


VTAB_LAYOUT = {"kind": "webdataset", "path": "vtab/task", "shards": "**/*.tar", "split_from": "path",
               "splits": ["train800", "val200", "test"],
               "alternatives": [{"kind": "file-list", "path": "vtab-1k/task",
                                 "files": {"train800": "train800.txt", "val200": "val200.txt", "test": "test.txt"}}]}


def vtab_entry(**over):
    return entry(VTAB_LAYOUT, label_space="own", num_labels=5, columns={"split": "str"}, studies=["transfer"],
                 group="natural", **over)


def test_webdataset_splits_from_shard_paths(tmp_path):
    root = tmp_path / "data"
    payload = {}
    def shard(rel, keys):
        members = {}
        for k, lab in keys:
            payload[f"{rel}/{k}"] = jpeg_bytes(len(payload))
            members[f"{k}.jpg"] = payload[f"{rel}/{k}"]
            members[f"{k}.cls"] = f"{lab}\n".encode()
        members["__junk__.txt"] = b"ignored: no image"
        _tar(root / "vtab" / "task" / rel, members)
    shard("train800/000000.tar", [("s001", 0), ("s000", 4)])
    shard("train800/000001.tar", [("s002", 1)])
    shard("val200-000000.tar", [("v000", 2)])
    shard("test/0.tar", [("t000", 3), ("t001", 3)])
    r = open_one(tmp_path, root, vtab_entry())
    t = r.samples()
    assert_sorted_unique(t)
    assert t.sample_id.tolist() == ["test/0.tar/t000", "test/0.tar/t001", "train800/000000.tar/s000",
                                    "train800/000000.tar/s001", "train800/000001.tar/s002", "val200-000000.tar/v000"]
    assert t.columns["split"].tolist() == ["test", "test", "train800", "train800", "train800", "val200"]
    assert t.label.tolist() == [3, 3, 4, 0, 1, 2]
    for i, sid in enumerate(t.sample_id):
        assert r.read_bytes(i) == payload[sid]
    # picklable after handles were opened; reads again in the copy
    r2 = pickle.loads(pickle.dumps(r))
    assert r2.read_bytes(5) == payload[t.sample_id[5]]


def test_webdataset_json_labels_and_splits(tmp_path):
    root = tmp_path / "data"
    members = {}
    for i, split in enumerate(["train800", "val200", "test"]):
        members[f"k{i}.png"] = png_bytes(i)
        members[f"k{i}.json"] = json.dumps({"label": i + 1, "split": split}).encode()
    _tar(root / "vtab" / "task" / "all.tar", members)
    e = vtab_entry()
    e["layout"] = dict(VTAB_LAYOUT, split_from="json", label_from="json")
    t = open_one(tmp_path, root, e).samples()
    assert t.label.tolist() == [1, 2, 3] and t.columns["split"].tolist() == ["train800", "val200", "test"]


def test_webdataset_unexpected_split_is_refused(tmp_path):
    root = tmp_path / "data"
    _tar(root / "vtab" / "task" / "train" / "0.tar", {"a.jpg": jpeg_bytes(), "a.cls": b"1"})
    r = open_one(tmp_path, root, vtab_entry())
    with pytest.raises(ValueError, match=r"splits \['train'\].*train800"):
        r.samples()


def test_vtab_falls_back_to_txt_lists(tmp_path):
    root = tmp_path / "data"
    task = root / "vtab-1k" / "task"
    lines = {"train800": ["images/a.jpg 0", "images/b.jpg 1"], "val200": ["images/c.jpg 2"], "test": ["images/d.jpg 4"]}
    for split, ls in lines.items():
        write(task / f"{split}.txt", "\n".join(ls).encode())
        for ln in ls:
            write(task / ln.split()[0], jpeg_bytes(len(ln)))
    write(task / "train800val200.txt", b"images/a.jpg 0\nimages/b.jpg 1\nimages/c.jpg 2\n")  # not read
    r = open_one(tmp_path, root, vtab_entry())
    assert r.where == "layout.alternatives[0]"
    t = r.samples()
    assert t.sample_id.tolist() == ["images/a.jpg", "images/b.jpg", "images/c.jpg", "images/d.jpg"]
    assert t.columns["split"].tolist() == ["train800", "train800", "val200", "test"]
    assert t.label.tolist() == [0, 1, 2, 4]


def test_vtab_missing_names_both_layouts(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        open_one(tmp_path, tmp_path / "data", vtab_entry(), did="vtab-task")
    msg = str(e.value)
    assert "datasets.vtab-task.layout.path" in msg and "datasets.vtab-task.layout.alternatives[0].path" in msg
    assert str(tmp_path / "data" / "vtab" / "task") in msg and str(tmp_path / "data" / "vtab-1k" / "task") in msg


# ---------------------------------------------------------------- ImageNet-C
C_LAYOUT = {"kind": "imagenet-c", "path": "inc", "corruptions": ["fog", "contrast"], "severities": [1, 2]}


def test_imagenet_c_tree(tmp_path):
    root = tmp_path / "data"
    for c in ["fog", "contrast", "speckle_noise"]:  # speckle_noise: an "extra" corruption, not listed
        for s in [1, 2]:
            for syn in [SYNSETS[1], SYNSETS[2]]:
                write(root / "inc" / c / str(s) / syn / "ILSVRC2012_val_00000007.JPEG", jpeg_bytes(s))
    e = entry(C_LAYOUT, columns={"corruption": "str", "severity": "int8"})
    r = open_one(tmp_path, root, e)
    t = r.samples()
    assert_sorted_unique(t)
    assert len(t) == 8
    assert t.sample_id[0] == f"contrast/1/{SYNSETS[1]}/ILSVRC2012_val_00000007.JPEG"
    assert t.columns["severity"].dtype == np.int8
    assert sorted(set(zip(t.columns["corruption"], t.columns["severity"].tolist()))) == [
        ("contrast", 1), ("contrast", 2), ("fog", 1), ("fog", 2)]
    for sid, c, s, lab in zip(t.sample_id, t.columns["corruption"], t.columns["severity"], t.label):
        parts = sid.split("/")
        assert (parts[0], int(parts[1]), SYNSETS[lab]) == (c, s, parts[2])


def test_imagenet_c_missing_cell(tmp_path):
    root = tmp_path / "data"
    write(root / "inc" / "fog" / "1" / SYNSETS[0] / "a.JPEG", jpeg_bytes())
    e = entry(C_LAYOUT, columns={"corruption": "str", "severity": "int8"})
    with pytest.raises(FileNotFoundError, match=r"contrast/1.*layout\.corruptions"):
        open_one(tmp_path, root, e)


# ---------------------------------------------------------------- decode errors
def test_decode_errors(tmp_path):
    good = jpeg_bytes(1, size=(64, 48))
    assert decode_image(good).mode == "RGB"
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image(good[: len(good) // 2])
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"")
    with pytest.raises(ImageDecodeError, match="not an image"):
        decode_image(b"hello, this is a text file named like a jpeg\n")
    assert issubclass(ImageDecodeError, ValueError)
    assert decode_image(png_bytes(0, "RGBA")).mode == "RGB"
    img = Image.fromarray(np.zeros((8, 8), np.uint8), "L")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    assert decode_image(buf.getvalue()).mode == "RGB"


def test_bad_files_are_listed_and_fail_only_at_decode(tmp_path):
    root = tmp_path / "data"
    good = jpeg_bytes(3)
    write(root / "ina" / SYNSETS[0] / "good.jpg", good)
    write(root / "ina" / SYNSETS[0] / "trunc.jpg", good[: len(good) // 2])
    write(root / "ina" / SYNSETS[0] / "empty.jpg", b"")
    write(root / "ina" / SYNSETS[0] / "text.jpg", b"I am text\n")
    r = open_one(tmp_path, root, entry({"kind": "class-folders", "path": "ina", "class_order": "synsets"}))
    t = r.samples()
    assert len(t) == 4
    outcome = {}
    for i, sid in enumerate(t.sample_id):
        try:
            decode_image(r.read_bytes(i), name=sid)
            outcome[sid.split("/")[1]] = "ok"
        except ImageDecodeError as e:
            assert sid in str(e)
            outcome[sid.split("/")[1]] = str(e).split()[0]
    assert outcome == {"empty.jpg": "empty", "good.jpg": "ok", "text.jpg": "not", "trunc.jpg": "truncated"}


# ---------------------------------------------------------------- cue-conflict on the real images
def _cue_expect(sample_id: str):
    shape, f = sample_id.split("/")
    m = re.fullmatch(r"([a-z]+)\d+-([a-z]+)\d+\.png", f)
    assert m and m.group(1) == shape
    return CUE.index(shape), CUE.index(m.group(2))


def test_cue_conflict_demo_subset():
    root = D.DEMO_DATA_DIR
    assert (root / "cue-conflict" / "LICENSE").is_file() and (root / "cue-conflict" / "SOURCE.md").is_file()
    assert "Attribution 4.0" in (root / "cue-conflict" / "LICENSE").read_text()
    m = load_manifest()
    r = open_dataset("cue-conflict", root, m)
    t = r.samples()
    assert_sorted_unique(t)
    assert len(t) == 160
    assert t.columns["texture_label"].dtype == np.int16
    for sid, lab, tex in zip(t.sample_id, t.label, t.columns["texture_label"]):
        assert (lab, tex) == _cue_expect(sid)
    assert np.bincount(t.label, minlength=16).tolist() == [10] * 16
    assert int((t.label == t.columns["texture_label"]).sum()) == 16
    assert decode_image(r.read_bytes(0)).size == (224, 224)


def test_cue_conflict_full_set(tmp_path):
    """The published set's 1,280 file names (tests/data/cue-conflict), laid out as placeholder files."""
    names = FULL_CUE_FILES.read_text().split()
    for name in names:
        write(tmp_path / "cue-conflict" / name, b"")
    t = open_dataset("cue-conflict", tmp_path).samples()
    assert len(t) == len(names) == 1280
    same = int((t.label == t.columns["texture_label"]).sum())
    assert same == 80
    for sid, lab, tex in zip(t.sample_id[::37], t.label[::37], t.columns["texture_label"][::37]):
        assert (lab, tex) == _cue_expect(sid)


# ---------------------------------------------------------------- PUG-ImageNet
PUG_COLS = {"factor": "str", "world": "str", "camera_yaw": "float32"}
PUG_LAYOUT = {"kind": "pug-imagenet", "path": "pug", "factors": ["Worlds", "Camera_Yaw"],
              "metadata_file": "labels_pug_imagenet.csv",
              "metadata_columns": {"world": "world_name", "camera_yaw": "camera_yaw"}}


def pug_entry():
    return entry(PUG_LAYOUT, label_space="pug-imagenet-151", num_labels=151, class_subset="pug-imagenet",
                 columns=PUG_COLS, studies=["pug"])


def test_pug_imagenet(tmp_path):
    root = tmp_path / "data"
    classes = label_spaces.label_space_names("pug-imagenet-151")
    picks = ["Goldfish", "African_crocodile", "Wolf"]
    rows = ["filename,world_name,character_label,camera_yaw"]
    for factor in ["Worlds", "Camera_Yaw"]:
        for c in picks:
            name = f"{factor}_{c}_0.png"
            write(root / "pug" / factor / c / name, png_bytes())
            rows.append(f"{name},{'City' if c != 'Wolf' else 'Desert'},{c},{45 if factor == 'Camera_Yaw' else 0}")
    write(root / "pug" / "labels_pug_imagenet.csv", "\n".join(rows).encode())
    t = open_one(tmp_path, root, pug_entry()).samples()
    assert_sorted_unique(t)
    assert len(t) == 6
    for sid, lab, fac, world, yaw in zip(t.sample_id, t.label, t.columns["factor"], t.columns["world"],
                                         t.columns["camera_yaw"]):
        f, c, _ = sid.split("/")
        assert lab == sorted(classes).index(c) and fac == f
        assert world == ("Desert" if c == "Wolf" else "City")
        assert yaw == (45.0 if f == "Camera_Yaw" else 0.0)
    assert t.columns["camera_yaw"].dtype == np.float32


def test_pug_without_csv_warns_and_leaves_columns_empty(tmp_path):
    root = tmp_path / "data"
    for factor in ["Worlds", "Camera_Yaw"]:
        write(root / "pug" / factor / "Goldfish" / "a.png", png_bytes())
    r = open_one(tmp_path, root, pug_entry())
    with pytest.warns(UserWarning, match="labels_pug_imagenet.csv"):
        t = r.samples()
    assert t.columns["world"].tolist() == ["", ""] and np.isnan(t.columns["camera_yaw"]).all()


# ---------------------------------------------------------------- open / check / manifest plumbing
def test_missing_root_names_path_and_field(tmp_path):
    m = load_manifest()
    with pytest.raises(FileNotFoundError) as e:
        open_dataset("imagenet-a", tmp_path / "nowhere", m)
    msg = str(e.value)
    assert str(tmp_path / "nowhere" / "imagenet-a") in msg
    assert "datasets.imagenet-a.layout.path" in msg and "natural-adv-examples" in msg


def test_unknown_dataset_id_suggests(tmp_path):
    with pytest.raises(ValueError, match="did you mean 'imagenet-sketch'"):
        open_dataset("imagenet-skecth", tmp_path)


def test_declared_columns_must_match_reader(tmp_path):
    root = tmp_path / "data"
    write(root / "ina" / SYNSETS[0] / "a.jpg", jpeg_bytes())
    e = entry({"kind": "class-folders", "path": "ina", "class_order": "synsets"}, columns={"split": "str"})
    with pytest.raises(ValueError, match=r"columns\.split: declared"):
        open_one(tmp_path, root, e).samples()


def test_check_datasets(tmp_path):
    root = tmp_path / "data"
    for c in range(3):
        write(root / "v2" / str(c) / "a.jpeg", jpeg_bytes(c))
        write(root / "ina" / SYNSETS[c] / "a.jpeg", jpeg_bytes(c))
    write(root / "bad" / "not-a-synset" / "a.jpeg", jpeg_bytes())
    m = manifest_with(tmp_path, {
        "ok-set": entry({"kind": "class-folders", "path": "v2", "class_order": "numeric"}, expected_samples=3),
        "short-set": entry({"kind": "class-folders", "path": "ina", "class_order": "synsets"}, expected_samples=5),
        "gone-set": entry({"kind": "class-folders", "path": "gone", "class_order": "synsets"}, expected_samples=1),
        "bad-set": entry({"kind": "class-folders", "path": "bad", "class_order": "synsets"}, expected_samples=1),
    })
    st = {s.dataset_id: s for s in check_datasets(root, m)}
    assert st["ok-set"].status == "present" and st["ok-set"].found == 3 and st["ok-set"].ok
    assert st["short-set"].status == "wrong size" and (st["short-set"].found, st["short-set"].expected) == (3, 5)
    assert "found 3, expected 5" in str(st["short-set"])
    assert st["gone-set"].status == "missing" and str(root / "gone") in st["gone-set"].message
    assert "datasets.gone-set.layout.path" in st["gone-set"].message
    assert st["bad-set"].status == "error" and "not-a-synset" in st["bad-set"].message
    only = check_datasets(root, m, ids=["ok-set"], count=False)
    assert len(only) == 1 and only[0].status == "present" and only[0].found is None
    text = D.format_statuses(list(st.values()), verbose=True)
    assert "1 of 4 datasets present" in text and "datasets.gone-set.layout.path" in text


def test_one_reader_per_manifest_layout_kind():
    assert sorted(READERS) == sorted(M.LAYOUT_KINDS)
    for kind in READERS:
        assert READERS.get(kind).kind == kind


def test_unknown_layout_kind_suggests(tmp_path):
    (tmp_path / "data" / "ina").mkdir(parents=True)
    e = entry({"kind": "class-folder", "path": "ina", "class_order": "synsets"})
    with pytest.raises(UnknownName, match=r"datasets\.ds\.layout\.kind: unknown layout kind 'class-folder'; "
                                          r"did you mean 'class-folders'"):
        open_reader("ds", e, tmp_path / "data", manifest_path="m.yaml")


def test_unknown_class_order_names_the_field(tmp_path):
    root = tmp_path / "data"
    write(root / "ina" / SYNSETS[0] / "a.jpg", jpeg_bytes())
    r = open_reader("ds", entry({"kind": "class-folders", "path": "ina", "class_order": "synset"}), root)
    with pytest.raises(UnknownName, match=r"layout\.class_order: unknown class order 'synset'; did you mean 'synsets'"):
        r.samples()


def test_readers_import_no_torch_pil_or_pyarrow():
    code = ("import sys, extract.readers; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'PIL', 'pyarrow'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_close_then_read_reopens(tmp_path):
    root = tmp_path / "data"
    _tar(root / "vtab" / "task" / "test" / "0.tar", {"a.jpg": b"A", "a.cls": b"1", "b.jpg": b"B", "b.cls": b"2"})
    r = open_one(tmp_path, root, vtab_entry())
    assert r.read_bytes(0) == b"A"
    r.close()
    assert r.read_bytes(1) == b"B"
    assert pickle.loads(pickle.dumps(r)).read_bytes(0) == b"A"
    r.close()


def _read_in_worker(reader, i):
    return reader.read_bytes(i)


def test_reader_in_spawned_worker(tmp_path):
    root = tmp_path / "data"
    for c in range(3):
        write(root / "v2" / str(c) / "a.jpeg", jpeg_bytes(c))
    r = open_one(tmp_path, root, entry({"kind": "class-folders", "path": "v2", "class_order": "numeric"}))
    r.samples()
    with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
        got = ex.submit(_read_in_worker, r, 2).result(timeout=60)
    assert got == r.read_bytes(2)


def test_tar_reader_in_forked_dataloader_workers(tmp_path):
    torch = pytest.importorskip("torch")
    root = tmp_path / "data"
    payload = [jpeg_bytes(i) for i in range(12)]
    for s in range(2):
        _tar(root / "vtab" / "task" / "test" / f"{s}.tar",
             {**{f"k{i:02d}.jpg": payload[i] for i in range(s * 6, s * 6 + 6)},
              **{f"k{i:02d}.cls": b"1" for i in range(s * 6, s * 6 + 6)}})
    r = open_one(tmp_path, root, vtab_entry())
    r.read_bytes(0)  # the parent has open handles before the workers fork

    class Wrap(torch.utils.data.Dataset):
        def __len__(self):
            return len(r)

        def __getitem__(self, i):
            return i, r.read_bytes(i)

    loader = torch.utils.data.DataLoader(Wrap(), batch_size=3, num_workers=2, collate_fn=lambda b: b,
                                         multiprocessing_context="fork")
    got = {i: b for batch in loader for i, b in batch}
    assert [got[i] for i in range(12)] == payload


def test_digest_is_stable_and_sensitive(tmp_path):
    root = tmp_path / "data"
    for c in range(3):
        write(root / "v2" / str(c) / "a.jpeg", jpeg_bytes(c))
    e = entry({"kind": "class-folders", "path": "v2", "class_order": "numeric"})
    d1 = open_one(tmp_path, root, e).samples().digest()
    d2 = open_one(tmp_path, root, e).samples().digest()
    assert d1 == d2 and len(d1) == 32
    t = open_one(tmp_path, root, e).samples()
    assert SampleTable(t.sample_id, t.label[::-1].copy(), {}).digest() != d1
    assert SampleTable(t.sample_id, t.label, {"severity": np.zeros(3, np.int8)}).digest() != d1
    assert t.index("2/a.jpeg") == 2


# ---------------------------------------------------------------- demo data
def test_synthetic_imagenet_val_is_deterministic(tmp_path):
    a = make_synthetic_imagenet_val(tmp_path / "a", n=6, seed=3)
    b = make_synthetic_imagenet_val(tmp_path / "b", n=6, seed=3)
    c = make_synthetic_imagenet_val(tmp_path / "c", n=6, seed=4)
    names = sorted(p.name for p in a.glob("*.JPEG"))
    assert names == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 7)]
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes()
        assert Image.open(a / n).size in ((500, 375), (375, 500))
    assert (a / "LOC_val_solution.csv").read_text() == (b / "LOC_val_solution.csv").read_text()
    assert (a / names[0]).read_bytes() != (c / names[0]).read_bytes()


def test_demo_data_root(tmp_path):
    root = demo_data_root(tmp_path / "demo")
    assert (root / "cue-conflict").is_dir() and (root / "imagenet-val" / "LOC_val_solution.csv").is_file()
    m = load_manifest()
    st = check_datasets(root, m, suite="demo")
    assert [(s.dataset_id, s.status, s.found) for s in st] == [("imagenet-val", "present", 64),
                                                                ("cue-conflict", "present", 160)]
    r = open_dataset("imagenet-val", root, m, suite="demo")
    t = r.samples()
    assert t.sample_id[0] == "ILSVRC2012_val_00000001.JPEG" and t.label.min() >= 0
    assert r.entry["expected_samples"] == 64 and r.entry["id"] == "imagenet-val"
    sizes = {decode_image(r.read_bytes(i)).size for i in range(len(t))}
    assert sizes <= {(500, 375), (375, 500)}
    mtime = (root / "imagenet-val" / "ILSVRC2012_val_00000001.JPEG").stat().st_mtime_ns
    demo_data_root(tmp_path / "demo")  # second call: nothing regenerated
    assert (root / "imagenet-val" / "ILSVRC2012_val_00000001.JPEG").stat().st_mtime_ns == mtime
    assert open_dataset("imagenet-val", root, m).samples().digest() == t.digest()


def test_demo_root_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv(D.DEMO_ENV_VAR, str(tmp_path / "envdemo"))
    root = demo_data_root(n=4)
    assert root == tmp_path / "envdemo" and len(list((root / "imagenet-val").glob("*.JPEG"))) == 4
    shutil.rmtree(root)
