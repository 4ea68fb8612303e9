"""Golden sample lists: every reader layout gives the same order, ids, labels, columns and bytes as before.

The expected values in GOLDEN were produced once by the pre-split reader (extract/readers.py at commit
d9b2433) on the fixtures below and the bundled demo data. They pin the on-disk contract: a store
written by an older version resumes only if ``SampleTable.digest()`` and the sample order are unchanged.
Never regenerate them from the current code; a mismatch is a behaviour change, not a stale constant.

Fixture images are short distinct byte strings (the readers never decode), so the values do not
depend on the image encoder.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import pytest
import yaml

from extract.datasets import demo_data_root, open_dataset
from schemas import label_spaces
from schemas.manifest import load_manifest
from test_readers import _tar

SYNSETS = list(label_spaces.imagenet_synsets())


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def _img(tag: str) -> bytes:
    return f"image:{tag}".encode()


def _entry(layout: dict, **over) -> dict:
    e = {"title": "fixture", "source": "made by the test", "layout": layout, "label_space": "imagenet-1k",
         "num_labels": 1000, "logit_space": "imagenet-1k", "class_subset": None, "label_kind": "single",
         "columns": {}, "expected_samples": 0, "studies": ["robustness"], "group": None}
    e.update(over)
    return e


# Each builder writes its data under `root` and returns the manifest entry of dataset "ds".
def cf_synsets(root: Path) -> dict:
    for k, c in enumerate([SYNSETS[5], SYNSETS[0], SYNSETS[999], SYNSETS[17]]):
        for j in range(3):
            _write(root / "ina" / c / f"img{j}.{'JPEG' if j else 'jpg'}", _img(f"{c}{j}"))
    _write(root / "ina" / "README.txt", b"not an image")
    _write(root / "ina" / SYNSETS[5] / ".hidden.jpg", b"junk")
    _write(root / "ina" / SYNSETS[5] / "notes.txt", b"junk")
    return _entry({"kind": "class-folders", "path": "ina", "class_order": "synsets"})


def cf_synsets_basename(root: Path) -> dict:
    for k, c in enumerate([SYNSETS[3], SYNSETS[1]]):
        for j in range(2):
            _write(root / "ina" / c / f"{c}_{j}.png", _img(f"{c}{j}"))
    return _entry({"kind": "class-folders", "path": "ina", "class_order": "synsets", "sample_id": "basename"})


def cf_numeric(root: Path) -> dict:
    for c in range(12):
        _write(root / "v2" / str(c) / f"{c:03d}abc.jpeg", _img(str(c)))
        _write(root / "v2" / str(c) / "zz.jpeg", _img(f"zz{c}"))
    return _entry({"kind": "class-folders", "path": "v2", "class_order": "numeric"})


def cf_sorted_own(root: Path) -> dict:
    for c in ["zebra", "apple", "mango", "Banana"]:
        _write(root / "own" / c / "x.png", _img(c))
        _write(root / "own" / c / "y.webp", _img(c + "y"))
    return _entry({"kind": "class-folders", "path": "own", "class_order": "sorted"}, label_space="own", num_labels=5)


def cf_names(root: Path) -> dict:
    for c in ["bear", "Airplane", "truck", "boat"]:
        _write(root / "names" / c / "a.png", _img(c))
    return _entry({"kind": "class-folders", "path": "names", "class_order": "names"},
                  label_space="cue-conflict-16", num_labels=16)


def _val(root: Path, n: int = 7) -> list[int]:
    labels = [(7 * i + 3) % 1000 for i in range(n)]
    for i in range(n):
        _write(root / f"ILSVRC2012_val_{i + 1:08d}.JPEG", _img(f"val{i}"))
    return labels


VAL_LAYOUT = {"kind": "flat-folder", "path": "val", "class_folders_fallback": True,
              "labels_file": ["LOC_val_solution.csv", "../LOC_val_solution.csv", "labels.txt"]}


def flat_loc_csv(root: Path) -> dict:
    labels = _val(root / "val")
    rows = ["ImageId,PredictionString"] + [f"ILSVRC2012_val_{i + 1:08d},{SYNSETS[x]} 1 2 30 40 {SYNSETS[x]} 5 6 7 8"
                                           for i, x in enumerate(labels)][::-1]
    _write(root / "LOC_val_solution.csv", "\n".join(rows))
    return _entry(VAL_LAYOUT)


def flat_txt_index(root: Path) -> dict:
    labels = _val(root / "val")
    _write(root / "val" / "labels.txt", "\n".join(str(x) for x in labels))
    return _entry(VAL_LAYOUT)


def flat_txt_synset(root: Path) -> dict:
    labels = _val(root / "val")
    _write(root / "val" / "labels.txt", "# a comment\n" + "\n".join(SYNSETS[x] for x in labels))
    return _entry(VAL_LAYOUT)


def flat_pairs(root: Path) -> dict:
    labels = _val(root / "val")
    _write(root / "val" / "labels.txt",
           "file label\n" + "\n".join(f"ILSVRC2012_val_{i + 1:08d} {x}" for i, x in enumerate(labels)))
    return _entry(VAL_LAYOUT)


def flat_unnumbered(root: Path) -> dict:
    for i, name in enumerate(["b.jpg", "a.jpg", "c.png"]):
        _write(root / "val" / name, _img(name))
    _write(root / "val" / "labels.txt", "4\n9\n2\n")
    return _entry(VAL_LAYOUT)


def flat_class_fallback(root: Path) -> dict:
    for i, x in enumerate(_val(root / "tmp")):
        name = f"ILSVRC2012_val_{i + 1:08d}.JPEG"
        _write(root / "val" / SYNSETS[x] / name, _img(f"val{i}"))
    return _entry(VAL_LAYOUT)


def fl_csv_label_lists(root: Path) -> dict:
    for i in range(5):
        _write(root / "lst" / "images" / f"im{i}.jpg", _img(f"im{i}"))
    _write(root / "lst" / "list.csv", "path,label,origin\n" + "\n".join(
        ['images/im3.jpg,"[7, 8, 9]",a', "images/im0.jpg,[1],b", 'images/im2.jpg,"2;4",c', "images/im1.jpg,[],d",
         f"images/im4.jpg,{SYNSETS[11]}|12,e"]))
    return _entry({"kind": "file-list", "path": "lst", "files": "*.csv", "path_column": "path", "label_list": True,
                   "extra_columns": {"origin": "origin"}},
                  label_kind="multi", columns={"label_set": "int32[max]", "origin": "str"})


def fl_csv_splits(root: Path) -> dict:
    for i in range(6):
        _write(root / "pics" / f"p{i}.png", _img(f"p{i}"))
    _write(root / "sp" / "train.csv", "filename,label,score\n../pics/p4.png,3,0.5\n../pics/p1.png,,1.5\n"
                                      f"../pics/p0.png,{SYNSETS[42]},2\n")
    _write(root / "sp" / "test.tsv", "filename\tlabel\tscore\n../pics/p5.png\t-1\t3\n../pics/p2.png\t7\t4.25\n")
    return _entry({"kind": "file-list", "path": "sp", "files": {"train": "train.csv", "test": "*.tsv"},
                   "extra_columns": {"score": "score"}}, columns={"split": "str", "score": "float32"})


def fl_txt_splits(root: Path) -> dict:
    task = root / "vtab-1k" / "task"
    lines = {"train800": ["images/b.jpg 1", "images/a.jpg 0", "images/e f.jpg"], "val200": ["images/c.jpg 2"],
             "test": ["images/d.jpg 4"]}
    for split, ls in lines.items():
        _write(task / f"{split}.txt", "\n".join(ls))
    for name in ["a", "b", "c", "d", "e f"]:
        _write(task / "images" / f"{name}.jpg", _img(name))
    _write(task / "train800val200.txt", "images/a.jpg 0\n")  # not read
    return _entry({"kind": "webdataset", "path": "vtab/task", "shards": "**/*.tar", "split_from": "path",
                   "splits": ["train800", "val200", "test"],
                   "alternatives": [{"kind": "file-list", "path": "vtab-1k/task",
                                     "files": {"train800": "train800.txt", "val200": "val200.txt",
                                               "test": "test.txt"}}]},
                  label_space="own", num_labels=5, columns={"split": "str"}, studies=["transfer"], group="natural")


def fl_parquet_embedded(root: Path) -> dict:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    imgs = [_img(f"pq{i}") for i in range(5)]
    struct = pa.array([{"bytes": b, "path": f"{i}.jpg"} for i, b in enumerate(imgs)])
    table = pa.table({"image": struct, "label": pa.array([[3], [10, 20], [999], [0, 1, 2, 3], [5]],
                                                         pa.list_(pa.int64())),
                      "origin": [f"o{i}" for i in range(5)]})
    (root / "hard" / "data").mkdir(parents=True)
    pq.write_table(table, root / "hard" / "data" / "validation-00001-of-00002.parquet", row_group_size=2)
    pq.write_table(table.slice(1, 3), root / "hard" / "data" / "validation-00000-of-00002.parquet")
    return _entry({"kind": "file-list", "path": "hard", "files": "**/*.parquet", "image_column": "image",
                   "label_column": "label", "label_list": True, "extra_columns": {"origin": "origin"}},
                  label_kind="multi", columns={"label_set": "int32[max]", "origin": "str"})


def fl_parquet_paths(root: Path) -> dict:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    for i in range(3):
        _write(root / "pl" / "img" / f"{i}.png", _img(f"pl{i}"))
    pq.write_table(pa.table({"file": ["img/2.png", "img/0.png", "img/1.png"], "label": [SYNSETS[2], "4", "5"]}),
                   root / "pl" / "list.parquet")
    return _entry({"kind": "file-list", "path": "pl", "files": "list.parquet", "path_column": "file"})


def _vtab(layout_over: dict | None = None) -> dict:
    layout = {"kind": "webdataset", "path": "vtab/task", "shards": "**/*.tar", "split_from": "path",
              "splits": ["train800", "val200", "test"]}
    return _entry({**layout, **(layout_over or {})}, label_space="own", num_labels=5, columns={"split": "str"},
                  studies=["transfer"], group="natural")


def wds_path_splits(root: Path) -> dict:
    def shard(rel: str, keys: list[tuple[str, int]]) -> None:
        members = {}
        for k, lab in keys:
            members[f"{k}.jpg"] = _img(f"{rel}/{k}")
            members[f"{k}.cls"] = f"{lab}\n".encode()
        members["__junk__.txt"] = b"ignored: no image"
        _tar(root / "vtab" / "task" / rel, members)

    shard("train800/000000.tar", [("s001", 0), ("s000", 4), ("sub/s003", 2)])
    shard("train800/000001.tar", [("s002", 1)])
    shard("val200-000000.tar", [("v000", 2)])
    shard("test/0.tar", [("t000", 3), ("t001", 3)])
    _write(root / "vtab" / "task" / "classnames.txt", "a\nb\nc\nd\ne\n")
    return _vtab()


def wds_json(root: Path) -> dict:
    members = {}
    for i, split in enumerate(["train800", "val200", "test", "test"]):
        members[f"k{3 - i}.png"] = _img(f"k{i}")
        members[f"k{3 - i}.json"] = json.dumps({"label": i + 1, "split": split}).encode()
    _tar(root / "vtab" / "task" / "all.tar", members)
    return _vtab({"split_from": "json", "label_from": "json"})


def wds_no_split(root: Path) -> dict:
    _tar(root / "shards" / "b.tar", {"x.webp": _img("bx"), "x.cls": b"7", "y.jpg": _img("by"), "y.cls": b"8"})
    _tar(root / "shards" / "a.tar", {"x.jpg": _img("ax"), "x.cls": SYNSETS[9].encode()})
    return _entry({"kind": "webdataset", "path": "shards"})


def imagenet_c(root: Path) -> dict:
    for c in ["fog", "contrast", "speckle_noise"]:
        for s in [1, 2, 3]:
            for syn in [SYNSETS[2], SYNSETS[1]]:
                _write(root / "inc" / c / str(s) / syn / "ILSVRC2012_val_00000007.JPEG", _img(f"{c}{s}{syn}"))
                _write(root / "inc" / c / str(s) / syn / "ILSVRC2012_val_00000003.JPEG", _img(f"{c}{s}{syn}3"))
    return _entry({"kind": "imagenet-c", "path": "inc", "corruptions": ["fog", "contrast"], "severities": [2, 1]},
                  columns={"corruption": "str", "severity": "int8"})


def cue_conflict(root: Path) -> dict:
    for shape, tex in [("cat", "elephant"), ("cat", "cat"), ("bear", "clock"), ("airplane", "knife")]:
        for i in (1, 2):
            _write(root / "cue" / shape / f"{shape}{i}-{tex}{3 - i}.png", _img(f"{shape}{i}{tex}"))
    return _entry({"kind": "cue-conflict", "path": "cue"}, label_space="cue-conflict-16", num_labels=16,
                  class_subset="cue-conflict-16", columns={"texture_label": "int16"})


PUG_LAYOUT = {"kind": "pug-imagenet", "path": "pug", "factors": ["Worlds", "Camera_Yaw"],
              "metadata_file": "labels_pug_imagenet.csv",
              "metadata_columns": {"world": "world_name", "camera_yaw": "camera_yaw"}}


def _pug_entry(layout: dict) -> dict:
    return _entry(layout, label_space="pug-imagenet-151", num_labels=151, class_subset="pug-imagenet",
                  columns={"factor": "str", "world": "str", "camera_yaw": "float32"}, studies=["pug"])


def pug_imagenet(root: Path) -> dict:
    rows = ["filename,world_name,character_label,camera_yaw"]
    for factor in ["Worlds", "Camera_Yaw"]:
        for c in ["Goldfish", "African_crocodile", "wolf"]:
            name = f"{factor}_{c}_0.png"
            _write(root / "pug" / factor / c / name, _img(name))
            if c != "African_crocodile" or factor == "Worlds":
                rows.append(f"{name},{'City' if c != 'wolf' else 'Desert'},{c},{45 if factor == 'Camera_Yaw' else 0}")
    _write(root / "pug" / "labels_pug_imagenet.csv", "\n".join(rows))
    return _pug_entry(PUG_LAYOUT)


def pug_no_csv(root: Path) -> dict:
    for factor in ["Worlds", "Camera_Yaw"]:
        _write(root / "pug" / factor / "Goldfish" / "a.png", _img(factor))
    return _pug_entry(PUG_LAYOUT)


BUILDERS = [cf_synsets, cf_synsets_basename, cf_numeric, cf_sorted_own, cf_names, flat_loc_csv, flat_txt_index,
            flat_txt_synset, flat_pairs, flat_unnumbered, flat_class_fallback, fl_csv_label_lists, fl_csv_splits,
            fl_txt_splits, fl_parquet_embedded, fl_parquet_paths, wds_path_splits, wds_json, wds_no_split,
            imagenet_c, cue_conflict, pug_imagenet, pug_no_csv]


def observe(reader) -> dict:
    """What the golden values pin: size, digest, the first ids, every sample's bytes in order, class names."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = reader.samples()
    h = hashlib.sha256()
    for i in range(len(t)):
        b = reader.read_bytes(i)
        h.update(len(b).to_bytes(8, "little") + b)
    names = reader.class_names()
    return {"n": len(t), "digest": t.digest(), "first": t.sample_id[:2].tolist(), "bytes": h.hexdigest()[:16],
            "columns": sorted(t.columns), "where": reader.where, "notes": len(reader.notes),
            "class_names": None if names is None else hashlib.sha256("\n".join(names).encode()).hexdigest()[:12]}


