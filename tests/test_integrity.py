"""Integrity you can check: block checksums, chunk presence, ``extract verify [--quick]``, ``--repair``, and
what a damaged store does to ``analyze`` and ``extract status``; plus the block writer killed at every write.

Faults are made the way they happen: a chunk file deleted or cut short, a chunk rewritten with other values
through zarr (without its checksum), a write cut short by a kill. Expected checksums are computed here with
google_crc32c over the bytes the contract says (the block's values in the array's dtype, C order), not
with ``schemas.integrity``. Blocks are a few rows (``CHUNK_ROWS`` patched, here and in subprocesses).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import google_crc32c
import numpy as np
import pytest
import zarr

import schemas
from schemas import layout as L

from conftest import val_ids, write

REPO = Path(__file__).resolve().parents[1]
ROWS = 8
N = 20  # 3 blocks: rows 0:8, 8:16, 16:20
SUP, VIT = "demo-convnext-sup", "demo-vit-sup"
T = "center"  # what the robustness study reads
DS = "imagenet-val"


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(L, "CHUNK_ROWS", ROWS)
    return ROWS


def env_with_repo() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def crc(values, dtype) -> int:
    return google_crc32c.value(np.ascontiguousarray(np.asarray(values, dtype=dtype)).tobytes())


def errors(store, **kw) -> list:
    return [v for v in schemas.validate(str(store), **kw) if v.severity == "error"]


def extract_cli(capsys, *args) -> tuple[int, str, str]:
    from extract.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def analyze_cli(capsys, *args) -> tuple[int, str, str]:
    from analyze.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def all_arrays(store) -> dict[str, np.ndarray]:
    """Every array of the store by path, except block_seconds (a timing, different in every run)."""
    out = {}

    def walk(group):
        for name, arr in group.arrays():
            if name != L.BLOCK_SECONDS:
                out[arr.path] = np.asarray(arr[...])
        for _, sub in group.groups():
            walk(sub)

    walk(zarr.open_group(str(store), mode="r"))
    return out


def assert_same_store(a, b) -> None:
    left, right = all_arrays(a), all_arrays(b)
    assert sorted(left) == sorted(right)
    for path in left:
        assert left[path].dtype == right[path].dtype, path
        np.testing.assert_array_equal(left[path], right[path], err_msg=path)


def chunk_bytes(store) -> dict[str, bytes]:
    """Every stored chunk file (not metadata, not block_seconds) by its path in the store."""
    root = Path(store)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "zarr.json" and f"/{L.BLOCK_SECONDS}/" not in f"/{p.relative_to(root)}"}


# ---------------------------------------------------------------- what the writer records
def test_block_checksums_are_crc32c_of_what_was_stored_and_all_invalid_blocks_keep_their_chunks(tmp_path):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(N, 5))                 # float64 given: stored float32
    feats = rng.normal(size=(N, 3))
    valid = np.ones(N, bool)
    valid[8:16] = False                              # block 1 all invalid: every chunk holds only the fill value
    valid[2] = False
    store = tmp_path / "s.zarr"
    write(store, DS, "center", "m", logits, feats, sample_id=val_ids(N), label=np.arange(N) % 5, valid=valid)

    run = zarr.open_group(str(store), mode="r")[f"{DS}/center/m"]
    table = run[L.BLOCK_CHECKSUM]
    assert table.shape == (3, 3) and table.dtype == np.uint32 and table.chunks == (1, 3)
    assert table.metadata.dimension_names == (L.BLOCK_DIM, L.ARRAY_DIM)
    assert table.attrs["arrays"] == ["logits", "features", "valid"] and table.attrs["algorithm"] == "crc32c"
    stored_logits = np.where(valid[:, None], logits, np.nan).astype(np.float32)
    stored_feats = np.where(valid[:, None], feats, np.nan).astype(np.float16)
    for b, rows in enumerate((slice(0, 8), slice(8, 16), slice(16, 20))):
        assert table[b].tolist() == [crc(stored_logits[rows], np.float32), crc(stored_feats[rows], np.float16),
                                     crc(valid[rows], np.bool_)], b
    # zarr skips writing a chunk of fill values; the writer must not, or an all-invalid block looks lost
    for name in ("logits/c.1.0", "features/c.1.0", "valid/c.1"):
        assert (store / DS / "center" / "m" / name).is_file(), name
    assert schemas.validate(store) == [] and schemas.validate(store, quick=True) == []


# ---------------------------------------------------------------- faults in an extracted store
@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """A store extracted by the runner (two demo models, 20 images, one of them bad), kept untouched."""
    pytest.importorskip("torch")
    pytest.importorskip("timm")
    from imagenet_val import make_imagenet_val

    from extract import runner

    tmp = tmp_path_factory.mktemp("extracted")
    data = make_imagenet_val(tmp / "data", N, bad={4: b""})
    store = tmp / "clean.zarr"
    with pytest.MonkeyPatch.context() as m:
        m.setattr(L, "CHUNK_ROWS", ROWS)
        runner.run(run_opts(store, data))
        assert errors(store) == []
    return data, store


def run_opts(store, data, **kw):
    from extract.options import RunOptions

    base = dict(store=str(store), models=[SUP, VIT], datasets=[DS], transforms=[T], data_root=str(data),
                device="cpu", batch_size=4, workers=0, progress=False, allow_partial=True)
    base.update(kw)
    return RunOptions(**base)


RUN = f"{DS}/{T}/{SUP}"


def _delete(store, rel):
    (store / rel).unlink()


def _truncate(store, rel):
    path = store / rel
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _rewrite_values(store, rel):
    """Other values written through zarr into block 0 of the logits, the checksum left as it was."""
    arr = zarr.open_group(str(store), mode="r+")[f"{RUN}/{L.LOGITS}"]
    arr[0:ROWS] = arr[0:ROWS] + 1.0


# fault -> (make it, the array the messages name, its block (None: the sample list as a whole), whether the
# checks that read no chunk data (--quick, extract status) see it)
FAULTS = {
    "deleted-logits-chunk": (lambda s: _delete(s, f"{RUN}/logits/c.1.0"), f"{RUN}/logits", 1, True),
    "deleted-valid-chunk": (lambda s: _delete(s, f"{RUN}/valid/c.1"), f"{RUN}/valid", 1, True),
    "deleted-features-chunk": (lambda s: _delete(s, f"{RUN}/features/c.2.0"), f"{RUN}/features", 2, True),
    "deleted-sample-id-chunk": (lambda s: _delete(s, f"{DS}/sample_id/c.1"), f"{DS}/sample_id", 1, True),
    "deleted-label-chunk": (lambda s: _delete(s, f"{DS}/label/c.0"), DS, None, False),
    "truncated-logits-chunk": (lambda s: _truncate(s, f"{RUN}/logits/c.2.0"), f"{RUN}/logits", 2, False),
    # valid is small enough that --quick and status read it whole (for the all-invalid check, the invalid ids)
    "truncated-valid-chunk": (lambda s: _truncate(s, f"{RUN}/valid/c.0"), f"{RUN}/valid", 0, True),
    "rewritten-logits": (lambda s: _rewrite_values(s, None), f"{RUN}/logits", 0, False),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_fault_is_named_refused_and_repaired_bit_identical(fault, extracted, tmp_path, capsys):
    from extract import runner

    data, clean = extracted
    store = tmp_path / "damaged.zarr"
    shutil.copytree(clean, store)
    make, path, block, presence = FAULTS[fault]
    make(store)
    rows = None if block is None else f"rows {block * ROWS}:{min((block + 1) * ROWS, N)}"
    sample_list = path.startswith(f"{DS}/sample_id") or block is None

    # extract verify: the array, the block and its rows, and the command that repairs it; exit 1
    rc, out, err = extract_cli(capsys, "verify", store)
    assert rc == 1, out
    line = next(v for v in out.splitlines() if v.startswith(f"error: {path}:"))
    if block is not None:
        assert f"block {block} ({rows})" in line, line
    if sample_list:
        assert "sample list is damaged" in line and f"--repair --datasets {DS}" in line, line
    else:
        assert f"extract run --store {store} --repair --datasets {DS} --transforms {T} --models {SUP}" in line, line

    # --quick reads no chunk data: it sees every deletion (that is what it is for), not altered bytes
    rc, out, _ = extract_cli(capsys, "verify", "--quick", store)
    assert rc == (1 if presence else 0), out
    if presence:
        assert f"error: {path}: " in out, out
        assert f"block {block} ({rows}): chunk" in out and "missing" in out if "deleted" in fault else "unreadable" in out

    # analyze validate: the same errors, exit 1
    rc, out, _ = analyze_cli(capsys, "validate", store)
    assert rc == 1 and f"error: {path}:" in out, out

    # analyze report refuses: one line naming the store path, the rows and the repair; no traceback
    rc, _, err = analyze_cli(capsys, "report", store, "--out", tmp_path / "out", "--studies", "robustness",
                             "--n-boot", "0", "--quiet")
    assert rc == 2, err
    assert "Traceback" not in err and err.startswith("analyze report: error: ") and len(err.strip().splitlines()) == 1, err
    assert f"{store}/{path}" in err and "--repair" in err, err
    if block is not None:
        assert rows in err, err
    assert not (tmp_path / "out" / "report.md").exists()

    # extract status checks presence: a deletion makes the run(s) damaged, not complete
    if presence:
        rc, out, _ = extract_cli(capsys, "status", store)
        assert rc == 0
        run_line = next(v for v in out.splitlines() if v.startswith(RUN))
        assert "damaged" in run_line and "complete" not in run_line.replace("incomplete", ""), out
        assert f"damaged: {path}: " in out and "extract run --repair" in out, out

    # extract run --repair: exactly the damaged block is re-extracted (or the sample list rewritten), and the
    # store ends bit-identical to the untouched one
    res = runner.run(run_opts(store, data, repair=True))
    if sample_list:
        assert res.repaired == [(DS, "sample list", [])] and res.images == 0
    else:
        assert res.repaired == [(RUN, "missing or damaged", [block])]
        assert res.images == min((block + 1) * ROWS, N) - block * ROWS and res.units[0].blocks_written == 1
    assert "repaired: " in res.summary()
    assert_same_store(clean, store)
    assert chunk_bytes(clean) == chunk_bytes(store)
    assert errors(store) == []


def test_repair_touches_only_the_selected_runs(extracted, tmp_path):
    from extract import runner

    data, clean = extracted
    store = tmp_path / "damaged.zarr"
    shutil.copytree(clean, store)
    for model in (SUP, VIT):
        _delete(store, f"{DS}/{T}/{model}/logits/c.0.0")
    res = runner.run(run_opts(store, data, models=[SUP], repair=True))
    assert res.repaired == [(RUN, "missing or damaged", [0])]
    left = errors(store)
    assert [v.path for v in left] == [f"{DS}/{T}/{VIT}/logits"] and "block 0 (rows 0:8)" in left[0].message
    res = runner.run(run_opts(store, data, repair=True))
    assert res.repaired == [(f"{DS}/{T}/{VIT}", "missing or damaged", [0])]
    assert_same_store(clean, store)
    # nothing damaged: --repair re-extracts nothing
    assert runner.run(run_opts(store, data, repair=True)).images == 0


def test_a_rerun_without_repair_does_not_redo_a_damaged_block_but_says_where_to_look(extracted, tmp_path, capsys):
    """Without --repair a done block stays done (a rerun must not read every block back); verify tells."""
    from extract import runner

    data, clean = extracted
    store = tmp_path / "damaged.zarr"
    shutil.copytree(clean, store)
    _delete(store, f"{RUN}/logits/c.1.0")
    assert runner.run(run_opts(store, data)).images == 0
    rc, out, _ = extract_cli(capsys, "verify", store)
    assert rc == 1 and f"{RUN}/logits: block 1 (rows 8:16): chunk c.1.0 missing" in out


def test_store_written_before_checksums_verifies_by_presence_and_analyses(extracted, tmp_path, capsys):
    from extract import runner

    data, clean = extracted
    store = tmp_path / "old.zarr"
    shutil.copytree(clean, store)
    for model in (SUP, VIT):  # what a store written before this change lacks
        shutil.rmtree(store / DS / T / model / L.BLOCK_CHECKSUM)

    rc, out, _ = extract_cli(capsys, "verify", store)
    assert rc == 0 and f"warning: {RUN}: no checksums recorded (written before checksums)" in out, out
    summary = next(s for k, s in _summaries(store).items() if k.dataset == DS)
    assert summary.valid.sum() == N - 1  # the bad image only

    # presence is still checked in an old store
    _delete(store, f"{RUN}/valid/c.2")
    rc, out, _ = extract_cli(capsys, "verify", "--quick", store)
    assert rc == 1 and f"error: {RUN}/valid: block 2 (rows 16:20): chunk c.2 missing" in out, out

    # resumed by this version: the block it writes gets a checksum, the older ones are named as unchecked
    runner.run(run_opts(store, data, repair=True))
    problems = schemas.validate(store)
    assert [v for v in problems if v.severity == "error"] == []
    unchecked = [v for v in problems if v.path == f"{RUN}/{L.BLOCK_CHECKSUM}"]
    assert len(unchecked) == 1 and "no checksum recorded for done blocks 0, 1 (written before checksums)" in \
        unchecked[0].message
    table = zarr.open_group(str(store), mode="r")[f"{RUN}/{L.BLOCK_CHECKSUM}"]
    valid = zarr.open_group(str(store), mode="r")[f"{RUN}/{L.VALID}"][16:20]
    assert int(table[2][2]) == crc(valid, np.bool_)


def _summaries(store: Path) -> dict:
    """Every run's summary as the analysis reads it, by run, in the reader's order."""
    from analyze.store import StoreReader
    from analyze.summaries import SummaryCache

    reader = StoreReader(store)
    cache = SummaryCache(reader)
    try:
        return {key: cache.summary(key) for key in reader.runs()}
    finally:
        cache.close()


def _slash_keys(store: Path) -> None:
    """Rewrite a store as one written before chunk keys were "c.<row>.<column>": zarr's default "/" separator, each
    chunk at c/<row>/<column>."""
    for meta in store.rglob("zarr.json"):
        document = json.loads(meta.read_text())
        if document.get("node_type") != "array":
            continue
        document["chunk_key_encoding"] = {"name": "default", "configuration": {"separator": "/"}}
        meta.write_text(json.dumps(document))
        for chunk in meta.parent.glob("c.*"):
            moved = meta.parent.joinpath(*chunk.name.split("."))
            moved.parent.mkdir(parents=True, exist_ok=True)
            chunk.rename(moved)


def test_a_store_with_slash_chunk_keys_reads_alike_and_its_damage_is_named(extracted, tmp_path, capsys):
    """New stores keep each chunk as a file of its array's folder (c.1.0); one written before (c/1/0) reads to the
    same summaries, verifies clean, and a chunk lost from it is found and named by its key."""
    data, clean = extracted
    assert (clean / RUN / L.LOGITS / "c.1.0").is_file() and not (clean / RUN / L.LOGITS / "c").exists()
    store = tmp_path / "slash.zarr"
    shutil.copytree(clean, store)
    _slash_keys(store)
    assert (store / RUN / L.LOGITS / "c" / "1" / "0").is_file() and not list(store.rglob("c.*"))

    new, old = _summaries(clean), _summaries(store)
    assert list(new) == list(old) and len(new) == 2
    for a, b in zip(new.values(), old.values()):
        for name in ("pred", "confidence", "p_true", "valid"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert errors(store) == []
    _delete(store, f"{RUN}/logits/c/1/0")
    rc, out, _ = extract_cli(capsys, "verify", "--quick", store)
    assert rc == 1 and f"{RUN}/logits: block 1 (rows 8:16): chunk c/1/0 missing" in out, out


# ---------------------------------------------------------------- the block writer killed at every write
KILLED_WRITER = """
import os, sys
import numpy as np
import schemas.layout as L
L.CHUNK_ROWS = {rows}
import zarr.storage
import schemas
from schemas.store import RunWriter

