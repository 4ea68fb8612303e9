"""``analyze import``: published per-image files in, the published numbers out; malformed files refused.

The files are the ones bundled in analyze/published (ImageNet-X's ResNet50 and ViT predictions, ten
model-vs-human observers on cue-conflict) and small excerpts of them written here. Every expected number is
computed in this file from the raw CSV with plain csv/numpy, never by the code under test.
"""
from __future__ import annotations

import csv
import gzip
import itertools
import math
import re

import numpy as np
import polars as pl
import pytest

IMX_FACTORS = ("pose", "background", "pattern", "color", "smaller", "shape", "partial_view", "subcategory",
               "texture", "larger", "darker", "object_blocking", "person_blocking", "style", "brighter",
               "multiple_objects")
HUMAN_HEAD = "subj,session,trial,rt,object_response,category,condition,imagename"
CATEGORIES = ("airplane", "bear", "bicycle", "bird", "boat", "bottle", "car", "cat", "chair", "clock", "dog",
              "elephant", "keyboard", "knife", "oven", "truck")


def read_csv(path) -> list[dict]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", newline="") as f:
        return list(csv.DictReader(f))


def annotations(kit) -> dict[str, tuple[int, bool, int]]:
    """ImageNet-X: file name -> (class, prototype, top factor or -1), straight from the bundled file."""
    out = {}
    for row in read_csv(kit.LABELS / "imagenet_x_val_top_factor.csv.gz"):
        flags = [int(row[f]) for f in IMX_FACTORS]
        out[row["file_name"]] = (int(row["class"]), bool(int(row["prototype"])), flags.index(1) if 1 in flags else -1)
    return out


def run_report(cli, store, out, studies: str):
    """``analyze report`` of ``studies`` without replicates; it must succeed."""
    rep = cli("report", store, "--out", out, "--n-boot", "0", "--quiet", "--studies", studies)
    assert rep.returncode == 0, rep.stderr
    return rep


def results(out) -> dict:
    table = pl.read_parquet(out / "results.parquet")
    return {(r["model"], r["dataset"], r["transform"], r["metric"]): r for r in table.iter_rows(named=True)}


@pytest.fixture
def cli(capsys):
    """``analyze ARGS`` in this process (the CLI's own code, without a new interpreter per call): rc, stdout, stderr."""
    from types import SimpleNamespace

    from analyze.cli import main

    def run(*args, timeout=None):
        capsys.readouterr()
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=rc, stdout=out, stderr=err)

    return run