def open_fixture(builder, tmp_path: Path):
    root = tmp_path / "data"
    e = builder(root)
    p = tmp_path / "fixture_manifest.yaml"
    p.write_text(yaml.safe_dump({"datasets": {"ds": e}, "suites": {}}, sort_keys=False))
    return open_dataset("ds", root, load_manifest(p))


IMAGENET_1K_NAMES = "571ae1c583b4"  # observe()'s class_names for label space imagenet-1k


def _pinned(n: int, digest: str, first: list[str], bytes_: str | None = None, *, columns: tuple[str, ...] = (),
            where: str = "layout", notes: int = 0, class_names: str | None = IMAGENET_1K_NAMES) -> dict:
    """An expected observe() result; fields left out take the common value (no bytes: not pinned)."""
    out = {"n": n, "digest": digest, "first": first, "bytes": bytes_, "columns": list(columns), "where": where,
           "notes": notes, "class_names": class_names}
    if bytes_ is None:
        del out["bytes"]
    return out


# Produced by the pre-split reader at commit d9b2433; see the module docstring before editing.
# The flat-folder labels-file variants and the class-folder fallback list the same samples.
FLAT_VAL = _pinned(7, 'ee75ecd7f41ea5bd7377018016b33730',
                   ['ILSVRC2012_val_00000001.JPEG', 'ILSVRC2012_val_00000002.JPEG'], '088f58ac1c5fc8d9')

