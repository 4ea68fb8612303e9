"""Faults at the command line: every one ends in one error line (exit 1 or 2, 143 for SIGTERM), no traceback,
and the store as valid as before, done blocks intact.

The system's refusals are simulated where a test cannot cause them for real: tests run as root, where chmod does
not stop a write, so a read-only store is zarr's ``LocalStore.set`` monkeypatched to raise
``OSError(EROFS)`` naming the file (plus, where this machine lets root bind-mount, a real read-only bind
mount), and a full disk is the same method raising ``OSError(ENOSPC)`` (with no file name, as ``write`` does).
CPU only: tiny demo models on a few generated images, blocks of 4 rows.
"""
from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("timm")

import zarr  # noqa: E402
from zarr.storage import LocalStore  # noqa: E402

import schemas  # noqa: E402
from analyze.cli import main as analyze_main  # noqa: E402
from extract.cli import main as extract_main  # noqa: E402
from imagenet_val import make_imagenet_val  # noqa: E402
from schemas import layout as L  # noqa: E402
from schemas.label_spaces import imagenet_synsets  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SUP = "demo-convnext-sup"
VIT = "demo-vit-sup"
N = 10
ROWS = 4  # rows per block: 10 images are 3 blocks


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(L, "CHUNK_ROWS", ROWS)


@pytest.fixture
def data(tmp_path):
    return make_imagenet_val(tmp_path / "data", N, seed=1, size=(56, 40))


def run_args(store, data, *extra, models=(SUP,)) -> list:
    return ["-q", "run", "--store", store, "--models", *models, "--datasets", "imagenet-val", "--data-root", data,
            "--device", "cpu", "--batch-size", "4", "--workers", "0", "--no-progress", *extra]


