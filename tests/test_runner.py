"""The extraction runner end to end on CPU with the tiny demo models and tiny synthetic datasets.

Blocks are shrunk to a few rows (schemas.layout.CHUNK_ROWS is patched here and in the subprocesses) so
that resumption, sharding and crashes are exercised on a few dozen images.
"""
from __future__ import annotations

import io
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("timm")

import zarr  # noqa: E402
from PIL import Image  # noqa: E402

import schemas  # noqa: E402
from schemas import layout as L  # noqa: E402

from extract import inventory, model_cache, options, pipeline, runner  # noqa: E402
from extract.errors import ExtractError  # noqa: E402
from extract.options import RunOptions  # noqa: E402
from extract.status import store_status  # noqa: E402
from imagenet_val import make_imagenet_val  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SUP = "demo-convnext-sup"
VIT = "demo-vit-sup"
CLIP = "demo-vit-clip"
ROWS = 8  # rows per block in these tests


# ---------------------------------------------------------------- fixtures
def good_jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


BAD = {3: good_jpeg_bytes()[:200], 5: b""}  # a truncated JPEG and an empty file
BAD_IDS = ["ILSVRC2012_val_00000003.JPEG", "ILSVRC2012_val_00000005.JPEG"]


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(L, "CHUNK_ROWS", ROWS)
    return ROWS


def opts(store, data_root, **kw) -> RunOptions:
    base = dict(store=str(store), models=[SUP], datasets=["imagenet-val"], transforms=["center"],
                data_root=str(data_root), device="cpu", batch_size=4, workers=0, progress=False,
                allow_partial=True)  # a few images of imagenet-val's 50,000
    base.update(kw)
    return RunOptions(**base)


def run_arrays(store, dataset="imagenet-val", transform="center", model=SUP) -> dict[str, np.ndarray]:
    g = zarr.open_group(str(store), mode="r")[f"{dataset}/{transform}/{model}"]
    return {k: np.asarray(g[k][...]) for k in (L.LOGITS, L.FEATURES, L.VALID, L.BLOCK_DONE)}


def assert_same_run(a: dict, b: dict) -> None:
    for k in (L.LOGITS, L.FEATURES, L.VALID, L.BLOCK_DONE):
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def errors(store) -> list:
    return [v for v in schemas.validate(str(store)) if v.severity == "error"]