GOLDEN: dict[str, dict] = {
    'cf_synsets':
        _pinned(12, '48666fa19ef9409ea3298cb96b25242b', ['n01440764/img0.jpg', 'n01440764/img1.JPEG'],
                'cfaa33153844b2a8'),
    'cf_synsets_basename':
        _pinned(4, '92c690a219858478d910bae2da07b2bf', ['n01443537_0.png', 'n01443537_1.png'], 'aa335a1a7ed897c7'),
    'cf_numeric':
        _pinned(24, '7dcec463ef7c7423d4695241aff2c08a', ['0/000abc.jpeg', '0/zz.jpeg'], 'dfca1054fc9d9cfe'),
    'cf_sorted_own':
        _pinned(8, 'a296be48a0555e26e61a5c7131480bbf', ['Banana/x.png', 'Banana/y.webp'], '7ac76a3e75041fe5',
                class_names='16f7934a2748'),
    'cf_names':
        _pinned(4, '66a75774396555732f0ba145cf1923af', ['Airplane/a.png', 'bear/a.png'], '20be6e9b990e091f',
                class_names='e0fb2a056541'),
    'flat_loc_csv': FLAT_VAL,
    'flat_txt_index': FLAT_VAL,
    'flat_txt_synset': FLAT_VAL,
    'flat_pairs': FLAT_VAL,
    'flat_unnumbered':
        _pinned(3, '53badcb1efb6e592a64ad969f2010943', ['a.jpg', 'b.jpg'], 'e347a14c73eb8c72'),
    'flat_class_fallback': {**FLAT_VAL, 'notes': 1},  # the same samples, read as class folders
    'fl_csv_label_lists':
        _pinned(5, '4b4242d2f015f86a6f6ff5a5f0169c52', ['images/im0.jpg', 'images/im1.jpg'], '0da10e8736003298',
                columns=['label_set', 'origin']),
    'fl_csv_splits':
        _pinned(5, 'e66b2fa2a54fde6c8c587b8229098b7d', ['../pics/p0.png', '../pics/p1.png'], 'e2c78ce8682c1a26',
                columns=['score', 'split']),
    'fl_txt_splits':
        _pinned(5, '56d2893c4f023919332f1f9cb60ee410', ['images/a.jpg', 'images/b.jpg'], 'adb3c89c09228224',
                columns=['split'], where='layout.alternatives[0]', class_names=None),
    'fl_parquet_embedded':
        _pinned(8, '5423876117d5d974a0c7803674a1928c',
                ['data/validation-00000-of-00002.parquet#000000', 'data/validation-00000-of-00002.parquet#000001'],
                '2485872e9a9e7497', columns=['label_set', 'origin']),
    'fl_parquet_paths':
        _pinned(3, '4cfde88f8e08a21e5076d2c0cb9300e8', ['img/0.png', 'img/1.png'], '05ea60c7f5ee6ba9'),
    'wds_path_splits':
        _pinned(7, '5840f216acf4f7c0af6307a48cdf0332', ['test/0.tar/t000', 'test/0.tar/t001'], 'cbf541cab9822788',
                columns=['split'], class_names='dbbc47f2a90b'),
    'wds_json':
        _pinned(4, '9da20aeae7aa3cb625e5073dd0300ffd', ['all.tar/k0', 'all.tar/k1'], 'a0c51e7b0a2e5de6',
                columns=['split'], class_names=None),
    'wds_no_split':
        _pinned(3, '4d6cdf87452bbc184e2320d6b880e7d5', ['a.tar/x', 'b.tar/x'], 'a4b6b4d74b4cb18b'),
    'imagenet_c':
        _pinned(16, '7e672174f3aa1504d3b2164019ab5750',
                ['contrast/1/n01443537/ILSVRC2012_val_00000003.JPEG',
                 'contrast/1/n01443537/ILSVRC2012_val_00000007.JPEG'],
                '3c5de03ecb4d17c0', columns=['corruption', 'severity']),
    'cue_conflict':
        _pinned(8, '1a8798e1a0731483c7904bc02dea3dfb',
                ['airplane/airplane1-knife2.png', 'airplane/airplane2-knife1.png'], 'bfa42500f9c25913',
                columns=['texture_label'], class_names='e0fb2a056541'),
    'pug_imagenet':
        _pinned(6, '78fcf0c086d9029dec251b0bad8b65d5',
                ['Camera_Yaw/African_crocodile/Camera_Yaw_African_crocodile_0.png',
                 'Camera_Yaw/Goldfish/Camera_Yaw_Goldfish_0.png'],
                '7b1f2f0cbd55d4fb', columns=['camera_yaw', 'factor', 'world'], notes=1, class_names='3d04d087db50'),
    'pug_no_csv':
        _pinned(2, '9582a900741ac8527722f319cdf6b36b', ['Camera_Yaw/Goldfish/a.png', 'Worlds/Goldfish/a.png'],
                '564696809308bc52', columns=['camera_yaw', 'factor', 'world'], notes=1, class_names='3d04d087db50'),
}