def write_lines(path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


# ---------------------------------------------------------------------------------------------------------
# ImageNet-X: the whole published files, through the command line.

@pytest.fixture(scope="module")
def imagenet_x_report(kit, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("imx")
    store, out = tmp / "s.zarr", tmp / "out"
    files = [kit.PUBLISHED / "imagenet-x" / f"{m}.csv.gz" for m in ("ResNet50", "ViT")]
    done = kit.run_cli("import", store, *files, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "imagenet-val/center/ResNet50" in done.stdout and "top1-probability" in done.stdout
    rep = kit.run_cli("report", store, "--out", out, "--n-boot", "0", "--quiet", "--pairs", "ResNet50:ViT",
                      "--studies", "robustness,imagenet_x,calibration", timeout=600)
    assert rep.returncode == 0, rep.stderr
    return store, out


def test_imagenet_x_import_reproduces_top1_ece_and_error_ratios_from_the_csv(kit, imagenet_x_report):
    store, out = imagenet_x_report
    rows = results(out)
    ann = annotations(kit)
    for model in ("ResNet50", "ViT"):
        raw = read_csv(kit.PUBLISHED / "imagenet-x" / f"{model}.csv.gz")
        # Top-1 over the images the bundled annotations label (prototypes included), as the import labels them.
        labelled = [r for r in raw if r["file_name"] in ann]
        correct = [int(r["predicted_class"]) == ann[r["file_name"]][0] for r in labelled]
        top1 = rows[(model, "imagenet-val", "center", "top1")]
        assert top1["n"] == len(labelled) == 48868
        assert top1["value"] == pytest.approx(sum(correct) / len(correct), abs=1e-12)
        # ECE from the published probabilities (the decision's confidence), 15 bins.
        conf = [float(r["predicted_probability"]) for r in labelled]
        assert rows[(model, "imagenet-val", "center", "ece")]["value"] == pytest.approx(kit.ref_ece(conf, correct),
                                                                                        abs=1e-6)
        # Error ratios: prototypes dropped, the annotation's class, the top factor.
        kept = [r for r in raw if r["file_name"] in ann and not ann[r["file_name"]][1]]
        ok = [int(r["predicted_class"]) == ann[r["file_name"]][0] for r in kept]
        err_all = 1 - sum(ok) / len(ok)
        for j, name in enumerate(IMX_FACTORS):
            members = [c for r, c in zip(kept, ok) if ann[r["file_name"]][2] == j]
            expected = (1 - sum(members) / len(members)) / err_all
            assert rows[(model, "imagenet-val", "center", f"error_ratio:{name}")]["value"] == pytest.approx(expected,
                                                                                                            rel=1e-9)
    # The published table (ImageNet-X README), ResNet50 pose and ViT brighter.
    assert abs(rows[("ResNet50", "imagenet-val", "center", "error_ratio:pose")]["value"] - 0.694739) < 1e-4
    assert abs(rows[("ViT", "imagenet-val", "center", "error_ratio:brighter")]["value"] - 0.782348) < 1e-4


def test_imagenet_x_import_pairs_and_says_where_the_runs_come_from(kit, cli, imagenet_x_report):
    store, out = imagenet_x_report
    report = (out / "report.md").read_text()
    assert "`ResNet50`, `ViT` on imagenet-val: ImageNet-X prediction file" in report
    assert "Pairs (given with `--pairs`): `ResNet50` − `ViT`" in report
    diffs = pl.read_parquet(out / "differences.parquet")
    rows = results(out)
    d = diffs.filter((pl.col("metric") == "top1") & (pl.col("dataset") == "imagenet-val")).row(0, named=True)
    assert (d["model_a"], d["model_b"]) == ("ResNet50", "ViT")
    assert d["diff"] == pytest.approx(rows[("ResNet50", "imagenet-val", "center", "top1")]["value"]
                                      - rows[("ViT", "imagenet-val", "center", "top1")]["value"], abs=1e-12)
    import schemas

    assert [p for p in schemas.validate(store) if p.severity == "error"] == []
    attrs = dict(__import__("zarr").open_group(str(store), mode="r")["imagenet-val/center/ViT"].attrs)
    assert attrs["logit_kind"] == "top1-probability" and attrs["imported"]["file"] == "ViT.csv.gz"
    # Importing the same file again changes nothing; another file under the same name is refused.
    before = kit.tree_hash(store)
    again = cli("import", store, kit.PUBLISHED / "imagenet-x" / "ViT.csv.gz", timeout=300)
    assert again.returncode == 0 and "already there (same file)" in again.stdout
    clash = cli("import", store, kit.PUBLISHED / "imagenet-x" / "ViT.csv.gz", "--model", "ResNet50", timeout=300)
    assert clash.returncode == 2 and "--overwrite" in clash.stderr
    assert kit.tree_hash(store) == before


# ---------------------------------------------------------------------------------------------------------
# model-vs-human: ten human observers on cue-conflict.

def shape_bias_from_csv(path) -> tuple[float, float, float]:
    """model-vs-human's ShapeBias from one raw CSV: texture = the stimulus name after the dash, digits removed;
    rows with shape == texture dropped; "na" counts as neither. Fractions over the answered, kept images."""
    shape_hits = texture_hits = kept = 0
    for r in read_csv(path):
        stimulus = r["imagename"].split("_")[-1]
        texture = re.sub(r"\d", "", stimulus.split(".")[0].split("-")[-1])
        if r["category"] == texture:
            continue
        if r["object_response"] == "na":
            continue
        kept += 1
        shape_hits += r["object_response"] == r["category"]
        texture_hits += r["object_response"] == texture
    return shape_hits / (shape_hits + texture_hits), shape_hits / kept, texture_hits / kept


def test_human_observers_shape_bias_equals_model_vs_human_from_the_raw_files(kit, cli, tmp_path):
    files = sorted((kit.PUBLISHED / "model-vs-human").glob("cue-conflict_subject-*_session_1.csv.gz"))
    assert len(files) == 10
    store, out = tmp_path / "s.zarr", tmp_path / "out"
    done = cli("import", store, *files)
    assert done.returncode == 0, done.stderr
    run_report(cli, store, out, "shape_bias")
    rows = results(out)
    biases = []
    for f in files:
        subject = re.match(r"cue-conflict_(subject-\d+)_session", f.name).group(1)
        bias, shape_frac, texture_frac = shape_bias_from_csv(f)
        biases.append(bias)
        assert rows[(subject, "cue-conflict", "center", "shape_bias")]["value"] == pytest.approx(bias, abs=1e-12)
        assert rows[(subject, "cue-conflict", "center", "shape_fraction")]["value"] == pytest.approx(shape_frac, abs=1e-12)
        assert rows[(subject, "cue-conflict", "center", "texture_fraction")]["value"] == pytest.approx(texture_frac,
                                                                                                      abs=1e-12)
    assert 0.9 < float(np.mean(biases)) < 1.0  # humans decide by shape (Geirhos et al. 2019: about 0.96)
    report = (out / "report.md").read_text()
    assert "no answer (object_response na)" in report  # why the "na" rows are left out
    assert "the decision is the category of the decided class, or the decided category itself" in report
    # Labels and texture come out as the cue-conflict reader gives them: <shape>/<file>, texture after the dash.
    import zarr

    g = zarr.open_group(str(store), mode="r")["cue-conflict"]
    ids = np.asarray([str(s) for s in g["sample_id"][:].tolist()])
    assert len(ids) == 1280 and "bird/bird3-bird2.png" in ids.tolist()
    i = ids.tolist().index("dog/dog10-bicycle1.png")
    assert (int(g["label"][i]), int(g["texture_label"][i])) == (CATEGORIES.index("dog"), CATEGORIES.index("bicycle"))


def test_other_model_vs_human_datasets_give_16_class_accuracy(kit, cli, tmp_path):
    """A model-vs-human dataset other than cue-conflict (here sketch, with the published columns) becomes
    mvh-sketch, read by the robustness table as 16-class accuracy: decision == category."""
    rows = [("bear", "bear", "n02132136_10.png"), ("dog", "cat", "n02123045_3.png"), ("na", "boat", "n04273569_7.png"),
            ("oven", "oven", "n04111531_2.png"), ("car", "truck", "n03417042_1.png")]
    lines = [HUMAN_HEAD] + [f"subject-01,1,{i + 1},0.9,{r},{c},0,{i + 1:04d}_sk_s01_0_{c}_00_{name}"
                            for i, (r, c, name) in enumerate(rows)]
    f = write_lines(tmp_path / "sketch_subject-01_session_1.csv", lines)
    store, out = tmp_path / "s.zarr", tmp_path / "out"
    done = cli("import", store, f)
    assert done.returncode == 0, done.stderr
    assert "mvh-sketch/center/subject-01" in done.stdout
    run_report(cli, store, out, "robustness")
    answered = [(r, c) for r, c, _ in rows if r != "na"]
    expected = sum(r == c for r, c in answered) / len(answered)
    row = results(out)[("subject-01", "mvh-sketch", "center", "top1")]
    assert (row["value"], row["n"]) == (pytest.approx(expected), len(answered))


# ---------------------------------------------------------------------------------------------------------
# Generic tables: logits, probabilities and decisions, with sample ids.

def test_generic_logits_probabilities_and_decisions(kit, cli, tmp_path):
    rng = np.random.default_rng(3)
    n = 40
    ids = kit.val_ids(n)
    label = rng.integers(0, 1000, n)
    logits = rng.normal(size=(n, 1000)).astype(np.float32)
    logits[np.arange(n)[: n // 2], label[: n // 2]] += 6.0  # half of them right
    store, out = tmp_path / "s.zarr", tmp_path / "out"
    np.savez(tmp_path / "mine.npz", sample_id=ids, logits=logits, label=label)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"sample_id": ids, "probabilities": list(probs), "label": label}), tmp_path / "probs.parquet")
    dec = (np.argmax(logits, axis=1) + np.arange(n) % 2) % 1000   # every other decision moved off the argmax
    write_lines(tmp_path / "decided.csv", ["sample_id,decision,label"] + [f"{s},{d},{y}" for s, d, y in zip(ids, dec, label)])
    for f in ("mine.npz", "probs.parquet", "decided.csv"):
        done = cli("import", store, tmp_path / f, "--dataset", "imagenet-val")
        assert done.returncode == 0, (f, done.stderr)
    run_report(cli, store, out, "robustness,calibration")
    rows = results(out)
    conf, correct = [], []
    for i in range(n):
        p = kit.ref_softmax(logits[i])
        conf.append(max(p))
        correct.append(kit.ref_argmax(logits[i]) == label[i])
    for model in ("mine", "probs"):
        assert rows[(model, "imagenet-val", "center", "top1")]["value"] == pytest.approx(np.mean(correct), abs=1e-12)
        assert rows[(model, "imagenet-val", "center", "ece")]["value"] == pytest.approx(kit.ref_ece(conf, correct), abs=1e-6)
    assert rows[("decided", "imagenet-val", "center", "top1")]["value"] == pytest.approx(np.mean(dec == label), abs=1e-12)
    # Decisions have no confidence: no ECE, and the report says why.
    assert ("decided", "imagenet-val", "center", "ece") not in rows
    report = (out / "report.md").read_text()
    assert "Not computed for decided" in report
    assert "imagenet-val/center/decided: calibration on imagenet-val not computed: the run holds decisions only" in report


def test_npy_with_ids_and_a_labels_file_for_a_dataset_without_bundled_labels(kit, cli, tmp_path):
    rng = np.random.default_rng(5)
    ids = [f"{c}/img{c}.jpeg" for c in (3, 7, 9, 11, 500)]   # imagenet-v2's layout: <class folder>/<file>
    label = [3, 7, 9, 11, 500]
    probs = rng.dirichlet(np.ones(1000) * 0.05, size=5)
    np.save(tmp_path / "v2.npy", probs)
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    store, out = tmp_path / "s.zarr", tmp_path / "out"
    unlabelled = cli("import", store, tmp_path / "v2.npy", "--ids", tmp_path / "ids.txt", "--dataset", "imagenet-v2",
                     "--scores", "probabilities")
    assert unlabelled.returncode == 2
    assert f"{tmp_path / 'v2.npy'}: no labels: the file has no label column and imagenet-v2 has none bundled" in unlabelled.stderr
    write_lines(tmp_path / "labels.csv", ["sample_id,label"] + [f"{s},{y}" for s, y in zip(ids, label)])
    done = cli("import", store, tmp_path / "v2.npy", "--ids", tmp_path / "ids.txt", "--dataset", "imagenet-v2",
               "--scores", "probabilities", "--labels", tmp_path / "labels.csv")
    assert done.returncode == 0, done.stderr
    assert "class probabilities (logit kind probabilities)" in done.stdout
    run_report(cli, store, out, "robustness")
    expected = np.mean([int(np.argmax(p)) == y for p, y in zip(probs, label)])
    assert results(out)[("v2", "imagenet-v2", "center", "top1")]["value"] == pytest.approx(expected)


def test_decisions_skip_the_mean_true_class_probability_but_keep_top1(kit, cli, tmp_path):
    ids = kit.val_ids(6)
    label = np.array([1, 2, 3, 4, 5, 6])
    store, out = tmp_path / "s.zarr", tmp_path / "out"
    for t, dec in (("center", [1, 2, 3, 0, 0, 0]), ("scale-1.5", [1, 0, 0, 0, 0, 0])):
        f = write_lines(tmp_path / f"d-{t}.csv", ["sample_id,decision,label"] +
                        [f"{s},{d},{y}" for s, d, y in zip(ids, dec, label)])
        done = cli("import", store, f, "--dataset", "imagenet-val", "--model", "d", "--transform", t)
        assert done.returncode == 0, done.stderr
    rep = run_report(cli, store, out, "invariance")
    rows = results(out)
    assert rows[("d", "imagenet-val", "scale-1.5", "top1")]["value"] == pytest.approx(1 / 6)
    assert rows[("d", "imagenet-val", "center", "top1")]["value"] == pytest.approx(3 / 6)
    assert not any(k[3] == "p_true" for k in rows)
    assert "the mean true-class probability (invariance) not computed" in rep.stderr


def test_cue_conflict_decisions_by_category_name(kit, cli, tmp_path):
    names = ["dog/dog1-cat2.png", "cat/cat3-dog1.png", "knife/knife1-oven2.png", "oven/oven2-oven1.png"]
    decisions = ["dog", "dog", "oven", "oven"]   # shape, texture, texture, (shape == texture: dropped)
    f = write_lines(tmp_path / "cats.csv", ["sample_id,decision"] + [f"{s},{d}" for s, d in zip(names, decisions)])
    store, out = tmp_path / "s.zarr", tmp_path / "out"
    done = cli("import", store, f, "--dataset", "cue-conflict")
    assert done.returncode == 0, done.stderr
    run_report(cli, store, out, "shape_bias")
    rows = results(out)
    assert rows[("cats", "cue-conflict", "center", "shape_bias")]["value"] == pytest.approx(1 / 3)
    assert rows[("cats", "cue-conflict", "center", "shape_fraction")]["value"] == pytest.approx(1 / 3)


def test_import_into_a_store_keeps_its_sample_list(kit, cli, tmp_path):
    """The store holds imagenet-val with its own labels: the file's rows go to their samples, the samples the
    file lacks are invalid rows, and a sample the store lacks is refused naming its line."""
    store = tmp_path / "s.zarr"
    ids = kit.val_ids(8)
    label = np.arange(8) * 10
    kit.write(store, "imagenet-val", "center", "extracted", kit.planted(label, 1000), sample_id=ids, label=label)
    f = write_lines(tmp_path / "part.csv", ["file_name,predicted_class"] +
                    [f"{ids[i]},{label[i] if i % 2 else 0}" for i in (6, 1, 3, 2)])
    done = cli("import", store, f, "--format", "imagenet-x")
    assert done.returncode == 0, done.stderr
    assert "4 of 8 samples valid" in done.stdout
    out = tmp_path / "out"
    run_report(cli, store, out, "robustness")
    assert results(out)[("part", "imagenet-val", "center", "top1")]["value"] == pytest.approx(2 / 4)  # rows 1, 3
    bad = write_lines(tmp_path / "more.csv", ["file_name,predicted_class", f"{ids[0]},1", "ILSVRC2012_val_00000099.JPEG,1"])
    before = kit.tree_hash(store)
    refused = cli("import", store, bad)
    assert refused.returncode == 2
    assert f"{bad}:line 3: sample 'ILSVRC2012_val_00000099.JPEG' is not in the store's imagenet-val" in refused.stderr
    assert kit.tree_hash(store) == before


# ---------------------------------------------------------------------------------------------------------
# Malformed files: one message naming the file, the line and the column; nothing written.

def human_excerpt(kit, n: int = 6) -> list[str]:
    with gzip.open(kit.PUBLISHED / "model-vs-human" / "cue-conflict_subject-03_session_1.csv.gz", "rt") as f:
        return [line.rstrip("\n") for line in f][: n + 1]


def _break(lines: list[str], line: int, column: str, value: str) -> list[str]:
    header = lines[0].split(",")
    cells = lines[line - 1].split(",")
    cells[header.index(column)] = value
    return lines[: line - 1] + [",".join(cells)] + lines[line:]


@pytest.mark.parametrize("case", ["missing column", "unknown class name", "duplicate image", "mixed sessions",
                                  "shape not the category", "imagenet-x missing column", "imagenet-x class",
                                  "imagenet-x duplicate", "imagenet-x probability", "table without ids"])
def test_malformed_files_name_file_line_and_column_and_write_nothing(kit, cli, tmp_path, case):
    lines = human_excerpt(kit)
    assert lines[0] == HUMAN_HEAD
    name = "cue-conflict_subject-03_session_1.csv"
    args: list = []
    if case == "missing column":
        lines = [",".join(c for c in l.split(",")[:-1]) for l in lines]   # no imagename
        where, message = "line 1: column 'imagename'", "missing; expected the columns of a model-vs-human raw-data file"
    elif case == "unknown class name":
        lines = _break(lines, 4, "object_response", "kitten")
        where, message = "line 4: column 'object_response'", "unknown class name 'kitten'"
    elif case == "duplicate image":
        lines = lines + [lines[2].replace(lines[2].split(",")[-1][:4], "9999", 1)]
        stimulus = lines[2].rsplit("_", 1)[-1]
        where, message = "line 8: column 'imagename'", f"duplicate image {stimulus!r}, already on line 3"
    elif case == "mixed sessions":
        lines = _break(lines, 5, "session", "2")
        where, message = "line 5: column 'session'", "expected one session per file ('1', as on line 2), found '2'"
    elif case == "shape not the category":
        stimulus = lines[2].rsplit("_", 1)[-1]
        shape = re.sub(r"\d", "", stimulus.split("-")[0])
        wrong = "cat" if shape != "cat" else "dog"
        lines = _break(lines, 3, "category", wrong)
        where, message = "line 3: column 'category'", f"expected the stimulus's shape {shape!r} ({stimulus}), found {wrong!r}"
    elif case.startswith("imagenet-x"):
        name = "Model.csv"
        lines = ["file_name,predicted_class,predicted_probability", "ILSVRC2012_val_00000001.JPEG,65,0.9",
                 "ILSVRC2012_val_00000002.JPEG,970,0.5", "ILSVRC2012_val_00000003.JPEG,230,0.7"]
        if case == "imagenet-x missing column":
            lines = [l.replace("predicted_class", "predicted") if i == 0 else l for i, l in enumerate(lines)]
            where, message = "line 1: column 'predicted_class'", "missing (did you mean 'predicted'?)"
        elif case == "imagenet-x class":
            lines[2] = "ILSVRC2012_val_00000002.JPEG,n0999999,0.5"
            where, message = "line 3: column 'predicted_class'", "expected an ImageNet-1k class index 0..999 or a synset id"
        elif case == "imagenet-x duplicate":
            lines.append("ILSVRC2012_val_00000002.JPEG,1,0.5")
            where, message = "line 5: column 'file_name'", "duplicate image 'ILSVRC2012_val_00000002.JPEG', already on line 3"
        else:
            lines[3] = "ILSVRC2012_val_00000003.JPEG,230,0.0001"
            where, message = "line 4: column 'predicted_probability'", "expected the top-1 class's probability in [0.001, 1]"
    else:
        name = "table.csv"
        lines = ["id,decision", "ILSVRC2012_val_00000001.JPEG,3"]
        args = ["--dataset", "imagenet-val"]
        where, message = "line 1: column 'sample_id'", "missing; expected the columns of a prediction table"
    path = tmp_path / name
    write_lines(path, lines)
    store = tmp_path / "new.zarr"
    done = cli("import", store, path, *args)
    assert done.returncode == 2, done.stdout
    assert f"{path}:{where}: {message}" in done.stderr, done.stderr
    assert not store.exists()  # nothing written, not even the store's root
    assert done.stderr.count("\n") <= 2 or "problems" in done.stderr


def test_one_bad_file_among_good_ones_writes_nothing(kit, cli, tmp_path):
    good = kit.PUBLISHED / "model-vs-human" / "cue-conflict_subject-01_session_1.csv.gz"
    lines = _break(human_excerpt(kit), 2, "object_response", "dgo")
    bad = write_lines(tmp_path / "cue-conflict_subject-03_session_1.csv", lines)
    store = tmp_path / "s.zarr"
    done = cli("import", store, good, bad)
    assert done.returncode == 2
    assert "line 2: column 'object_response': unknown class name 'dgo' (did you mean 'dog'?)" in done.stderr
    assert not store.exists()


# ---------------------------------------------------------------------------------------------------------
# Pairs: the paper's own names, and any pair on request.

@pytest.fixture
def named_store(kit, cli, tmp_path):
    """cue-conflict decisions under the names of the paper's published files, and a lone size."""
    store = tmp_path / "s.zarr"
    names = ["dog/dog1-cat2.png", "cat/cat3-dog1.png", "knife/knife1-oven2.png", "car/car1-bird2.png"]
    runs = {"convnext-base-21k": ["dog", "dog", "oven", "car"], "deit3-21k": ["dog", "cat", "knife", "bird"],
            "convnext-clip": ["cat", "dog", "knife", "car"], "vit-clip": ["dog", "cat", "knife", "car"],
            "convnext-sup-tiny": ["dog", "cat", "knife", "car"], "timm:vit_small": ["bird", "cat", "knife", "car"]}
    for model, dec in runs.items():
        f = write_lines(tmp_path / f"{model.replace(':', '_')}.csv", ["sample_id,decision"] +
                        [f"{s},{d}" for s, d in zip(names, dec)])
        done = cli("import", store, f, "--dataset", "cue-conflict", "--model", model)
        assert done.returncode == 0, done.stderr
    return store, runs, names


def _bias(dec, names) -> float:
    shape_hits = texture_hits = 0
    for d, s in zip(dec, names):
        shape, texture = s.split("/")[1].split(".")[0].split("-")
        shape_hits += d == re.sub(r"\d", "", shape)
        texture_hits += d == re.sub(r"\d", "", texture)
    return shape_hits / (shape_hits + texture_hits)


def test_default_pairs_find_the_papers_own_names_and_say_what_is_missing(kit, cli, named_store, tmp_path):
    store, runs, names = named_store
    out = tmp_path / "out"
    rep = cli("report", store, "--out", out, "--n-boot", "50", "--quiet", "--studies", "shape_bias")
    assert rep.returncode == 0, rep.stderr
    diffs = pl.read_parquet(out / "differences.parquet").filter(pl.col("metric") == "shape_bias")
    pairs = {(r["model_a"], r["model_b"]): r["diff"] for r in diffs.iter_rows(named=True)}
    assert set(pairs) == {("convnext-base-21k", "deit3-21k"), ("convnext-clip", "vit-clip")}
    assert pairs[("convnext-base-21k", "deit3-21k")] == pytest.approx(
        _bias(runs["convnext-base-21k"], names) - _bias(runs["deit3-21k"], names))
    report = (out / "report.md").read_text()
    assert "Pairs (the paper's ConvNeXt/ViT pairs, found by name" in report
    assert "`convnext-base-21k` − `deit3-21k`" in report
    assert "- `convnext-sup-tiny` − `vit-sup-tiny`: the store holds no 'vit-sup-tiny' run" in report


def test_explicit_pairs_any_runs_with_colons_in_names_and_unknowns_reported(kit, cli, named_store, tmp_path):
    store, runs, names = named_store
    out = tmp_path / "out"
    rep = cli("report", store, "--out", out, "--n-boot", "50", "--quiet", "--studies", "shape_bias",
                      "--pairs", "timm:vit_small:vit-clip,convnext-clip:vit-clipp,deit3-21k:deit3-21k")
    assert rep.returncode == 0, rep.stderr
    diffs = pl.read_parquet(out / "differences.parquet").filter(pl.col("metric") == "shape_bias")
    got = {(r["model_a"], r["model_b"]): r for r in diffs.iter_rows(named=True)}
    assert set(got) == {("timm:vit_small", "vit-clip")}
    assert got[("timm:vit_small", "vit-clip")]["diff"] == pytest.approx(
        _bias(runs["timm:vit_small"], names) - _bias(runs["vit-clip"], names))
    assert got[("timm:vit_small", "vit-clip")]["ci_low"] <= got[("timm:vit_small", "vit-clip")]["ci_high"]
    report = (out / "report.md").read_text()
    assert "- `convnext-clip` − `vit-clipp`: no run named 'vit-clipp' in the store (did you mean 'vit-clip'?)" in report
    assert "- `deit3-21k` − `deit3-21k`: a run against itself" in report
    assert "note: pair convnext-clip:vit-clipp: no run named 'vit-clipp'" in rep.stderr
    bad = kit.run_cli("report", store, "--out", out, "--pairs", "convnext-clip")  # a usage error: argparse exits
    assert bad.returncode == 2 and "expected MODEL_A:MODEL_B" in bad.stderr


# ---------------------------------------------------------------------------------------------------------
# The door on logit kinds (schemas.write_run), for those who encode by hand.

def test_write_run_checks_the_form_of_decisions_and_the_kind(kit, tmp_path):
    import schemas
    from schemas import logit_kinds

    ids, label = kit.val_ids(3), np.array([1, 2, 3])
    store = tmp_path / "s.zarr"
    good = logit_kinds.decision_logits(np.array([1, 5, 3]), 1000)
    assert good.dtype == np.float16 and good.sum() == 3 and good[1, 5] == 1
    off = good.astype(np.float32) * 7
    with pytest.raises(schemas.StoreError, match=r"imagenet-val/center/m/logits: expected rows of logit kind "
                                                 r"'decisions': values 0 or 1 with at least one 1"):
        schemas.write_run(store, "imagenet-val", "center", "m", off, sample_id=ids, label=label,
                          attrs={"logit_kind": "decisions"})
    with pytest.raises(schemas.StoreError, match=r"logit_kind: expected one of .*found 'decision' \(did you mean 'decisions'\?\)"):
        schemas.write_run(store, "imagenet-val", "center", "m", good, sample_id=ids, label=label,
                          attrs={"logit_kind": "decision"})
    assert not store.exists()
    schemas.write_run(store, "imagenet-val", "center", "m", good, sample_id=ids, label=label,
                      attrs={"logit_kind": "decisions"})
    assert [p for p in schemas.validate(store) if p.severity == "error"] == []
    # The top-1 probability comes back as the softmax's maximum; the decision as its argmax.
    enc = logit_kinds.top1_probability_logits(np.array([7, 0]), np.array([0.3, 0.999]), 1000).astype(np.float64)
    for row, (j, p) in zip(enc, ((7, 0.3), (0, 0.999))):
        soft = kit.ref_softmax(row)
        assert int(np.argmax(soft)) == j and math.isclose(max(soft), p, rel_tol=1e-6)


def test_human_observers_error_consistency_from_the_raw_files_and_not_ranked(kit, cli, tmp_path):
    """Imported observers (decisions) are compared on cue-conflict, pair by pair, with model-vs-human's error
    consistency computed here from the raw rows; they are never ranked among the models."""
    files = sorted((kit.PUBLISHED / "model-vs-human").glob("cue-conflict_subject-0[1-3]_session_1.csv.gz"))
    store, out = tmp_path / "s.zarr", tmp_path / "out"
    assert cli("import", store, *files).returncode == 0
    run_report(cli, store, out, "shape_bias,agreement")
    hits: dict[str, dict[str, bool]] = {}
    for f in files:
        with gzip.open(f, "rt") as fh:
            rows = list(csv.DictReader(fh))
        subject = rows[0]["subj"]
        hits[subject] = {re.search(r"([a-z]+\d+-[a-z]+\d+\.png)$", r["imagename"]).group(1):
                         r["object_response"] == r["category"] for r in rows if r["object_response"] != "na"}
    table = pl.read_csv(out / "agreement.csv").filter(pl.col("metric") == "error_consistency")
    got = {(r["model_a"], r["model_b"]): r["value"] for r in table.iter_rows(named=True)}
    for a, b in itertools.combinations(sorted(hits), 2):
        both = sorted(set(hits[a]) & set(hits[b]))
        ca, cb = np.array([hits[a][s] for s in both]), np.array([hits[b][s] for s in both])
        observed = np.mean(ca == cb)
        expected = ca.mean() * cb.mean() + (1 - ca.mean()) * (1 - cb.mean())
        assert got[(a, b)] == pytest.approx((observed - expected) / (1 - expected), abs=1e-12), (a, b)
    ranked = pl.read_csv(out / "ranking.csv")
    assert not any(m.startswith("subject-") for m in ranked["model"].to_list())