mode, point, store = sys.argv[1], int(sys.argv[2]), sys.argv[3]
KILL_BLOCK = 1
state = {{"in": False, "writes": []}}

write_block = RunWriter.write_block
def counted_write_block(self, block, *args, **kwargs):
    state["in"] = block == KILL_BLOCK
    write_block(self, block, *args, **kwargs)
    state["in"] = False
    if block == KILL_BLOCK and mode == "after":
        os._exit(9)
RunWriter.write_block = counted_write_block

store_set = zarr.storage.LocalStore.set
async def counted_set(self, key, value, *args, **kwargs):
    if state["in"]:
        k = len(state["writes"])
        state["writes"].append(key)
        if k == point and mode == "before":
            os._exit(9)
        if k == point and mode == "torn":  # the object half written, as a kill inside write() leaves it
            data = value.to_bytes()
            await store_set(self, key, type(value).from_bytes(data[: len(data) // 2]), *args, **kwargs)
            os._exit(9)
    await store_set(self, key, value, *args, **kwargs)
zarr.storage.LocalStore.set = counted_set

{write}
if mode == "count":
    print("\\n".join(state["writes"]))
"""

WRITE_RUN = """
rng = np.random.default_rng(0)
n = 24
valid = np.ones(n, bool)
valid[[3, 9, 10]] = False
entry = {{"id": "imagenet-val", "label_space": "imagenet-1k", "columns": {{}}}}  # 7-wide logits: no logit space
schemas.write_run(store, "imagenet-val", "center", "m", rng.normal(size=(n, 7)).astype(np.float32),
                  rng.normal(size=(n, 4)), sample_id=np.array([f"s{{i:03d}}" for i in range(n)]),
                  label=np.arange(n) % 7, valid=valid, dataset_attrs={{"manifest": entry, "label_space": "imagenet-1k"}})
"""


def _writer(tmp_path, mode: str, point: int, store: Path) -> subprocess.Popen:
    script = tmp_path / "killed_writer.py"
    if not script.exists():
        script.write_text(KILLED_WRITER.format(rows=ROWS, write=WRITE_RUN.format()))
    return subprocess.Popen([sys.executable, str(script), mode, str(point), str(store)], cwd=str(REPO),
                            env=env_with_repo(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _resume(store: Path) -> None:
    """The same write_run again, in this process: it writes the blocks not flagged done."""
    ns: dict = {"np": np, "schemas": schemas, "store": str(store)}
    exec(WRITE_RUN.format(), ns)


def test_block_writer_killed_at_every_write_then_resumed_equals_uninterrupted(tmp_path):
    ref = tmp_path / "ref.zarr"
    p = _writer(tmp_path, "count", -1, ref)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    writes = out.split()
    # the order docs/design.md gives: every row array of the block, its checksums, its time, the flag last
    assert [w.split("/")[3] for w in writes] == [L.LOGITS, L.FEATURES, L.VALID, L.INVALID_REASON, L.BLOCK_CHECKSUM,
                                                 L.BLOCK_SECONDS, L.BLOCK_DONE], writes

    points = [("before", k) for k in range(len(writes))] + [("torn", k) for k in range(len(writes))] + [("after", 0)]
    stores = {pt: tmp_path / f"{pt[0]}-{pt[1]}.zarr" for pt in points}
    procs = {pt: _writer(tmp_path, pt[0], pt[1], stores[pt]) for pt in points}
    n_blocks = 3
    for (mode, k), proc in procs.items():
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 9, f"{mode} write {k}: not killed ({proc.returncode}): {err}"
        store = stores[(mode, k)]
        run = zarr.open_group(str(store), mode="r")["imagenet-val/center/m"]
        flags, torn = schemas.integrity.done_flags(run)
        # block 0 done; block 1 done only once its flag is wholly on disk; block 2 never started
        assert flags.tolist() == [True, mode == "after", False], (mode, k, writes[k] if k < len(writes) else "")
        assert torn == ([1] if (mode, k) == ("torn", len(writes) - 1) else []), (mode, k)
        # no block is flagged done with missing or damaged data: the full check finds nothing
        check = schemas.integrity.check_run(run, 24)
        assert check.damage == [] and check.unchecked == [], (mode, k, check)
        assert [v for v in schemas.validate(store) if v.severity == "error"] == [], (mode, k)
        _resume(store)
        assert schemas.integrity.done_flags(zarr.open_group(str(store), mode="r")["imagenet-val/center/m"])[0].sum() \
            == n_blocks
        assert_same_store(ref, store)
        assert schemas.validate(store) == [], (mode, k)