def env_with_repo() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def cli_subprocess(tmp_path: Path, args: list[str], rows: int = ROWS) -> subprocess.Popen:
    """``extract`` in a fresh process with blocks of ``rows`` rows."""
    script = tmp_path / "small_blocks_extract.py"
    script.write_text(
        "import sys\nimport schemas.layout as L\nL.CHUNK_ROWS = int(sys.argv[1])\n"
        "from extract.cli import main\nsys.exit(main(sys.argv[2:]))\n")
    return subprocess.Popen([sys.executable, str(script), str(rows), *args], cwd=str(REPO), env=env_with_repo(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# ---------------------------------------------------------------- end to end
@pytest.fixture
def few_templates(monkeypatch):
    """Zero-shot heads from 4 of the 80 templates: the head path is the same, the text tower runs 20x less."""
    import extract.zeroshot

    full = extract.zeroshot.openai_templates
    monkeypatch.setattr(extract.zeroshot, "openai_templates", lambda: full()[:4])
    return 4


def test_end_to_end_bad_images_heads_and_rerun(tmp_path, small_blocks, few_templates, monkeypatch):
    data = make_imagenet_val(tmp_path / "data", 20, bad=BAD)
    store = tmp_path / "s.zarr"
    res = runner.run(opts(store, data, models=[SUP, CLIP], workers=2))

    assert errors(store) == []
    assert not [v for v in schemas.validate(str(store)) if "incomplete" in v.message]
    root = zarr.open_group(str(store), mode="r")
    ds = root["imagenet-val"]
    assert ds.attrs["n_samples"] == 20 and ds.attrs["label_space"] == "imagenet-1k"
    assert ds.attrs["manifest"]["id"] == "imagenet-val"
    for model, kind in ((SUP, "classifier"), (CLIP, "zero-shot")):
        g = ds["center"][model]
        logits, valid = g[L.LOGITS][...], g[L.VALID][...]
        assert logits.shape == (20, 1000) and logits.dtype == np.float32
        assert g[L.FEATURES].shape == (20, 64) and g[L.FEATURES].dtype == np.float16
        assert g[L.BLOCK_DONE].shape == (3,) and g[L.BLOCK_DONE][...].all()
        assert valid.tolist() == [i not in (2, 4) for i in range(20)]
        assert np.isnan(logits[[2, 4]]).all() and np.isfinite(logits[valid]).all()
        assert g.attrs["logit_kind"] == kind
        assert g.attrs["precision"] == "fp32"
        assert g.attrs["weights_id"].startswith("random-init") and g.attrs["weights"] == "random"
        assert g.attrs["fingerprint_inputs"]["sample_digest"] == ds.attrs["sample_digest"]
    # CLIP logits are 100 x cosine: within [-100, 100]
    clip_logits = ds["center"][CLIP][L.LOGITS][...]
    assert np.nanmax(np.abs(clip_logits)) <= 100.0 + 1e-3
    head = root[f"{L.HEADS_GROUP}/{CLIP}/weights"]
    assert head.shape == (1000, 64) and head.metadata.dimension_names == ("class", "embed")
    assert root[f"{L.HEADS_GROUP}/{CLIP}"].attrs["logit_scale"] == 100.0
    assert len(root[f"{L.HEADS_GROUP}/{CLIP}"].attrs["templates"]) == few_templates
    np.testing.assert_allclose(np.linalg.norm(head[...], axis=1), 1.0, rtol=1e-5)

    # rows hold the right images: recompute a few directly (decode, transform, normalise, forward, one at a time)
    import torch

    from extract.imaging import apply_transform
    from extract.models import load_model
    from extract.spec.models import resolve_model
    from extract.spec.transforms import parse_transform
    from extract.tensors import normalize, to_uint8_tensor

    ids = np.asarray(ds[L.SAMPLE_ID][...]).astype(object)
    for model in (SUP, CLIP):
        spec = resolve_model(model)
        head = root[f"{L.HEADS_GROUP}/{CLIP}/weights"][...] if model == CLIP else None
        direct = load_model(spec, device="cpu", precision="fp32", head=head)
        for row in (0, 9, 19):
            img = Image.open(data / "imagenet-val" / ids[row]).convert("RGB")
            x = to_uint8_tensor(apply_transform(img, parse_transform("center"), spec.preprocess))[None]
            with torch.inference_mode():
                logits, feats = direct.forward(normalize(x, spec.preprocess))
            g = ds["center"][model]
            np.testing.assert_allclose(g[L.LOGITS][row], logits[0].numpy(), rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(g[L.FEATURES][row], feats[0].numpy(), rtol=2e-3, atol=2e-3)  # float16

    # bad images: counted and named in the result, listed by status from the store alone
    assert res.images == 20 and len(res.invalid) == 2  # each image decoded once for both models
    assert sorted({s for _, _, s, _ in res.invalid}) == BAD_IDS
    assert any("empty" in r for *_, r in res.invalid) and any("truncat" in r.lower() or "corrupt" in r
                                                                for *_, r in res.invalid)
    status = {r.path: r for r in store_status(store)}
    assert status[f"imagenet-val/center/{SUP}"].invalid == BAD_IDS
    assert status[f"imagenet-val/center/{CLIP}"].complete

    # rerun: nothing to do, no model even loaded
    import extract.models
    import extract.zeroshot

    before = run_arrays(store, model=CLIP)
    with monkeypatch.context() as m:
        m.setattr(extract.models, "load_model", lambda *a, **k: pytest.fail("a model was loaded for no work"))
        res2 = runner.run(opts(store, data, models=[SUP, CLIP]))
    assert res2.images == 0 and res2.units[0].blocks_skipped == 3
    assert_same_run(before, run_arrays(store, model=CLIP))

    # a lost block of the CLIP run (as after a crash): only that block, only that model, is recomputed, and
    # the zero-shot head is read back from the store, not rebuilt
    monkeypatch.setattr(model_cache, "_HEAD_MEMO", {})
    monkeypatch.setattr(extract.zeroshot, "build_zeroshot_head",
                        lambda *a, **k: pytest.fail("the zero-shot head was rebuilt instead of read from the store"))
    zarr.open_group(str(store), mode="r+")[f"imagenet-val/center/{CLIP}/block_done"][1] = False
    res2 = runner.run(opts(store, data, models=[SUP, CLIP]))
    assert res2.images == ROWS and res2.units[0].model_images == ROWS and res2.units[0].blocks_written == 1
    assert_same_run(before, run_arrays(store, model=CLIP))

    # a model added later runs alone on the done blocks; the others are not recomputed
    res3 = runner.run(opts(store, data, models=[SUP, CLIP, VIT]))
    assert res3.units[0].model_images == 20  # 20 images through the new model only
    assert run_arrays(store, model=VIT)[L.BLOCK_DONE].all()
    # workers=2 above and workers=0 here give the same numbers
    ref = tmp_path / "ref.zarr"
    runner.run(opts(ref, data, models=[SUP]))
    assert_same_run(run_arrays(ref), run_arrays(store))


def test_steady_throughput_counts_the_images_after_the_first_block(tmp_path, small_blocks):
    data = make_imagenet_val(tmp_path / "data", 3 * ROWS)
    unit = runner.run(opts(tmp_path / "s.zarr", data)).units[0]
    assert unit.images == 3 * ROWS and unit.blocks_written == 3
    assert unit.steady_images == 2 * ROWS
    assert 0 < unit.steady_seconds < unit.seconds
    assert 0 <= unit.input_wait_seconds < unit.seconds
    assert unit.steady_images_per_s == pytest.approx(2 * ROWS / unit.steady_seconds)
    # one block: nothing after it to measure
    one = runner.run(opts(tmp_path / "one.zarr", make_imagenet_val(tmp_path / "one", ROWS))).units[0]
    assert one.blocks_written == 1 and one.steady_images == 0 and one.steady_images_per_s == 0.0


def test_strict_stops_naming_the_file(tmp_path, small_blocks):
    data = make_imagenet_val(tmp_path / "data", 12, bad={10: b"this is not an image"})
    store = tmp_path / "s.zarr"
    with pytest.raises(runner.BadImageError) as e:
        runner.run(opts(store, data, strict=True))
    msg = str(e.value)
    assert "ILSVRC2012_val_00000010.JPEG" in msg and str(data / "imagenet-val") in msg and "not an image" in msg
    # the block before the bad one is kept; the block with it was not written
    flags = run_arrays(store)[L.BLOCK_DONE]
    assert flags.tolist() == [True, False]


def test_fingerprint_mismatch_refused_then_overwrite(tmp_path, small_blocks):
    import torch

    from extract.models import load_model
    from extract.spec.models import resolve_model

    data = make_imagenet_val(tmp_path / "data", 10)
    store = tmp_path / "s.zarr"
    runner.run(opts(store, data))
    first = run_arrays(store)

    # the same weights as a file: another weights id -> refused with what differs
    weights = tmp_path / "w.pt"
    model = load_model(resolve_model(SUP), device="cpu", precision="fp32", pretrained=False)
    torch.save(model.backbone.state_dict(), weights)
    with pytest.raises(ExtractError) as e:
        runner.run(opts(store, data, weights={SUP: str(weights)}))
    msg = str(e.value)
    assert "weights_id" in msg and "random-init" in msg and "file:" in msg and "--overwrite" in msg
    assert_same_run(first, run_arrays(store))  # untouched

    res = runner.run(opts(store, data, weights={SUP: str(weights)}, overwrite=True))
    assert res.images == 10
    g = zarr.open_group(str(store), mode="r")[f"imagenet-val/center/{SUP}"]
    assert g.attrs["weights_id"].startswith("file:")
    assert_same_run(first, run_arrays(store))  # same weights, same numbers
    assert errors(store) == []

    # --overwrite with --shard is refused (one shard would delete another's blocks)
    with pytest.raises(ExtractError, match="--overwrite with --shard"):
        runner.run(opts(store, data, overwrite=True, shard=(0, 2)))
    # a changed sample list is refused too
    make_imagenet_val(tmp_path / "data", 11)
    with pytest.raises(ExtractError, match="different sample list"):
        runner.run(opts(store, data))


# ---------------------------------------------------------------- processes
@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted single-process run (in a subprocess, like the runs it is compared with)."""
    tmp = tmp_path_factory.mktemp("ref")
    data = make_imagenet_val(tmp / "data", 96, bad={7: b""})
    store = tmp / "ref.zarr"
    p = cli_subprocess(tmp, _base_args(store, data))
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    return data, store


# res-64: the models run on 64 x 64 crops, fast enough on a CPU for a hundred images per process.
T = "res-64"


def _base_args(store, data) -> list[str]:
    return ["-q", "run", "--store", str(store), "--models", SUP, "--datasets", "imagenet-val", "--transforms", T,
            "--data-root", str(data), "--device", "cpu", "--batch-size", "8", "--workers", "0", "--no-progress",
            "--allow-partial"]


def test_two_shards_fill_one_store(tmp_path, reference, monkeypatch):
    monkeypatch.setattr(L, "CHUNK_ROWS", ROWS)
    data, ref = reference
    store = tmp_path / "sharded.zarr"
    procs = [cli_subprocess(tmp_path, _base_args(store, data) + ["--shard", f"{i}/2"]) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    assert "total: 48 images" in outs[0][0] and "total: 48 images" in outs[1][0]
    assert errors(store) == []
    assert_same_run(run_arrays(ref, transform=T), run_arrays(store, transform=T))
    a = zarr.open_group(str(store), mode="r")["imagenet-val"]
    b = zarr.open_group(str(ref), mode="r")["imagenet-val"]
    assert dict(a.attrs) == dict(b.attrs)
    np.testing.assert_array_equal(a[L.SAMPLE_ID][...], b[L.SAMPLE_ID][...])


def test_torchrun_env_shards(monkeypatch):
    assert options.shard_from_env({"RANK": "1", "WORLD_SIZE": "3"}) == (1, 3)
    assert options.shard_from_env({}) is None
    assert options.shard_blocks(7, (1, 3)) == [1, 4]
    with pytest.raises(ExtractError):
        options.parse_shard("2/2")
    with pytest.raises(ExtractError):
        options.parse_shard("x")


def test_kill_9_then_resume_equals_uninterrupted(tmp_path, reference, monkeypatch):
    monkeypatch.setattr(L, "CHUNK_ROWS", ROWS)
    data, ref = reference
    store = tmp_path / "killed.zarr"
    n_blocks = len(L.Blocks(96))
    p = cli_subprocess(tmp_path, _base_args(store, data))
    flagged = 0
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and p.poll() is None:
            try:
                flags = zarr.open_group(str(store), mode="r")[f"imagenet-val/{T}/{SUP}/block_done"][...]
                flagged = int(flags.sum())
            except (KeyError, FileNotFoundError, ValueError):
                flagged = 0
            if flagged >= 2:
                p.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    flags = run_arrays(store, transform=T)[L.BLOCK_DONE]
    assert 2 <= flags.sum() < n_blocks
    # what a crash leaves is a valid, incomplete store whose done blocks are right
    assert errors(store) == []
    killed, full = run_arrays(store, transform=T), run_arrays(ref, transform=T)
    rows = np.repeat(flags, ROWS)[:96]
    np.testing.assert_array_equal(killed[L.LOGITS][rows], full[L.LOGITS][rows])

    q = cli_subprocess(tmp_path, _base_args(store, data))
    out, err = q.communicate(timeout=300)
    assert q.returncode == 0, err
    resumed = run_arrays(store, transform=T)
    assert_same_run(full, resumed)
    assert errors(store) == []


def _prepare(store, data, barrier, rounds_ok):
    """Every step a run's preparation takes (the calls runner.run makes), started at the same instant in
    several processes."""
    from extract.heads_store import write_head
    from extract.spec.transforms import parse_transform

    try:
        sel = inventory.resolve_selection(models=[SUP], datasets=["imagenet-val"], data_root=data)
        reader = sel.reader("imagenet-val")
        barrier.wait(timeout=60)
        root = runner.open_store(store)
        dg = runner.ensure_dataset_group(root, "imagenet-val", reader, sel.entry("imagenet-val"))
        t = parse_transform("center")
        fp = schemas.fingerprint_inputs(model={"id": SUP}, weights_id="w", preprocess={}, transform=t.to_dict(),
                                        precision="fp32", sample_digest=dg.attrs["sample_digest"])
        attrs = {"model": {"id": SUP}, "preprocess": {}, "precision": "fp32", "logit_kind": "classifier",
                 "fingerprint_inputs": fp}
        for _ in range(2):
            schemas.open_run(root, "imagenet-val", t.id, SUP, num_classes=1000, feature_dim=4, attrs=attrs,
                             transform_attrs={"transform": t.to_dict()}, logits_dtype="float32", overwrite=False)
        write_head(root, "demo-head", np.ones((3, 2), np.float32), {"model": "m"})
        rounds_ok.put(True)
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        rounds_ok.put(f"{type(e).__name__}: {e}")


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_concurrent_preparation_is_safe(tmp_path, monkeypatch):
    monkeypatch.setattr(L, "CHUNK_ROWS", ROWS)
    data = make_imagenet_val(tmp_path / "data", 20)
    ctx = mp.get_context("fork")
    for attempt in range(5):
        store = tmp_path / f"s{attempt}.zarr"
        barrier, results = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_prepare, args=(str(store), str(data), barrier, results)) for _ in range(4)]
        for p in procs:
            p.start()
        got = [results.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert got == [True] * 4, got
        problems = schemas.validate(str(store))
        assert [v for v in problems if v.severity == "error"] == []
        g = zarr.open_group(str(store), mode="r")
        assert g[f"imagenet-val/center/{SUP}"].attrs["fingerprint_inputs"]["weights_id"] == "w"
        assert g["imagenet-val"].attrs["n_samples"] == 20


# ---------------------------------------------------------------- pieces
def test_block_batches_never_cross_blocks():
    blocks = L.Blocks(25)  # one block of 25 rows at the default size
    assert pipeline.block_batches(blocks, [0], 10) == [list(range(0, 10)), list(range(10, 20)), list(range(20, 25))]


def test_block_batches_small_blocks(small_blocks):
    blocks = L.Blocks(20)
    batches = pipeline.block_batches(blocks, [0, 2], 3)
    assert batches == [[0, 1, 2], [3, 4, 5], [6, 7], [16, 17, 18], [19]]


def test_missing_data_root_and_dataset_are_named(tmp_path):
    with pytest.raises(ExtractError, match="no such directory"):
        runner.run(opts(tmp_path / "s.zarr", tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExtractError) as e:
        runner.run(opts(tmp_path / "s.zarr", tmp_path / "empty"))
    assert str(tmp_path / "empty" / "imagenet-val") in str(e.value)
    assert "datasets.imagenet-val.layout.path" in str(e.value)
    with pytest.raises(ExtractError, match="--data-root"):
        runner.run(opts(tmp_path / "s.zarr", None))


def test_weights_for_a_model_not_in_the_run(tmp_path):
    data = make_imagenet_val(tmp_path / "data", 2)
    with pytest.raises(ExtractError, match="not among the run's models"):
        runner.run(opts(tmp_path / "s.zarr", data, weights={"vit-sup": "x.pt"}))
    with pytest.raises(ExtractError, match="no such file"):
        runner.run(opts(tmp_path / "s.zarr", data, weights={SUP: str(tmp_path / "missing.pt")}))


def test_normalize_with_cached_mean_std_matches_the_arithmetic():
    """The runner normalises with transforms.normalize, whose mean/std tensors are kept per device: every
    call, first or cached, gives exactly (x/255 - mean) / std."""
    import torch

    from extract.spec.models import CLIP_PREPROCESS, SUPERVISED_PREPROCESS
    from extract.tensors import normalize

    x = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    for pre in (SUPERVISED_PREPROCESS, CLIP_PREPROCESS):
        mean = torch.tensor(pre.mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(pre.std, dtype=torch.float32).view(-1, 1, 1)
        expected = (x.to(torch.float32) / 255.0 - mean) / std
        for _ in range(2):
            assert torch.equal(normalize(x, pre), expected)