def cli(capsys, main, *args) -> tuple[int, str, str]:
    """``main(args)`` in this process; argparse's exits become return codes."""
    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(rc: int, text: str, expected_rc: int, prefix: str, *needles: str) -> str:
    """The one ``prefix: error:`` line of ``text``, checked for the exit code, no traceback and ``needles``."""
    assert rc == expected_rc, (rc, text)
    assert "Traceback" not in text, text
    lines = [x for x in text.splitlines() if "error" in x.lower()]
    assert len(lines) == 1, text
    assert lines[0].startswith(f"{prefix}: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def done_flags(store, model=SUP) -> np.ndarray:
    return np.asarray(zarr.open_group(str(store), mode="r")[f"imagenet-val/center/{model}/{L.BLOCK_DONE}"][...])


def arrays(store, model=SUP, transform="center") -> dict[str, np.ndarray]:
    g = zarr.open_group(str(store), mode="r")[f"imagenet-val/{transform}/{model}"]
    return {k: np.asarray(g[k][...]) for k in (L.LOGITS, L.FEATURES, L.VALID, L.BLOCK_DONE)}


def errors(store) -> list:
    return [v for v in schemas.validate(str(store)) if v.severity == "error"]


def files(path) -> dict[str, bytes]:
    """Every file under ``path`` and its bytes: what "the store as it was" means here."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(Path(path).rglob("*")) if p.is_file()}


@contextlib.contextmanager
def failing_writes(when, make_error) -> Iterator[list[str]]:
    """Within: zarr's LocalStore writes (``set``, ``set_if_not_exists``) raise ``make_error(path)`` for the keys
    ``when(key)`` accepts (listed)."""
    refused: list[str] = []

    def failing(original):
        async def write(self, key, value):
            if when(key):
                refused.append(key)
                raise make_error(str(Path(str(self.root)) / key))
            return await original(self, key, value)
        return write

    with pytest.MonkeyPatch.context() as m:
        for name in ("set", "set_if_not_exists"):
            m.setattr(LocalStore, name, failing(getattr(LocalStore, name)))
        yield refused


@pytest.fixture
def complete_store(tmp_path, data, capsys):
    """A store with one complete run of SUP (blocks of 4 rows), made in this process."""
    store = tmp_path / "s.zarr"
    rc, _, err = cli(capsys, extract_main, *run_args(store, data, "--allow-partial"))
    assert rc == 0, err
    assert done_flags(store).all()
    return store


# ---------------------------------------------------------------- the system refuses a write
def test_read_only_store_is_one_line_and_leaves_the_store_as_it_was(tmp_path, data, complete_store, capsys):
    before = files(complete_store)
    with failing_writes(lambda key: True, lambda path: OSError(errno.EROFS, os.strerror(errno.EROFS), path)) as refused:
        rc, _, err = cli(capsys, extract_main, *run_args(complete_store, data, "--allow-partial", models=(SUP, VIT)))
    one_error_line(rc, err, 1, "extract run", str(complete_store), "read-only file system",
                   "choose a location you can write to", "rerun to resume")
    assert refused, "the run never tried to write"
    assert files(complete_store) == before
    assert errors(complete_store) == []


def test_read_only_bind_mount(tmp_path, data, complete_store, capsys):
    """The real thing where root may mount: a read-only bind mount of a complete store."""
    ro = tmp_path / "ro.zarr"
    ro.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(complete_store), str(ro)], capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("no permission to bind-mount here; the monkeypatched read-only test covers the message")
    try:
        remounted = subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], capture_output=True).returncode == 0
        if not remounted:
            pytest.skip("no permission to remount read-only here")
        before = files(ro)
        rc, _, err = cli(capsys, extract_main, *run_args(ro, data, "--allow-partial", models=(SUP, VIT)))
        one_error_line(rc, err, 1, "extract run", str(ro), "read-only file system", "rerun to resume")
        assert files(ro) == before
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)
    assert errors(complete_store) == []


def test_disk_full_mid_run_keeps_the_done_blocks(tmp_path, data, complete_store, capsys):
    """The second block's logits chunk cannot be written: the run stops with one line; blocks 0 and 2 (written
    by the writer thread around the failure) stay done and right, block 1 stays pending, a rerun fills it."""
    reference = arrays(complete_store)
    store = tmp_path / "full.zarr"
    logits_chunk = f"imagenet-val/center/{SUP}/{L.LOGITS}/c.1.0"
    with failing_writes(lambda key: key == logits_chunk,
                        lambda path: OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))) as refused:
        rc, _, err = cli(capsys, extract_main, *run_args(store, data, "--allow-partial"))
    one_error_line(rc, err, 1, "extract run", str(store), "no space left on device", "free space",
                   "done blocks are kept: rerun to resume")
    assert refused == [logits_chunk]
    flags = done_flags(store)
    assert flags.tolist() == [True, False, True]
    assert errors(store) == []
    got = arrays(store)
    rows = np.repeat(flags, ROWS)[:N]
    np.testing.assert_array_equal(got[L.LOGITS][rows], reference[L.LOGITS][rows])
    np.testing.assert_array_equal(got[L.VALID][rows], reference[L.VALID][rows])

    rc, _, err = cli(capsys, extract_main, *run_args(store, data, "--allow-partial"))
    assert rc == 0, err
    for k, v in arrays(store).items():
        np.testing.assert_array_equal(v, reference[k], err_msg=k)


# ---------------------------------------------------------------- refused before anything is written
def test_unknown_device_refused_before_the_store_exists(tmp_path, data, capsys):
    store = tmp_path / "s.zarr"
    rc, _, err = cli(capsys, extract_main, *run_args(store, data, "--allow-partial", "--device", "tpu"))
    one_error_line(rc, err, 2, "extract run", "--device", "'tpu'", "expected cpu, cuda, cuda:N")
    rc, _, err = cli(capsys, extract_main, *run_args(store, data, "--allow-partial", "--device", "cuda:x"))
    one_error_line(rc, err, 2, "extract run", "'cuda:x'")
    assert not store.exists()


def test_cuda_without_cuda_refused_before_the_store_exists(tmp_path, data, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    store = tmp_path / "s.zarr"
    rc, _, err = cli(capsys, extract_main, *run_args(store, data, "--allow-partial", "--device", "cuda:1"))
    one_error_line(rc, err, 2, "extract run", "--device cuda:1", "CUDA is not available", "--device cpu")
    assert not store.exists()


def test_store_naming_a_file_is_refused_and_the_file_kept(tmp_path, data, capsys):
    store = tmp_path / "notes.txt"
    store.write_text("my notes\n")
    rc, _, err = cli(capsys, extract_main, *run_args(store, data, "--allow-partial"))
    one_error_line(rc, err, 2, "extract run", f"--store {store}", "is a file")
    assert store.read_text() == "my notes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "notes.txt"]


@pytest.mark.parametrize("option, value, expected", [("--batch-size", "0", "must be >= 1"),
                                                     ("--workers", "-1", "must be >= 0"),
                                                     ("--batch-size", "many", "expected a whole number")])
def test_numeric_options_are_range_checked(tmp_path, data, capsys, option, value, expected):
    store = tmp_path / "s.zarr"
    args = [a for a in run_args(store, data, "--allow-partial")]
    args[args.index(option) + 1] = value
    rc, out, err = cli(capsys, extract_main, *args)
    one_error_line(rc, err, 2, "extract run", f"argument {option}", expected)
    assert out == "" and not store.exists()


def test_analyze_n_boot_is_range_checked(tmp_path, complete_store, capsys):
    out = tmp_path / "out"
    rc, stdout, err = cli(capsys, analyze_main, "report", complete_store, "--out", out, "--n-boot", "-5")
    one_error_line(rc, err, 2, "analyze report", "argument --n-boot", "-5", "must be >= 0")
    assert stdout == "" and not out.exists()


def test_analyze_out_that_cannot_be_written(tmp_path, complete_store, capsys, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    rc, _, err = cli(capsys, analyze_main, "report", complete_store, "--out", blocker / "out", "--n-boot", "0",
                     "--quiet")
    one_error_line(rc, err, 1, "analyze report", str(blocker / "out"))
    import polars as pl

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pl.DataFrame, "write_parquet", full)
    out = tmp_path / "out"
    rc, _, err = cli(capsys, analyze_main, "report", complete_store, "--out", out, "--n-boot", "0", "--quiet")
    one_error_line(rc, err, 1, "analyze report", str(out), "no space left on device", "free space")


# ---------------------------------------------------------------- SIGTERM
SLOW_SCRIPT = """\
import sys, time
import schemas
import schemas.layout as L
L.CHUNK_ROWS = int(sys.argv[1])
if sys.argv[2] == "slow":  # each block takes a while to write: the signal lands mid-run
    write_block = schemas.RunWriter.write_block
    def slow(self, *args, **kwargs):
        time.sleep(0.4)
        return write_block(self, *args, **kwargs)
    schemas.RunWriter.write_block = slow