GOLDEN_DEMO: dict[str, dict] = {
    'imagenet-val':
        _pinned(64, '74f2b3db625d33ff1a073faddc5c8c45',
                ['ILSVRC2012_val_00000001.JPEG', 'ILSVRC2012_val_00000002.JPEG']),
    'cue-conflict':
        _pinned(160, '4fc593a391cf7bc66df77665ed998101',
                ['airplane/airplane1-bicycle2.png', 'airplane/airplane1-chair2.png'], '402386facd4bf41e',
                columns=['texture_label'], class_names='e0fb2a056541'),
}


@pytest.mark.parametrize("builder", BUILDERS, ids=[b.__name__ for b in BUILDERS])
def test_layout_fixture_matches_pre_split_reader(builder, tmp_path):
    assert observe(open_fixture(builder, tmp_path)) == GOLDEN[builder.__name__]


@pytest.mark.parametrize("dataset", ["imagenet-val", "cue-conflict"])
def test_demo_data_matches_pre_split_reader(dataset, tmp_path):
    root = demo_data_root(tmp_path / "demo")
    got = observe(open_dataset(dataset, root, load_manifest(), suite="demo"))
    if dataset == "imagenet-val":
        got.pop("bytes")  # synthetic JPEGs: their bytes depend on the installed image encoder
    assert got == GOLDEN_DEMO[dataset]
