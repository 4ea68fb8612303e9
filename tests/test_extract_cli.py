"""The ``extract`` command line: errors are one line with a did-you-mean and exit code 2; run / plan /
status / verify / ls on tiny synthetic data with the demo models (CPU)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("timm")

import zarr  # noqa: E402

from schemas import layout as L  # noqa: E402

from extract.cli import main  # noqa: E402
from imagenet_val import make_imagenet_val as make_dataset  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SUP = "demo-convnext-sup"


def make_imagenet_val(root: Path, n: int, bad: dict[int, bytes] | None = None) -> Path:
    return make_dataset(root, n, bad=bad, seed=1, size=(56, 40))


def cli(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.startswith("extract ")]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], err


@pytest.fixture
def data(tmp_path):
    return make_imagenet_val(tmp_path / "data", 10, bad={4: b"GIF89a garbage"})


# ---------------------------------------------------------------- errors
def test_unknown_names_did_you_mean(capsys, tmp_path, data):
    base = ["run", "--store", tmp_path / "s.zarr", "--data-root", data, "--device", "cpu"]
    rc, _, err = cli(capsys, *base, "--models", "convnext-sop", "--datasets", "imagenet-val")
    assert_one_line_error(rc, err, "unknown model 'convnext-sop'", "did you mean 'convnext-sup'", "available:")
    rc, _, err = cli(capsys, *base, "--models", SUP, "--datasets", "imagenet-vl")
    assert_one_line_error(rc, err, "unknown dataset 'imagenet-vl'", "did you mean 'imagenet-val'")
    rc, _, err = cli(capsys, "run", "--store", tmp_path / "s.zarr", "--suite", "papr")
    assert_one_line_error(rc, err, "unknown suite 'papr'", "did you mean 'paper'")
    rc, _, err = cli(capsys, *base, "--models", SUP, "--datasets", "imagenet-val", "--transforms", "scael-2")
    assert_one_line_error(rc, err, "unknown transform 'scael-2'", "scale-2")
    rc, _, err = cli(capsys, *base, "--models", SUP, "--datasets", "imagenet-val", "--shard", "3/2")
    assert_one_line_error(rc, err, "--shard")
    rc, _, err = cli(capsys, *base, "--models", SUP, "--datasets", "imagenet-val", "--weights", "nofile")
    assert_one_line_error(rc, err, "MODEL=FILE")
    rc, _, err = cli(capsys, "plan", "--store", tmp_path / "s.zarr", "--models", "vit-sop", "--datasets", "imagenet-val")
    assert_one_line_error(rc, err, "did you mean 'vit-sup'")


def test_missing_data_root_names_the_path(capsys, tmp_path):
    store = tmp_path / "s.zarr"
    rc, _, err = cli(capsys, "run", "--store", store, "--models", SUP, "--datasets", "imagenet-val",
                     "--data-root", tmp_path / "nowhere")
    assert_one_line_error(rc, err, str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    rc, _, err = cli(capsys, "run", "--store", store, "--models", SUP, "--datasets", "imagenet-val",
                     "--data-root", tmp_path / "empty")
    assert_one_line_error(rc, err, str(tmp_path / "empty" / "imagenet-val"), "datasets.imagenet-val.layout.path")
    rc, _, err = cli(capsys, "run", "--store", store, "--models", SUP, "--datasets", "imagenet-val")
    assert_one_line_error(rc, err, "--data-root")
    assert not store.exists()  # refused before the store is created: nothing half-made


def test_python_dash_m_extract_error_without_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-m", "extract", "run", "--store", str(tmp_path / "s.zarr"),
                        "--models", "vit-clp", "--datasets", "imagenet-val", "--data-root", str(tmp_path)],
                       cwd=str(REPO), env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and "did you mean 'vit-clip'" in p.stderr


# ---------------------------------------------------------------- run, status, verify, plan
def test_run_status_verify_plan(capsys, tmp_path, data, monkeypatch):
    monkeypatch.setattr(L, "CHUNK_ROWS", 4)
    store = tmp_path / "s.zarr"
    sel = ["--models", SUP, "--datasets", "imagenet-val", "--data-root", data, "--device", "cpu"]

    rc, out, _ = cli(capsys, "plan", "--store", store, *sel)
    assert rc == 0
    assert f"models (1): {SUP}" in out and "new" in out
    assert "total: 1 dataset x transform units x 1 models = 1 runs; 10 images to decode, 10 model-images" in out
    # 10 x (1000 x 4 + 64 x 2 + 1) bytes + 3 blocks x 5
    assert "store ~41.3 KB" in out

    rc, out, err = cli(capsys, "run", "--store", store, *sel, "--allow-partial", "--batch-size", "3", "--no-progress",
                       "--json", tmp_path / "result.json")
    assert rc == 0, err
    assert "total: 10 images" in out and "1 invalid" in out and "ILSVRC2012_val_00000004.JPEG" in out
    assert "invalid image ILSVRC2012_val_00000004.JPEG" in err  # named in the log too
    import json

    result = json.loads((tmp_path / "result.json").read_text())
    assert result["invalid"][0]["sample_id"] == "ILSVRC2012_val_00000004.JPEG"

    rc, out, _ = cli(capsys, "status", store)
    assert rc == 0
    assert f"imagenet-val/center/{SUP}" in out and "blocks 3/3" in out and "complete" in out
    assert "invalid: ILSVRC2012_val_00000004.JPEG" in out and "random-init" in out

    rc, out, _ = cli(capsys, "verify", store)
    assert rc == 0 and "0 errors" in out

    rc, out, _ = cli(capsys, "plan", "--store", store, *sel)
    assert rc == 0 and "3/3 blocks done" in out
    assert "to do by this process: 0 model-images" in out and "measured: 10 images in" in out

    rc, out, _ = cli(capsys, "plan", "--store", store, *sel, "--weights", f"{SUP}={tmp_path / 'result.json'}")
    assert rc == 0 and "fingerprint differs" in out and "weights_id" in out

    # a store that breaks the contract: verify says where and exits 1
    g = zarr.open_group(str(store), mode="r+")
    del g[f"imagenet-val/center/{SUP}/valid"]
    rc, out, _ = cli(capsys, "verify", store)
    assert rc == 1 and f"imagenet-val/center/{SUP}/valid: missing array" in out


def test_plan_groups_models_per_unit_explains_a_missing_dataset_once_and_adds_up(capsys, tmp_path, data, monkeypatch):
    from schemas.manifest import load_manifest

    monkeypatch.setattr(L, "CHUNK_ROWS", 4)
    store, vit = tmp_path / "s.zarr", "demo-vit-sup"
    rc, _, err = cli(capsys, "run", "--store", store, "--models", SUP, "--datasets", "imagenet-val", "--data-root",
                     data, "--device", "cpu", "--no-progress", "--allow-partial")
    assert rc == 0, err
    sel = ["--models", SUP, vit, "--datasets", "imagenet-val", "imagenet-a", "--transforms", "center", "scale-1.5",
           "--data-root", data, "--device", "cpu"]
    rc, out, _ = cli(capsys, "plan", "--store", store, *sel, "--throughput", "1001")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == f"models (2): {SUP}, {vit}"
    units = [x for x in lines if x.startswith(("imagenet-val ", "imagenet-a "))]
    assert len(units) == 4  # one line per dataset x transform, whatever the number of models
    center = next(x for x in units if x.split()[:2] == ["imagenet-val", "center"])
    assert f"{SUP}: 3/3 blocks done; {vit}: new" in center
    assert all("new (dataset missing)" in x for x in units if x.startswith("imagenet-a "))
    source = load_manifest().dataset("imagenet-a")["source"]
    explained = [x for x in lines if "imagenet-a:" in x]
    assert explained == [f"  imagenet-a: not at {data / 'imagenet-a'}; get it from: {source}"]
    # 10 + 10 images of imagenet-val and 2 x 7,500 expected of imagenet-a, each through 2 models; 10 done
    assert "4 dataset x transform units x 2 models = 8 runs; 15,020 images to decode, 30,040 model-images" in out
    # 30,030 model-images left at 1,001 img/s through 2 models: 15 s
    assert "to do by this process: 30,030 model-images" in out and "estimated 15 s at 1,001 img/s" in out
    with pytest.raises(SystemExit) as stop:
        cli(capsys, "plan", "--store", store, *sel, "--throughput", "0")
    assert stop.value.code == 2 and "--throughput: 0: must be a finite number > 0" in capsys.readouterr().err


def test_status_of_an_interrupted_run(capsys, tmp_path, data, monkeypatch):
    monkeypatch.setattr(L, "CHUNK_ROWS", 4)
    store = tmp_path / "s.zarr"
    rc, _, err = cli(capsys, "run", "--store", store, "--models", SUP, "--datasets", "imagenet-val",
                     "--data-root", data, "--device", "cpu", "--shard", "0/2", "--no-progress", "--allow-partial")
    assert rc == 0, err
    rc, out, _ = cli(capsys, "status", store)
    assert "blocks 2/3" in out and "incomplete" in out
    rc, out, _ = cli(capsys, "verify", store)
    assert rc == 0 and "incomplete: 2 of 3 blocks done" in out


def test_strict_exit_code(capsys, tmp_path, data):
    rc, _, err = cli(capsys, "run", "--store", tmp_path / "s.zarr", "--models", SUP, "--datasets", "imagenet-val",
                     "--data-root", data, "--device", "cpu", "--strict", "--no-progress", "--allow-partial")
    assert rc == 1
    assert "ILSVRC2012_val_00000004.JPEG" in err and "--strict" in err and "Traceback" not in err


# ---------------------------------------------------------------- ls
def test_ls(capsys, tmp_path, data):
    rc, out, _ = cli(capsys, "ls", "models")
    assert rc == 0 and "convnext-sup" in out and "vit-clip" in out and "demo-vit-sup" in out
    rc, out, _ = cli(capsys, "ls", "transforms")
    assert rc == 0 and "scale-1.5" in out and "res-336" in out
    rc, out, _ = cli(capsys, "ls", "suites")
    assert rc == 0 and "paper" in out and "demo" in out
    rc, out, _ = cli(capsys, "ls", "datasets")
    assert rc == 0 and "imagenet-val" in out and "50000" in out
    rc, out, _ = cli(capsys, "ls", "datasets", "--data-root", data)
    assert rc == 0
    line = next(x for x in out.splitlines() if x.startswith("imagenet-val"))
    assert "wrong size" in line and "found 10" in line
    assert any(x.startswith("imagenet-a ") and "missing" in x for x in out.splitlines())
    rc, _, err = cli(capsys, "ls", "datasets", "--data-root", tmp_path / "nowhere")
    assert_one_line_error(rc, err, str(tmp_path / "nowhere"))


def test_a_model_that_cannot_change_its_input_size_is_a_clean_error(capsys, tmp_path, data, monkeypatch):
    import extract.models

    def refuse(module, size):
        raise NotImplementedError(f"{type(module).__name__}: cannot change the input size")

    monkeypatch.setattr(extract.models, "set_image_size", refuse)
    rc, _, err = cli(capsys, "run", "--store", tmp_path / "s.zarr", "--models", "demo-vit-sup", "--datasets",
                     "imagenet-val", "--transforms", "res-112", "--data-root", data, "--device", "cpu",
                     "--allow-partial")
    assert_one_line_error(rc, err, "demo-vit-sup: cannot run at 112x112 px", "cannot change the input size",
                          "center, scale-* or shift-*")