from extract.cli import main
sys.exit(main(sys.argv[3:]))
"""


def extract_process(tmp_path, args, *, slow: bool) -> subprocess.Popen:
    script = tmp_path / "extract_blocks.py"
    script.write_text(SLOW_SCRIPT)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    return subprocess.Popen([sys.executable, str(script), str(ROWS), "slow" if slow else "fast",
                             *map(str, args)], cwd=str(REPO), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_sigterm_stops_like_ctrl_c_and_a_rerun_completes(tmp_path):
    n = 48  # 12 blocks
    data = make_imagenet_val(tmp_path / "data", n, seed=2, size=(56, 40))
    ref = tmp_path / "ref.zarr"
    p = extract_process(tmp_path, run_args(ref, data, "--allow-partial"), slow=False)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err

    store = tmp_path / "s.zarr"
    p = extract_process(tmp_path, run_args(store, data, "--allow-partial"), slow=True)
    deadline, sent = time.monotonic() + 240, False
    try:
        while time.monotonic() < deadline and p.poll() is None:
            try:
                flagged = int(done_flags(store).sum())
            except (KeyError, FileNotFoundError, ValueError):
                flagged = 0
            if flagged >= 1:
                p.send_signal(signal.SIGTERM)
                sent = True
                break
            time.sleep(0.02)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert sent, f"the run ended before it could be signalled: {err}"
    assert p.returncode == 143, err
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.startswith("extract run:")]
    assert lines == ["extract run: stopped by SIGTERM; done blocks are kept, rerun to resume"], err
    flags = done_flags(store)
    assert 1 <= flags.sum() < len(flags)
    assert errors(store) == []
    rows = np.repeat(flags, ROWS)[:n]
    np.testing.assert_array_equal(arrays(store)[L.LOGITS][rows], arrays(ref)[L.LOGITS][rows])

    q = extract_process(tmp_path, run_args(store, data, "--allow-partial"), slow=False)
    out, err = q.communicate(timeout=300)
    assert q.returncode == 0, err
    assert f"{int(flags.sum())}/{len(flags)}" in out  # the rerun skipped the blocks done before the signal
    for k, v in arrays(store).items():
        np.testing.assert_array_equal(v, arrays(ref)[k], err_msg=k)


# ---------------------------------------------------------------- datasets as declared
def test_partial_dataset_refused_without_allow_partial(tmp_path, data, capsys):
    store = tmp_path / "s.zarr"
    rc, _, err = cli(capsys, extract_main, *run_args(store, data))
    one_error_line(rc, err, 2, "extract run", f"found {N} samples under {data / 'imagenet-val'}",
                   "expects 50000", "datasets.imagenet-val.expected_samples", "--allow-partial")
    assert not store.exists()


def test_partial_dataset_is_marked_and_flagged(tmp_path, data, capsys, kit):
    import polars as pl

    store = tmp_path / "s.zarr"
    rc, _, err = cli(capsys, extract_main, *run_args(store, data, "--allow-partial", models=(SUP, VIT)))
    assert rc == 0, err
    assert zarr.open_group(str(store), mode="r")["imagenet-val"].attrs["partial"] == {"found": N, "expected": 50000}

    rc, out, _ = cli(capsys, extract_main, "status", store)
    assert rc == 0
    for model in (SUP, VIT):
        line = next(x for x in out.splitlines() if x.startswith(f"imagenet-val/center/{model}"))
        assert "PARTIAL dataset: 10 of 50000 samples" in line
    assert "2 runs on partial datasets" in out.splitlines()[-1]

    # a whole dataset beside it, written through schemas (no partial mark): its numbers are not flagged
    cats = kit.read_cue_categories()
    ids = np.array([f"cue-{i}.png" for i in range(16)])
    kit.write(store, "cue-conflict", "center", SUP, kit.planted([cats[i % 16][1][0] for i in range(16)], 1000),
              sample_id=ids, label=np.arange(16) % 16, columns={"texture_label": (np.arange(16) + 1) % 16})

    out_dir = tmp_path / "out"
    rc, _, err = cli(capsys, analyze_main, "report", store, "--out", out_dir, "--n-boot", "5", "--quiet")
    assert rc == 0, err
    assert "note: imagenet-val: partial dataset, 10 of its 50000 samples" in err
    results = pl.read_csv(out_dir / "results.csv")
    store_rows = results.filter(pl.col("dataset").is_in(["imagenet-val", "imagenet-real"]))
    assert len(store_rows) > 0 and store_rows["partial"].to_list() == [True] * len(store_rows)
    cue = results.filter(pl.col("dataset") == "cue-conflict")
    assert len(cue) > 0 and cue["partial"].to_list() == [False] * len(cue)
    diffs = pl.read_csv(out_dir / "differences.csv")
    val_diffs = diffs.filter(pl.col("dataset") == "imagenet-val")
    assert len(val_diffs) > 0 and val_diffs["partial"].all()
    report = (out_dir / "report.md").read_text()
    sections = {s.split("\n", 1)[0]: s for s in report.split("\n## ")[1:]}
    flagged = {title for title, body in sections.items() if "**Partial data:** `imagenet-val` holds 10 of its 50000" in body}
    unflagged = {title for title, body in sections.items() if "Partial data" not in body}
    assert any(t.startswith("Robustness") for t in flagged), sorted(sections)
    assert any(t.startswith("Calibration") for t in flagged), sorted(sections)
    assert any(t.startswith("Shape bias") for t in unflagged), sorted(sections)
    assert "**partial: 10 of 50000 samples**" in sections["What the store holds"]
    assert any(t.startswith("Agreement") and t.endswith("imagenet-val") for t in flagged), sorted(sections)
    agreement = pl.read_csv(out_dir / "agreement.csv")
    assert agreement.filter(pl.col("dataset") == "imagenet-val")["partial"].to_list() == [True] * 4  # kappa x3, CKA
    assert not agreement.filter(pl.col("dataset") != "imagenet-val")["partial"].any()


def test_changed_sample_list_says_what_changed(tmp_path, data, complete_store, capsys):
    before = files(complete_store)
    folder = data / "imagenet-val"
    synsets = imagenet_synsets()
    rows = (folder / "LOC_val_solution.csv").read_text().splitlines()
    header, body = rows[0], {r.split(",")[0]: r for r in rows[1:]}
    for i in (2, 7):  # removed
        (folder / f"ILSVRC2012_val_{i:08d}.JPEG").unlink()
        del body[f"ILSVRC2012_val_{i:08d}"]
    name3 = "ILSVRC2012_val_00000003"
    old_synset = body[name3].split(",")[1].split()[0]
    old, new = synsets.index(old_synset), (synsets.index(old_synset) + 1) % 1000
    body[name3] = body[name3].replace(old_synset, synsets[new])  # relabelled
    (folder / "ILSVRC2012_val_00000011.JPEG").write_bytes((folder / "ILSVRC2012_val_00000001.JPEG").read_bytes())
    body["ILSVRC2012_val_00000011"] = f"ILSVRC2012_val_00000011,{synsets[5]} 0 0 1 1"  # added
    (folder / "LOC_val_solution.csv").write_text("\n".join([header, *body.values()]) + "\n")

    rc, _, err = cli(capsys, extract_main, *run_args(complete_store, data, "--allow-partial"))
    line = one_error_line(rc, err, 2, "extract run", "imagenet-val: the store holds a different sample list",
                          "10 stored, 9 offered")
    assert "1 added: ILSVRC2012_val_00000011.JPEG;" in line
    assert "2 removed: ILSVRC2012_val_00000002.JPEG, ILSVRC2012_val_00000007.JPEG;" in line
    assert f"1 relabelled: ILSVRC2012_val_00000003.JPEG {old}->{new})" in line
    assert files(complete_store) == before


# ---------------------------------------------------------------- a damaged root zarr.json
def test_damaged_root_metadata_is_named_by_every_command(tmp_path, data, complete_store, capsys):
    meta = complete_store / "zarr.json"
    meta.write_text("{\n")
    others = {k: v for k, v in files(complete_store).items() if k != "zarr.json"}
    named = f"{complete_store}/zarr.json: damaged metadata, not JSON"

    for main in (extract_main, analyze_main):  # verify / validate print their findings on stdout, exit 1
        rc, out, err = cli(capsys, main, "verify" if main is extract_main else "validate", complete_store)
        assert rc == 1 and "Traceback" not in out + err, out + err
        findings = [x for x in out.splitlines() if x.startswith("error: ")]
        assert len(findings) == 1 and named in findings[0], out
        assert out.splitlines()[-1].endswith("1 errors, 0 warnings"), out
    rc, _, err = cli(capsys, extract_main, "status", complete_store)
    one_error_line(rc, err, 2, "extract status", named, "restore the file")
    out_dir = tmp_path / "out"
    rc, _, err = cli(capsys, analyze_main, "report", complete_store, "--out", out_dir, "--quiet")
    one_error_line(rc, err, 2, "analyze report", named)
    assert not out_dir.exists()
    rc, _, err = cli(capsys, extract_main, *run_args(complete_store, data, "--allow-partial"))
    one_error_line(rc, err, 2, "extract run", named)

    assert meta.read_text() == "{\n"
    assert {k: v for k, v in files(complete_store).items() if k != "zarr.json"} == others


def test_damaged_run_metadata_is_named_by_every_command(tmp_path, data, complete_store, capsys):
    """A zarr.json below the root: zarr itself says only "Expecting ..."; every command names the file."""
    run_meta = next(p for p in sorted(complete_store.rglob("zarr.json")) if len(p.relative_to(complete_store).parts) == 4)
    run_meta.write_text("{ broken")
    named = f"{complete_store}/{run_meta.relative_to(complete_store).as_posix()}: damaged metadata, not JSON"
    before = files(complete_store)

    for main in (extract_main, analyze_main):
        rc, out, err = cli(capsys, main, "verify" if main is extract_main else "validate", complete_store)
        assert rc == 1 and "Traceback" not in out + err, out + err
        assert any(named in x for x in out.splitlines() if x.startswith("error: ")), out
    rc, _, err = cli(capsys, extract_main, "status", complete_store)
    one_error_line(rc, err, 2, "extract status", named, "restore the file")
    rc, _, err = cli(capsys, analyze_main, "report", complete_store, "--out", tmp_path / "out", "--quiet")
    one_error_line(rc, err, 2, "analyze report", named)
    rc, _, err = cli(capsys, extract_main, *run_args(complete_store, data, "--allow-partial"))
    one_error_line(rc, err, 2, "extract run", named)
    assert files(complete_store) == before


def test_a_network_error_nobody_awaited_is_not_printed_with_its_traceback(caplog):
    """When the object storage goes away, aiohttp's pending writes end in errors nobody awaits, which asyncio
    reports with a traceback beside the run's one error line; the command line drops those, and only those."""
    import asyncio
    import gc
    import logging

    from aiohttp.client_exceptions import ClientConnectionResetError

    from extract.cli import _NetworkLeftovers, _setup_logging

    async def fail(error: Exception) -> None:
        raise error

    async def leave_unawaited() -> None:
        for error in (ClientConnectionResetError("Cannot write to closing transport"), ValueError("a bug")):
            task = asyncio.ensure_future(fail(error))
            await asyncio.sleep(0)
            del task
            gc.collect()

    _setup_logging(verbose=False, quiet=False)
    try:
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            asyncio.run(leave_unawaited())
            gc.collect()
    finally:
        asyncio_log = logging.getLogger("asyncio")
        for f in [f for f in asyncio_log.filters if isinstance(f, _NetworkLeftovers)]:
            asyncio_log.removeFilter(f)
    reported = [r for r in caplog.records if r.name == "asyncio"]
    assert [type(r.exc_info[1]).__name__ for r in reported] == ["ValueError"]
    assert "never retrieved" in reported[0].getMessage()
