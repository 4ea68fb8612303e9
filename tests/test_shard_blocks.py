"""Shards read without zarr (analyze/shard_blocks.py): zarr's values bit for bit, and zarr's errors on damage."""
from __future__ import annotations

import numpy as np
import pytest
import zarr

from analyze.shard_blocks import ShardBlocks, frame_content_size
from analyze.store import AnalysisError, RunKey, StoreReader

N, K = 25_500, 7  # two whole shards and a third of 5,500 rows, whose last chunk lies half past the end
KEY = RunKey("imagenet-val", "center", "m")


def _store(kit, tmp_path, dtype):
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((N, K)) * 4).astype(dtype)
    store = tmp_path / "s.zarr"
    kit.write(store, "imagenet-val", "center", "m", logits, sample_id=kit.val_ids(N),
              label=rng.integers(0, K, N).astype(np.int32))
    return store, logits


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view({2: np.uint16, 4: np.uint32}[a.dtype.itemsize])


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_every_block_is_zarrs_bit_for_bit(kit, tmp_path, dtype):
    store, logits = _store(kit, tmp_path, dtype)
    arr = zarr.open_group(store, mode="r")[f"{KEY.path}/logits"]
    shards = ShardBlocks.of(arr)
    assert shards is not None  # the extractor's layout in a local store is read this way
    reader = StoreReader(store)
    for rows in reader.blocks(KEY):
        got = shards.read(rows)
        assert got is not None, rows
        assert got.dtype == logits.dtype and got.shape == (rows.stop - rows.start, K)
        np.testing.assert_array_equal(_bits(got), _bits(arr[rows]))
        np.testing.assert_array_equal(_bits(reader.logits(KEY, rows)), _bits(logits[rows]))


def test_parts_are_the_blocks_chunks_in_one_buffer_of_the_reading_thread(kit, tmp_path):
    """``parts``: each block a chunk at a time, decoded into one buffer the reading thread keeps (no fresh memory a
    block), the values of a whole read; another thread decodes into a buffer of its own."""
    import threading

    store, logits = _store(kit, tmp_path, np.float32)
    reader = StoreReader(store)
    shards = ShardBlocks.of(zarr.open_group(store, mode="r")[f"{KEY.path}/logits"])
    first = None
    for rows in reader.blocks(KEY):
        got = []
        for part, values in shards.parts(rows):
            assert values.shape == (part.stop - part.start, K) and len(values) <= 1000
            first = values if first is None else first
            assert np.shares_memory(values, first), (rows, part)
            got.append((part, values.copy()))
        assert [p.start for p, _ in got] == list(range(0, rows.stop - rows.start, 1000))
        np.testing.assert_array_equal(np.concatenate([v for _, v in got]), logits[rows])
        np.testing.assert_array_equal(np.concatenate([v.copy() for _, v in reader.logit_parts(KEY, rows)]), logits[rows])
    assert not np.shares_memory(shards.read(slice(0, 10000)), first)  # a whole read: memory of its own
    other = []
    thread = threading.Thread(target=lambda: other.extend((np.shares_memory(v, first), v.copy())
                                                          for _, v in shards.parts(slice(0, 10000))))
    thread.start()
    thread.join()
    assert not any(shared for shared, _ in other)
    np.testing.assert_array_equal(np.concatenate([v for _, v in other]), logits[:10000])


def test_rows_that_are_not_one_shard_are_left_to_zarr(kit, tmp_path):
    store, _ = _store(kit, tmp_path, np.float32)
    shards = ShardBlocks.of(zarr.open_group(store, mode="r")[f"{KEY.path}/logits"])
    for rows in (slice(0, 5000), slice(5000, 15000), slice(20000, 25500, 2), slice(10000, 25500)):
        assert shards.read(rows) is None, rows


def test_an_unwritten_chunk_is_left_to_zarr(tmp_path):
    """A chunk holding only the fill value is not written where empty chunks are skipped (zarr's default; the
    extractor writes them): the shard's index marks it empty and zarr fills it in."""
    from zarr.codecs import ZstdCodec

    values = np.random.default_rng(0).standard_normal((20000, K)).astype(np.float32)
    values[1000:2000] = np.nan
    arr = zarr.create_array(tmp_path / "a.zarr", shape=values.shape, chunks=(1000, K), shards=(10000, K),
                            dtype=np.float32, fill_value=np.nan, compressors=ZstdCodec(level=3),
                            config={"write_empty_chunks": False})
    arr[...] = values
    shards = ShardBlocks.of(arr)
    assert shards is not None
    assert shards.read(slice(0, 10000)) is None
    np.testing.assert_array_equal(shards.read(slice(10000, 20000)), values[10000:])
    np.testing.assert_array_equal(arr[:10000], values[:10000])  # NaN where the chunk was not written


def test_other_layouts_are_not_read_this_way(kit, tmp_path):
    small = tmp_path / "small.zarr"
    kit.write(small, "imagenet-val", "center", "m", np.zeros((3000, K), np.float32), sample_id=kit.val_ids(3000),
              label=np.zeros(3000, np.int32))
    assert ShardBlocks.of(zarr.open_group(small, mode="r")[f"{KEY.path}/logits"]) is None  # chunks, no shards
    in_memory = zarr.create_array(zarr.storage.MemoryStore(), shape=(20000, K), chunks=(1000, K), shards=(10000, K),
                                  dtype=np.float32)
    assert ShardBlocks.of(in_memory) is None  # not a local file store
    split = zarr.create_array(tmp_path / "split.zarr", shape=(20000, 8), chunks=(1000, 4), shards=(10000, 8),
                              dtype=np.float32)
    assert ShardBlocks.of(split) is None  # chunks that do not span every column


def _shard_file(store, b: int):
    return store / KEY.path / "logits" / f"c.{b}.0"


@pytest.mark.parametrize("where", ["frame", "last frame", "index", "truncated", "missing"])
def test_damage_is_refused_naming_the_rows(kit, tmp_path, where):
    store, _ = _store(kit, tmp_path, np.float32)
    reader = StoreReader(store)  # opened first: the damage comes after the store's chunks were listed
    path = _shard_file(store, 1)
    data = bytearray(path.read_bytes())
    if where == "frame":
        data[40] ^= 0xFF
    elif where == "last frame":  # the parts before it were given: the whole block is read again, and refused
        data[len(data) - 16 * 10 - 4 - 100] ^= 0xFF
    elif where == "index":
        data[-10] ^= 0xFF
    elif where == "truncated":
        data = data[: len(data) // 2]
    if where == "missing":
        path.unlink()
    else:
        path.write_bytes(bytes(data))
    with pytest.raises(AnalysisError, match=r"imagenet-val/center/m/logits.*10000"):
        reader.logits(KEY, slice(10000, 20000))
    with pytest.raises(AnalysisError, match=r"imagenet-val/center/m/logits.*10000"):
        for _ in reader.logit_parts(KEY, slice(10000, 20000)):
            pass
    np.testing.assert_array_equal(reader.logits(KEY, slice(0, 10000)), zarr.open_array(store / KEY.path / "logits")[:10000])


def test_frame_content_size_read_from_the_header():
    from numcodecs import Zstd

    for n in (0, 1, 200, 70_000, 3_000_000):  # the header's 1-, 2-, 4-byte size fields
        frame = memoryview(Zstd(level=3).encode(np.arange(n, dtype=np.uint8)))
        assert frame_content_size(frame) == n
    assert frame_content_size(memoryview(b"\x00" * 16)) is None
